"""Shared records for the theory checks: a :class:`Check` per identity and a registry of identities.

An identity is a function with no arguments that returns an :class:`Outcome`, usually built by
:func:`zero`, which decides whether a sympy expression (or matrix) is identically zero.

The primary decision is symbolic: a short chain of exact simplifiers (``cancel``, ``together``,
``expand``, ``simplify``, and the same after rewriting hyperbolic functions as exponentials) must
reduce the expression to the literal ``0``.  Where a caller passes ``points`` and the symbolic
chain does not reach ``0``, the expression is evaluated at those exact rational points; the outcome
then records ``method="rational points"`` so the report says that the proof was not symbolic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import sympy as sp

__all__ = ["Check", "Outcome", "Identities", "zero", "zero_modulo", "zero_at", "all_of", "truth", "is_zero", "gaussian_integral"]

SYMBOLIC = "symbolic"
RATIONAL = "rational points"  # the symbolic chain did not reach 0; decided at exact points only
SECONDARY = "rational points (secondary)"
BOTH = "symbolic + rational points"


@dataclass(frozen=True)
class Outcome:
    """Whether an identity holds and how that was decided (``"symbolic"`` or ``"rational points"``)."""

    holds: bool
    method: str = SYMBOLIC


@dataclass(frozen=True)
class Check:
    """One identity of one derivation: its name, whether it holds, and how that was decided.

    Unpacks as the pair ``(name, holds)``.
    """

    name: str
    holds: bool
    method: str = SYMBOLIC

    @property
    def status(self) -> str:
        return "OK" if self.holds else "FAIL"

    def __iter__(self) -> Iterator:
        return iter((self.name, self.holds))


def _strategies() -> Sequence[Callable[[sp.Expr], sp.Expr]]:
    return (
        lambda e: sp.cancel(sp.together(e)),
        lambda e: sp.cancel(sp.together(sp.powsimp(sp.expand(e)))),
        sp.simplify,
        lambda e: sp.simplify(sp.expand(e.rewrite(sp.exp))),
    )


def is_zero(expr) -> bool:
    """True when ``expr`` (an expression, or every entry of a matrix) simplifies to the literal 0."""
    expr = sp.sympify(expr)
    if isinstance(expr, sp.MatrixBase):
        return all(is_zero(e) for e in expr)
    if expr == 0:
        return True
    for simplifier in _strategies():
        try:
            if simplifier(expr) == 0:
                return True
        except (sp.PolynomialError, NotImplementedError, TypeError):  # pragma: no cover - defensive
            continue
    return False


def _zero_at(expr, points: Iterable[Mapping]) -> bool:
    """Exact substitution of rational points.  Each value (an exact constant such as
    ``cosh(sqrt(7)/3) - ...``) must be 0 after ``cancel``, or, where exact constants of that kind do not
    cancel, below 1e-45 in absolute value when evaluated with 60 significant digits."""
    entries = list(expr) if isinstance(expr, sp.MatrixBase) else [expr]
    for point in points:
        exact = {k: sp.Rational(v) for k, v in point.items()}
        for e in entries:
            val = sp.sympify(e).subs(exact)
            if val == 0 or sp.cancel(val) == 0:
                continue
            num = sp.N(val, 60)
            if not (num.is_number and abs(num) < sp.Float("1e-45", 60)):
                return False
    return True


def zero(expr, points: Optional[Sequence[Mapping]] = None) -> Outcome:
    """Outcome of "``expr`` is identically zero": symbolic first, exact rational points as fallback."""
    if is_zero(expr):
        return Outcome(True, SYMBOLIC)
    if points:
        return Outcome(_zero_at(expr, points), RATIONAL)
    return Outcome(False, SYMBOLIC)


def zero_modulo(expr, relations: Sequence[sp.Expr], gens: Sequence[sp.Symbol]) -> Outcome:
    """Outcome of "``expr`` vanishes on the variety ``relations == 0``", decided exactly.

    The numerator of ``expr`` (after ``cancel(together(.))``) is reduced by a Groebner basis of
    ``relations`` in the generators ``gens``; the remainder must be 0.  Used where the expression is a
    rational function of transcendental functions obeying algebraic relations (``cosh^2 - sinh^2 = 1``)
    that ``simplify`` handles slowly or not at all.  The denominator is not inspected: the caller
    must know it does not vanish.
    """
    expr = sp.sympify(expr)
    if isinstance(expr, sp.MatrixBase):
        return all_of(*[zero_modulo(e, relations, gens) for e in expr])
    num, _ = sp.fraction(sp.cancel(sp.together(expr)))
    num = sp.expand(num)
    if num == 0:
        return Outcome(True, SYMBOLIC)
    basis = sp.groebner([sp.expand(r) for r in relations], *gens, order="lex")
    _, rem = sp.reduced(num, list(basis), *gens, order="lex")
    return Outcome(sp.expand(rem) == 0, SYMBOLIC)


def zero_at(expr, points: Sequence[Mapping]) -> Outcome:
    """A secondary check: ``expr`` is 0 at the given exact rational points (alongside a symbolic proof)."""
    return Outcome(_zero_at(expr, points), SECONDARY)


def all_of(*outcomes: Outcome) -> Outcome:
    """Conjunction.  The method is "rational points" if any part fell back to points instead of a
    symbolic proof, "symbolic + rational points" if points were only a secondary check, else "symbolic"."""
    holds = all(o.holds for o in outcomes)
    methods = {o.method for o in outcomes}
    if RATIONAL in methods:
        method = RATIONAL
    elif methods & {SECONDARY, BOTH}:
        method = BOTH
    else:
        method = SYMBOLIC
    return Outcome(holds, method)


def truth(value) -> Outcome:
    """Outcome of a sympy boolean / Python bool (e.g. a solved equation compared with its expected root)."""
    return Outcome(bool(value is True or value == sp.true), SYMBOLIC)


class Identities:
    """An ordered registry of named identities; each module keeps one and registers with ``@identity(name)``.

    The names are known at import time, so tests can parametrize over them without running anything.
    """

    def __init__(self) -> None:
        self._fns: Dict[str, Callable[[], Outcome]] = {}

    def __call__(self, name: str) -> Callable[[Callable[[], Outcome]], Callable[[], Outcome]]:
        def register(fn: Callable[[], Outcome]) -> Callable[[], Outcome]:
            if name in self._fns:
                raise ValueError(f"duplicate identity name {name!r}")
            self._fns[name] = fn
            return fn

        return register

    def names(self) -> List[str]:
        return list(self._fns)

    def run(self, name: str) -> Check:
        out = self._fns[name]()
        if isinstance(out, bool):
            out = Outcome(out)
        return Check(name, bool(out.holds), out.method)

    def run_all(self) -> List[Check]:
        return [self.run(n) for n in self._fns]


def gaussian_integral(exponent: sp.Expr, var: sp.Symbol) -> Tuple[sp.Expr, sp.Expr]:
    r"""Integrate :math:`\int_{-\infty}^{\infty} e^{E(y)} dy` for a quadratic :math:`E = -a y^2 + b y + c`.

    Returns ``(value, a)``; the value :math:`\sqrt{\pi/a}\, e^{b^2/(4a) + c}` is valid when ``a > 0``,
    which the caller must establish.
    """
    poly = sp.Poly(sp.expand(exponent), var)
    if poly.degree() != 2:
        raise ValueError(f"exponent must be quadratic in {var}; got degree {poly.degree()}")
    a = -poly.coeff_monomial(var**2)
    b = poly.coeff_monomial(var)
    c = poly.coeff_monomial(1)
    return sp.sqrt(sp.pi / a) * sp.exp(b**2 / (4 * a) + c), a
