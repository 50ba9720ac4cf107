r"""Unadjusted Langevin algorithm (ULA) on a 1-d Gaussian: stationary variance and contraction.

Chain: target :math:`\mathcal N(0, s)`, step :math:`h > 0`,

.. math::  x' = x + h\,\nabla\log\pi(x) + \sqrt{2h}\,\xi = (1 - h/s)\,x + \sqrt{2h}\,\xi,
           \qquad \xi \sim \mathcal N(0, 1).

Result.  The chain is Gaussian (AR(1)) with mean contracting by :math:`\rho = 1 - h/s` and variance
map :math:`v' = \rho^2 v + 2h`.  Its fixed point

.. math::  v^* = \frac{2h}{1 - (1 - h/s)^2} = \frac{s}{1 - h/(2s)}

is the invariant variance; the iteration contracts (:math:`\rho^2 < 1`) exactly for
:math:`0 < h < 2s`, and then :math:`v_n = v^* + \rho^{2n}(v_0 - v^*)`.  The bias
:math:`v^* - s = sh/(2s - h) = O(h)` is the discretisation error of ULA (the continuous-time
Langevin diffusion has invariant variance :math:`s`).

Checks: the fixed-point identity; the docs/references.md form; the contraction interval; the closed form
of the iterates; the :math:`h \to 0` limit and first-order bias.

Source: G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions and their
discrete approximations", Bernoulli 2(4), 1996, §1.4 (the Gaussian example).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, Outcome, all_of, truth, zero

TITLE = "ULA on N(0, s): stationary variance"

h, s = sp.symbols("h s", positive=True)
v, v0 = sp.symbols("v v0", real=True)
n = sp.Symbol("n", integer=True, nonnegative=True)
u = sp.Symbol("u", positive=True)  # h / s


@dataclass(frozen=True)
class ULAGaussian:
    rho: sp.Expr  # mean contraction factor 1 - h/s
    variance_map: sp.Expr  # v -> rho^2 v + 2h
    stationary_variance: sp.Expr
    iterates: sp.Expr  # v_n from v_0
    contraction_interval: sp.Set  # of h / s


@lru_cache(maxsize=None)
def derive() -> ULAGaussian:
    x, xi = sp.symbols("x xi", real=True)
    step = x - h * x / s + sp.sqrt(2 * h) * xi
    rho = sp.expand(step.diff(x))
    # Var(x') = rho^2 Var(x) + 2h Var(xi), x and xi independent, Var(xi) = 1
    vmap = rho**2 * v + step.diff(xi) ** 2
    (vstar,) = sp.solve(sp.Eq(v, vmap), v)
    vstar = sp.factor(vstar)
    # v_n = v* + rho^(2n) (v0 - v*): solve the linear recurrence
    vn = sp.Function("vn")
    sol = sp.rsolve(vn(n + 1) - vmap.subs(v, vn(n)), vn(n), {vn(0): v0})
    interval = sp.solveset(sp.Lt((rho**2).subs(h, u * s), 1), u, sp.Interval.open(0, sp.oo))
    return ULAGaussian(
        rho=rho,
        variance_map=vmap,
        stationary_variance=vstar,
        iterates=sol,
        contraction_interval=interval,
    )


def stationary_variance() -> sp.Expr:
    """v* in (h, s)."""
    return derive().stationary_variance


identity = Identities()


@identity("fixed point: v* = (1 - h/s)^2 v* + 2h")
def _fixed_point():
    k = derive()
    return zero(k.stationary_variance - k.variance_map.subs(v, k.stationary_variance))


@identity("v* = s / (1 - h/(2s)) [REFERENCES]")
def _reference():
    return zero(derive().stationary_variance - s / (1 - h / (2 * s)))


@identity("contraction: (1 - h/s)^2 < 1 iff 0 < h < 2s")
def _contraction():
    return truth(sp.Eq(derive().contraction_interval, sp.Interval.open(0, 2)))


@identity("iterates: v_n = v* + (1 - h/s)^(2n) (v0 - v*)")
def _iterates():
    k = derive()
    vstar = k.stationary_variance
    w = sp.Symbol("w")  # stands for (rho^2)^n
    powers = [p for p in k.iterates.atoms(sp.Pow) if p.exp == n]
    same_base = all_of(*[zero(p.base - k.rho**2) for p in powers])
    from_rsolve = k.iterates.subs({p: w for p in powers})
    expected = vstar + w * (v0 - vstar)
    # and the claimed closed form satisfies the recurrence: v_{n+1} = rho^2 v_n + 2h, v_0 = v0
    recurrence = (vstar + k.rho**2 * w * (v0 - vstar)) - k.variance_map.subs(v, expected)
    return all_of(
        Outcome(len(powers) == 1),
        same_base,
        zero(from_rsolve - expected),
        zero(recurrence),
        zero(expected.subs(w, 1) - v0),
    )


@identity("h -> 0: v* -> s, bias v* - s = s h / (2s - h) = h/2 + O(h^2)")
def _small_step():
    vstar = derive().stationary_variance
    return all_of(
        zero(sp.limit(vstar, h, 0) - s),
        zero(vstar - s - s * h / (2 * s - h)),
        zero(sp.series(vstar - s, h, 0, 2).removeO() - h / 2),
    )


def checks() -> List[Check]:
    return identity.run_all()


def formulas() -> dict:
    k = derive()
    return {
        "variance map": k.variance_map,
        "v*": k.stationary_variance,
        "v_n": k.iterates,
        "contraction set of h/s": k.contraction_interval,
    }
