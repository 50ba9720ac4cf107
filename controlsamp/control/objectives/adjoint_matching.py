r"""Adjoint matching (Domingo-Enrich, Drozdzal, Karrer & Chen 2024, "Adjoint Matching: fine-tuning flow and
diffusion generative models with memoryless stochastic optimal control").

Along detached paths of the current control, the *lean* adjoint solves, backward from :math:`a_K = \nabla
g(X_K)`, the discrete adjoint equation of the problem's scheme with the control held fixed (for Euler
:math:`a_i = a_{i+1} + h[(\nabla_x f)^\top a_{i+1} + \nabla_x q]`; for a sampler's linear reference
:math:`a_i = a\text{-coefficient}_i\,a_{i+1}`), and the control is regressed onto the control that the
discrete maximum principle pairs with it (:math:`-\tfrac12 R^{-1}B^\top a_{i+1}` for Euler; for a sampler
:math:`-(v_i/b_i)\,a_{i+1}`, the same for Euler and the continuous limit of the exponential scheme):

.. math:: \mathcal L(u) = \frac1T\,\mathbb E\sum_i h\,\big|u(t_i, X_i) - u^{\rm target}_i\big|^2 .

The terms of the full adjoint in :math:`\nabla_x u` cancel at the optimum, so the fixed points are the
discrete optimality conditions; for convex (e.g. linear–quadratic) problems these characterise the optimum
of the discretised problem (for an LQR, the gains of :meth:`controlsamp.exact.LQR.euler_gains`)."""
from __future__ import annotations

from .base import Batch, Objective


class AdjointMatching(Objective):
    name = "adjoint_matching"
    aliases = ("am",)
    off_policy = False

    def forward(self, problem, policy, batch: Batch):
        paths = batch.paths
        if paths is None:
            paths = problem.on_policy_paths(policy, batch.n, batch.streams.device, batch.device, batch.dtype)
        adj = problem.lean_adjoint(paths)
        target = problem.adjoint_matching_targets(adj)
        u = problem.controls_along(policy, paths)
        loss = problem.dt * ((u - target) ** 2).sum(-1).sum(1).mean() / problem.T
        info = {"cost": paths.cost} if paths.cost is not None else {}
        if (paths.log_ratio is not None or paths.means is not None) and paths.log_reward is not None:
            info = {"log_w": problem.log_weights(policy, paths).detach()}
        return loss, info
