r"""Underdamped (kinetic) Langevin dynamics as pure init / step kernels, batched over chains.

Convention. Position :math:`x \in \mathbb R^d`, velocity :math:`v \in \mathbb R^d`, scalar mass
:math:`M > 0`, friction :math:`\gamma > 0`, target :math:`\pi \propto e^{-U}`:

.. math::  dx = M^{-1} v\,dt, \qquad
           dv = \nabla\log\pi(x)\,dt - \gamma M^{-1} v\,dt + \sqrt{2\gamma}\,dW_t,

i.e. :math:`dx = \partial_v H\,dt`, :math:`dv = -\partial_x H\,dt - \gamma\,\partial_v H\,dt + \sqrt{2\gamma}\,dW`
with :math:`H(x, v) = U(x) + |v|^2 / (2M)`, whose invariant law is
:math:`\pi(x)\,\mathcal N(v; 0, M I_d)` (fluctuation–dissipation at unit temperature). The dynamics is
split into three exactly solvable pieces over a time :math:`\tau`:

* **B** (kick): :math:`v \leftarrow v + \tau\,\nabla\log\pi(x)`;
* **A** (drift): :math:`x \leftarrow x + \tau M^{-1} v`;
* **O** (Ornstein–Uhlenbeck on v, exact): :math:`v \leftarrow e^{-\gamma\tau/M} v
  + \sqrt{M(1 - e^{-2\gamma\tau/M})}\,\xi`, :math:`\xi \sim \mathcal N(0, I_d)`.

:func:`baoab_step` is B(h/2) A(h/2) O(h) A(h/2) B(h/2) (Leimkuhler & Matthews 2013, "Rational construction
of stochastic numerical methods for molecular sampling", AMRX; and "Robust and efficient configurational
molecular sampling via Langevin dynamics", JCP 138, 174102): its configurational (position) marginal has
an :math:`O(h^2)` invariant-measure error with a small constant, and is exact for Gaussian targets.
:func:`obabo_step` is O(h/2) B(h/2) A(h) B(h/2) O(h/2) (Bussi & Parrinello 2007, "Accurate sampling using
Langevin dynamics", PRE 75, 056707): exact velocity marginal for Gaussian targets, :math:`O(h^2)`
position error. Both are unadjusted (no Metropolis step) and use one evaluation of ``log_density``
per step: the score at the new position is stored in the state and reused by the next step's first kick.
The deterministic part B A B is velocity Verlet, stable for :math:`h\,\omega_{\max} < 2` with
:math:`\omega_{\max}^2 = \lambda_{\max}(\nabla^2 U) / M`.

:func:`cld_step` samples with critically-damped Langevin dynamics (CLD; Dockhorn, Vahdat & Kreis 2022,
"Score-Based Generative Modeling with Critically-Damped Langevin Diffusion", ICLR), in the clock of
:class:`controlsamp.processes.CLD`:

.. math::  dx = \beta M^{-1} v\,dt, \qquad
           dv = \big(\beta\nabla\log\pi(x) - \Gamma\beta M^{-1} v\big)\,dt + \sqrt{2\Gamma\beta}\,dW_t,

invariant :math:`\pi(x)\,\mathcal N(v; 0, M I_d)`, split as in their symmetric splitting sampler (SSCS, Sec.
3.4) into the **linear** part with force :math:`-\beta x` (exactly the process
``CLD(d, beta, M, Gamma)``, Gaussian kernel :math:`(x, v) \leftarrow \Phi (x, v) + Q^{1/2}\xi`) and the
**nonlinear remainder** :math:`dv = \beta(\nabla\log\pi(x) + x)\,dt`, an exact velocity kick since
:math:`x` is frozen. The default ``splitting="LKL"`` is linear(h/2) kick(h) linear(h/2) (SSCS);
``"KLK"`` is kick(h/2) linear(h) kick(h/2). Both are Strang splittings (second order); on
:math:`\pi = \mathcal N(0, I)` the kick vanishes and the step is the exact CLD transition over ``h``.

State. :class:`KineticState` holds the position ``x`` (n, d), velocity ``v`` (n, d) and, **at x**, the
log-density (n,) and score (n, d). ``log_density(x)`` returns :math:`(\log\tilde\pi(x), \nabla\log\tilde\pi(x))`
of shapes (n,) and (n, d), as in :mod:`controlsamp.langevin.mala`. Parameters (step, friction, mass) are
Python scalars shared by all chains; every step returns the new state only.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, NamedTuple, Optional, Tuple

import torch

from .._validate import as_tensor, check_positive

__all__ = ["KineticState", "init", "baoab_step", "obabo_step", "cld_step"]

Tensor = torch.Tensor
LogDensity = Callable[[Tensor], Tuple[Tensor, Tensor]]  # x -> (log pi~(x) (n,), grad log pi~(x) (n, d))

_SPLITTINGS = ("LKL", "KLK")


class KineticState(NamedTuple):
    x: Tensor
    v: Tensor
    log_prob: Tensor
    score: Tensor


# ------------------------------------------------------------------------------------------- checks
def _check_x(x, name: str = "x") -> Tensor:
    if not isinstance(x, torch.Tensor):
        x = as_tensor(x, name)
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n_chains, d); got shape {tuple(x.shape)}")
    return x


def _check_state(state) -> KineticState:
    if not isinstance(state, KineticState):
        raise ValueError(f"state must be a KineticState (from underdamped.init); got {type(state).__name__}")
    _check_x(state.x, "state.x")
    if state.v.shape != state.x.shape:
        raise ValueError(f"state.v must have the shape of state.x {tuple(state.x.shape)}; got {tuple(state.v.shape)}")
    return state


def _evaluate(log_density: LogDensity, x: Tensor) -> Tuple[Tensor, Tensor]:
    lp, sc = log_density(x)
    n = x.shape[0]
    if lp.shape != (n,):
        raise ValueError(f"log_density must return log pi~ of shape ({n},); got {tuple(lp.shape)}")
    if sc.shape != x.shape:
        raise ValueError(f"log_density must return a score of shape {tuple(x.shape)}; got {tuple(sc.shape)}")
    return lp, sc


def _randn(like: Tensor, generator) -> Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------------- init
def init(x, log_density: LogDensity, v=None, M: float = 1.0, generator: Optional[torch.Generator] = None
         ) -> KineticState:
    """The chain state at ``x`` (n, d): velocity ``v`` (drawn from N(0, M I) when None), log-density, score."""
    x = _check_x(x)
    M = check_positive(M, "M")
    if v is None:
        v = math.sqrt(M) * _randn(x, generator)
    else:
        v = _check_x(v, "v").to(dtype=x.dtype, device=x.device)
        if v.shape != x.shape:
            raise ValueError(f"v must have the shape of x {tuple(x.shape)}; got {tuple(v.shape)}")
    lp, sc = _evaluate(log_density, x)
    return KineticState(x, v, lp, sc)


# ------------------------------------------------------------------------------ BAOAB and OBABO
def _ou(v: Tensor, gamma: float, M: float, tau: float, generator) -> Tensor:
    """Exact O step over ``tau``: dv = -gamma/M v dt + sqrt(2 gamma) dW (stationary N(0, M I))."""
    decay = math.exp(-gamma * tau / M)
    scale = math.sqrt(M * -math.expm1(-2.0 * gamma * tau / M))
    return decay * v + scale * _randn(v, generator)


def baoab_step(state: KineticState, log_density: LogDensity, step_size: float, gamma: float, M: float = 1.0,
               generator: Optional[torch.Generator] = None) -> KineticState:
    r"""One BAOAB step B(h/2) A(h/2) O(h) A(h/2) B(h/2) for every chain (Leimkuhler & Matthews 2013).

    One ``log_density`` call (at the new position); the first kick reuses ``state.score``. Draws one
    standard normal of shape (n, d) from ``generator`` (the O step).
    """
    state = _check_state(state)
    h = check_positive(step_size, "step_size")
    gamma = check_positive(gamma, "gamma")
    M = check_positive(M, "M")
    x, v, _, sc = state
    v = v + (0.5 * h) * sc
    x = x + (0.5 * h / M) * v
    v = _ou(v, gamma, M, h, generator)
    x = x + (0.5 * h / M) * v
    lp, sc = _evaluate(log_density, x)
    v = v + (0.5 * h) * sc
    return KineticState(x, v, lp, sc)


def obabo_step(state: KineticState, log_density: LogDensity, step_size: float, gamma: float, M: float = 1.0,
               generator: Optional[torch.Generator] = None) -> KineticState:
    r"""One OBABO step O(h/2) B(h/2) A(h) B(h/2) O(h/2) for every chain (Bussi & Parrinello 2007).

    One ``log_density`` call (at the new position); the first kick reuses ``state.score``. Draws two
    standard normals of shape (n, d) from ``generator``, in order (first O, last O).
    """
    state = _check_state(state)
    h = check_positive(step_size, "step_size")
    gamma = check_positive(gamma, "gamma")
    M = check_positive(M, "M")
    x, v, _, sc = state
    v = _ou(v, gamma, M, 0.5 * h, generator)
    v = v + (0.5 * h) * sc
    x = x + (h / M) * v
    lp, sc = _evaluate(log_density, x)
    v = v + (0.5 * h) * sc
    v = _ou(v, gamma, M, 0.5 * h, generator)
    return KineticState(x, v, lp, sc)


# ------------------------------------------------------------------------------------------- CLD
@lru_cache(maxsize=128)
def _cld_kernel(tau: float, beta: float, M: float, Gamma: Optional[float]) -> Tuple[float, ...]:
    r"""The 2x2 blocks of the CLD kernel over ``tau`` as floats: :math:`\Phi_2` (row-major) and the lower
    Cholesky factor of :math:`Q_2`, read from ``controlsamp.processes.CLD(1, ...).transition(0, tau)``.

    For ``CLD(d)`` the kernel is :math:`\Phi_2 \otimes I_d`, :math:`Q_2 \otimes I_d`, so it acts on each
    coordinate's pair :math:`(x_i, v_i)` separately, and the Cholesky factor of :math:`Q` is
    :math:`L_2 \otimes I_d`.
    """
    from ..processes import CLD  # layer 1; imported here to keep the langevin import light

    Phi, _, Q = CLD(1, beta=beta, M=M, Gamma=Gamma, T=tau).transition(0.0, tau)
    a, b, c, d = (float(t) for t in Phi.reshape(-1))
    qxx, qxv, qvv = float(Q[0, 0]), float(Q[0, 1]), float(Q[1, 1])
    if qxx > 0.0:
        l11 = math.sqrt(qxx)
        l21 = qxv / l11
    else:  # tau so small that Q_xx underflows
        l11 = l21 = 0.0
    l22 = math.sqrt(max(qvv - l21 * l21, 0.0))
    return a, b, c, d, l11, l21, l22


def _cld_linear(x: Tensor, v: Tensor, kernel: Tuple[float, ...], generator) -> Tuple[Tensor, Tensor]:
    """(x, v) <- Phi (x, v) + L z with z ~ N(0, I_{2d}) drawn as one (n, 2d) normal, x-channels first."""
    a, b, c, d, l11, l21, l22 = kernel
    n, dim = x.shape
    z = torch.randn((n, 2 * dim), generator=generator, device=x.device, dtype=x.dtype)
    zx, zv = z[:, :dim], z[:, dim:]
    return a * x + b * v + l11 * zx, c * x + d * v + l21 * zx + l22 * zv


def cld_step(state: KineticState, log_density: LogDensity, step_size: float, beta: float = 4.0, M: float = 0.25,
             Gamma: Optional[float] = None, generator: Optional[torch.Generator] = None,
             splitting: str = "LKL") -> KineticState:
    r"""One critically-damped Langevin step for every chain by the symmetric splitting of Dockhorn et al.
    (2022, Sec. 3.4, SSCS): exact CLD kernel over h/2, kick :math:`v \leftarrow v + h\beta(\nabla\log\pi(x) + x)`,
    exact CLD kernel over h/2.

    ``step_size`` is in the process clock (the kernel integrates :math:`\beta` over it); ``beta`` a
    positive constant; ``Gamma=None`` is critical damping :math:`\Gamma = 2\sqrt M`. The state's velocity
    must follow the same mass (``init(..., M=M)``; stationary :math:`v \sim \mathcal N(0, M I)`).

    ``splitting``: ``"LKL"`` (default, SSCS) calls ``log_density`` twice per step (at the midpoint
    position for the kick, and at the new position so the state's score stays at ``state.x``) and
    draws two (n, 2d) normals; ``"KLK"`` (kick h/2, kernel h, kick h/2) reuses ``state.score`` and
    calls it once, drawing one (n, 2d) normal. Each (n, 2d) normal ``z`` drives one kernel step as
    :math:`(x, v) \leftarrow \Phi (x, v) + L z` with :math:`L` the lower Cholesky factor of :math:`Q`
    (x-channels first, as in ``CLD``'s phase-space layout).
    """
    state = _check_state(state)
    h = check_positive(step_size, "step_size")
    beta = check_positive(beta, "beta")
    M = check_positive(M, "M")
    Gamma = None if Gamma is None else check_positive(Gamma, "Gamma")
    if splitting not in _SPLITTINGS:
        raise ValueError(f"splitting must be one of {_SPLITTINGS}; got {splitting!r}")
    x, v, lp, sc = state
    if splitting == "LKL":
        half = _cld_kernel(0.5 * h, beta, M, Gamma)
        x, v = _cld_linear(x, v, half, generator)
        _, sc_mid = _evaluate(log_density, x)
        v = v + (h * beta) * (sc_mid + x)
        x, v = _cld_linear(x, v, half, generator)
        lp, sc = _evaluate(log_density, x)
    else:
        full = _cld_kernel(h, beta, M, Gamma)
        v = v + (0.5 * h * beta) * (sc + x)
        x, v = _cld_linear(x, v, full, generator)
        lp, sc = _evaluate(log_density, x)
        v = v + (0.5 * h * beta) * (sc + x)
    return KineticState(x, v, lp, sc)
