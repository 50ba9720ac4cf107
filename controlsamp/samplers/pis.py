r"""The path integral sampler (Zhang & Chen 2022, "Path Integral Sampler: a stochastic control approach
for sampling"): Brownian reference from the origin,

.. math:: dX_t = \sigma\,u_\theta(t, X_t)\,dt + \sigma\,dW_t,\qquad X_0 = 0,\qquad
          g(x) = \log\mathcal N(x; 0, \sigma^2 T I) - \log\tilde\pi(x).

Its optimal control is the Schrödinger–Föllmer drift divided by sigma
(:class:`controlsamp.exact.SchrodingerFollmer`). Euler–Maruyama is exact for the reference here, so the
importance weights are exact for the discrete sampler.
"""
from __future__ import annotations

from ..processes import Brownian
from ..sde import DiscretisedReference
from .._validate import check_dim, check_positive
from .base import DiffusionSampler, check_target


class PIS(DiffusionSampler):
    """``PIS(target, steps=100, sigma=1.0, T=1.0, device="cpu", **network_options)``; see
    :class:`~controlsamp.samplers.base.DiffusionSampler` for the options, ``fit``, ``sample`` and ``log_Z``."""

    name = "pis"

    def __init__(self, target, steps: int = 100, sigma: float = 1.0, T: float = 1.0, **kwargs):
        check_target(target)
        sigma, T, steps = check_positive(sigma, "sigma"), check_positive(T, "T"), check_dim(steps, "steps")
        reference = DiscretisedReference(Brownian(target.dim, sigma=sigma, T=T), steps, scheme="euler", v0=0.0)
        super().__init__(target, reference, **kwargs)
        self.sigma = sigma
        self.config.update(sampler="pis", sigma=sigma)
