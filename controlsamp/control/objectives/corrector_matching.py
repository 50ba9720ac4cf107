r"""Corrector matching (Liu, Choi, Chen, Miller & Chen 2025, "Adjoint Schrödinger bridge sampler"): the
backward potential's score at T, :math:`\nabla\log\hat\varphi_T(x) = \mathbb E[\nabla_{x_T}\log p^{ref}(x_T
\mid X_0) \mid X_T = x]` under the current coupling of (X_0, X_T), is learned by regression,

.. math:: \mathcal L(h) = \mathbb E\Big|h(X_T) + \frac{X_T - \phi(0, T) X_0}{q(0, T)}\Big|^2,

on endpoint pairs (``batch.paths.xs`` of shape (n, 2, d)) of a sampling problem's reference with kernel
N(phi(0, T) x, q(0, T) I). The "policy" it trains is the corrector network h(t, x), evaluated at t = T."""
from __future__ import annotations

from ..sampling import SamplingProblem
from .base import Batch, Objective


class CorrectorMatching(Objective):
    name = "corrector_matching"
    off_policy = True
    needs_data = True  # any coupling of (X_0, X_T) the caller supplies

    def check(self, problem) -> None:
        if not isinstance(problem, SamplingProblem):
            raise ValueError("corrector matching needs a sampling problem (its reference's kernel from 0 to T)")

    def forward(self, problem, corrector, batch: Batch):
        if batch.paths is None:
            raise ValueError("corrector matching regresses on given endpoint pairs: batch.paths.xs of shape (n, 2, d)")
        x0, xT = batch.paths.xs[:, 0], batch.paths.xs[:, -1]
        ref = problem.reference
        target = -(xT - float(ref.phi0[-1]) * x0) / float(ref.q0[-1])
        return ((corrector(ref.T, xT) - target) ** 2).sum(1).mean(), {}
