r"""Schrödinger–Föllmer process for a 1-d Gaussian target.

Reference: :math:`dX = \sigma\,dW` on :math:`[0, T]`, :math:`X_0 = 0`, so
:math:`p^{\rm ref}_T = \mathcal N(0, \sigma^2 T)`.  Target :math:`\pi = \mathcal N(m, S)` (variance
:math:`S`).  The Schrödinger–Föllmer process is the reference reweighted by
:math:`\pi(X_T)/p^{\rm ref}_T(X_T)`; by Doob's h-transform it solves
:math:`dX = \sigma^2 \partial_x \log h(t, X)\,dt + \sigma\,dW` with

.. math::  h(t, x) = \mathbb E_{\rm ref}\!\left[\frac{\pi(X_T)}{p^{\rm ref}_T(X_T)} \,\Big|\, X_t = x\right]
           = \int \frac{\pi(y)}{p^{\rm ref}_T(y)}\,\mathcal N(y;\, x,\, \sigma^2 (T-t))\,dy.

Result (the Gaussian integral done symbolically by completing the square), with
:math:`K(t) = tS + \sigma^2 T (T - t)`:

.. math::
   h(t, x) = \frac{\sigma T}{\sqrt{K}}\,
             \exp\!\Big(\frac{(S - \sigma^2 T) x^2 + 2\sigma^2 T m x - \sigma^2 t m^2}{2\sigma^2 K}\Big),
   \qquad
   b(t, x) = \sigma^2\partial_x\log h = \frac{(S - \sigma^2 T)x + \sigma^2 T m}{K}
           = \frac mT + \Big(\frac ST - \sigma^2\Big)\big(rS + \sigma^2(T-t)\big)^{-1}(x - rm),

:math:`r = t/T`; the value (cost-to-go of the sampler control problem with :math:`R = I/2`,
:math:`B = \sigma`) is :math:`V = -\log h`; the marginals are :math:`\mathcal N(rm,\ r^2 S + \sigma^2 t(T-t)/T)`.

Checks: the integral equals the closed form; backward Kolmogorov
:math:`\partial_t h + \tfrac{\sigma^2}{2}\partial_{xx} h = 0`; HJB for :math:`V` with terminal cost
:math:`\log p^{\rm ref}_T - \log \pi`; :math:`h(0, 0) = 1`; :math:`h = p_t / p^{\rm ref}_t`; the drift
equals the docs/references.md formula (general :math:`T` and :math:`T = 1`) and
:math:`(\mathbb E[X_T \mid X_t = x] - x)/(T - t)`; the moment ODEs
:math:`\mathrm{mean}' = \mathbb E[b]`, :math:`\mathrm{var}' = 2\,\mathrm{Cov}(X, b) + \sigma^2` with boundary
values :math:`(0, 0)` and :math:`(m, S)`.

Sources: H. Föllmer, "An entropy approach to the time reversal of diffusion processes", 1985;
J. Huang, Y. Jiao, L. Kang, X. Liao, J. Liu, Y. Liu, "Schrödinger–Föllmer sampler", IEEE Trans.
Inf. Theory 2024 (arXiv 2106.10880); Q. Zhang, Y. Chen, "Path Integral Sampler", ICLR 2022.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, Outcome, all_of, gaussian_integral, zero

TITLE = "Schrödinger–Föllmer drift, Gaussian target (1-d)"

m, x, y = sp.symbols("m x y", real=True)
S, sigma, T, t = sp.symbols("S sigma T t", positive=True)
_t0 = sp.Symbol("t0", nonnegative=True)  # t in [0, T) during the integration, with
_tau = sp.Symbol("tau", positive=True)  # tau = T - t > 0


def _normal_pdf(z, mean, var):
    return sp.exp(-((z - mean) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)


def _log_normal_pdf(z, mean, var):
    return -((z - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2


@dataclass(frozen=True)
class SchrodingerFollmer1D:
    h_integral: sp.Expr  # the integral as computed (in t, x, m, S, sigma, T)
    gaussian_coefficient: sp.Expr  # a in exp(-a y^2 + ...); must be > 0
    h: sp.Expr  # presented closed form
    log_h: sp.Expr
    drift: sp.Expr
    value: sp.Expr  # V = -log h
    marginal_mean: sp.Expr
    marginal_variance: sp.Expr


@lru_cache(maxsize=None)
def derive() -> SchrodingerFollmer1D:
    # The integrand pi(y) / p_ref_T(y) * N(y; x, sigma^2 (T - t)), written with T = t0 + tau.
    TT = _t0 + _tau
    exponent = (
        _log_normal_pdf(y, m, S) - _log_normal_pdf(y, 0, sigma**2 * TT) + _log_normal_pdf(y, x, sigma**2 * _tau)
    )
    # log of the integrand: quadratic in y (the log-normalisers are its y-free part)
    val, a = gaussian_integral(exponent, y)
    back = {_t0: t, _tau: T - t}
    h_int = sp.powsimp(val).subs(back, simultaneous=True)
    a_back = sp.factor(a).subs(back, simultaneous=True)

    K = t * S + sigma**2 * T * (T - t)
    Q = (S - sigma**2 * T) * x**2 + 2 * sigma**2 * T * m * x - sigma**2 * t * m**2
    log_h = sp.log(sigma * T) - sp.log(K) / 2 + Q / (2 * sigma**2 * K)
    h = sigma * T / sp.sqrt(K) * sp.exp(Q / (2 * sigma**2 * K))
    drift = sp.factor(sp.cancel(sigma**2 * log_h.diff(x)))
    r = t / T
    return SchrodingerFollmer1D(
        h_integral=h_int,
        gaussian_coefficient=a_back,
        h=h,
        log_h=log_h,
        drift=drift,
        value=-log_h,
        marginal_mean=r * m,
        marginal_variance=r**2 * S + sigma**2 * t * (T - t) / T,
    )


def h() -> sp.Expr:
    """h(t, x) in (t, x, m, S, sigma, T)."""
    return derive().h


def drift() -> sp.Expr:
    """b(t, x) = sigma^2 d_x log h, in (t, x, m, S, sigma, T)."""
    return derive().drift


def value() -> sp.Expr:
    """V(t, x) = -log h(t, x), in (t, x, m, S, sigma, T)."""
    return derive().value


def marginal_mean() -> sp.Expr:
    return derive().marginal_mean


def marginal_variance() -> sp.Expr:
    return derive().marginal_variance


identity = Identities()


@identity("Gaussian integral converges: a = K / (2 S sigma^2 T (T - t)) > 0 for 0 <= t < T")
def _converges():
    k = derive()
    K = t * S + sigma**2 * T * (T - t)
    a = k.gaussian_coefficient
    positive = a.subs({t: _t0, T: _t0 + _tau}, simultaneous=True).is_positive
    return all_of(zero(a - K / (2 * S * sigma**2 * T * (T - t))), Outcome(bool(positive)))


@identity("E_ref[pi(X_T)/p_ref_T(X_T) | X_t = x] = closed form h(t, x)")
def _integral():
    k = derive()
    # compare logarithms on 0 <= t < T (t = t0, T = t0 + tau), where every factor is positive
    sub = {t: _t0, T: _t0 + _tau}
    diff = sp.expand_log(sp.log(k.h_integral.subs(sub, simultaneous=True)), force=True) - k.log_h.subs(sub, simultaneous=True)
    # independent of the completing-the-square helper: sympy's own integrate at one exact rational point
    point = {t: sp.Rational(1, 3), T: 1, m: sp.Rational(1, 2), S: 2, sigma: 1, x: sp.Rational(3, 4)}
    integrand = _normal_pdf(y, m, S) / _normal_pdf(y, 0, sigma**2 * T) * _normal_pdf(y, x, sigma**2 * (T - t))
    direct = sp.integrate(sp.simplify(integrand.subs(point)), (y, -sp.oo, sp.oo)).rewrite(sp.erf)
    return all_of(zero(diff), zero(direct - k.h.subs(point)))


@identity("backward Kolmogorov: d_t h + sigma^2/2 d_xx h = 0")
def _backward_kolmogorov():
    k = derive()
    L, hh = k.log_h, k.h
    Lx = L.diff(x)
    # directly on h (divided by h > 0), and in log form: (h_t + sigma^2/2 h_xx)/h = L_t + sigma^2/2 (L_x^2 + L_xx)
    return all_of(
        zero(sp.expand((hh.diff(t) + sigma**2 / 2 * hh.diff(x, 2)) / hh)),
        zero(L.diff(t) + sigma**2 / 2 * (Lx**2 + L.diff(x, 2))),
    )


@identity("HJB: V_t + min_u [sigma u V_x + u^2/2] + sigma^2/2 V_xx = 0, V(T) = log p_ref_T - log pi, sigma u* = b")
def _hjb():
    k = derive()
    V = k.value
    Vx = V.diff(x)
    u = sp.Symbol("u", real=True)
    ham = sigma * u * Vx + u**2 / 2
    (ustar,) = sp.solve(ham.diff(u), u)
    terminal = V.subs(t, T) - (_log_normal_pdf(x, 0, sigma**2 * T) - _log_normal_pdf(x, m, S))
    return all_of(
        zero(V.diff(t) + ham.subs(u, ustar) + sigma**2 / 2 * V.diff(x, 2)),
        zero(sp.expand_log(terminal, force=True)),
        zero(sigma * ustar - k.drift),
    )


@identity("normalisation h(0, 0) = 1 and terminal value h(T, x) = pi(x) / p_ref_T(x)")
def _boundary():
    k = derive()
    ratio = sp.log(_normal_pdf(x, m, S)) - sp.log(_normal_pdf(x, 0, sigma**2 * T))
    return all_of(
        zero(k.h.subs({t: 0, x: 0}) - 1),
        zero(sp.expand_log(k.log_h.subs(t, T) - ratio, force=True)),
    )


@identity("h = p_t / p_ref_t with p_t = N(r m, var_t), p_ref_t = N(0, sigma^2 t)")
def _h_is_density_ratio():
    k = derive()
    log_ratio = _log_normal_pdf(x, k.marginal_mean, k.marginal_variance) - _log_normal_pdf(x, 0, sigma**2 * t)
    return zero(sp.expand_log(k.log_h - log_ratio, force=True))


@identity("drift = m/T + (S/T - sigma^2)(r S + sigma^2 (T-t))^{-1}(x - r m) [REFERENCES]; T=1 form")
def _drift_reference():
    b = derive().drift
    r = t / T
    ref = m / T + (S / T - sigma**2) / (r * S + sigma**2 * (T - t)) * (x - r * m)
    ref1 = m - (sigma**2 - S) / (t * S + sigma**2 * (1 - t)) * (x - t * m)
    return all_of(zero(b - ref), zero(b.subs(T, 1) - ref1))


@identity("drift = (E[X_T | X_t = x] - x)/(T - t), Cov(X_t, X_T) = r S (mixture of Brownian bridges)")
def _drift_bridge():
    k = derive()
    r = t / T
    cond = m + r * S / k.marginal_variance * (x - k.marginal_mean)
    return zero(k.drift - (cond - x) / (T - t))


@identity("moments: mean' = E[b], var' = 2 Cov(X, b) + sigma^2; (0, 0) at t = 0, (m, S) at t = T")
def _moments():
    k = derive()
    b = sp.expand(k.drift)
    slope, intercept = sp.cancel(b.diff(x)), sp.cancel(b.subs(x, 0))
    mu, var = k.marginal_mean, k.marginal_variance
    return all_of(
        zero(b - (intercept + slope * x)),
        zero(mu.diff(t) - (intercept + slope * mu)),
        zero(var.diff(t) - (2 * slope * var + sigma**2)),
        zero(mu.subs(t, 0)),
        zero(var.subs(t, 0)),
        zero(mu.subs(t, T) - m),
        zero(var.subs(t, T) - S),
    )


def checks() -> List[Check]:
    return identity.run_all()


def formulas() -> dict:
    k = derive()
    return {
        "h(t, x)": k.h,
        "b(t, x) = sigma^2 d_x log h": k.drift,
        "V(t, x) = -log h": k.value,
        "mean_t": k.marginal_mean,
        "var_t": k.marginal_variance,
    }
