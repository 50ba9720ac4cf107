r"""Two kernels of the generative samplers' processes: the sub-VP SDE and the linear part of a reverse-time SDE.

**Sub-VP** (Song et al. 2021, eq. 34). With a schedule :math:`A(t) = \int_0^t \beta` (any increasing function,
:math:`\beta = A'`), :math:`dX = -\tfrac12 \beta X\,dt + \sqrt{\beta (1 - e^{-2A})}\,dW`. Claimed kernel from s to t:

.. math:: \phi = e^{-(A_t - A_s)/2}, \qquad q = \big(1 - e^{-(A_t - A_s)}\big)\big(1 - e^{-(A_s + A_t)}\big).

**Reversed linear part** (:class:`controlsamp.processes.Reversed`). For an isotropic linear SDE
:math:`dX = k X\,dt + g\,dW` write :math:`k = K'` and :math:`g^2 = e^{2K} H'` (any functions K, H), so that its
kernel is :math:`\phi(a, b) = e^{K_b - K_a}`, :math:`q(a, b) = e^{2K_b}(H_b - H_a)`. The process
:math:`dY_s = -k(T - s) Y\,ds + g(T - s)\,dW` has the claimed kernel from :math:`s_1` to :math:`s_2`

.. math:: \phi_{rev} = 1/\phi(T - s_2, T - s_1), \qquad q_{rev} = q(T - s_2, T - s_1) / \phi(T - s_2, T - s_1)^2.

Checks: each kernel solves the moment ODEs :math:`\partial\phi = k\phi`, :math:`\partial q = 2kq + g^2` in its
end time with :math:`\phi = 1`, :math:`q = 0` at the start; sub-VP from 0 is :math:`(1 - \bar\alpha)^2` with
:math:`\bar\alpha = e^{-A}`; both satisfy Chapman–Kolmogorov.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List

import sympy as sp

from ._check import Check, Identities, all_of, zero

TITLE = "sub-VP kernel and the reversed linear part"

s, t, u, T = sp.symbols("s t u T", real=True)
A, K, H = sp.Function("A"), sp.Function("K"), sp.Function("H")


@dataclass(frozen=True)
class ReverseKernels:
    subvp_phi: sp.Expr
    subvp_q: sp.Expr
    rev_phi: sp.Expr  # kernel of the reversed linear part from s to t (s, t in reversed time)
    rev_q: sp.Expr


def _fwd(a, b):
    """(phi, q) of dX = K' X dt + sqrt(e^{2K} H') dW from a to b."""
    return sp.exp(K(b) - K(a)), sp.exp(2 * K(b)) * (H(b) - H(a))


@lru_cache(maxsize=None)
def derive() -> ReverseKernels:
    phi = sp.exp(-(A(t) - A(s)) / 2)
    q = (1 - sp.exp(-(A(t) - A(s)))) * (1 - sp.exp(-(A(s) + A(t))))
    fphi, fq = _fwd(T - t, T - s)
    return ReverseKernels(subvp_phi=phi, subvp_q=q, rev_phi=1 / fphi, rev_q=fq / fphi ** 2)


identity = Identities()


@identity("sub-VP: phi' = -beta/2 phi, q' = -beta q + beta (1 - e^{-2A}), phi(s) = 1, q(s) = 0")
def _subvp_odes():
    k = derive()
    beta = A(t).diff(t)
    return all_of(
        zero(k.subvp_phi.diff(t) + beta / 2 * k.subvp_phi),
        zero(k.subvp_q.diff(t) + beta * k.subvp_q - beta * (1 - sp.exp(-2 * A(t)))),
        zero(k.subvp_phi.subs(t, s) - 1),
        zero(k.subvp_q.subs(t, s)),
    )


@identity("sub-VP from 0 (A(0) = 0): q = (1 - alpha_bar)^2, alpha_bar = e^{-A}")
def _subvp_from_zero():
    q0 = derive().subvp_q.subs(A(s), 0)
    return zero(q0 - (1 - sp.exp(-A(t))) ** 2)


@identity("sub-VP Chapman-Kolmogorov: kernels s->u and u->t compose to s->t")
def _subvp_semigroup():
    k = derive()
    phi = lambda a, b: k.subvp_phi.subs({s: a, t: b}, simultaneous=True)  # noqa: E731
    q = lambda a, b: k.subvp_q.subs({s: a, t: b}, simultaneous=True)  # noqa: E731
    return all_of(zero(phi(u, t) * phi(s, u) - phi(s, t)), zero(phi(u, t) ** 2 * q(s, u) + q(u, t) - q(s, t)))


@identity("reversed part: phi' = -k(T - t) phi, q' = -2 k(T - t) q + g(T - t)^2 in t, phi(s) = 1, q(s) = 0")
def _reversed_odes():
    k = derive()
    k_at = sp.Derivative(K(u), u).subs(u, T - t).doit()
    g2_at = (sp.exp(2 * K(u)) * sp.Derivative(H(u), u)).subs(u, T - t).doit()
    return all_of(
        zero(k.rev_phi.diff(t) + k_at * k.rev_phi),
        zero(k.rev_q.diff(t) + 2 * k_at * k.rev_q - g2_at),
        zero(k.rev_phi.subs(t, s) - 1),
        zero(k.rev_q.subs(t, s)),
    )


@identity("reversed part Chapman-Kolmogorov: kernels s->u and u->t compose to s->t")
def _reversed_semigroup():
    k = derive()
    phi = lambda a, b: k.rev_phi.subs({s: a, t: b}, simultaneous=True)  # noqa: E731
    q = lambda a, b: k.rev_q.subs({s: a, t: b}, simultaneous=True)  # noqa: E731
    return all_of(zero(phi(u, t) * phi(s, u) - phi(s, t)), zero(phi(u, t) ** 2 * q(s, u) + q(u, t) - q(s, t)))


def checks() -> List[Check]:
    return identity.run_all()


def formulas() -> dict:
    k = derive()
    return {"sub-VP phi(s, t)": k.subvp_phi, "sub-VP q(s, t)": k.subvp_q, "reversed phi(s, t)": k.rev_phi,
            "reversed q(s, t)": k.rev_q}
