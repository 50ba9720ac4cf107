r"""Fixed-step discretisation schemes, one class each, each declaring its strong and weak order.

A scheme advances :math:`dX_t = f(t, X_t)\,dt + G(t, X_t)\,dW_t` (diagonal noise: ``G(t, x)`` has the shape
of x) by one step of size h with a given Brownian increment :math:`\Delta W \sim \mathcal N(0, h I)`:
``state = scheme.step(sde, t, h, state, dW)``, where ``sde`` has ``f(t, x)`` and ``g(t, x)``. Orders are
declared per noise type, as torchsde does: ``strong_order["additive"]`` when G does not depend on x,
``strong_order["scalar"]`` for one-dimensional multiplicative noise where a scheme does better there, and
``strong_order["general"]`` otherwise; ``weak_order`` (a float, or a dict by noise type) for smooth test
functions. The test
``tests/test_scheme_order.py`` measures each declared order.

The samplers use the *Gaussian* schemes on the controlled isotropic linear SDE

.. math:: dX_t = \big(k(t) X_t + g(t)\,u(t, X_t)\big)\,dt + g(t)\,dW_t,

with the control held at :math:`u_i = u(t_i, X_{t_i})` over a step: one step is then Gaussian,
:math:`X_{i+1} \mid X_i \sim \mathcal N(a_i X_i + b_i u_i,\ v_i I)`, and ``coefficients(process, s, t)``
gives :math:`(a_i, b_i, v_i)`. With u = 0 the same step is the scheme's *discrete reference* (the chain
whose path law the sampler's importance weights compare against), so the discrete Girsanov log-ratio of
a step is exactly :math:`-\tfrac{b_i}{v_i} u_i\cdot(x_{i+1} - a_i x_i - b_i u_i) - \tfrac{b_i^2}{2 v_i}|u_i|^2`
(:func:`controlsamp.sde.rollout.path_log_ratio`).

References: Kloeden & Platen 1992, *Numerical Solution of Stochastic Differential Equations* (Euler–Maruyama,
§§10.2, 14.1); Hochbruck & Ostermann 2010, "Exponential integrators", Acta Numerica, and for diffusion
samplers Vargas, Grathwohl & Doucet 2023 (DDS); Kidger, Foster, Li & Lyons 2021, "Efficient and accurate
gradients for neural SDEs" (reversible Heun).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Dict, Tuple, Union

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["Scheme", "GaussianScheme", "EulerMaruyama", "Exponential", "ReversibleHeun", "get_scheme", "SCHEMES"]


class Scheme(ABC):
    """A fixed-step one-step method. ``init`` builds the solver state from x (the state is x itself for
    Markov one-step schemes), ``step`` advances it, ``position`` reads x back."""

    name: str = ""
    sde_type: str = "ito"  # the calculus whose SDE the scheme integrates
    strong_order: Dict[str, float] = {}
    weak_order: Union[float, Dict[str, float]] = 1.0  # a float, or per noise type like strong_order
    torchsde_method = None  # the torchsde solver that takes exactly this scheme's steps (None: none does)
    torchsde_adjoint_method = None

    def init(self, sde, t: float, x: Tensor):
        return x

    @abstractmethod
    def step(self, sde, t: float, h: float, state, dW: Tensor):
        """One step from time t to t + h with Brownian increment dW (shape of x)."""

    def position(self, state) -> Tensor:
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianScheme(Scheme):
    """A scheme whose step on the controlled isotropic linear SDE is Gaussian, N(a x + b u, v I)."""

    @abstractmethod
    def coefficients(self, process, s: float, t: float) -> Tuple[float, float, float]:
        r"""(a, b, v) of the step from s to t for the isotropic linear process ``process`` (an object with
        ``k(t)``, ``g(t)``, ``kernel(s, t)``)."""


class EulerMaruyama(GaussianScheme):
    r"""Euler–Maruyama: :math:`X_{i+1} = X_i + f(t_i, X_i)\,h + G(t_i, X_i)\,\Delta W_i`.

    Strong order 1 with additive noise (it coincides with Milstein's scheme there), 1/2 in general; weak
    order 1 (Kloeden & Platen 1992, Thms. 10.2.2 and 14.1.5). On the controlled isotropic linear SDE:
    :math:`a = 1 + k(t_i) h`, :math:`b = g(t_i) h`, :math:`v = g(t_i)^2 h`. torchsde's ``"euler"`` takes the
    same steps, so the stochastic adjoint differentiates exactly this scheme's path law."""

    name = "euler"
    strong_order = {"additive": 1.0, "general": 0.5}
    weak_order = 1.0
    torchsde_method, torchsde_adjoint_method = "euler", "euler"

    def coefficients(self, process, s: float, t: float) -> Tuple[float, float, float]:
        h = t - s
        k, g = process.k(s), process.g(s)
        return 1.0 + k * h, g * h, g * g * h

    def step(self, sde, t: float, h: float, state, dW: Tensor):
        return state + sde.f(t, state) * h + sde.g(t, state) * dW


class Exponential(GaussianScheme):
    r"""The exponential integrator: the linear part exactly, the rest frozen over the step.

    For :math:`dX = (k(t) X + g(t) u)\,dt + g(t)\,dW` with u held at :math:`u_i`,

    .. math:: X_{i+1} = \phi(t_i, t_{i+1}) X_i + \Big(\int_{t_i}^{t_{i+1}} \phi(r, t_{i+1}) g(r)\,dr\Big) u_i
              + \sqrt{q(t_i, t_{i+1})}\,\xi_i,\qquad \xi_i \sim \mathcal N(0, I),

    with the reference kernel :math:`(\phi, q)` (so :math:`a = \phi`, :math:`v = q`, and b by Gauss–Legendre
    quadrature with ``quad_nodes`` nodes: the integrand is smooth, so 8 nodes are exact to round-off for the
    VP schedules). The reference itself (u = 0) is sampled without error. This is DDS's scheme (Vargas et al.
    2023). For the generic step the SDE must expose its linear part: ``sde.linear`` (an isotropic linear
    process with ``kernel``, ``g``) and ``sde.control(t, x)``, with additive noise; ``dW`` then enters as
    :math:`\sqrt{q/h}\,\Delta W`. Strong order 1 and weak order 1 for additive noise (weak error zero for the
    reference itself); no torchsde solver takes these steps."""

    name = "exponential"
    strong_order = {"additive": 1.0}
    weak_order = 1.0

    def __init__(self, quad_nodes: int = 8):
        if int(quad_nodes) != quad_nodes or quad_nodes < 1:
            raise ValueError(f"quad_nodes must be a positive integer; got {quad_nodes!r}")
        self.quad_nodes = int(quad_nodes)
        self._nodes, self._weights = np.polynomial.legendre.leggauss(self.quad_nodes)

    def coefficients(self, process, s: float, t: float) -> Tuple[float, float, float]:
        phi, q = process.kernel(s, t)
        mid, half = 0.5 * (s + t), 0.5 * (t - s)
        b = half * sum(w * process.kernel(mid + half * z, t)[0] * process.g(mid + half * z)
                       for z, w in zip(self._nodes, self._weights))
        return phi, float(b), q

    def step(self, sde, t: float, h: float, state, dW: Tensor):
        linear = getattr(sde, "linear", None)
        if linear is None or not hasattr(sde, "control"):
            raise ValueError("the exponential scheme integrates dX = (k X + g u) dt + g dW: the SDE must give its "
                             "linear part as `sde.linear` and the control as `sde.control(t, x)` (additive noise)")
        a, b, v = self.coefficients(linear, t, t + h)
        return a * state + b * sde.control(t, state) + math.sqrt(v / h) * dW

    def __repr__(self) -> str:
        return f"Exponential(quad_nodes={self.quad_nodes})"


class ReversibleHeun(Scheme):
    r"""The reversible Heun method (Kidger et al. 2021), for Stratonovich SDEs: with an auxiliary state z,

    .. math:: z_{i+1} = 2 x_i - z_i + f(t_i, z_i)\,h + G(t_i, z_i)\,\Delta W_i,

    .. math:: x_{i+1} = x_i + \tfrac12\big(f(t_i, z_i) + f(t_{i+1}, z_{i+1})\big) h
              + \tfrac12\big(G(t_i, z_i) + G(t_{i+1}, z_{i+1})\big)\Delta W_i.

    The step can be inverted algebraically, so torchsde's ``adjoint_reversible_heun`` rebuilds the forward
    states exactly in its backward pass. Strong order 1 with additive or scalar (commutative) noise, 1/2 in
    general; weak order 2 with additive noise (the step matches the moments of Kloeden & Platen's simplified
    order-2 weak scheme to O(h^3)), 1 in general — all measured in ``tests/test_scheme_order.py``.
    Its step is not a Gaussian kernel in x (it carries z), so it has no per-step log-density: the samplers'
    importance weights use the Gaussian schemes; ``cs.solve`` uses this one through torchsde's adjoint."""

    name = "reversible_heun"
    sde_type = "stratonovich"
    strong_order = {"additive": 1.0, "scalar": 1.0, "general": 0.5}
    weak_order = {"additive": 2.0, "general": 1.0}
    torchsde_method, torchsde_adjoint_method = "reversible_heun", "adjoint_reversible_heun"

    def init(self, sde, t: float, x: Tensor):
        return (x, x, sde.f(t, x), sde.g(t, x))

    def step(self, sde, t: float, h: float, state, dW: Tensor):
        x, z, fz, gz = state
        z1 = 2 * x - z + fz * h + gz * dW
        f1, g1 = sde.f(t + h, z1), sde.g(t + h, z1)
        x1 = x + 0.5 * (fz + f1) * h + 0.5 * (gz + g1) * dW
        return (x1, z1, f1, g1)

    def position(self, state) -> Tensor:
        return state[0]


SCHEMES = {"euler": EulerMaruyama, "exponential": Exponential, "reversible_heun": ReversibleHeun}


def get_scheme(scheme: Union[str, Scheme], gaussian: bool = False) -> Scheme:
    """A scheme from its name (``"euler"``, ``"exponential"``, ``"reversible_heun"``) or an instance;
    ``gaussian=True`` requires a :class:`GaussianScheme` (the samplers' importance weights need its step
    density)."""
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {sorted(SCHEMES)} or a Scheme; got {scheme!r}")
        scheme = SCHEMES[scheme]()
    if not isinstance(scheme, Scheme):
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)} or a Scheme; got {type(scheme).__name__}")
    if gaussian and not isinstance(scheme, GaussianScheme):
        raise ValueError(f"scheme {scheme.name!r} has no Gaussian step density (it is not a one-step Gaussian "
                         "kernel in x), so it cannot weight paths: use 'euler' or 'exponential'")
    return scheme
