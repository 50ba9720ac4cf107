r"""Adjoint matching (Domingo-Enrich, Drozdzal, Karrer & Chen 2024, "Adjoint Matching").

Along detached paths of the current control, the *lean* adjoint solves, backward from a(T) = grad g(X_T),

.. math:: \frac{da}{dt} = -(\nabla_x f)^\top a - \nabla_x q,

(the terms in grad_x u of the full adjoint cancel at the optimum, where u = -R^{-1} B' a / 2), and the
control is regressed onto it:

.. math:: \mathcal L(u) = \frac1T\,\mathbb{E}\int_0^T \big|u(t, X_t) + \tfrac12 R^{-1} B^\top a(t)\big|^2 dt.

The discrete adjoint is the exact pathwise derivative of the Euler scheme with the control held fixed:
a_i = a_{i+1} + h [(J_f(t_i, X_i))' a_{i+1} + grad q(t_i, X_i)], and the control u(t_i, X_i), which moves
X_{i+1}, is regressed onto -R^{-1} B' a_{i+1} / 2. The fixed points satisfy the discrete stochastic maximum
principle, which for convex (e.g. linear–quadratic) problems characterises the optimum of the
discretised problem (for an LQR: the gains of :meth:`controlsamp.exact.LQR.euler_gains`).
"""
from __future__ import annotations

import torch

from .common import consts, rollout


def lean_adjoint(problem, xs):
    """a_i for i = 0..K, (n, K+1, d), by vector–Jacobian products along the path."""
    h = problem.dt
    with torch.enable_grad():
        xT = xs[:, -1].detach().requires_grad_(True)
        (a,) = torch.autograd.grad(problem.g(xT).sum(), xT)
        out = [a]
        for i in reversed(range(problem.steps)):
            x = xs[:, i].detach().requires_grad_(True)
            s = (problem.f(i * h, x) * a).sum() + problem.q(i * h, x).sum()
            (g,) = torch.autograd.grad(s, x, allow_unused=True)
            a = a + h * g if g is not None else a
            out.append(a)
    return torch.stack(out[::-1], 1).detach()


def loss(problem, policy, x0, generator, entropy: int = 0, **_):
    xs, _, _, cost = rollout(problem, policy, x0, generator)
    a = lean_adjoint(problem, xs)
    _, B, R = consts(problem, x0.device, x0.dtype)
    M = 0.5 * torch.linalg.solve(R, B.T)  # R^{-1} B' / 2, (m, d)
    h = problem.dt
    total = 0.0
    for i in range(problem.steps):
        u = policy(i * h, xs[:, i])
        # u_i moves X_{i+1}: its target is the adjoint of X_{i+1} (the discrete maximum principle)
        total = total + h * ((u + a[:, i + 1] @ M.T) ** 2).sum(1).mean()
    return total / problem.T, float(cost.mean())
