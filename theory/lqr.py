r"""Scalar linear–quadratic regulator (LQR) with additive noise.

Problem: :math:`dX = (aX + bu)\,dt + \sigma\,dW` on :math:`[0, T]`, minimise
:math:`\mathbb E\big[\int_0^T (qX^2 + ru^2)\,dt + fX_T^2\big]`, with :math:`r > 0`, :math:`b \ne 0`,
:math:`q, f \ge 0`.

Result.  With :math:`k = b^2/r`, :math:`\delta = \sqrt{a^2 + kq}` and time-to-go :math:`\tau = T - t`,
the Riccati equation :math:`-P' = 2aP - kP^2 + q,\ P(T) = f` is linearised by :math:`P = Y/X`,
:math:`\frac{d}{d\tau}(X, Y) = H (X, Y)`, :math:`H = \begin{pmatrix} -a & k\\ q & a\end{pmatrix}`,
:math:`H^2 = \delta^2 I`, so :math:`e^{H\tau} = \cosh(\delta\tau) I + \delta^{-1}\sinh(\delta\tau) H` and

.. math::
   P(t) = \frac{\delta f \cosh\delta\tau + (q + af)\sinh\delta\tau}
               {\delta \cosh\delta\tau + (kf - a)\sinh\delta\tau},
   \qquad
   r_0(t) = \int_t^T \sigma^2 P(s)\,ds = \frac{\sigma^2}{k}\Big(\log\big(\cosh\delta\tau
            + \tfrac{kf - a}{\delta}\sinh\delta\tau\big) + a\tau\Big),

because :math:`kP = X'/X + a` in :math:`\tau`.  The value is :math:`V(t, x) = P(t)x^2 + r_0(t)` and the
optimal feedback :math:`u^* = -bP(t)x/r`.

Checks: the Riccati ODE and :math:`P(T) = f`; :math:`r_0' = -\sigma^2 P`, :math:`r_0(T) = 0`; the HJB
equation :math:`V_t + \min_u[(ax + bu)V_x + qx^2 + ru^2] + \tfrac{\sigma^2}{2}V_{xx} = 0`,
:math:`V(T, x) = fx^2`, with minimiser :math:`u^* = -bPx/r` (a minimum: the second derivative
:math:`2r > 0`); the limit :math:`T - t \to \infty` gives the algebraic Riccati root
:math:`(a + \delta)/k`.

Sources: W. H. Fleming, R. W. Rishel, *Deterministic and Stochastic Optimal Control*, Springer 1975,
§VI.5; W. H. Fleming, H. M. Soner, *Controlled Markov Processes and Viscosity Solutions*, 2006, §III.8;
B. D. O. Anderson, J. B. Moore, *Optimal Control: Linear Quadratic Methods*, 1990 (Riccati via the
Hamiltonian matrix).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, Outcome, all_of, truth, zero, zero_at, zero_modulo

TITLE = "Scalar LQR: Riccati, HJB, optimal policy"

a, x = sp.symbols("a x", real=True)
b = sp.symbols("b", nonzero=True, real=True)
q, r, f, sigma, T, t = sp.symbols("q r f sigma T t", positive=True)
tau = sp.symbols("tau", positive=True)  # time to go, T - t

# Algebraic stand-ins for the checks: C = cosh(delta tau), Sh = sinh(delta tau), delta = D, with
# dC/dtau = D Sh, dSh/dtau = D C and the relations C^2 - Sh^2 = 1, r D^2 = r a^2 + b^2 q.
C, Sh = sp.symbols("C Sh", real=True)
D = sp.Symbol("delta", positive=True)
_RELATIONS = (C**2 - Sh**2 - 1, r * D**2 - r * a**2 - b**2 * q)
_GENS = (C, Sh, D)


def _d_dtau(e: sp.Expr) -> sp.Expr:
    """Total tau-derivative of an expression in (tau, C, Sh, D)."""
    return e.diff(tau) + e.diff(C) * D * Sh + e.diff(Sh) * D * C


def _d_dt(e: sp.Expr) -> sp.Expr:
    return -_d_dtau(e)


def _zero(e) -> Outcome:
    return zero_modulo(e, _RELATIONS, _GENS)


@dataclass(frozen=True)
class LQR1D:
    delta: sp.Expr
    riccati: sp.Expr  # P(t)
    r0: sp.Expr  # int_t^T sigma^2 P
    value: sp.Expr  # V(t, x)
    policy: sp.Expr  # u*(t, x)
    riccati_alg: sp.Expr  # P in (C, Sh, D)
    r0_alg: sp.Expr  # r0 in (tau, C, Sh, D)
    hamiltonian_exp: sp.Matrix  # exp(H tau) in (C, Sh, D)


@lru_cache(maxsize=None)
def derive() -> LQR1D:
    k = b**2 / r
    delta = sp.sqrt(a**2 + k * q)
    H = sp.Matrix([[-a, k], [q, a]])
    E = C * sp.eye(2) + Sh / D * H  # = exp(H tau) since H^2 = D^2 I (checked below)
    X, Y = E * sp.Matrix([1, f])  # (X, Y)(tau) with X(0) = 1, Y(0) = f, P = Y / X
    P_alg = sp.expand(D * Y) / sp.expand(D * X)
    # k P = X'/X + a  =>  int_0^tau P = (log X(tau) + a tau) / k
    r0_alg = sigma**2 / k * (sp.log(sp.expand(X)) + a * tau)
    closed = {C: sp.cosh(delta * tau), Sh: sp.sinh(delta * tau), D: delta}
    back = {tau: T - t}
    P = P_alg.subs(closed).subs(back)
    r0 = r0_alg.subs(closed).subs(back)
    V = P * x**2 + r0
    u = -b * P * x / r
    return LQR1D(
        delta=delta, riccati=P, r0=r0, value=V, policy=u, riccati_alg=P_alg, r0_alg=r0_alg, hamiltonian_exp=E
    )


def riccati() -> sp.Expr:
    """P(t), in (t, a, b, q, r, f, T)."""
    return derive().riccati


def r0() -> sp.Expr:
    """r0(t) = int_t^T sigma^2 P(s) ds in closed form, in (t, a, b, q, r, f, sigma, T)."""
    return derive().r0


def value() -> sp.Expr:
    """V(t, x) = P(t) x^2 + r0(t)."""
    return derive().value


def policy() -> sp.Expr:
    """u*(t, x) = -b P(t) x / r."""
    return derive().policy


identity = Identities()
_START = {C: 1, Sh: 0}  # tau = 0, i.e. t = T


@identity("Hamiltonian matrix: H^2 = delta^2 I, so cosh(delta tau) I + sinh(delta tau)/delta H = exp(H tau)")
def _hamiltonian():
    k = derive()
    H = sp.Matrix([[-a, b**2 / r], [q, a]])
    E = k.hamiltonian_exp
    return all_of(
        _zero(H * H - D**2 * sp.eye(2)),
        _zero(E.applyfunc(_d_dtau) - H * E),
        zero(E.subs(_START) - sp.eye(2)),
    )


@identity("Riccati: -P' = 2 a P - b^2 P^2 / r + q, P(T) = f")
def _riccati():
    k = derive()
    P = k.riccati_alg
    # also directly on the cosh/sinh closed form in t, with sympy's own derivatives
    Pc = k.riccati
    return all_of(
        _zero(-_d_dt(P) - (2 * a * P - b**2 * P**2 / r + q)),
        zero(P.subs(_START) - f),
        zero(-Pc.diff(t) - (2 * a * Pc - b**2 * Pc**2 / r + q)),
        zero(Pc.subs(t, T) - f),
    )


@identity("r0' = -sigma^2 P, r0(T) = 0 (r0 = int_t^T sigma^2 P)")
def _r0():
    k = derive()
    return all_of(
        _zero(_d_dt(k.r0_alg) + sigma**2 * k.riccati_alg),
        zero(k.r0_alg.subs(_START).subs(tau, 0)),
        zero(k.r0.diff(t) + sigma**2 * k.riccati),
        zero(k.r0.subs(t, T)),
    )


def _hamiltonian_min():
    k = derive()
    V = k.riccati_alg * x**2 + k.r0_alg
    u = sp.Symbol("u", real=True)
    ham = (a * x + b * u) * V.diff(x) + q * x**2 + r * u**2
    (ustar,) = sp.solve(ham.diff(u), u)
    return V, u, ham, ustar


@identity("HJB: V_t + min_u [(a x + b u) V_x + q x^2 + r u^2] + sigma^2/2 V_xx = 0, V(T, x) = f x^2")
def _hjb():
    V, u, ham, ustar = _hamiltonian_min()
    residual = _d_dt(V) + ham.subs(u, ustar) + sigma**2 / 2 * V.diff(x, 2)
    # simplify() does not reduce the HJB residual of the cosh/sinh form in reasonable time, so the
    # proof is the exact reduction above; as a secondary check, the residual of the t-form itself
    # (sympy's own derivatives of cosh/sinh) vanishes at exact rational points.
    Vt = derive().value
    uu = sp.Symbol("u", real=True)
    ham_t = (a * x + b * uu) * Vt.diff(x) + q * x**2 + r * uu**2
    residual_t = Vt.diff(t) + ham_t.subs(uu, -b * Vt.diff(x) / (2 * r)) + sigma**2 / 2 * Vt.diff(x, 2)
    points = [
        {a: "1/2", b: "3/2", q: 2, r: "1/3", f: "5/4", sigma: "7/10", T: 2, t: "1/3", x: "-3/5"},
        {a: -2, b: "-1/2", q: "1/5", r: 3, f: 0, sigma: 2, T: 1, t: "9/10", x: 4},
    ]
    return all_of(_zero(residual), zero(V.subs(_START).subs(tau, 0) - f * x**2), zero_at(residual_t, points))


@identity("minimiser u* = -b P x / r, and it is a minimum (d^2/du^2 = 2 r > 0)")
def _minimiser():
    k = derive()
    V, u, ham, ustar = _hamiltonian_min()
    return all_of(
        zero(ustar + b * k.riccati_alg * x / r),
        zero(ham.diff(u, 2) - 2 * r),
        truth((ham.diff(u, 2)).is_positive),
    )


@identity("long horizon: P -> (a + delta) r / b^2, the stabilising root of the algebraic Riccati equation")
def _long_horizon():
    k = derive()
    kk = b**2 / r
    Pinf = (a + D) / kk
    th = sp.Symbol("th", positive=True)  # tanh(delta tau) -> 1 as tau -> oo
    lim = sp.limit(k.riccati_alg.subs(Sh, th * C), th, 1)
    return all_of(
        _zero(2 * a * Pinf - kk * Pinf**2 + q),  # a root of the algebraic Riccati equation
        _zero(lim - Pinf),
        zero((a - kk * Pinf) + D),  # closed-loop rate a - k P_inf = -delta < 0: stabilising
    )
def checks() -> List[Check]:
    return identity.run_all()


def formulas() -> dict:
    k = derive()
    return {
        "delta": k.delta,
        "P(t)": k.riccati,
        "r0(t)": k.r0,
        "u*(t, x)": k.policy,
        "V(t, x)": k.value,
    }
