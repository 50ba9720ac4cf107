r"""The denoising diffusion sampler (Vargas, Grathwohl & Doucet 2023): the reference is a variance-preserving
Ornstein–Uhlenbeck process started in its stationary law,

.. math:: dX_t = \big(-\tfrac12\beta(t) X_t + \sigma\sqrt{\beta(t)}\,u_\theta(t, X_t)\big)\,dt
          + \sigma\sqrt{\beta(t)}\,dW_t,\qquad X_0 \sim \mathcal N(0, \sigma^2 I),\qquad
          g(x) = \log\mathcal N(x; 0, \sigma^2 I) - \log\tilde\pi(x),

discretised by the exponential integrator (the linear part exactly). The schedule runs backward in the
sampler's time, as in a diffusion model's generative direction: beta(t) = beta_noise(T - t), large near the
noise (t = 0) and small near the target (t = T); the stationary reference is reversible, so this is again a
variance-preserving OU process.
"""
from __future__ import annotations

from typing import Optional

from ..processes import OU, VP
from ..sde import DiscretisedReference
from .._validate import check_dim, check_positive
from .base import DiffusionSampler, check_target

SCHEDULES = ("constant", "linear", "cosine")


def vp_reference(dim: int, steps: int, sigma: float, T: float, schedule: str, beta_min: float, beta_max: float,
                 scheme="exponential") -> DiscretisedReference:
    """The reversed-schedule VP reference scaled to stationary variance sigma^2 (constant: beta = beta_max)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    if schedule == "constant":
        process = OU(dim, theta=0.5 * beta_max, sigma=beta_max ** 0.5, T=T)
    else:
        process = VP(dim, schedule=schedule, beta_min=beta_min, beta_max=beta_max, T=T)
    return DiscretisedReference(process, steps, scheme=scheme, scale=sigma, v0=sigma ** 2, reverse=True)


class DDS(DiffusionSampler):
    """``DDS(target, steps=100, sigma=1.0, T=1.0, schedule="linear", beta_min=0.1, beta_max=10.0,
    scheme="exponential", **options)``.

    ``scheme``: ``"exponential"`` (the exponential integrator, DDS's own), ``"euler"`` (Euler steps; the paths
    are then weighted against the Euler chain of the same reference, whose terminal variance differs from
    sigma^2 by O(h), and only then is the relative entropy through torchsde's adjoint offered), or a
    :class:`~controlsamp.sde.schemes.GaussianScheme` instance (e.g. ``Exponential(quad_nodes=16)``, the
    Gauss–Legendre nodes of its control coefficient). ``method`` is the former name of ``scheme``. Other
    options: :class:`~controlsamp.samplers.base.DiffusionSampler`."""

    name = "dds"

    def __init__(self, target, steps: int = 100, sigma: float = 1.0, T: float = 1.0, schedule: str = "linear",
                 beta_min: float = 0.1, beta_max: float = 10.0, scheme="exponential",
                 method: Optional[str] = None, **kwargs):
        check_target(target)
        sigma, T, steps = check_positive(sigma, "sigma"), check_positive(T, "T"), check_dim(steps, "steps")
        scheme = method if method is not None else scheme
        reference = vp_reference(target.dim, steps, sigma, T, schedule, check_positive(beta_min, "beta_min"),
                                 check_positive(beta_max, "beta_max"), scheme)
        super().__init__(target, reference, **kwargs)
        self.sigma = sigma
        self.config.update(sampler="dds", sigma=sigma, schedule=schedule, beta_min=beta_min, beta_max=beta_max,
                           scheme=repr(reference.scheme))
