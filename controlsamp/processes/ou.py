r"""Ornstein–Uhlenbeck process :math:`dX_t = -\theta X_t\,dt + \sigma\,dW_t`."""
from __future__ import annotations

import math
from typing import Tuple

from .._validate import check_positive
from .base import IsotropicLinearSDE

__all__ = ["OU"]


class OU(IsotropicLinearSDE):
    r"""Ornstein–Uhlenbeck process :math:`dX_t = -\theta X_t\,dt + \sigma\,dW_t` on :math:`[0, T]`.

    Kernel (standard; Uhlenbeck & Ornstein 1930, or Särkkä & Solin 2019, §6.3), with :math:`h = t - s`:

    .. math::  X_t \mid X_s = x \sim \mathcal N\Big(e^{-\theta h} x,\;
               \frac{\sigma^2}{2\theta}\big(1 - e^{-2\theta h}\big) I\Big),

    evaluated with ``expm1`` so that small :math:`\theta h` keeps full relative accuracy. The stationary
    law is :math:`\mathcal N(0, \sigma^2/(2\theta) I)`.
    """

    def __init__(self, dim: int, theta: float = 1.0, sigma: float = 1.0, T: float = 1.0):
        super().__init__(dim, T)
        self.theta = check_positive(theta, "theta")
        self.sigma = check_positive(sigma, "sigma")

    def _k(self, t: float) -> float:
        return -self.theta

    def _g(self, t: float) -> float:
        return self.sigma

    def _phi_q(self, s: float, t: float) -> Tuple[float, float]:
        h = t - s
        return math.exp(-self.theta * h), -math.expm1(-2.0 * self.theta * h) * self.sigma ** 2 / (2.0 * self.theta)

    def __repr__(self) -> str:
        return f"OU(dim={self.dim}, theta={self.theta}, sigma={self.sigma}, T={self.T})"
