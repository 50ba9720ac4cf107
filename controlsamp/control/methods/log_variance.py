r"""The log-variance loss (Nüsken & Richter 2021; Richter & Berner 2024).

For a relative-entropy problem (B = sigma, R = (rho/2) I; see ``ControlProblem.kl_scale``), the optimal
path measure is P* ∝ exp(-W) P^0 with W = (int q dt + g(X_T)) / rho, and on paths X of any behaviour
control v, with dW^v the increments that drove them,

.. math:: \log\frac{dP^u}{dP^*}(X) = \int u\cdot(dW^v + v\,dt) - \tfrac12\int |u|^2 dt + W(X) + \log Z.

The loss is the variance of this quantity over a batch of detached paths (log Z drops out); it is zero
exactly at u = u*, and nothing is differentiated through the solver. Here v is the current control
(detached), so the cost estimate is on-policy.
"""
from __future__ import annotations

import torch

from .common import rollout


def loss(problem, policy, x0, generator, entropy: int = 0, **_):
    rho = problem.kl_scale()
    if rho is None:
        raise ValueError("method='log_variance' needs a relative-entropy problem: control_matrix = sigma and "
                         "control_cost = (rho/2) I (then J/rho is KL to the reweighted reference); "
                         "use 'adjoint', 'backprop' or 'adjoint_matching' otherwise")
    xs, dW, vs, cost = rollout(problem, policy, x0, generator)
    h = problem.dt
    log_rn = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
    run = torch.zeros_like(log_rn)
    for i in range(problem.steps):
        t, x = i * h, xs[:, i]
        u = policy(t, x)
        log_rn = log_rn + (u * (dW[:, i] + vs[:, i] * h)).sum(1) - 0.5 * h * (u * u).sum(1)
        run = run + h * problem.q(t, x)
    log_rn = log_rn + (run + problem.g(xs[:, -1])) / rho
    return log_rn.var(), float(cost.mean())
