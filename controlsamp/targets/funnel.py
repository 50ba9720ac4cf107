"""Neal's funnel: a normalised target with a scale that varies over orders of magnitude."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._validate import DTYPE, check_dim, check_positive
from .base import Target

_LOG_2PI = math.log(2.0 * math.pi)


class Funnel(Target):
    r"""Neal's funnel in ``dim`` dimensions (Neal 2003, "Slice sampling", Ann. Statist. 31(3), Sec. 8).

    .. math::
        x_0 \sim \mathcal N(0, \sigma_0^2), \qquad
        x_i \mid x_0 \sim \mathcal N(0, e^{x_0}) \quad (i = 1, \dots, d-1),

    .. math::
        \log \pi(x) = -\frac{x_0^2}{2\sigma_0^2} - \tfrac12 \log(2\pi\sigma_0^2)
        - \frac{d-1}{2}\,(x_0 + \log 2\pi) - \frac{e^{-x_0}}{2} \sum_{i\ge1} x_i^2 .

    The density is normalised: ``log_Z = 0``. ``score`` is closed form and ``sample`` exact
    (``x0 = sigma_0 z0``, ``x_i = e^{x0/2} z_i``).

    ``x0_std`` is :math:`\sigma_0`; the benchmark "funnel10" is ``Funnel(10, 3.0)``. The PIS repository
    used ``x0_std = 1``, which Sendera et al. (2024, "Improved off-policy training of diffusion
    samplers") call a bug; that variant is kept only by name ("funnel10_pis"), never as a default.

    ``log_prob`` and ``score`` compute in the dtype of ``x``, through the standardised coordinates
    :math:`z_i = x_i e^{-x_0/2}`: :math:`e^{-x_0}` alone overflows float32 for :math:`x_0 < -88` (a 29-sigma
    value of funnel10 that an untrained sampler can reach) where :math:`z_i` and the density are finite.
    """

    def __init__(self, dim: int = 10, x0_std: float = 3.0, name: str = "funnel"):
        self.dim = check_dim(dim, "dim")
        if self.dim < 2:
            raise ValueError(f"dim must be at least 2 (x0 and at least one funnel coordinate); got {self.dim}")
        self.x0_std = check_positive(x0_std, "x0_std")
        self.log_Z = 0.0
        self.name = name

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_x(x)
        x0, rest = x[:, 0], x[:, 1:]
        s2 = self.x0_std ** 2
        k = self.dim - 1
        lp0 = -0.5 * x0 * x0 / s2 - 0.5 * (_LOG_2PI + math.log(s2))
        u = rest * torch.exp(-0.5 * x0)[:, None]  # the standardised neck coordinates z_i = x_i e^{-x0/2}
        lp1 = -0.5 * k * (x0 + _LOG_2PI) - 0.5 * (u * u).sum(1)
        return lp0 + lp1

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_x(x)
        x0, rest = x[:, :1], x[:, 1:]
        h = torch.exp(-0.5 * x0)
        u = rest * h
        g0 = -x0 / self.x0_std ** 2 - 0.5 * (self.dim - 1) + 0.5 * (u * u).sum(1, keepdim=True)
        return torch.cat([g0, -u * h], dim=1)

    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               dtype: torch.dtype = DTYPE) -> torch.Tensor:
        """``n`` exact samples (computed in float64, returned in ``dtype``)."""
        n = check_dim(n, "n")
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        x0 = self.x0_std * z[:, :1]
        return torch.cat([x0, torch.exp(0.5 * x0) * z[:, 1:]], dim=1).to(dtype)
