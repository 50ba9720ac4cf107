r"""Noised marginal and score of Gaussian (and Gaussian-mixture) data under a linear reference.

Setting (scalar; a d-dimensional isotropic reference is d copies): data :math:`X_0 \sim \mathcal N(m, s)`
(variance s) and the OU reference :math:`dX = -\theta X\,dt + \sigma\,dW`, whose kernel from 0 is
:math:`\mathcal N(a x_0, v)` with :math:`a = e^{-\theta t}`, :math:`v = \sigma^2(1 - e^{-2\theta t})/(2\theta)`
(``ou_kernel``).

Result.  The noised marginal is the convolution :math:`p_t(y) = \int \mathcal N(y; a x_0, v)\,
\mathcal N(x_0; m, s)\,dx_0 = \mathcal N(y;\ a m,\ a^2 s + v)`, so its score is
:math:`\partial_y \log p_t = -(y - a m)/(a^2 s + v)`; for a mixture :math:`\sum_k w_k \mathcal N(m_k, s_k)`
the marginal is :math:`\sum_k w_k \mathcal N(y; a m_k, a^2 s_k + v)` and the score is the
responsibility-weighted sum of the component scores.  (``controlsamp.exact.NoisedMixture`` is the
matrix form, :math:`\mathcal N(\Phi m + c, \Phi S \Phi^\top + Q)`, for every linear reference.)

Checks: the convolution integral equals the closed form; the marginal solves the Fokker–Planck equation
:math:`\partial_t p = \partial_y(\theta y p) + \tfrac{\sigma^2}{2}\partial_{yy} p` with :math:`p_0 = \mathcal N(m, s)`;
the score formula equals :math:`\partial_y \log p_t`; for a two-component mixture the score is the
responsibility-weighted component score and the mixture solves the same equation; Tweedie's formula
:math:`E[X_0 \mid X_t = y] = (y + v\,\partial_y \log p_t(y)) / a`.

Source: Vincent (2011), "A connection between score matching and denoising autoencoders"; Song et al.
(2021), "Score-based generative modeling through SDEs"; Efron (2011) for Tweedie's formula.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, all_of, gaussian_integral, zero

TITLE = "Noised Gaussian / mixture data: marginal and score"

t, y, x0 = sp.symbols("t y x0", real=True)
m, m1, m2 = sp.symbols("m m1 m2", real=True)
s, s1, s2, theta, sigma = sp.symbols("s s1 s2 theta sigma", positive=True)
w1 = sp.symbols("w1", positive=True)


def _normal(z, mean, var):
    return sp.exp(-(z - mean) ** 2 / (2 * var)) / sp.sqrt(2 * sp.pi * var)


@dataclass(frozen=True)
class NoisedScore:
    a: sp.Expr  # kernel coefficient exp(-theta t)
    v: sp.Expr  # kernel variance
    density: sp.Expr  # p_t(y) for Gaussian data N(m, s)
    score: sp.Expr  # d/dy log p_t
    mixture: sp.Expr  # p_t for the mixture w1 N(m1, s1) + (1 - w1) N(m2, s2)
    mixture_score: sp.Expr


@lru_cache(maxsize=None)
def derive() -> NoisedScore:
    a = sp.exp(-theta * t)
    v = sigma ** 2 * (1 - sp.exp(-2 * theta * t)) / (2 * theta)
    var = a ** 2 * s + v
    density = _normal(y, a * m, var)
    score = -(y - a * m) / var
    comp = lambda mk, sk: _normal(y, a * mk, a ** 2 * sk + v)  # noqa: E731
    mixture = w1 * comp(m1, s1) + (1 - w1) * comp(m2, s2)
    r1 = w1 * comp(m1, s1) / mixture
    mixture_score = -r1 * (y - a * m1) / (a ** 2 * s1 + v) - (1 - r1) * (y - a * m2) / (a ** 2 * s2 + v)
    return NoisedScore(a=a, v=v, density=density, score=score, mixture=mixture, mixture_score=mixture_score)


def marginal_variance() -> sp.Expr:
    """Var X_t for Gaussian data N(m, s): a^2 s + v, a sympy expression of (t, s, theta, sigma)."""
    k = derive()
    return k.a ** 2 * s + k.v


identity = Identities()


@identity("convolution of the kernel N(y; a x0, v) with the data N(x0; m, s) = N(y; a m, a^2 s + v)")
def _convolution():
    k = derive()
    log_integrand = sp.expand(-(y - k.a * x0) ** 2 / (2 * k.v) - (x0 - m) ** 2 / (2 * s))
    value, curvature = gaussian_integral(log_integrand, x0)
    value = value / (2 * sp.pi * sp.sqrt(k.v * s))
    return all_of(zero(value / k.density - 1, points=_points()),
                  zero(curvature - (k.a ** 2 / (2 * k.v) + 1 / (2 * s))))


def _points():
    return [{t: sp.Rational(1, 3), y: sp.Rational(1, 2), m: sp.Rational(-1, 4), s: sp.Rational(3, 5),
             theta: sp.Rational(7, 5), sigma: sp.Rational(2, 3)},
            {t: sp.Rational(2), y: sp.Rational(-3, 2), m: sp.Rational(5, 4), s: sp.Rational(1, 7),
             theta: sp.Rational(1, 2), sigma: sp.Rational(3, 2)}]


@identity("Fokker-Planck: d_t p = d_y(theta y p) + sigma^2/2 d_yy p, and p_0 = N(m, s)")
def _fokker_planck():
    k = derive()
    p = k.density
    residual = p.diff(t) - (theta * y * p).diff(y) - sigma ** 2 / 2 * p.diff(y, 2)
    return all_of(zero(sp.expand(residual / p)), zero(sp.simplify(p.subs(t, 0) - _normal(y, m, s))))


@identity("score = d/dy log p_t = -(y - a m) / (a^2 s + v)")
def _score():
    k = derive()
    return zero(sp.diff(sp.log(k.density), y) - k.score)


@identity("mixture: responsibility-weighted component scores = d/dy log p_t, and Fokker-Planck")
def _mixture():
    k = derive()
    p = k.mixture
    residual = p.diff(t) - (theta * y * p).diff(y) - sigma ** 2 / 2 * p.diff(y, 2)
    pts = [{**pt, m1: sp.Rational(-1, 2), m2: sp.Rational(3, 2), s1: sp.Rational(1, 3), s2: sp.Rational(2, 3),
            w1: sp.Rational(1, 4)} for pt in _points()]
    return all_of(zero(sp.diff(p, y) / p - k.mixture_score, points=pts), zero(residual, points=pts))


@identity("Tweedie: E[X0 | X_t = y] = (y + v d_y log p_t) / a for Gaussian data")
def _tweedie():
    k = derive()
    # Gaussian posterior of x0 given y: precision a^2/v + 1/s, mean (a y / v + m / s) / precision
    post_mean = (k.a * y / k.v + m / s) / (k.a ** 2 / k.v + 1 / s)
    return zero(post_mean - (y + k.v * k.score) / k.a)


def formulas():
    k = derive()
    return {"a(t)": k.a, "v(t)": k.v, "p_t(y)": k.density, "score": k.score}


def checks() -> List[Check]:
    return identity.run_all()
