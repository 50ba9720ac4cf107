r"""The `LinearSDE` interface: linear reference SDEs with exact Gaussian transition kernels.

Every process in :mod:`controlsamp.processes` is a linear (affine) Itô SDE on :math:`[0, T]`,

.. math::  dX_t = \big(A(t) X_t + a(t)\big)\,dt + G(t)\,dW_t,

with :math:`X_t \in \mathbb{R}^{\mathrm{dim}}` and :math:`W` an :math:`m`-dimensional Brownian motion.
Its transition kernel is Gaussian (e.g. Särkkä & Solin 2019, *Applied Stochastic Differential
Equations*, ch. 6):

.. math::  X_t \mid X_s = x \sim \mathcal N(\Phi(t, s)\,x + c(s, t),\; Q(s, t)),

where :math:`\partial_t \Phi = A \Phi` (:math:`\Phi(s, s) = I`), :math:`c = \int_s^t \Phi(t, u) a(u) du` and
:math:`Q = \int_s^t \Phi(t, u) G G^\top(u) \Phi(t, u)^\top du`. Subclasses give these in closed form
(``transition``); the marginal law from a Gaussian start, exact sampling of the marginal and of whole
paths, and the torchsde wrapper are shared and live here once.

Conventions (docs/architecture.md): time runs forward, batch-first ``(n, dim)`` tensors, exact formulas in
float64; inputs may be numpy arrays or tensors, outputs are tensors.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Tuple

import torch

from .._linalg import symmetrize, sym_sqrt
from .._validate import (DTYPE, as_points, as_tensor, check_dim, check_nonnegative, check_points, check_positive,
                         check_square, check_symmetric, check_time, check_vector, on_cpu)

__all__ = ["LinearSDE", "IsotropicLinearSDE", "TorchSDE", "lti_transition"]


def lti_transition(A: torch.Tensor, D: torch.Tensor, h: float) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Kernel of the time-invariant SDE :math:`dX = A X dt + G dW`, :math:`D = G G^\top`, over a time ``h``.

    Returns :math:`\Phi = e^{hA}` and :math:`Q = \int_0^h e^{uA} D e^{uA^\top} du` in float64, by Van Loan's
    block-matrix exponential (Van Loan 1978, "Computing integrals involving the matrix exponential"):
    :math:`\exp\big(h\,[[-A, D], [0, A^\top]]\big) = [[F_{11}, F_{12}], [0, F_{22}]]` gives
    :math:`\Phi = F_{22}^\top` and :math:`Q = F_{22}^\top F_{12}`. Because the block :math:`-A` grows like
    :math:`e^{h\|A\|}`, the exponential is taken over :math:`h / 2^k` with :math:`h\|A\| / 2^k \le 1/2`,
    and the result is doubled back with :math:`\Phi(2h) = \Phi(h)^2`,
    :math:`Q(2h) = \Phi(h) Q(h) \Phi(h)^\top + Q(h)` (Chapman–Kolmogorov), which is stable for any ``h``.
    ``A`` and ``D`` may be numpy arrays, lists or tensors (square, same size, finite); ``h >= 0``.
    """
    A = check_square(A, "A")
    n = A.shape[0]
    D = check_square(D, "D", n)
    h = check_nonnegative(h, "h")
    norm = float(torch.linalg.matrix_norm(A, ord=1)) * float(h)
    k = 0
    while norm > 0.5 and k < 200:
        norm *= 0.5
        k += 1
    hk = float(h) / 2.0 ** k
    block = torch.zeros(2 * n, 2 * n, dtype=DTYPE)
    block[:n, :n] = -A
    block[:n, n:] = D
    block[n:, n:] = A.T
    F = torch.linalg.matrix_exp(hk * block)
    Phi = F[n:, n:].T.contiguous()
    Q = symmetrize(Phi @ F[:n, n:])
    for _ in range(k):
        Q = symmetrize(Phi @ Q @ Phi.T + Q)
        Phi = Phi @ Phi
    return Phi, Q


class LinearSDE(ABC):
    r"""A linear SDE :math:`dX_t = (A(t) X_t + a(t))\,dt + G(t)\,dW_t` on :math:`[0, T]` with a Gaussian kernel.

    Subclasses define ``drift_matrix`` (:math:`A(t)`, ``(dim, dim)``), ``diffusion`` (:math:`G(t)`,
    ``(dim, noise_dim)``), optionally ``drift_offset`` (:math:`a(t)`, default 0), and ``transition`` in
    closed form. Everything else (``drift``, ``marginal``, ``sample_marginal``, ``sample_path``,
    ``sde``) is derived here.

    Attributes:
        dim: state dimension (for CLD the phase-space dimension ``2 * data_dim``).
        noise_dim: number of Brownian channels :math:`m`.
        T: time horizon.
        diagonal_noise: whether :math:`G(t)` is square and diagonal (torchsde ``noise_type='diagonal'``).
    """

    dim: int
    noise_dim: int
    T: float
    diagonal_noise: bool = False

    def __init__(self, dim: int, T: float = 1.0, noise_dim: Optional[int] = None):
        self.dim = check_dim(dim, "dim")
        self.T = check_positive(T, "T")
        self.noise_dim = self.dim if noise_dim is None else check_dim(noise_dim, "noise_dim")

    # ------------------------------------------------------------------ checks
    def _time(self, t, name: str = "t") -> float:
        return check_time(t, self.T, name)

    def _interval(self, s, t) -> Tuple[float, float]:
        s = self._time(s, "s")
        t = self._time(t, "t")
        if s > t:
            raise ValueError(f"s must be <= t; got s = {s} > t = {t}")
        return s, t

    # ------------------------------------------------------------ coefficients
    @abstractmethod
    def drift_matrix(self, t) -> torch.Tensor:
        r""":math:`A(t)`, shape ``(dim, dim)``, float64."""

    def drift_offset(self, t) -> torch.Tensor:
        r""":math:`a(t)`, shape ``(dim,)``, float64 (zero unless a subclass says otherwise)."""
        self._time(t)
        return torch.zeros(self.dim, dtype=DTYPE)

    @abstractmethod
    def diffusion(self, t) -> torch.Tensor:
        r""":math:`G(t)`, shape ``(dim, noise_dim)``, float64."""

    def diffusion_cov(self, t) -> torch.Tensor:
        r""":math:`G(t) G(t)^\top`, shape ``(dim, dim)``, float64."""
        G = self.diffusion(t)
        return G @ G.T

    def diffusion_diag(self, t) -> torch.Tensor:
        r"""The diagonal of :math:`G(t)` (only meaningful when ``diagonal_noise``), shape ``(dim,)``."""
        return torch.diagonal(self.diffusion(t)).clone()

    def _check_x(self, x, name: str = "x") -> torch.Tensor:
        return as_points(x, name, self.dim)

    def drift(self, t, x) -> torch.Tensor:
        r"""The drift :math:`f(t, x) = x A(t)^\top + a(t)` for a batch ``x`` of shape ``(n, dim)``.

        ``t`` is a scalar in :math:`[0, T]`; the result has the dtype and device of ``x`` (float32 or
        float64) and is differentiable with respect to ``x``.
        """
        x = self._check_x(x)
        A = self.drift_matrix(t).to(dtype=x.dtype, device=x.device)
        a = self.drift_offset(t).to(dtype=x.dtype, device=x.device)
        return x @ A.T + a

    # ------------------------------------------------------------------ kernel
    @abstractmethod
    def transition(self, s, t) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Kernel from time ``s`` to ``t`` (:math:`0 \le s \le t \le T`): returns float64 ``(Phi, c, Q)`` with
        :math:`X_t \mid X_s = x \sim \mathcal N(\Phi x + c, Q)`."""

    @on_cpu
    def marginal(self, t, mean0, cov0=None) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""Law of :math:`X_t` when :math:`X_0 \sim \mathcal N(m_0, S_0)`: mean :math:`\Phi m_0 + c`,
        covariance :math:`\Phi S_0 \Phi^\top + Q` (with :math:`(\Phi, c, Q)` = ``transition(0, t)``).

        ``mean0`` is ``(dim,)`` (or a batch ``(n, dim)`` of start points, giving means ``(n, dim)``);
        ``cov0=None`` means a deterministic start (:math:`S_0 = 0`); otherwise a PSD ``(dim, dim)`` matrix.
        Returns float64 ``(mean, cov)``.
        """
        t = self._time(t)
        m0 = self._mean0(mean0)
        Phi, c, Q = self.transition(0.0, t)
        mean = m0 @ Phi.T + c
        cov = Q
        if cov0 is not None:
            S0 = check_symmetric(cov0, "cov0", self.dim, psd=True)
            cov = symmetrize(Phi @ S0 @ Phi.T + Q)
        return mean, cov

    def _mean0(self, mean0) -> torch.Tensor:
        m0 = as_tensor(mean0, "mean0")
        if m0.ndim == 2:
            if m0.shape[1] != self.dim:
                raise ValueError(f"mean0 must have shape ({self.dim},) or (n, {self.dim}); got {tuple(m0.shape)}")
            return m0
        return check_vector(m0, "mean0", self.dim)

    @staticmethod
    def _check_n(n) -> int:
        return check_dim(n, "n")

    @on_cpu
    def sample_marginal(self, t, n: int, mean0, cov0=None,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
        r"""``n`` exact samples of :math:`X_t` from :math:`X_0 \sim \mathcal N(m_0, S_0)`, shape ``(n, dim)``, float64.

        ``mean0`` may also be a batch of ``n`` start points ``(n, dim)`` (one sample from each).
        The covariance is factored by its symmetric square root, so degenerate covariances
        (a point start at ``t = 0``, the position block of CLD at small ``t``) are fine.
        """
        n = self._check_n(n)
        mean, cov = self.marginal(t, mean0, cov0)
        if mean.ndim == 2 and mean.shape[0] != n:
            raise ValueError(f"mean0 holds {mean.shape[0]} start points but n = {n}")
        z = torch.randn(n, self.dim, dtype=DTYPE, generator=generator)
        return mean + z @ sym_sqrt(cov).T

    @on_cpu
    def sample_path(self, ts, x0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        r"""Exact samples of :math:`(X_{t_1}, \dots, X_{t_K})` given :math:`X_0 = x_0`, shape ``(n, K, dim)``, float64.

        ``ts`` is a strictly increasing grid in :math:`[0, T]` (its first entry may exceed 0; the first
        step then starts from time 0). Each step draws
        :math:`X_{t_k} = \Phi X_{t_{k-1}} + c + Q^{1/2} \xi_k` from the exact kernel, so there is no
        discretisation error.
        """
        x = check_points(x0, "x0", self.dim)
        ts_t = as_tensor(ts, "ts")
        if ts_t.ndim == 0:
            ts_t = ts_t.reshape(1)
        if ts_t.ndim != 1 or ts_t.numel() == 0:
            raise ValueError(f"ts must be a non-empty 1-d grid of times; got shape {tuple(ts_t.shape)}")
        grid = [float(v) for v in ts_t]
        for i, v in enumerate(grid):
            if not 0.0 <= v <= self.T:
                raise ValueError(f"ts must lie in [0, T] = [0, {self.T}]; ts[{i}] = {v}")
            if i and v <= grid[i - 1]:
                raise ValueError(f"ts must be strictly increasing; ts[{i}] = {v} <= ts[{i - 1}] = {grid[i - 1]}")
        out = torch.empty(x.shape[0], len(grid), self.dim, dtype=DTYPE)
        prev = 0.0
        for k, tk in enumerate(grid):
            Phi, c, Q = self.transition(prev, tk)
            z = torch.randn(x.shape[0], self.dim, dtype=DTYPE, generator=generator)
            x = x @ Phi.T + c + z @ sym_sqrt(Q).T
            out[:, k] = x
            prev = tk
        return out

    # ---------------------------------------------------------------- torchsde
    def sde(self) -> "TorchSDE":
        """An ``nn.Module`` for ``torchsde.sdeint`` (Itô; ``noise_type`` 'diagonal' or 'general')."""
        return TorchSDE(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, T={self.T})"


class IsotropicLinearSDE(LinearSDE):
    r"""A linear SDE with scalar coefficients, :math:`dX = k(t) X dt + g(t) dW` with :math:`X, W \in \mathbb R^{dim}`.

    Then :math:`A = k(t) I`, :math:`G = g(t) I` and the kernel is :math:`\mathcal N(\phi(s,t) x, q(s,t) I)`
    with :math:`\phi = e^{\int_s^t k}` and :math:`q = \int_s^t \phi(u,t)^2 g(u)^2 du`. The public ``k(t)``,
    ``g(t)`` and ``kernel(s, t)`` check their times; subclasses implement ``_k(t)``, ``_g(t)`` and
    ``_phi_q(s, t)`` as floats.
    """

    diagonal_noise = True

    @abstractmethod
    def _k(self, t: float) -> float:
        """k(t)."""

    @abstractmethod
    def _g(self, t: float) -> float:
        """g(t)."""

    @abstractmethod
    def _phi_q(self, s: float, t: float) -> Tuple[float, float]:
        """phi(s, t) and q(s, t)."""

    def k(self, t) -> float:
        r"""The drift coefficient :math:`k(t)` (a float), for ``t`` in :math:`[0, T]`."""
        return float(self._k(self._time(t)))

    def g(self, t) -> float:
        r"""The diffusion coefficient :math:`g(t)` (a float), for ``t`` in :math:`[0, T]`."""
        return float(self._g(self._time(t)))

    def kernel(self, s, t) -> Tuple[float, float]:
        r"""The scalar kernel :math:`(\phi(s, t), q(s, t))` of :math:`X_t \mid X_s = x \sim \mathcal N(\phi x, q I)`,
        :math:`0 \le s \le t \le T`; :math:`(1, 0)` when ``s == t``."""
        s, t = self._interval(s, t)
        if t == s:
            return 1.0, 0.0
        phi, q = self._phi_q(s, t)
        return float(phi), float(q)

    def marginal_coefficients(self, t) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""The kernel from time 0 for a tensor of times: :math:`(\phi(0, t), q(0, t))`, float64, each the shape
        of ``t``, so that :math:`X_t \mid X_0 = x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I)` with
        :math:`\alpha_t = \phi(0, t)` and :math:`\sigma_t^2 = q(0, t)` (the perturbation kernel of denoising
        score matching). Subclasses with a vectorised closed form override this loop."""
        tt = self._times_tensor(t)
        rows = [self.kernel(0.0, float(v)) for v in tt.reshape(-1)]
        phi = torch.tensor([r[0] for r in rows], dtype=DTYPE).reshape(tt.shape)
        q = torch.tensor([r[1] for r in rows], dtype=DTYPE).reshape(tt.shape)
        return phi, q

    def _times_tensor(self, t) -> torch.Tensor:
        tt = as_tensor(t, "t").to(DTYPE)
        if not bool(torch.isfinite(tt).all()) or bool(((tt < 0) | (tt > self.T)).any()):
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]")
        return tt

    def drift_matrix(self, t) -> torch.Tensor:
        return self._k(self._time(t)) * torch.eye(self.dim, dtype=DTYPE)

    def diffusion(self, t) -> torch.Tensor:
        return self._g(self._time(t)) * torch.eye(self.dim, dtype=DTYPE)

    def diffusion_diag(self, t) -> torch.Tensor:
        return torch.full((self.dim,), self._g(self._time(t)), dtype=DTYPE)

    def drift(self, t, x) -> torch.Tensor:
        x = self._check_x(x)
        return self._k(self._time(t)) * x

    def transition(self, s, t) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, t = self._interval(s, t)
        phi, q = self._phi_q(s, t)
        eye = torch.eye(self.dim, dtype=DTYPE)
        return phi * eye, torch.zeros(self.dim, dtype=DTYPE), q * eye


class TorchSDE(torch.nn.Module):
    r"""Wraps a :class:`LinearSDE` for ``torchsde.sdeint``: Itô, ``f(t, y) = A(t) y + a(t)``, ``g(t, y) = G(t)``.

    ``noise_type`` is ``'diagonal'`` when :math:`G` is square and diagonal (``g`` returns ``(n, dim)``),
    else ``'general'`` (``g`` returns ``(n, dim, noise_dim)``; use a Brownian motion of size
    ``(n, brownian_size)``). Outputs follow the dtype and device of ``y``. Times are clamped to
    :math:`[0, T]` so that a float32 time grid ending at a rounded-up ``T`` is accepted.
    """

    sde_type = "ito"

    def __init__(self, process: LinearSDE):
        super().__init__()
        self.process = process
        self.noise_type = "diagonal" if process.diagonal_noise else "general"
        self.brownian_size = process.noise_dim

    def _t(self, t) -> float:
        return min(max(float(t), 0.0), self.process.T)

    def f(self, t, y: torch.Tensor) -> torch.Tensor:
        return self.process.drift(self._t(t), y)

    def g(self, t, y: torch.Tensor) -> torch.Tensor:
        tt = self._t(t)
        if self.noise_type == "diagonal":
            return self.process.diffusion_diag(tt).to(dtype=y.dtype, device=y.device).expand(y.shape[0], -1)
        G = self.process.diffusion(tt).to(dtype=y.dtype, device=y.device)
        return G.expand(y.shape[0], -1, -1)
