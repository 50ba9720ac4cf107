r"""Diffusion Schrödinger bridge matching: iterative Markovian fitting (IMF) with bridge matching (Shi, De
Bortoli, Campbell & Doucet, "Diffusion Schrödinger bridge matching", NeurIPS 2023; Peluchetti 2023).

IMF alternates the reciprocal projection (mix the reference's bridges over the current coupling of
(X_0, X_T)) and the Markovian projection (the Markov process with the same time marginals, whose drift is
the conditional expectation of the bridges' drifts). Both directions are learned: the backward drift is
fitted on couplings of the current forward process started from the source, the forward drift on couplings
of the current backward process started from the target ("DSBM-IPF"), so each half-bridge keeps one
marginal exact and the iterates converge to the Schrödinger bridge. The first coupling is the reference's.
Regression targets: :func:`controlsamp.bridges.halfbridge.bridge_matching_batch`.
"""
from __future__ import annotations

import torch

from .base import NeuralBridge
from .halfbridge import bridge_matching_batch, simulate


class DSBM(NeuralBridge):
    r"""Diffusion Schrödinger bridge matching (IMF), both directions; the same arguments and methods as
    :class:`~controlsamp.bridges.DSB`. Its cache holds couplings (x_0, x_T), not paths: a fresh bridge
    point is drawn for every regression sample."""

    def _simulate_cache(self, fit, n, streams):
        other = "forward" if fit == "backward" else "backward"
        x = self._start(other, n, streams.cpu)
        far = simulate(self._grid_drift(other), x, self.reference, other, streams.device, record=False)
        return (x, far) if other == "forward" else (far, x)

    def _batch(self, fit, batch, streams):
        x0, xT = self._cache
        idx = torch.randint(x0.shape[0], (batch,), generator=streams.cpu).to(self.device)
        lo = 0 if fit == "forward" else 1  # the forward drift acts at t_0..t_{K-1}, the backward at t_1..t_K
        k = torch.randint(lo, self.reference.K + lo, (batch,), generator=streams.cpu).to(self.device)
        with torch.no_grad():
            return bridge_matching_batch(x0[idx], xT[idx], fit, self.reference, k, streams.device)
