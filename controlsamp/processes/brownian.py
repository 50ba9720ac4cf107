r"""Scaled Brownian motion :math:`dX_t = \sigma(t)\,dW_t`, the Schrödinger-bridge and PIS reference."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import numpy as np

from .._validate import check_positive
from .base import IsotropicLinearSDE

__all__ = ["Brownian"]


class Brownian(IsotropicLinearSDE):
    r"""Brownian motion with a (possibly time-varying) scale, :math:`dX_t = \sigma(t)\,dW_t` on :math:`[0, T]`.

    Kernel (Itô isometry; standard, e.g. Karatzas & Shreve 1991, §3.2):

    .. math::  X_t \mid X_s = x \sim \mathcal N\Big(x,\; \int_s^t \sigma(u)^2\,du \; I\Big).

    Args:
        dim: state dimension.
        sigma: a positive float (constant scale, :math:`\int_s^t \sigma^2 = \sigma^2 (t - s)`) or a
            callable ``t -> sigma(t)`` taking a float time in :math:`[0, T]`.
        T: horizon.
        sigma_sq_integral: for a callable ``sigma``, an optional callable ``(s, t) -> int_s^t sigma(u)^2 du``.
            Without it the integral is computed by fixed Gauss–Legendre quadrature with ``quad_nodes``
            nodes on :math:`[s, t]` (exact for polynomial :math:`\sigma^2` of degree below
            ``2 * quad_nodes``, and spectrally accurate for smooth :math:`\sigma`).
        quad_nodes: number of Gauss–Legendre nodes (default 64).
    """

    def __init__(self, dim: int, sigma: Union[float, Callable[[float], float]] = 1.0, T: float = 1.0,
                 sigma_sq_integral: Optional[Callable[[float, float], float]] = None, quad_nodes: int = 64):
        super().__init__(dim, T)
        if callable(sigma):
            self._sigma_fn = sigma
            self.sigma = sigma
        else:
            s = check_positive(sigma, "sigma")
            self._sigma_fn = None
            self.sigma = s
        if sigma_sq_integral is not None and not callable(sigma_sq_integral):
            raise ValueError("sigma_sq_integral must be a callable (s, t) -> int_s^t sigma(u)^2 du")
        self.sigma_sq_integral = sigma_sq_integral
        if isinstance(quad_nodes, bool) or not isinstance(quad_nodes, (int, np.integer)) or quad_nodes < 1:
            raise ValueError(f"quad_nodes must be a positive integer; got {quad_nodes!r}")
        self._nodes, self._weights = np.polynomial.legendre.leggauss(int(quad_nodes))

    def sigma_at(self, t) -> float:
        r""":math:`\sigma(t)` as a float."""
        t = self._time(t)
        if self._sigma_fn is None:
            return self.sigma
        v = float(self._sigma_fn(t))
        if not math.isfinite(v):
            raise ValueError(f"sigma(t) must be finite; got sigma({t}) = {v}")
        return v

    def variance(self, s, t) -> float:
        r""":math:`\int_s^t \sigma(u)^2\,du` for :math:`0 \le s \le t \le T`."""
        s, t = self._interval(s, t)
        return self._var(s, t)

    def _var(self, s: float, t: float) -> float:
        if self._sigma_fn is None:
            return self.sigma ** 2 * (t - s)
        if t == s:
            return 0.0
        if self.sigma_sq_integral is not None:
            v = float(self.sigma_sq_integral(s, t))
        else:
            half, mid = 0.5 * (t - s), 0.5 * (t + s)
            vals = np.array([float(self._sigma_fn(mid + half * x)) for x in self._nodes])
            v = half * float(np.dot(self._weights, vals * vals))
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"int_s^t sigma(u)^2 du must be finite and >= 0; got {v} on [{s}, {t}]")
        return v

    def _k(self, t: float) -> float:
        return 0.0

    def _g(self, t: float) -> float:
        return self.sigma_at(t)

    def _phi_q(self, s: float, t: float) -> Tuple[float, float]:
        return 1.0, self._var(s, t)

    def __repr__(self) -> str:
        sig = "callable" if self._sigma_fn is not None else self.sigma
        return f"Brownian(dim={self.dim}, sigma={sig}, T={self.T})"
