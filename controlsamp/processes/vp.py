r"""Variance-preserving SDE :math:`dX_t = -\tfrac12\beta(t) X_t\,dt + \sqrt{\beta(t)}\,dW_t` (linear or cosine schedule),
and its sub-VP variant."""
from __future__ import annotations

import math
from typing import Tuple

import torch

from .._validate import DTYPE, as_tensor, check_positive
from .base import IsotropicLinearSDE

__all__ = ["VP", "SubVP"]

_SCHEDULES = ("linear", "cosine")


class VP(IsotropicLinearSDE):
    r"""Variance-preserving SDE (Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 32).

    .. math::  dX_t = -\tfrac12 \beta(t) X_t\,dt + \sqrt{\beta(t)}\,dW_t, \qquad
               \bar\alpha(t) = \exp\Big(-\int_0^t \beta(u)\,du\Big),

    with kernel, for :math:`\Lambda(s, t) = \int_s^t \beta(u)\,du`,

    .. math::  X_t \mid X_s = x \sim \mathcal N\Big(e^{-\Lambda/2} x,\; \big(1 - e^{-\Lambda}\big) I\Big)
               = \mathcal N\Big(\sqrt{\bar\alpha(t)/\bar\alpha(s)}\,x,\; (1 - \bar\alpha(t)/\bar\alpha(s)) I\Big).

    Schedules:

    * ``"linear"`` (Song et al. 2021; Ho et al. 2020 in continuous time):
      :math:`\beta(t) = \beta_{\min} + (t/T)(\beta_{\max} - \beta_{\min})`, so
      :math:`\Lambda(s, t) = \beta_{\min}(t - s) + (\beta_{\max} - \beta_{\min})(t^2 - s^2)/(2T)`.
    * ``"cosine"`` (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17): with
      :math:`u(t) = \frac{t/T + s}{1 + s}\frac{\pi}{2}`,
      :math:`\bar\alpha_{\cos}(t) = \cos^2 u(t) / \cos^2 u(0)` and
      :math:`\beta_{\cos}(t) = -\frac{d}{dt}\log\bar\alpha_{\cos}(t) = \frac{\pi}{T(1+s)}\tan u(t)`.
      :math:`\beta_{\cos}` blows up at :math:`t = T` (:math:`\bar\alpha_{\cos}(T) = 0`). As Nichol &
      Dhariwal clip their discrete :math:`\beta_t` at 0.999, we clip the rate:
      **the SDE we define uses** :math:`\beta(t) = \min(\beta_{\cos}(t), \beta_{\max})`. This happens
      after :math:`t^\* = T\big(\tfrac{2(1+s)}{\pi}\arctan\tfrac{\beta_{\max} T(1+s)}{\pi} - s\big)`, and
      the kernel is exact for the clipped SDE:
      :math:`\bar\alpha(t) = \bar\alpha_{\cos}(\min(t, t^\*))\,e^{-\beta_{\max}(t - t^\*)_+}`.
      ``beta_min`` is unused by this schedule; raise ``beta_max`` to follow the unclipped cosine
      schedule further (e.g. ``beta_max=1e3``). :math:`\Lambda` is evaluated as
      :math:`2\log(\cos u(s)/\cos u(t))` with ``log1p`` and a product-of-sines difference, so short
      intervals keep full relative accuracy.

    Args:
        dim: state dimension.
        schedule: ``"linear"`` or ``"cosine"``.
        beta_min, beta_max: linear schedule end points; for ``"cosine"`` ``beta_max`` is the clip of
            :math:`\beta`.
        T: horizon.
        s: the cosine schedule's offset (default 0.008, as in Nichol & Dhariwal).
    """

    def __init__(self, dim: int, schedule: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0,
                 T: float = 1.0, s: float = 0.008):
        super().__init__(dim, T)
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}; got {schedule!r}")
        self.schedule = schedule
        self.beta_min = check_positive(beta_min, "beta_min")
        self.beta_max = check_positive(beta_max, "beta_max")
        try:
            s = float(s)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"s (the cosine schedule offset) must be a number >= 0; got {s!r}") from exc
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"s (the cosine schedule offset) must be a finite number >= 0; got {s}")
        self.s = s
        if schedule == "cosine":
            u_star = math.atan(self.beta_max * self.T * (1.0 + s) / math.pi)
            self.t_clip = min(max(self.T * (2.0 * (1.0 + s) * u_star / math.pi - s), 0.0), self.T)
        else:
            self.t_clip = self.T

    # ----------------------------------------------------------- schedule
    def _u(self, t):
        return (t / self.T + self.s) / (1.0 + self.s) * (math.pi / 2)

    def _beta(self, t: float) -> float:
        if self.schedule == "linear":
            return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)
        if t >= self.t_clip:
            return self.beta_max
        return min(math.pi / (self.T * (1.0 + self.s)) * math.tan(self._u(t)), self.beta_max)

    def _Lambda(self, s: float, t: float) -> float:
        r""":math:`\int_s^t \beta(u) du` in closed form."""
        if self.schedule == "linear":
            return self.beta_min * (t - s) + (self.beta_max - self.beta_min) * (t - s) * (t + s) / (2.0 * self.T)
        a, b = min(s, self.t_clip), min(t, self.t_clip)
        lam = self.beta_max * (max(t, self.t_clip) - max(s, self.t_clip))
        if b > a:
            ua, ub = self._u(a), self._u(b)
            # cos ua - cos ub = 2 sin((ua+ub)/2) sin((ub-ua)/2): no cancellation for b close to a
            lam += 2.0 * math.log1p(2.0 * math.sin(0.5 * (ua + ub)) * math.sin(0.5 * (ub - ua)) / math.cos(ub))
        return lam

    def beta(self, t) -> torch.Tensor:
        r""":math:`\beta(t)` of the SDE actually integrated (vectorised over ``t``), float64."""
        tt = self._times(t)
        if self.schedule == "linear":
            return self.beta_min + (tt / self.T) * (self.beta_max - self.beta_min)
        raw = math.pi / (self.T * (1.0 + self.s)) * torch.tan(self._u(torch.clamp(tt, max=self.t_clip)))
        return torch.where(tt >= self.t_clip, torch.full_like(tt, self.beta_max), raw.clamp(max=self.beta_max))

    def alpha_bar(self, t) -> torch.Tensor:
        r""":math:`\bar\alpha(t) = \exp(-\int_0^t \beta)` (vectorised over ``t``), float64; ``transition(0, t)``
        has :math:`\Phi = \sqrt{\bar\alpha(t)} I` and :math:`Q = (1 - \bar\alpha(t)) I`."""
        tt = self._times(t)
        if self.schedule == "linear":
            return torch.exp(-(self.beta_min * tt + (self.beta_max - self.beta_min) * tt * tt / (2.0 * self.T)))
        tc = torch.clamp(tt, max=self.t_clip)
        ab = (torch.cos(self._u(tc)) / math.cos(self._u(0.0))) ** 2
        return ab * torch.exp(-self.beta_max * torch.clamp(tt - self.t_clip, min=0.0))

    def marginal_coefficients(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\sqrt{\bar\alpha(t)},\ 1 - \bar\alpha(t))` for a tensor of times, float64 (vectorised)."""
        ab = self.alpha_bar(t)
        return ab.sqrt(), 1.0 - ab

    def _times(self, t) -> torch.Tensor:
        tt = as_tensor(t, "t").to(DTYPE)
        if ((tt < 0) | (tt > self.T)).any():
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]")
        return tt

    # ------------------------------------------------------ LinearSDE hooks
    def _k(self, t: float) -> float:
        return -0.5 * self._beta(t)

    def _g(self, t: float) -> float:
        return math.sqrt(self._beta(t))

    def _phi_q(self, s: float, t: float) -> Tuple[float, float]:
        lam = self._Lambda(s, t)
        return math.exp(-0.5 * lam), -math.expm1(-lam)

    def __repr__(self) -> str:
        if self.schedule == "linear":
            return f"VP(dim={self.dim}, schedule='linear', beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"
        return f"VP(dim={self.dim}, schedule='cosine', beta_max={self.beta_max}, s={self.s}, T={self.T})"


class SubVP(VP):
    r"""Sub-variance-preserving SDE (Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 34):

    .. math::  dX_t = -\tfrac12 \beta(t) X_t\,dt + \sqrt{\beta(t)\big(1 - e^{-2\Lambda(0, t)}\big)}\,dW_t,
               \qquad \Lambda(s, t) = \int_s^t \beta(u)\,du,

    on the schedules of :class:`VP`. Its kernel has the VP mean and a smaller variance: with
    :math:`A_u = \Lambda(0, u)` and :math:`\lambda = \Lambda(s, t)`,

    .. math::  X_t \mid X_s = x \sim \mathcal N\Big(e^{-\lambda/2} x,\;
               \big(1 - e^{-\lambda}\big)\big(1 - e^{-(A_s + A_t)}\big) I\Big),

    since :math:`q(s,t) = e^{-A_t}\int_s^t e^{A_u}\beta(u)(1 - e^{-2A_u})\,du = e^{-A_t}[e^{A} + e^{-A}]_{A_s}^{A_t}`;
    from 0 it is :math:`(1 - \bar\alpha(t))^2`, below VP's :math:`1 - \bar\alpha(t)` (evaluated with ``expm1``).
    """

    def _g(self, t: float) -> float:
        return math.sqrt(self._beta(t) * -math.expm1(-2.0 * self._Lambda(0.0, t)))

    def _phi_q(self, s: float, t: float) -> Tuple[float, float]:
        lam = self._Lambda(s, t)
        both = self._Lambda(0.0, s) + self._Lambda(0.0, t)
        return math.exp(-0.5 * lam), math.expm1(-lam) * math.expm1(-both)

    def marginal_coefficients(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\sqrt{\bar\alpha(t)},\ (1 - \bar\alpha(t))^2)` for a tensor of times, float64 (vectorised)."""
        ab = self.alpha_bar(t)
        return ab.sqrt(), (1.0 - ab) ** 2

    def __repr__(self) -> str:
        return "Sub" + super().__repr__()
