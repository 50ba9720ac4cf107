r"""Adjoint matching with the reciprocal projection (Liu et al. 2025, ASBS; Havens et al. 2025, adjoint
sampling): for a sampling problem with a linear reference, the lean adjoint along any path from X_t is
:math:`a(t) = \phi(t, T)\,\nabla g(X_T)`, so the control at a point of the reference bridge between the
endpoints of a model path, :math:`X_{t_k} \sim` bridge(X_0, X_T), k uniform on the grid, regresses onto

.. math:: u^{\rm target}_k = -g(t_k)\,\phi(t_k, T)\,\nabla g(X_T),\qquad
          \mathcal L(u) = \mathbb E\,\big|u(t_k, X_{t_k}) - u^{\rm target}_k\big|^2 .

``batch.paths`` holds the endpoints (xs of shape (n, 2, d)) and the terminal-cost gradients
(``terminal_grad``), typically drawn from a replay buffer of model paths; the grid index k comes from
``batch.streams.cpu`` and the bridge noise from ``batch.streams.device``."""
from __future__ import annotations

import torch

from ...exact.reference_bridge import isotropic_bridge_point
from ..sampling import SamplingProblem
from .base import Batch, Objective


class ReciprocalAdjointMatching(Objective):
    name = "reciprocal_adjoint_matching"
    off_policy = True
    needs_data = True

    def check(self, problem) -> None:
        if not isinstance(problem, SamplingProblem):
            raise ValueError("reciprocal adjoint matching needs a sampling problem (a linear reference's bridges)")

    def forward(self, problem, policy, batch: Batch):
        paths = batch.paths
        if paths is None or paths.terminal_grad is None:
            raise ValueError("reciprocal adjoint matching regresses on given endpoints with their terminal-cost "
                             "gradients: batch.paths.xs (n, 2, d) and batch.paths.terminal_grad (n, d)")
        x0, xT, grad = paths.xs[:, 0], paths.xs[:, -1], paths.terminal_grad
        ref, n = problem.reference, x0.shape[0]
        k = torch.randint(ref.K, (n,), generator=batch.streams.cpu).to(x0.device)
        z = torch.randn(x0.shape, generator=batch.streams.device, device=x0.device, dtype=x0.dtype)
        phi0, q0, phiT, qT = ref.bridge_coefficients(k, x0.device, x0.dtype)
        xt = isotropic_bridge_point(phi0, q0, phiT, qT, x0, xT, z)
        target = -ref.coef("g", x0.device, x0.dtype)[k].unsqueeze(1) * phiT * grad
        t = k.to(x0.dtype) * ref.h
        u = policy(t, xt, problem.langevin_feature(xt)) if getattr(policy, "uses_features", False) else policy(t, xt)
        return ((u - target) ** 2).sum(1).mean(), {}
