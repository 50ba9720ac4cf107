r"""Ornstein–Uhlenbeck transition kernel.

SDE (scalar; the d-dimensional process is d independent copies):

.. math::  dX_t = -\theta X_t\,dt + \sigma\,dW_t, \qquad \theta, \sigma > 0.

Result.  By Itô's formula the conditional moments given :math:`X_s = x` solve the linear ODEs
:math:`m' = -\theta m,\ m(s) = x` and :math:`v' = -2\theta v + \sigma^2,\ v(s) = 0`; the process is
Gaussian (linear SDE), so

.. math::  X_t \mid X_s = x \;\sim\; \mathcal N\!\Big(e^{-\theta (t-s)} x,\;
           \frac{\sigma^2}{2\theta}\big(1 - e^{-2\theta (t-s)}\big)\Big).

Checks: the moment ODEs and initial conditions; the closed form quoted in docs/references.md; the
Gaussian density :math:`p(t, y)` solves the forward Kolmogorov (Fokker–Planck) equation
:math:`\partial_t p = \partial_y(\theta y p) + \tfrac{\sigma^2}{2}\partial_{yy} p`; the
Chapman–Kolmogorov (semigroup) property; the stationary law :math:`\mathcal N(0, \sigma^2/(2\theta))`.

Source: Uhlenbeck & Ornstein (1930); e.g. Gardiner, *Stochastic Methods* (2009), §3.8.4;
Øksendal, *Stochastic Differential Equations* (2003), §5.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, all_of, zero

TITLE = "Ornstein–Uhlenbeck kernel"

s, t, u = sp.symbols("s t u", real=True)
x, y = sp.symbols("x y", real=True)
theta, sigma = sp.symbols("theta sigma", positive=True)


@dataclass(frozen=True)
class OUKernel:
    mean: sp.Expr  # E[X_t | X_s = x]
    variance: sp.Expr  # Var[X_t | X_s = x]
    density: sp.Expr  # p(t, y) = N(y; mean, variance)
    stationary_variance: sp.Expr


@lru_cache(maxsize=None)
def derive() -> OUKernel:
    m, v = sp.Function("m"), sp.Function("v")
    mean = sp.dsolve(sp.Eq(m(t).diff(t), -theta * m(t)), m(t), ics={m(s): x}).rhs
    var = sp.dsolve(sp.Eq(v(t).diff(t), -2 * theta * v(t) + sigma**2), v(t), ics={v(s): 0}).rhs
    mean = sp.simplify(sp.powsimp(mean))
    var = sp.simplify(sp.powsimp(sp.expand(var)))
    density = sp.exp(-((y - mean) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)
    stationary = sp.limit(var, t, sp.oo)
    return OUKernel(mean=mean, variance=var, density=density, stationary_variance=stationary)


def kernel_mean() -> sp.Expr:
    """E[X_t | X_s = x] as a sympy expression of (s, t, x, theta)."""
    return derive().mean


def kernel_variance() -> sp.Expr:
    """Var[X_t | X_s = x] as a sympy expression of (s, t, theta, sigma)."""
    return derive().variance


identity = Identities()


@identity("moment ODEs m' = -theta m, v' = -2 theta v + sigma^2 with m(s) = x, v(s) = 0")
def _moment_odes():
    k = derive()
    return all_of(
        zero(k.mean.diff(t) + theta * k.mean),
        zero(k.variance.diff(t) + 2 * theta * k.variance - sigma**2),
        zero(k.mean.subs(t, s) - x),
        zero(k.variance.subs(t, s)),
    )


@identity("closed form = (exp(-theta (t-s)) x, sigma^2 (1 - exp(-2 theta (t-s))) / (2 theta)) [REFERENCES]")
def _reference_form():
    k = derive()
    return all_of(
        zero(k.mean - sp.exp(-theta * (t - s)) * x),
        zero(k.variance - sigma**2 * (1 - sp.exp(-2 * theta * (t - s))) / (2 * theta)),
    )


@identity("Fokker-Planck: d_t p = d_y(theta y p) + sigma^2/2 d_yy p")
def _fokker_planck():
    p = derive().density
    residual = p.diff(t) - (theta * y * p).diff(y) - sigma**2 / 2 * p.diff(y, 2)
    return zero(sp.expand(residual / p))


@identity("Chapman-Kolmogorov: kernels s->u and u->t compose to s->t")
def _semigroup():
    k = derive()
    coef = lambda a, b: (k.mean / x).subs({s: a, t: b}, simultaneous=True)  # noqa: E731
    var = lambda a, b: k.variance.subs({s: a, t: b}, simultaneous=True)  # noqa: E731
    return all_of(
        zero(coef(u, t) * coef(s, u) - coef(s, t)),
        zero(coef(u, t) ** 2 * var(s, u) + var(u, t) - var(s, t)),
    )


@identity("stationary law N(0, sigma^2/(2 theta)): limit t -> oo and invariance under the kernel")
def _stationary():
    k = derive()
    vinf = sigma**2 / (2 * theta)
    coef = k.mean / x
    return all_of(zero(k.stationary_variance - vinf), zero(coef**2 * vinf + k.variance - vinf))


def checks() -> List[Check]:
    return identity.run_all()


def formulas() -> dict:
    k = derive()
    return {"E[X_t | X_s = x]": k.mean, "Var[X_t | X_s = x]": k.variance, "stationary variance": k.stationary_variance}
