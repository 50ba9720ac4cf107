"""Pieces the methods share: the controlled drift, detached rollouts and their costs."""
from __future__ import annotations

from typing import Tuple

import torch

from ...sde import euler_maruyama

Tensor = torch.Tensor


def consts(problem, device, dtype):
    """sigma, B, R as tensors on the training device and dtype."""
    return tuple(m.to(device=device, dtype=dtype) for m in (problem.sigma, problem.B, problem.R))


def rollout(problem, policy, x0: Tensor, generator=None, steps=None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Detached Euler–Maruyama paths of the controlled SDE under ``policy``.

    Returns xs (n, K+1, d), dW (n, K, k), the controls us (n, K, m) and the path costs
    sum_i h (q(t_i, X_i) + u_i' R u_i) + g(X_K), (n,). K = ``steps`` (default: the problem's)."""
    sigma, B, R = consts(problem, x0.device, x0.dtype)
    K = problem.steps if steps is None else steps
    h = problem.T / K
    us, run = [], []

    def drift(t, x):
        u = policy(t, x)
        us.append(u)
        run.append(problem.q(t, x) + ((u @ R) * u).sum(1))
        return problem.f(t, x) + u @ B.T

    with torch.no_grad():
        xs, dW = euler_maruyama(drift, sigma, x0, problem.T, K, generator=generator)
        cost = h * torch.stack(run, 1).sum(1) + problem.g(xs[:, -1])
    return xs, dW, torch.stack(us, 1), cost
