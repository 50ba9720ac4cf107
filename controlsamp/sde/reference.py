r"""`DiscretisedReference`: an isotropic linear reference process on a uniform grid, under one scheme.

For a reference :math:`dX_t = k(t) X_t\,dt + g(t)\,dW_t` (:mod:`controlsamp.processes`: Brownian, OU, VP,
VE), a number of steps K (:math:`t_i = i h`, :math:`h = T/K`) and a Gaussian scheme
(:mod:`controlsamp.sde.schemes`), the *discrete reference* is the Markov chain

.. math:: x_0 \sim \mathcal N(0, v_0 I),\qquad x_{i+1} = a_i x_i + \sqrt{v_i}\,\xi_i,

and the controlled chain adds :math:`b_i u_i` to the mean. The discrete reference's marginals are
:math:`\mathcal N(0, w_i I)` with :math:`w_{i+1} = a_i^2 w_i + v_i`, :math:`w_0 = v_0`, and its time reversal
is Gaussian too:

.. math:: x_i \mid x_{i+1} \sim \mathcal N\big(a_i w_i / w_{i+1}\; x_{i+1},\; w_i v_i / w_{i+1}\, I\big).

The target path law of a sampler is :math:`\pi(x_K)` times this reversal, so its importance weights use
:math:`\log p^{ref}_K = \log\mathcal N(\cdot; 0, w_K I)`; for the exponential scheme (and for Euler on a
Brownian reference) the chain is the continuous reference sampled exactly, for Euler on OU/VP it is the
Euler chain, whose :math:`w_K` differs from the continuous variance by O(h) — and the weights stay exact.

``scale`` multiplies the process (X -> scale X). With ``reverse=True`` the grid describes :math:`Y_s =
X_{T-s}` for a process started in its stationary law (variance ``v0``): the time reversal of a stationary
isotropic linear SDE is the same SDE with coefficients read at T - s (detailed balance), so its drift is
:math:`k(T-s) y` and its kernel from s to t is :math:`(\phi, q)(T-t, T-s)`.

Besides the step coefficients, the grid carries the continuous reference's kernels from 0 to each
:math:`t_i` and from :math:`t_i` to T (``phi0, q0, phiT, qT``), which the bridge samplers and ASBS use for
exact reference-bridge points.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple, Union

import torch

from ..processes import IsotropicLinearSDE
from .schemes import GaussianScheme, Scheme, get_scheme

Tensor = torch.Tensor
F64 = torch.float64


class _Reversal:
    """The time reversal s = T - t of a stationary isotropic linear process (see the module docstring)."""

    def __init__(self, process: IsotropicLinearSDE):
        self.process, self.T, self.dim = process, process.T, process.dim

    def k(self, t) -> float:
        return self.process.k(self.T - t)

    def g(self, t) -> float:
        return self.process.g(self.T - t)

    def kernel(self, s, t) -> Tuple[float, float]:
        return self.process.kernel(max(self.T - t, 0.0), min(self.T - s, self.T))


class _Scaled:
    """X -> c X: g scales by c, q by c^2."""

    def __init__(self, process, c: float):
        self.process, self.c, self.T, self.dim = process, float(c), process.T, process.dim

    def k(self, t) -> float:
        return self.process.k(t)

    def g(self, t) -> float:
        return self.c * self.process.g(t)

    def kernel(self, s, t) -> Tuple[float, float]:
        phi, q = self.process.kernel(s, t)
        return phi, self.c ** 2 * q


class DiscretisedReference:
    """An isotropic linear reference on a uniform grid of ``steps`` steps under a Gaussian ``scheme``.

    Args:
        process: an :class:`~controlsamp.processes.IsotropicLinearSDE` (Brownian, OU, VP, VE).
        steps: the number of steps K.
        scheme: ``"euler"``, ``"exponential"`` or a :class:`~controlsamp.sde.schemes.GaussianScheme`.
        scale: multiplies the process (g by ``scale``, variances by its square).
        v0: the variance of the centred Gaussian start (0: the origin).
        reverse: describe the time reversal of the process started in its stationary law (v0 must be the
            stationary variance, scale^2 times the process's).
        stationary_tol: relative tolerance of that check.
        grid_snap: a time within ``grid_snap`` steps below a grid point counts as that point in
            :meth:`step_index` (solver clocks carry round-off: float32 t = 0.2799999 for 0.28).

    Attributes (float64 tensors of length K unless said): ``k``, ``g`` (at the left end of each step),
    ``a``, ``b``, ``v`` (the step coefficients), ``w`` (K + 1 marginal variances of the discrete reference),
    ``phi0``, ``q0``, ``phiT``, ``qT`` (K + 1 continuous kernels from 0 to t_i and from t_i to T), ``t``
    (the K + 1 grid times, floats).
    """

    def __init__(self, process: IsotropicLinearSDE, steps: int, scheme: Union[str, Scheme] = "exponential",
                 scale: float = 1.0, v0: float = 0.0, reverse: bool = False, stationary_tol: float = 1e-6,
                 grid_snap: float = 1e-6):
        if not isinstance(process, IsotropicLinearSDE):
            raise ValueError("process must be an isotropic linear SDE of controlsamp.processes (Brownian, OU, VP, "
                             f"VE); got {type(process).__name__}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer; got {steps!r}")
        self.scheme: GaussianScheme = get_scheme(scheme, gaussian=True)
        self.process, self.K, self.T, self.dim = process, int(steps), float(process.T), process.dim
        self.h, self.scale, self.reverse = self.T / self.K, float(scale), bool(reverse)
        self.grid_snap = float(grid_snap)
        if not self.scale > 0:
            raise ValueError(f"scale must be positive; got {scale}")
        if not v0 >= 0:
            raise ValueError(f"v0 must be >= 0; got {v0}")
        law = _Scaled(_Reversal(process) if reverse else process, self.scale)
        self.law = law
        self.t = [min(i * self.h, self.T) for i in range(self.K + 1)]
        rows = [self.scheme.coefficients(law, self.t[i], self.t[i + 1]) for i in range(self.K)]
        self.a, self.b, self.v = (torch.tensor(c, dtype=F64) for c in zip(*rows))
        self.k = torch.tensor([law.k(s) for s in self.t[:-1]], dtype=F64)
        self.g = torch.tensor([law.g(s) for s in self.t[:-1]], dtype=F64)
        if (self.v <= 0).any():
            raise ValueError("every step of the reference must add noise (v_i > 0); g(t) vanishes on a step")
        w = [float(v0)]
        for i in range(self.K):
            w.append(float(self.a[i]) ** 2 * w[-1] + float(self.v[i]))
        self.w = torch.tensor(w, dtype=F64)
        if reverse:  # the continuous reversal needs the stationary start
            phi, q = law.kernel(0.0, self.T)
            w_cont = phi ** 2 * v0 + q
            if abs(w_cont - v0) > stationary_tol * max(v0, 1e-12) + 1e-12:
                raise ValueError("reverse=True needs v0 equal to the process's stationary variance (scale^2 times "
                                 f"it); from v0 = {v0} the variance moves to {w_cont}")
        ends = [law.kernel(0.0, t) for t in self.t], [law.kernel(t, self.T) for t in self.t]
        (self.phi0, self.q0), (self.phiT, self.qT) = ((torch.tensor(c, dtype=F64) for c in zip(*e)) for e in ends)
        # per-step Python floats for the rollout loop, tensors per (device, dtype) for vectorised use
        self._floats = {name: getattr(self, name).tolist() for name in ("a", "b", "v", "k", "g")}
        self._cache: Dict[tuple, Dict[str, Tensor]] = {}

    # ------------------------------------------------------------------ coefficients
    def floats(self, name: str) -> list:
        """The per-step coefficient ``name`` ("a", "b", "v", "k", "g") as Python floats."""
        return self._floats[name]

    def coef(self, name: str, device=None, dtype=F64) -> Tensor:
        """A coefficient tensor (float64 attribute ``name``) on ``device`` in ``dtype``, cached."""
        key = (name, str(device or "cpu"), dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=device, dtype=dtype)
        return self._cache[key]

    def k_at(self, t: float) -> float:
        """k(t) of the (scaled, possibly reversed) reference at any t in [0, T]."""
        return self.law.k(min(max(float(t), 0.0), self.T))

    def g_at(self, t: float) -> float:
        """g(t) of the (scaled, possibly reversed) reference at any t in [0, T]."""
        return self.law.g(min(max(float(t), 0.0), self.T))

    def step_index(self, t):
        """The step i whose interval [t_i, t_{i+1}) holds t (within ``grid_snap`` steps below a grid point
        counts as that point): an int for a float t, a long tensor for a tensor of times."""
        if isinstance(t, Tensor) and t.numel() > 1:
            return (t / self.h + self.grid_snap).floor().long().clamp(0, self.K - 1)
        return min(max(int(math.floor(float(t) / self.h + self.grid_snap)), 0), self.K - 1)

    # ------------------------------------------------------------------ laws
    @property
    def v0(self) -> float:
        return float(self.w[0])

    def sample_x0(self, n: int, generator=None, device=None, dtype=torch.float32) -> Tensor:
        """n draws of x_0 ~ N(0, v0 I), (n, d)."""
        if self.v0 == 0:
            return torch.zeros(n, self.dim, device=device, dtype=dtype)
        return math.sqrt(self.v0) * torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)

    def terminal_log_prob(self, x: Tensor) -> Tensor:
        r"""log p^ref_K(x) = log N(x; 0, w_K I), (n,), float64."""
        wK = float(self.w[-1])
        x = x.double()
        return -0.5 * (x * x).sum(-1) / wK - 0.5 * self.dim * math.log(2 * math.pi * wK)

    def terminal_score(self, x: Tensor) -> Tensor:
        """grad log p^ref_K(x) = -x / w_K."""
        return -x / float(self.w[-1])

    def bridge_coefficients(self, idx: Tensor, device=None, dtype=torch.float32) -> Tuple[Tensor, ...]:
        """Columns (n, 1) of phi0, q0, phiT, qT at grid indices ``idx`` (the continuous reference's kernels
        from 0 to t_idx and from t_idx to T), for exact reference-bridge points."""
        return tuple(self.coef(name, device, dtype)[idx].unsqueeze(-1) for name in ("phi0", "q0", "phiT", "qT"))

    def __repr__(self) -> str:
        return (f"DiscretisedReference({type(self.process).__name__}, steps={self.K}, scheme={self.scheme.name!r}, "
                f"scale={self.scale}, v0={self.v0}, reverse={self.reverse})")
