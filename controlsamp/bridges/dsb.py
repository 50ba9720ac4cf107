r"""Diffusion Schrödinger bridge: IPF with mean-matching half-bridges (De Bortoli, Thornton, Heng & Doucet,
"Diffusion Schrödinger bridge with applications to score-based generative modeling", NeurIPS 2021).

The Schrödinger bridge between mu_0 (source) and mu_T (target) for a reference R (Brownian sigma dW on
[0, T] by default) is the limit of iterative proportional fitting over path measures:

.. math:: P^{2n+1} = \arg\min_{P:\, P_T = \mu_T} KL(P \,|\, P^{2n}),\qquad
          P^{2n+2} = \arg\min_{P:\, P_0 = \mu_0} KL(P \,|\, P^{2n+1}),\qquad P^0 = R_{\mu_0},

each a time reversal of the previous iterate started from the other marginal. On an Euler grid of K steps
the reversal's drift is fitted by mean matching (:mod:`controlsamp.bridges.halfbridge`) on cached paths
simulated with the EMA of the other direction's network.
"""
from __future__ import annotations

import torch

from .base import NeuralBridge
from .halfbridge import mean_matching_batch, simulate


class DSB(NeuralBridge):
    r"""Diffusion Schrödinger bridge (IPF by mean matching), both directions learned.

    Args:
        source, target: the laws at t = 0 and t = T: (N, d) arrays (resampled), Targets with an exact
            ``sample`` or callables ``fn(n, generator) -> (n, d)``.
        sigma, T: the Brownian reference sigma dW on [0, T] (ignored if ``reference`` is given).
        steps: Euler steps K of the grid.
        reference: an isotropic linear process of :mod:`controlsamp.processes` (Brownian, OU, VP).
        hidden, depth: the drift networks' MLP width and depth; ema: EMA decay of the weights used to
            simulate and to sample; ema_warmup: the EMA's warm-up, decay min(ema, (1 + n) / (ema_warmup + n))
            at the n-th update (see :class:`~controlsamp.bridges.halfbridge.DriftNet`).
        cache_size, cache_refresh: paths simulated per cache, and how many steps a cache serves.
        seed: the networks' initialisation (seeded inside ``torch.random.fork_rng``: the caller's global
            stream is untouched); ``fit(seed=...)`` seeds the training's own random streams.

    ``fit(ipf_iters, iters_per_half, batch, lr, seed)``; ``sample(n) -> (x0, xT)`` (forward from the source),
    ``sample_backward(n)``, ``drift(t, x, direction)``, ``save(path)`` / ``load(path)`` (a file of another
    configuration is refused).
    """

    def _simulate_cache(self, fit, n, streams):
        other = "forward" if fit == "backward" else "backward"
        x = self._start(other, n, streams.cpu)
        return simulate(self._grid_drift(other), x, self.reference, other, streams.device)

    def _batch(self, fit, batch, streams):
        other = "forward" if fit == "backward" else "backward"
        idx = torch.randint(self._cache.shape[0], (batch,), generator=streams.cpu).to(self.device)
        k = torch.randint(self.reference.K, (batch,), generator=streams.cpu).to(self.device)
        drift_other = self._grid_drift(other)
        with torch.no_grad():
            return mean_matching_batch(self._cache, fit, drift_other, self.reference, idx, k)
