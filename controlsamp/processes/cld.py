r"""Critically-damped Langevin diffusion (CLD) of Dockhorn, Vahdat & Kreis (2022) in phase space (x, v)."""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch

from .._linalg import symmetrize
from .._validate import DTYPE, check_positive
from .base import LinearSDE, lti_transition

__all__ = ["CLD"]

_METHODS = ("auto", "closed", "expm")


class CLD(LinearSDE):
    r"""Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis 2022, "Score-Based Generative
    Modeling with Critically-Damped Langevin Diffusion", ICLR; eq. 5 and App. B).

    State :math:`y = (x, v) \in \mathbb R^{2d}`, **layout: the first** ``d`` **coordinates are x, the last**
    ``d`` **are v** (``dim = 2 * data_dim``). With mass :math:`M`, friction :math:`\Gamma` and a time scale
    :math:`\beta(t)` (a constant, or linear :math:`\beta_{\min} + (t/T)(\beta_{\max} - \beta_{\min})`):

    .. math::  dx = M^{-1}\beta\,v\,dt, \qquad
               dv = (-\beta x - \Gamma M^{-1}\beta\,v)\,dt + \sqrt{2\Gamma\beta}\,dW_t,

    i.e. :math:`dy = \beta(t) (A_0 \otimes I_d) y\,dt + (G_0 \otimes I_d)\sqrt{\beta(t)}\,dW` with
    :math:`A_0 = [[0, 1/M], [-1, -\Gamma/M]]`, :math:`G_0 = [0, \sqrt{2\Gamma}]^\top`,
    :math:`D_0 = G_0 G_0^\top = \mathrm{diag}(0, 2\Gamma)`. The stationary law is
    :math:`\mathcal N(0, \mathrm{diag}(I_d, M I_d))`. ``Gamma=None`` means critical damping
    :math:`\Gamma^2 = 4M`.

    Kernel. Since :math:`A(t) = \beta(t) A_0` and :math:`GG^\top = \beta(t) D_0`, the clock
    :math:`B = \int_s^t \beta(u) du` turns the process into a time-homogeneous one:
    :math:`\Phi = e^{B A_0} \otimes I_d`, :math:`Q = \int_0^B e^{u A_0} D_0 e^{u A_0^\top} du \otimes I_d`.

    * Critical damping (closed form; mean as in the authors' code, covariance derived in App. B and
      re-derived here from :math:`Q(B) = \Sigma_\infty - e^{BA_0}\Sigma_\infty e^{BA_0^\top}`), with
      :math:`g = 1/\Gamma`, :math:`z = 4gB`:

      .. math::  e^{BA_0} = e^{-2gB}\begin{pmatrix} 1 + 2gB & 4g^2B \\ -B & 1 - 2gB\end{pmatrix},

      .. math::  Q_{xx} = 1 - e^{-z}(1 + z + z^2/2) = P(3, z), \quad
                 Q_{xv} = 4gB^2 e^{-z}, \quad
                 Q_{vv} = M\big(-\mathrm{expm1}(-z) + e^{-z} z (1 - z/2)\big),

      with :math:`P` the regularised lower incomplete gamma function (so :math:`Q_{xx} \approx z^3/6`
      keeps full relative accuracy at small :math:`B`).
    * General :math:`\Gamma`: the 2x2 matrix exponential and Van Loan's block exponential for
      :math:`Q` (:func:`~controlsamp.processes.base.lti_transition`), in float64.

    Args:
        dim: data dimension ``d`` (the state has ``2 * dim`` coordinates).
        beta: a positive float, or a pair ``(beta_min, beta_max)`` for a linear schedule.
        M: mass (> 0); Dockhorn et al. use 0.25.
        Gamma: friction (> 0); ``None`` for critical damping :math:`2\sqrt M`.
        T: horizon.
    """

    def __init__(self, dim: int, beta: Union[float, Tuple[float, float]] = 4.0, M: float = 0.25,
                 Gamma: Optional[float] = None, T: float = 1.0):
        super().__init__(dim, T)  # validates dim as the data dimension
        self.data_dim = self.dim
        self.dim = 2 * self.data_dim
        self.noise_dim = self.data_dim
        if isinstance(beta, (tuple, list)):
            if len(beta) != 2:
                raise ValueError(f"beta must be a positive float or a pair (beta_min, beta_max); got {beta!r}")
            self.beta_min = check_positive(beta[0], "beta")
            self.beta_max = check_positive(beta[1], "beta")
            self.beta = (self.beta_min, self.beta_max)
        else:
            self.beta = self.beta_min = self.beta_max = check_positive(beta, "beta")
        self.M = check_positive(M, "M")
        if Gamma is None:
            self.Gamma = 2.0 * math.sqrt(self.M)
            self.critical = True
        else:
            self.Gamma = check_positive(Gamma, "Gamma")
            self.critical = math.isclose(self.Gamma ** 2, 4.0 * self.M, rel_tol=1e-13)
        self.A0 = torch.tensor([[0.0, 1.0 / self.M], [-1.0, -self.Gamma / self.M]], dtype=DTYPE)
        self.D0 = torch.tensor([[0.0, 0.0], [0.0, 2.0 * self.Gamma]], dtype=DTYPE)
        self._eye = torch.eye(self.data_dim, dtype=DTYPE)

    # ----------------------------------------------------------- schedule
    def beta_at(self, t) -> float:
        r""":math:`\beta(t)`."""
        t = self._time(t)
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def int_beta(self, s, t) -> float:
        r""":math:`B = \int_s^t \beta(u)\,du` for :math:`0 \le s \le t \le T`."""
        s, t = self._interval(s, t)
        return self.beta_min * (t - s) + (self.beta_max - self.beta_min) * (t - s) * (t + s) / (2.0 * self.T)

    # ------------------------------------------------------ coefficients
    def drift_matrix(self, t) -> torch.Tensor:
        return self.beta_at(t) * torch.kron(self.A0, self._eye)

    def diffusion(self, t) -> torch.Tensor:
        d = self.data_dim
        G = torch.zeros(2 * d, d, dtype=DTYPE)
        G[d:] = math.sqrt(2.0 * self.Gamma * self.beta_at(t)) * self._eye
        return G

    def diffusion_cov(self, t) -> torch.Tensor:
        return self.beta_at(t) * torch.kron(self.D0, self._eye)

    def drift(self, t, x) -> torch.Tensor:
        r""":math:`(\beta M^{-1} v,\; -\beta x - \beta\Gamma M^{-1} v)` for ``x = (x, v)`` of shape ``(n, 2d)``."""
        x = self._check_x(x)
        b = self.beta_at(t)
        d = self.data_dim
        pos, vel = x[:, :d], x[:, d:]
        return torch.cat([(b / self.M) * vel, -b * pos - (b * self.Gamma / self.M) * vel], dim=1)

    # ------------------------------------------------------------ kernel
    def _critical_kernel(self, B: float) -> Tuple[torch.Tensor, torch.Tensor]:
        g = 1.0 / self.Gamma
        z = 4.0 * g * B
        e = math.exp(-z)
        eh = math.exp(-0.5 * z)
        Phi = eh * torch.tensor([[1.0 + 2.0 * g * B, 4.0 * g * g * B], [-B, 1.0 - 2.0 * g * B]], dtype=DTYPE)
        qxx = float(torch.special.gammainc(torch.tensor(3.0, dtype=DTYPE), torch.tensor(z, dtype=DTYPE)))
        qxv = 4.0 * g * B * B * e
        qvv = self.M * (-math.expm1(-z) + e * z * (1.0 - 0.5 * z))
        Q = torch.tensor([[qxx, qxv], [qxv, qvv]], dtype=DTYPE)
        return Phi, Q

    def transition(self, s, t, method: str = "auto") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Exact kernel :math:`(\Phi, c, Q)` from ``s`` to ``t`` in phase space (float64, ``c = 0``).

        ``method``: ``"auto"`` (the closed form under critical damping, else the matrix exponential),
        ``"closed"`` (critical damping only) or ``"expm"`` (matrix exponential for any :math:`\Gamma`).
        """
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
        B = self.int_beta(s, t)
        if method == "closed" and not self.critical:
            raise ValueError(f"method='closed' needs critical damping Gamma^2 = 4M; got Gamma = {self.Gamma}, "
                             f"M = {self.M}")
        if method == "closed" or (method == "auto" and self.critical):
            Phi2, Q2 = self._critical_kernel(B)
        else:
            Phi2, Q2 = lti_transition(self.A0, self.D0, B)
        Phi = torch.kron(Phi2, self._eye)
        Q = symmetrize(torch.kron(Q2, self._eye))
        return Phi, torch.zeros(self.dim, dtype=DTYPE), Q

    def kernel_blocks(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""The 2x2 blocks of the kernel from time 0 for a tensor of times: :math:`e^{B A_0}` and
        :math:`Q(B)`, float64 of shape ``t.shape + (2, 2)``, with :math:`B = \int_0^t \beta` (the full kernel is
        the Kronecker product with :math:`I_d`). Vectorised under critical damping, a loop otherwise."""
        tt = torch.as_tensor(t, dtype=DTYPE)
        if not bool(torch.isfinite(tt).all()) or bool(((tt < 0) | (tt > self.T)).any()):
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]")
        if not self.critical:
            rows = [lti_transition(self.A0, self.D0, self.int_beta(0.0, float(v))) for v in tt.reshape(-1)]
            shape = tuple(tt.shape) + (2, 2)
            return (torch.stack([r[0] for r in rows]).reshape(shape) if rows else torch.zeros(shape, dtype=DTYPE),
                    torch.stack([r[1] for r in rows]).reshape(shape) if rows else torch.zeros(shape, dtype=DTYPE))
        B = self.beta_min * tt + (self.beta_max - self.beta_min) * tt * tt / (2.0 * self.T)
        g = 1.0 / self.Gamma
        z = 4.0 * g * B
        e, eh = torch.exp(-z), torch.exp(-0.5 * z)
        Phi = torch.stack([torch.stack([eh * (1.0 + 2.0 * g * B), eh * 4.0 * g * g * B], -1),
                           torch.stack([-eh * B, eh * (1.0 - 2.0 * g * B)], -1)], -2)
        qxx = torch.special.gammainc(torch.full_like(z, 3.0), z)
        qxv = 4.0 * g * B * B * e
        qvv = self.M * (-torch.expm1(-z) + e * z * (1.0 - 0.5 * z))
        Q = torch.stack([torch.stack([qxx, qxv], -1), torch.stack([qxv, qvv], -1)], -2)
        return Phi, Q

    def stationary_cov(self) -> torch.Tensor:
        r""":math:`\Sigma_\infty = \mathrm{diag}(I_d, M I_d)`."""
        return torch.kron(torch.diag(torch.tensor([1.0, self.M], dtype=DTYPE)), self._eye)

    def __repr__(self) -> str:
        return (f"CLD(dim={self.data_dim}, beta={self.beta}, M={self.M}, Gamma={self.Gamma}, T={self.T})")
