r"""Variance-exploding SDE of Song et al. (2021): :math:`dX_t = \sqrt{d\sigma^2(t)/dt}\,dW_t`."""
from __future__ import annotations

import math
from typing import Tuple

import torch

from .._validate import DTYPE, as_tensor, check_positive
from .base import IsotropicLinearSDE

__all__ = ["VE"]


class VE(IsotropicLinearSDE):
    r"""Variance-exploding SDE (Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 30).

    With :math:`\sigma(t) = \sigma_{\min} (\sigma_{\max}/\sigma_{\min})^{t/T}` and
    :math:`\rho = \log(\sigma_{\max}/\sigma_{\min})`,

    .. math::  dX_t = \sqrt{\tfrac{d\sigma^2(t)}{dt}}\,dW_t = \sigma(t)\sqrt{2\rho/T}\,dW_t,

    and the kernel is

    .. math::  X_t \mid X_s = x \sim \mathcal N\big(x, (\sigma(t)^2 - \sigma(s)^2) I\big),
               \qquad \sigma(t)^2 - \sigma(s)^2 = \sigma(s)^2\,\mathrm{expm1}(2\rho (t - s)/T).

    As in Song et al., :math:`X_0` is the data itself, so the marginal variance added by time :math:`t`
    is :math:`\sigma(t)^2 - \sigma_{\min}^2`.
    """

    def __init__(self, dim: int, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        super().__init__(dim, T)
        self.sigma_min = check_positive(sigma_min, "sigma_min")
        self.sigma_max = check_positive(sigma_max, "sigma_max")
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min; got sigma_max = {self.sigma_max}, "
                             f"sigma_min = {self.sigma_min}")
        self._rho = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t) -> torch.Tensor:
        r""":math:`\sigma(t) = \sigma_{\min} (\sigma_{\max}/\sigma_{\min})^{t/T}` (vectorised over ``t``), float64."""
        tt = as_tensor(t, "t")
        if ((tt < 0) | (tt > self.T)).any():
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]")
        return self.sigma_min * torch.exp(self._rho * tt / self.T).to(DTYPE)

    def marginal_coefficients(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(1,\ \sigma(t)^2 - \sigma_{\min}^2)` for a tensor of times, float64 (vectorised, with expm1)."""
        tt = self._times_tensor(t)
        return torch.ones_like(tt), self.sigma_min ** 2 * torch.expm1(2.0 * self._rho * tt / self.T)

    def _sig(self, t: float) -> float:
        return self.sigma_min * math.exp(self._rho * t / self.T)

    def _k(self, t: float) -> float:
        return 0.0

    def _g(self, t: float) -> float:
        return self._sig(t) * math.sqrt(2.0 * self._rho / self.T)

    def _phi_q(self, s: float, t: float) -> Tuple[float, float]:
        return 1.0, self._sig(s) ** 2 * math.expm1(2.0 * self._rho * (t - s) / self.T)

    def __repr__(self) -> str:
        return f"VE(dim={self.dim}, sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"
