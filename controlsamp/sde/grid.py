r"""A fixed-step integrator for controlled isotropic linear SDEs that records per-step Gaussian log-densities.

The samplers' off-policy losses need, for a path :math:`x_0, \dots, x_K` on the grid
:math:`t_i = i h`, the log-density of each step under the model and under the reference. For a reference

.. math:: dX_t = k(t) X_t\,dt + g(t)\,dW_t, \qquad X_0 \sim \mathcal N(0, v_0 I)\ (v_0 = 0: the origin),

with exact kernel :math:`X_{t_{i+1}} \mid X_{t_i} = x \sim \mathcal N(\phi_i x, q_i I)`, and the controlled
process :math:`dX = (k X + g\,u)\,dt + g\,dW`, one step of the model is Gaussian,
:math:`x_{i+1} \sim \mathcal N(a_i x_i + b_i u_i, v_i I)`, with

* ``"euler"`` (Euler–Maruyama): :math:`a_i = 1 + k(t_i) h`, :math:`b_i = g(t_i) h`, :math:`v_i = g(t_i)^2 h`;
* ``"exponential"`` (the exponential integrator of DDS, Vargas et al. 2023: the linear part exactly, the
  control held constant over the step): :math:`a_i = \phi_i`, :math:`b_i = \int_{t_i}^{t_{i+1}}
  \phi(s, t_{i+1}) g(s)\,ds` (Gauss–Legendre), :math:`v_i = q_i`.

For the Brownian reference both coincide. The reference's time reversal is Gaussian too: with the
reference marginal variances :math:`w_{i+1} = \phi_i^2 w_i + q_i`, :math:`w_0 = v_0`,

.. math:: x_i \mid x_{i+1} \sim \mathcal N\big(\phi_i w_i / w_{i+1}\; x_{i+1},\; w_i q_i / w_{i+1}\, I\big),

which generates the backward (off-policy) paths from terminal samples.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..processes import IsotropicLinearSDE

Tensor = torch.Tensor
METHODS = ("euler", "exponential")


class ReferenceGrid:
    r"""Per-step scalars of an isotropic linear reference on a uniform grid of ``steps`` steps.

    Args:
        process: an :class:`~controlsamp.processes.IsotropicLinearSDE` (Brownian, OU, VP).
        steps: number of steps K.
        scale: multiplies the process (X -> scale X): g, b scale by ``scale``, q and variances by its square.
        v0: variance of the (centred) initial law; 0 for a start at the origin.
        method: ``"euler"`` or ``"exponential"`` (see the module docstring).
        reverse: describe the time reversal s = T - t of ``process`` (stationary start only, see below).

    With ``reverse=True`` the grid describes the process :math:`Y_s = X_{T-s}` for a process started in its
    stationary law N(0, v0 I); the time reversal of a stationary isotropic linear SDE has the same kernels
    read backward (detailed balance of the Gaussian stationary law; its drift is
    :math:`-k y - g^2 y / v_\infty = k(T-s) y` since :math:`g^2 = -2 k v_\infty`), so :math:`\phi_i` and :math:`q_i` are
    those of the interval :math:`[T - t_{i+1}, T - t_i]`, and :math:`k, g` are evaluated at :math:`T - t`.
    It raises if v0 is not the stationary variance.
    """

    def __init__(self, process: IsotropicLinearSDE, steps: int, scale: float = 1.0, v0: float = 0.0,
                 method: str = "exponential", reverse: bool = False, quad_nodes: int = 8):
        if not isinstance(process, IsotropicLinearSDE):
            raise ValueError(f"process must be an isotropic linear SDE (Brownian, OU, VP); got {type(process).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        self.process, self.K, self.T, self.dim = process, int(steps), process.T, process.dim
        self.h, self.method, self.scale, self.reverse = self.T / self.K, method, float(scale), bool(reverse)
        T, h, K = self.T, self.h, self.K
        nodes, weights = np.polynomial.legendre.leggauss(quad_nodes)

        def k_(t):  # the reversal of a stationary isotropic SDE has drift k(T - s) y (see the docstring)
            return process._k(T - t) if reverse else process._k(t)

        def g_(t):
            return process._g(T - t) if reverse else process._g(t)

        def phi_q(s, t):
            return process._phi_q(T - t, T - s) if reverse else process._phi_q(s, t)

        self._k_fn, self._g_fn = k_, g_
        self.t = [i * h for i in range(K + 1)]
        k, g, phi, q, gamma = [], [], [], [], []
        for i in range(K):
            s, t = self.t[i], self.t[i + 1]
            k.append(k_(s))
            g.append(g_(s) * self.scale)
            p, qq = phi_q(s, t)
            phi.append(p)
            q.append(qq * self.scale ** 2)
            mid, half = 0.5 * (s + t), 0.5 * (t - s)
            gamma.append(self.scale * half * sum(w * phi_q(mid + half * x, t)[0] * g_(mid + half * x)
                                                 for x, w in zip(nodes, weights)))
        f64 = dict(dtype=torch.float64)
        self.k, self.g = torch.tensor(k, **f64), torch.tensor(g, **f64)
        self.phi, self.q = torch.tensor(phi, **f64), torch.tensor(q, **f64)
        if method == "euler":
            self.a, self.b, self.v = 1.0 + self.k * h, self.g * h, self.g ** 2 * h
        else:
            self.a, self.b, self.v = self.phi, torch.tensor(gamma, **f64), self.q
        w = [float(v0)]
        for i in range(K):
            w.append(float(self.phi[i]) ** 2 * w[-1] + float(self.q[i]))
        self.w = torch.tensor(w, **f64)
        if reverse and abs(self.w[-1] - v0) > 1e-6 * max(v0, 1e-12) + 1e-9:
            raise ValueError("reverse=True needs v0 equal to the process's stationary variance (scale^2 times it); "
                             f"the variance drifts from {v0} to {float(self.w[-1])}")

    def k_at(self, t: float) -> float:
        """k(t) of the (possibly reversed) reference at any t in [0, T]."""
        return self._k_fn(min(max(float(t), 0.0), self.T))

    def g_at(self, t: float) -> float:
        """g(t) (times ``scale``) at any t in [0, T]."""
        return self.scale * self._g_fn(min(max(float(t), 0.0), self.T))

    # ------------------------------------------------------------------ laws
    @property
    def v0(self) -> float:
        return float(self.w[0])

    def sample_x0(self, n: int, generator=None, device=None, dtype=torch.float32) -> Tensor:
        x = torch.zeros(n, self.dim, device=device, dtype=dtype)
        if self.v0 > 0:
            x = math.sqrt(self.v0) * torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        return x

    def terminal_log_prob(self, x: Tensor) -> Tensor:
        r"""log p^ref_T(x) = log N(x; 0, w_K I), (n,), float64."""
        wK = float(self.w[-1])
        x = x.double()
        return -0.5 * (x * x).sum(1) / wK - 0.5 * self.dim * math.log(2 * math.pi * wK)

    def terminal_score(self, x: Tensor) -> Tensor:
        return -x / float(self.w[-1])

    # ------------------------------------------------------------------ steps
    def drift(self, i: int, x: Tensor, u: Tensor) -> Tensor:
        """The controlled drift k(t_i) x + g(t_i) u."""
        return float(self.k[i]) * x + float(self.g[i]) * u

    def mean(self, i, x: Tensor, u: Tensor) -> Tensor:
        """Model step mean a_i x + b_i u; ``i`` an int or a (K,) index tensor broadcast over x (n, K, d)."""
        a, b = self._coef(self.a, i, x), self._coef(self.b, i, x)
        return a * x + b * u

    def _coef(self, c: Tensor, i, x: Tensor):
        if isinstance(i, int):
            return float(c[i])
        return c[i.cpu()].to(device=x.device, dtype=x.dtype).reshape(-1, 1)

    def step_log_ratio(self, i, x: Tensor, x_next: Tensor, mean: Tensor) -> Tensor:
        r"""log N(x_next; phi_i x, q_i) - log N(x_next; mean, v_i), summed over coordinates, in float64.

        ``i`` an int (x of shape (n, d)) or an index tensor with x of shape (..., len(i), d)."""
        phi, q, v = (self._coef(c, i, x).double() if not isinstance(i, int) else float(c[i])
                     for c in (self.phi, self.q, self.v))
        xn, x, m = x_next.double(), x.double(), mean.double()
        if self.method == "exponential":  # v = q, a = phi: (d . (2e + d)) / 2q, no cancellation
            e, dlt = xn - m, m - phi * x
            return -(dlt * (2 * e + dlt)).sum(-1) / (2 * q) if isinstance(i, int) else \
                -(dlt * (2 * e + dlt)).sum(-1) / (2 * q.squeeze(-1))
        r_ref = ((xn - phi * x) ** 2).sum(-1)
        r_mod = ((xn - m) ** 2).sum(-1)
        if isinstance(i, int):
            return -0.5 * r_ref / q + 0.5 * r_mod / v - 0.5 * self.dim * math.log(q / v)
        q, v = q.squeeze(-1), v.squeeze(-1)
        return -0.5 * r_ref / q + 0.5 * r_mod / v - 0.5 * self.dim * torch.log(q / v)

    def backward_sample(self, xK: Tensor, generator=None) -> Tensor:
        """Paths (n, K+1, d) of the reference's time reversal ending at ``xK``."""
        xs = [xK]
        x = xK
        for i in reversed(range(self.K)):
            wi, wn = float(self.w[i]), float(self.w[i + 1])
            c, var = float(self.phi[i]) * wi / wn, wi * float(self.q[i]) / wn
            x = c * x
            if var > 0:
                x = x + math.sqrt(var) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            xs.append(x)
        return torch.stack(xs[::-1], 1)

    def simulate(self, control: Callable[[int, float, Tensor], Tensor], x0: Tensor, generator=None,
                 noise: Optional[Tensor] = None, explore: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Forward paths x_{i+1} = a_i x_i + b_i u_i + sqrt(v_i + explore^2 h) xi_i.

        ``control(i, t_i, x)`` returns u_i. ``noise`` (n, K, d): standard normal xi to reuse (same noise,
        same path). ``explore`` widens the step's noise (exploration of Sendera et al. 2024); the model's
        log-densities still use v_i. Returns xs (n, K+1, d), the means (n, K, d) and xi (n, K, d).
        """
        n, d = x0.shape
        if noise is None:
            noise = torch.randn(n, self.K, d, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != (n, self.K, d):
            raise ValueError(f"noise must have shape ({n}, {self.K}, {d}); got {tuple(noise.shape)}")
        xs, means, x = [x0], [], x0
        for i in range(self.K):
            m = self.mean(i, x, control(i, self.t[i], x))
            std = math.sqrt(float(self.v[i]) + explore ** 2 * self.h)
            x = m + std * noise[:, i]
            xs.append(x)
            means.append(m)
        return torch.stack(xs, 1), torch.stack(means, 1), noise

    def brownian_increments(self, noise: Tensor) -> Tensor:
        r"""The Brownian increments dW_i = sqrt(h) xi_i that drive the Euler step (for torchsde comparisons)."""
        return math.sqrt(self.h) * noise
