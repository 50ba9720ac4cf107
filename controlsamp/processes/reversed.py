r"""The linear part of a reference's reverse-time SDE: :math:`dY_s = -k(T-s) Y_s\,ds + g(T-s)\,dW_s`."""
from __future__ import annotations

from typing import Tuple

from .._validate import check_nonnegative
from .base import IsotropicLinearSDE

__all__ = ["Reversed"]


class Reversed(IsotropicLinearSDE):
    r"""The isotropic linear SDE of ``process`` read backwards in time, in :math:`s = T - t`:

    .. math:: dY_s = -k(T - s)\,Y_s\,ds + g(T - s)\,dW_s, \qquad s \in [0, T - t_{\min}].

    This is the reverse-time SDE of the reference (Anderson 1982; Song et al. 2021, eq. 6)
    :math:`dY = [-k Y + g^2 \nabla\log p_{T-s}(Y)]\,ds + g\,dW` *without its score term*: a generative
    sampler is this process controlled by :math:`u = g\,\nabla\log p`, so the package's Gaussian schemes
    (:mod:`controlsamp.sde.schemes`) and its one rollout integrate the reverse SDE unchanged. (It is not the
    time reversal of the reference's own path law, which :class:`~controlsamp.sde.DiscretisedReference`
    builds with ``reverse=True`` for a stationary start.) The horizon is :math:`T - t_{\min}`, so the
    grid stops at the original time :math:`t_{\min}` (where a score model stops being trained).

    Kernel. With :math:`(\phi_f, q_f) = ` ``process.kernel(T - t, T - s)``, the linear ODE runs the original
    flow backwards, :math:`\phi(s, t) = 1/\phi_f`, and
    :math:`q(s, t) = \int \phi(r, t)^2 g(T - r)^2 dr = q_f / \phi_f^2` (substitute :math:`u = T - r` and
    use :math:`\phi_f(T-t, T-s) = \phi_f(T-t, u)\,\phi_f(u, T-s)`). The exponential scheme thus takes
    the linear part exactly, as the exponential integrators of diffusion models do (Zhang & Chen 2023,
    "Fast sampling of diffusion models with exponential integrator").

    Args:
        process: an isotropic linear process (VP, VE, OU, Brownian) on :math:`[0, T]`.
        t_min: the original time at which the reversed process stops (``0 <= t_min < T``).
    """

    def __init__(self, process: IsotropicLinearSDE, t_min: float = 0.0):
        if not isinstance(process, IsotropicLinearSDE):
            raise ValueError("process must be an isotropic linear SDE of controlsamp.processes (Brownian, OU, VP, "
                             f"VE); got {type(process).__name__}")
        t_min = check_nonnegative(t_min, "t_min")
        if not t_min < process.T:
            raise ValueError(f"t_min must be below the process's horizon T = {process.T}; got {t_min}")
        super().__init__(process.dim, process.T - t_min)
        self.process, self.t_min, self.T_orig = process, t_min, float(process.T)

    def original_time(self, s) -> float:
        """t = T_orig - s, clamped to [t_min, T_orig]."""
        return min(max(self.T_orig - float(s), self.t_min), self.T_orig)

    def _k(self, s: float) -> float:
        return -self.process._k(self.original_time(s))

    def _g(self, s: float) -> float:
        return self.process._g(self.original_time(s))

    def _phi_q(self, s: float, t: float) -> Tuple[float, float]:
        phi, q = self.process.kernel(self.original_time(t), self.original_time(s))
        return 1.0 / phi, q / (phi * phi)

    def __repr__(self) -> str:
        return f"Reversed({self.process!r}, t_min={self.t_min})"
