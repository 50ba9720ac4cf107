r"""Gaussian Schrödinger bridge in one dimension, Brownian reference.

Problem: among path measures with marginals :math:`X_0 \sim \mathcal N(m_0, s_0)` and
:math:`X_T \sim \mathcal N(m_1, s_1)` (variances), minimise :math:`\mathrm{KL}(P \,\|\, R)` where
:math:`R` is :math:`dX = \sigma\,dW` on :math:`[0, T]`.  Write :math:`s_2 = \sigma^2 T`.

Derivation.  The static problem is entropic OT: the optimal coupling has density
:math:`\pi(x, y) = a(x)\,b(y)\,e^{-(x - y)^2/(2 s_2)}`, so for a Gaussian coupling the
:math:`xy`-entry of the joint precision is :math:`-1/s_2`.  With joint covariance
:math:`\begin{pmatrix} s_0 & c\\ c & s_1\end{pmatrix}` that entry is :math:`-c/(s_0 s_1 - c^2)`,
giving :math:`c^2 + s_2 c - s_0 s_1 = 0`, whose admissible (positive) root is

.. math::  c = \tfrac12 (D - s_2), \qquad D = \sqrt{4 s_0 s_1 + s_2^2}.

The dynamic bridge is the mixture of Brownian bridges over this coupling: with :math:`r = t/T`,

.. math::
   \mathrm{mean}_t = (1-r) m_0 + r m_1, \qquad
   \mathrm{var}_t = (1-r)^2 s_0 + r^2 s_1 + 2 r (1-r) c + \sigma^2 t (T-t)/T,

and its (Markov) drift is :math:`b(t, x) = (\mathbb E[X_T \mid X_t = x] - x)/(T - t)` with
:math:`\mathrm{Cov}(X_t, X_T) = (1 - r) c + r s_1`.

Checks: the precision identity; positive definiteness (:math:`s_0 s_1 - c^2 = s_2 c`); the
Fokker–Planck equation :math:`\partial_t p = -\partial_x(b p) + \tfrac{\sigma^2}{2}\partial_{xx} p`
for :math:`p = \mathcal N(\mathrm{mean}_t, \mathrm{var}_t)` (for the SB value of :math:`c` and, more
strongly, for any :math:`c`: the mimicking drift of a bridge mixture); boundary laws at
:math:`t = 0, T`; the drift is :math:`\sigma^2\partial_x\log\varphi` for a space-time harmonic
:math:`\varphi` (:math:`\partial_t\varphi + \tfrac{\sigma^2}{2}\partial_{xx}\varphi = 0`, the Schrödinger
potential) exactly when :math:`c^2 + s_2 c = s_0 s_1`, which singles out the SB coupling among all
bridge mixtures; the limits :math:`\sigma \to 0` (OT coupling, :math:`c = \sqrt{s_0 s_1}`) and
:math:`\sigma \to \infty` (independent coupling).

Sources: H. Janati, B. Muzellec, G. Peyré, M. Cuturi, "Entropic optimal transport between unbalanced
Gaussian measures has a closed form", NeurIPS 2020; A. Mallasto, A. Gerolin, H. Q. Minh, "Entropy-
regularized 2-Wasserstein distance between Gaussian measures", Information Geometry 2021;
C. Bunne, Y.-P. Hsieh, M. Cuturi, A. Krause, "The Schrödinger Bridge between Gaussian Measures has a
Closed Form", AISTATS 2023.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, Outcome, all_of, is_zero, zero

TITLE = "Gaussian Schrödinger bridge (1-d, Brownian reference)"

m0, m1, x = sp.symbols("m0 m1 x", real=True)
s0, s1, sigma, T, t = sp.symbols("s0 s1 sigma T t", positive=True)
c_ = sp.symbols("c", real=True)  # a free cross-covariance, used to show the FP identity for any coupling


@dataclass(frozen=True)
class GaussianBridge1D:
    coupling_covariance: sp.Expr  # c = Cov(X_0, X_T)
    D: sp.Expr
    marginal_mean: sp.Expr  # mean_t
    marginal_variance: sp.Expr  # var_t
    cross_covariance: sp.Expr  # Cov(X_t, X_T)
    drift: sp.Expr  # b(t, x)


def _marginal_and_drift(c: sp.Expr):
    r = t / T
    mean = (1 - r) * m0 + r * m1
    var = (1 - r) ** 2 * s0 + r**2 * s1 + 2 * r * (1 - r) * c + sigma**2 * t * (T - t) / T
    cross = (1 - r) * c + r * s1
    cond_mean_T = m1 + cross / var * (x - mean)
    drift = (cond_mean_T - x) / (T - t)
    return mean, var, cross, drift


@lru_cache(maxsize=None)
def derive() -> GaussianBridge1D:
    s2 = sigma**2 * T
    prec_offdiag = sp.Matrix([[s0, c_], [c_, s1]]).inv()[0, 1]
    roots = sp.solve(sp.Eq(prec_offdiag, -1 / s2), c_)
    # the quadratic c^2 + s2 c - s0 s1 = 0 has one positive and one negative root; the coupling
    # covariance must satisfy c^2 < s0 s1 and the positive root does (see the checks).
    (c,) = [r for r in roots if sp.simplify(r.subs({s0: 1, s1: 1, sigma: 1, T: 1})).is_positive]
    D = sp.sqrt(4 * s0 * s1 + s2**2)
    c = sp.simplify(c)
    mean, var, cross, drift = _marginal_and_drift(c)
    return GaussianBridge1D(
        coupling_covariance=c,
        D=D,
        marginal_mean=mean,
        marginal_variance=var,
        cross_covariance=cross,
        drift=drift,
    )


def coupling_covariance() -> sp.Expr:
    """Cov(X_0, X_T) of the SB coupling, in (s0, s1, sigma, T)."""
    return derive().coupling_covariance


def marginal_mean() -> sp.Expr:
    """E[X_t], in (t, m0, m1, T)."""
    return derive().marginal_mean


def marginal_variance() -> sp.Expr:
    """Var[X_t], in (t, s0, s1, sigma, T)."""
    return derive().marginal_variance


def drift() -> sp.Expr:
    """SB drift b(t, x), in (t, x, m0, s0, m1, s1, sigma, T)."""
    return derive().drift


identity = Identities()


@identity("c = (D - sigma^2 T)/2 with D = sqrt(4 s0 s1 + sigma^4 T^2)")
def _closed_form():
    k = derive()
    return zero(k.coupling_covariance - (k.D - sigma**2 * T) / 2)


@identity("(a) joint precision of (X_0, X_T): off-diagonal = -1/(sigma^2 T)")
def _precision():
    k = derive()
    P = sp.Matrix([[s0, k.coupling_covariance], [k.coupling_covariance, s1]]).inv()
    return all_of(zero(P[0, 1] + 1 / (sigma**2 * T)), zero(P[1, 0] + 1 / (sigma**2 * T)))


@identity("coupling is positive definite: s0 s1 - c^2 = sigma^2 T c, c > 0")
def _pd():
    k = derive()
    c = k.coupling_covariance
    # c > 0 <=> D > sigma^2 T <=> D^2 - sigma^4 T^2 = 4 s0 s1 > 0
    return all_of(zero(s0 * s1 - c**2 - sigma**2 * T * c), zero(k.D**2 - sigma**4 * T**2 - 4 * s0 * s1))


def _fp_residual(mean, var, drift):
    """(d_t p + d_x(b p) - sigma^2/2 d_xx p) / p for p = N(x; mean, var), via L = log p:
    p_t/p = L_t, d_x(b p)/p = b_x + b L_x, p_xx/p = L_x^2 + L_xx (a rational function, fast to cancel)."""
    L = -((x - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2
    Lx = L.diff(x)
    return L.diff(t) + drift.diff(x) + drift * Lx - sigma**2 / 2 * (Lx**2 + L.diff(x, 2))


@identity("(b) Fokker-Planck d_t p = -d_x(b p) + sigma^2/2 d_xx p for the SB marginal and drift")
def _fokker_planck():
    k = derive()
    return zero(_fp_residual(k.marginal_mean, k.marginal_variance, k.drift))


@identity("(b') Fokker-Planck holds for any cross-covariance c (mimicking drift of a bridge mixture)")
def _fokker_planck_any_c():
    mean, var, _, drift = _marginal_and_drift(c_)
    return zero(_fp_residual(mean, var, drift))


@identity("(c) boundary laws: N(m0, s0) at t = 0, N(m1, s1) at t = T, Cov(X_t, X_T) -> s1")
def _boundary():
    k = derive()
    return all_of(
        zero(k.marginal_mean.subs(t, 0) - m0),
        zero(k.marginal_variance.subs(t, 0) - s0),
        zero(k.marginal_mean.subs(t, T) - m1),
        zero(k.marginal_variance.subs(t, T) - s1),
        zero(k.cross_covariance.subs(t, T) - s1),
        zero(k.cross_covariance.subs(t, 0) - k.coupling_covariance),
    )


@identity("(d) b = sigma^2 d_x log phi with d_t phi + sigma^2/2 d_xx phi = 0 iff c^2 + sigma^2 T c = s0 s1")
def _schrodinger_potential():
    """The SB drift is the gradient of a space-time harmonic potential (the bridge is Markov).

    For an affine drift b = alpha(t) + beta(t) x, phi = exp((alpha x + beta x^2/2)/sigma^2 + k(t)) is
    harmonic for some k iff beta' + beta^2 = 0 and alpha' + alpha beta = 0.  With a free cross-covariance
    c both numerators are multiples of q(c) = c^2 + sigma^2 T c - s0 s1 (remainder 0 mod q), and the
    first is not identically zero: the harmonic condition holds exactly at the SB coupling.
    """
    c = c_
    b = sp.expand(_marginal_and_drift(c)[3])
    slope, intercept = sp.cancel(b.diff(x)), sp.cancel(b.subs(x, 0))
    q = c**2 + sigma**2 * T * c - s0 * s1
    outcomes = []
    for residual in (slope.diff(t) + slope**2, intercept.diff(t) + intercept * slope):
        num = sp.expand(sp.fraction(sp.cancel(sp.together(residual)))[0])
        outcomes.append(zero(sp.rem(num, q, c)))
    necessary = not is_zero(slope.diff(t) + slope**2)
    k = derive()
    at_sb = sp.expand(k.drift)
    slope_sb = sp.cancel(at_sb.diff(x))
    return all_of(*outcomes, zero(slope_sb.diff(t) + slope_sb**2), Outcome(necessary))


@identity("limits: sigma -> 0 gives c = sqrt(s0 s1) (OT map), sigma -> oo gives c = 0 (independent)")
def _limits():
    c = derive().coupling_covariance
    return all_of(zero(sp.limit(c, sigma, 0) - sp.sqrt(s0 * s1)), zero(sp.limit(c, sigma, sp.oo)))


def checks() -> List[Check]:
    return identity.run_all()


def formulas() -> dict:
    k = derive()
    return {
        "c = Cov(X_0, X_T)": k.coupling_covariance,
        "mean_t": k.marginal_mean,
        "var_t": k.marginal_variance,
        "Cov(X_t, X_T)": k.cross_covariance,
        "b(t, x)": k.drift,
    }
