r"""Critically-damped Langevin diffusion (CLD) transition kernel, per coordinate.

SDE (Dockhorn, Vahdat & Kreis 2022, eq. 5, constant :math:`\beta`), state :math:`y = (x, v)`:

.. math::
    dx = \beta M^{-1} v\,dt, \qquad
    dv = (-\beta x - \Gamma \beta M^{-1} v)\,dt + \sqrt{2\Gamma\beta}\,dW,

i.e. :math:`dy = A y\,dt + G\,dW` with :math:`A = \begin{pmatrix}0 & \beta/M\\ -\beta & -\Gamma\beta/M\end{pmatrix}`
and :math:`D = G G^\top = \mathrm{diag}(0, 2\Gamma\beta)`.

Results.

* The characteristic polynomial of :math:`A` has discriminant :math:`\beta^2(\Gamma^2 - 4M)/M^2`:
  a double eigenvalue :math:`\lambda = -\beta/\sqrt M` exactly when :math:`\Gamma^2 = 4M` (critical
  damping), and then :math:`A` is a single Jordan block, :math:`(A - \lambda I)^2 = 0`.
* Mean map: :math:`e^{At} = e^{\lambda t}\,(I + (A - \lambda I)\,t)`; with :math:`B = \beta t`,
  :math:`g = 1/\Gamma`,
  :math:`\mathbb E[x_t] = e^{-2Bg}(x + 2Bg\,x + 4Bg^2 v)`, :math:`\mathbb E[v_t] = e^{-2Bg}(v - Bx - 2Bg\,v)`.
* Covariance from a point mass: the Lyapunov ODE :math:`\Sigma' = A\Sigma + \Sigma A^\top + D`,
  :math:`\Sigma(0) = 0` has solution :math:`\Sigma(t) = \int_0^t e^{Au} D e^{A^\top u} du
  = \Sigma_\infty - e^{At}\Sigma_\infty e^{A^\top t}` with :math:`\Sigma_\infty = \mathrm{diag}(1, M)`
  (the equilibrium :math:`\mathcal N(0, 1) \otimes \mathcal N(0, M)`).  In :math:`(B, g)`:
  :math:`\Sigma_{xx} = 1 - e^{-4Bg}(1 + 4Bg + 8B^2g^2)`, :math:`\Sigma_{xv} = 4gB^2 e^{-4Bg}`,
  :math:`\Sigma_{vv} = M - e^{-4Bg}(M - B/g + 2B^2)`.

Source: T. Dockhorn, A. Vahdat, K. Kreis, "Score-Based Generative Modeling with Critically-Damped
Langevin Diffusion", ICLR 2022 (arXiv 2112.07068), §3 and App. B.1; mean formulas as in the authors'
code (docs/references.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, all_of, truth, zero

TITLE = "Critically-damped Langevin (CLD) kernel"

t, u = sp.symbols("t u", nonnegative=True)
beta, M, Gamma = sp.symbols("beta M Gamma", positive=True)
x, v = sp.symbols("x v", real=True)
lam = sp.symbols("lambda")
B, g = sp.symbols("B g", positive=True)  # B = beta t, g = 1/Gamma (critical: M = 1/(4 g^2))


def generator(gamma: sp.Expr = Gamma) -> sp.Matrix:
    """Drift matrix A of dy = A y dt + G dW for y = (x, v)."""
    return sp.Matrix([[0, beta / M], [-beta, -gamma * beta / M]])


def diffusion(gamma: sp.Expr = Gamma) -> sp.Matrix:
    """D = G G' = diag(0, 2 Gamma beta)."""
    return sp.diag(0, 2 * gamma * beta)


@dataclass(frozen=True)
class CLDKernel:
    discriminant: sp.Expr  # discriminant of det(lam I - A) in lam, general Gamma
    critical_gamma: sp.Expr  # the positive root of discriminant = 0
    eigenvalue: sp.Expr  # the double eigenvalue at critical damping
    mean_map: sp.Matrix  # exp(A t) at critical damping, in (t, beta, M)
    covariance: sp.Matrix  # Sigma(t) from Sigma(0) = 0, in (t, beta, M)
    stationary_covariance: sp.Matrix
    mean_map_Bg: sp.Matrix  # the mean map written in B = beta t, g = 1/Gamma
    covariance_Bg: sp.Matrix


@lru_cache(maxsize=None)
def derive() -> CLDKernel:
    A = generator()
    disc = sp.factor(sp.discriminant(A.charpoly(lam).as_expr(), lam))
    roots = sp.solve(sp.Eq(disc, 0), Gamma)  # Gamma is positive: the single root 2 sqrt(M)
    (gc,) = roots
    Ac = generator(gc)
    (ev,) = sp.roots(Ac.charpoly(lam).as_expr(), lam).keys()
    N = Ac - ev * sp.eye(2)
    # N**2 = 0 (checked below), so the exponential series stops after the linear term.
    phi = sp.exp(ev * t) * (sp.eye(2) + N * t)
    Dc = diffusion(gc)
    integrand = (phi * Dc * phi.T).subs(t, u).applyfunc(sp.expand)
    cov = integrand.applyfunc(lambda e: sp.integrate(e, (u, 0, t)))
    decay = sp.exp(2 * ev * t)
    cov = cov.applyfunc(lambda e: sp.collect(sp.expand(sp.powsimp(sp.expand(e))), decay, sp.factor))
    # stationary covariance: solve the algebraic Lyapunov equation A S + S A' + D = 0
    a, b, c = sp.symbols("a b c")
    S = sp.Matrix([[a, b], [b, c]])
    sol = sp.solve(list(A * S + S * A.T + diffusion()), [a, b, c], dict=True)
    (sol,) = sol
    sinf = S.subs(sol)
    to_Bg = {beta: B / t, M: 1 / (4 * g**2)}
    phi_Bg = phi.subs(to_Bg).applyfunc(sp.simplify)
    z = sp.exp(-4 * B * g)
    cov_Bg = cov.subs(to_Bg).applyfunc(lambda e: sp.collect(sp.expand(sp.simplify(e)), z))
    return CLDKernel(
        discriminant=disc,
        critical_gamma=gc,
        eigenvalue=ev,
        mean_map=phi,
        covariance=cov,
        stationary_covariance=sinf,
        mean_map_Bg=phi_Bg,
        covariance_Bg=cov_Bg,
    )


def mean_map() -> sp.Matrix:
    """exp(A t) under critical damping: E[(x_t, v_t) | (x_0, v_0)] = mean_map @ (x_0, v_0); symbols (t, beta, M)."""
    return derive().mean_map


def covariance() -> sp.Matrix:
    """Cov[(x_t, v_t) | (x_0, v_0)] under critical damping, a 2x2 matrix in (t, beta, M)."""
    return derive().covariance


identity = Identities()


@identity("discriminant of det(lam I - A) = beta^2 (Gamma^2 - 4M) / M^2; zero iff Gamma = 2 sqrt(M)")
def _double_eigenvalue():
    k = derive()
    return all_of(
        zero(k.discriminant - beta**2 * (Gamma**2 - 4 * M) / M**2),
        truth(sp.Eq(k.critical_gamma, 2 * sp.sqrt(M))),
        zero(k.eigenvalue + beta / sp.sqrt(M)),
    )


@identity("critical damping: (A - lam I)^2 = 0 and A - lam I != 0 (one Jordan block)")
def _jordan():
    k = derive()
    N = generator(k.critical_gamma) - k.eigenvalue * sp.eye(2)
    return all_of(zero(N * N), truth(not N.is_zero_matrix))


@identity("mean map solves Phi' = A Phi, Phi(0) = I")
def _mean_ode():
    k = derive()
    A = generator(k.critical_gamma)
    return all_of(zero(k.mean_map.diff(t) - A * k.mean_map), zero(k.mean_map.subs(t, 0) - sp.eye(2)))


@identity("mean map = REFERENCES: e^{-2Bg}(x + 2Bg x + 4Bg^2 v), e^{-2Bg}(v - Bx - 2Bg v), B = beta t, g = 1/Gamma")
def _mean_reference():
    k = derive()
    B, g = beta * t, 1 / k.critical_gamma
    ref = sp.exp(-2 * B * g) * sp.Matrix([x + 2 * B * g * x + 4 * B * g**2 * v, v - B * x - 2 * B * g * v])
    return zero(k.mean_map * sp.Matrix([x, v]) - ref)


@identity("covariance solves the Lyapunov ODE Sigma' = A Sigma + Sigma A' + D, Sigma(0) = 0")
def _lyapunov():
    k = derive()
    A, D = generator(k.critical_gamma), diffusion(k.critical_gamma)
    S = k.covariance
    return all_of(zero(S.diff(t) - A * S - S * A.T - D), zero(S.subs(t, 0)))


@identity("covariance in (B, g): 1 - e^{-4Bg}(1 + 4Bg + 8B^2g^2), 4gB^2 e^{-4Bg}, M - e^{-4Bg}(M - B/g + 2B^2)")
def _covariance_Bg():
    k = derive()
    z = sp.exp(-4 * B * g)
    Mg = 1 / (4 * g**2)
    expected = sp.Matrix([
        [1 - z * (1 + 4 * B * g + 8 * B**2 * g**2), 4 * g * B**2 * z],
        [4 * g * B**2 * z, Mg - z * (Mg - B / g + 2 * B**2)],
    ])
    return zero(k.covariance_Bg - expected)


@identity("stationary covariance diag(1, M) (any Gamma); Sigma(t) = Sigma_inf - Phi Sigma_inf Phi' -> Sigma_inf")
def _stationary():
    k = derive()
    sinf = k.stationary_covariance
    phi = k.mean_map
    closed = sinf - phi * sinf * phi.T
    lim = k.covariance.applyfunc(lambda e: sp.limit(e, t, sp.oo))
    return all_of(zero(sinf - sp.diag(1, M)), zero(k.covariance - closed), zero(lim - sp.diag(1, M)))


def checks() -> List[Check]:
    return identity.run_all()


def formulas() -> dict:
    k = derive()
    return {
        "discriminant": k.discriminant,
        "critical Gamma": k.critical_gamma,
        "double eigenvalue": k.eigenvalue,
        "exp(A t)": k.mean_map,
        "Sigma(t)": k.covariance,
        "Sigma_inf": k.stationary_covariance,
        "exp(A t) in (B = beta t, g = 1/Gamma)": k.mean_map_Bg,
        "Sigma(t) in (B, g)": k.covariance_Bg,
    }
