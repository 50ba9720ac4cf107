r"""What the generative samplers and the likelihood need from a score: the :class:`ScoreSource` protocol, and
:class:`ExactScore`, which plugs the closed-form score of Gaussian-mixture data
(:class:`controlsamp.exact.NoisedMixture`) into every sampler, so that each can be checked with no learning error.

A source has a ``reference`` (a process of :mod:`controlsamp.processes`), ``data_dim`` and ``state_dim``
(equal, except for CLD: ``2 * data_dim``), ``t_min`` (the earliest time the score is trusted), ``T``, a
``score(t, x)`` for states x (n, state_dim) and one time t (a float) or one per point, returning
:math:`\nabla_x \log p_t(x)` (n, data_dim), or for CLD the velocity score :math:`\nabla_v \log p_t(x, v)`,
and a prior at time T: ``prior_sample(n, generator)``, ``prior_log_prob(x)``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Optional

import torch

from .._validate import as_points, check_device, check_dim
from ..processes import CLD, IsotropicLinearSDE

Tensor = torch.Tensor

__all__ = ["ScoreSource", "ExactScore", "reference_prior"]


class ScoreSource(ABC):
    """Base of the score sources (see the module docstring): the shared prior and checks; a subclass gives
    ``score``."""

    reference = None
    data_dim: int
    state_dim: int
    t_min: float = 0.0
    dtype = torch.float64
    device = torch.device("cpu")

    @property
    def T(self) -> float:
        return float(self.reference.T)

    @property
    def velocity(self) -> bool:
        """Whether the state carries a velocity (CLD) and the score is the velocity score."""
        return isinstance(self.reference, CLD)

    @abstractmethod
    def score(self, t, x: Tensor) -> Tensor:
        r""":math:`\nabla_x\log p_t(x)` (n, data_dim) at states x (n, state_dim); the velocity score for CLD."""

    def points(self, x, name: str = "x") -> Tensor:
        """x as (n, state_dim) on the source's device and dtype, with a clear error otherwise."""
        return as_points(x, name, self.state_dim, dtype=self.dtype, device=self.device)

    def prior_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n draws of the prior at T (``reference_prior``), (n, state_dim), on the source's device. The normals are
        drawn where ``generator`` lives (the source's device for the samplers, whose path noise comes from the same
        generator), in float64."""
        mean, cov = reference_prior(self.reference, getattr(self, "velocity_var", None))
        n = check_dim(n, "n")
        where = torch.device("cpu") if generator is None else generator.device
        z = torch.randn(n, self.state_dim, generator=generator, dtype=torch.float64, device=where)
        return (mean.to(where) + z @ torch.linalg.cholesky(cov).T.to(where)).to(self.device, self.dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log density of the prior at T, (n,) float64, on the device of x."""
        mean, cov = reference_prior(self.reference, getattr(self, "velocity_var", None))
        device = x.device
        x = x.detach().to(torch.float64).cpu()
        L = torch.linalg.cholesky(cov)
        white = torch.linalg.solve_triangular(L, (x - mean).T, upper=False)
        return (-0.5 * (white * white).sum(0) - torch.log(torch.diagonal(L)).sum()
                - 0.5 * x.shape[1] * math.log(2 * math.pi)).to(device)


def reference_prior(reference, velocity_var: Optional[float] = None):
    r"""The prior at T of a score model: the reference's law at T started from the origin, with the initial velocity
    :math:`\mathcal N(0, \gamma M)` for CLD: :math:`\mathcal N(0, \sigma_T^2 I)` for the isotropic processes
    (:math:`1 - \bar\alpha_T \approx 1` for VP, :math:`\sigma_{\max}^2 - \sigma_{\min}^2` for VE; Song et al. 2021),
    close to the stationary :math:`\mathcal N(0, \mathrm{diag}(I, M I))` for CLD. Returns float64 (mean, cov)."""
    D = int(reference.dim)
    cov0 = None
    if isinstance(reference, CLD):
        d = D // 2
        cov0 = torch.zeros(D, D, dtype=torch.float64)
        cov0[d:, d:] = float(velocity_var if velocity_var is not None else 0.04 * reference.M) * torch.eye(d)
    mean, cov = reference.marginal(reference.T, torch.zeros(D, dtype=torch.float64), cov0)
    return mean, 0.5 * (cov + cov.T)


class ExactScore(ScoreSource):
    r"""The exact score of a :class:`~controlsamp.exact.NoisedMixture` as a score source: its ``score(t, x)`` in the
    source's dtype (the velocity block for CLD), and its *exact* law at T as the prior (so a sampler started there
    carries no prior error). ``t_min`` (default 0: the closed form holds down to the data) is where samplers stop.
    ``device``: where the samplers put their states (the closed form is evaluated where x lives, in float64).
    """

    def __init__(self, mixture, t_min: float = 0.0, dtype=torch.float64, device="cpu"):
        self.mixture = mixture
        self.reference = mixture.reference
        self.state_dim = int(self.reference.dim)
        self.data_dim = self.state_dim // 2 if isinstance(self.reference, CLD) else self.state_dim
        t_min = float(t_min)
        if not 0.0 <= t_min < self.T:
            raise ValueError(f"t_min must lie in [0, T) = [0, {self.T}); got {t_min}")
        self.t_min = t_min
        self.dtype = dtype
        self.device = check_device(device)
        if self.velocity:  # the initial velocity's variance (the mixture's v block, isotropic by construction)
            self.velocity_var = float(mixture.covs[0, self.data_dim, self.data_dim])

    def score(self, t, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).cpu()
        xd = x.to(torch.float64)
        if tt.numel() == 1:
            s = self.mixture.score(float(tt), xd)
        elif isinstance(self.reference, IsotropicLinearSDE):  # one time per point: the kernel per point, vectorised
            a, q = (c.to(x.device) for c in self.reference.marginal_coefficients(tt))
            s = self.mixture.isotropic_score(xd, a[:, None], q[:, None])
        else:  # one time per point: group equal times
            s = torch.empty_like(xd)
            for v in torch.unique(tt):
                idx = tt == v
                s[idx] = self.mixture.score(float(v), xd[idx])
        if self.velocity:
            s = s[:, self.data_dim:]
        return s.to(x.dtype)

    def log_prob(self, t, x: Tensor) -> Tensor:
        """The exact :math:`\\log p_t(x)` (n,) float64 (for CLD, of the phase-space state)."""
        return self.mixture.log_prob(float(t), torch.as_tensor(x).to(torch.float64))

    def prior_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.mixture.sample(self.T, check_dim(n, "n"), generator=generator).to(self.device, self.dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        return self.log_prob(self.T, x)
