"""theory: symbolic (sympy) derivations of every closed form controlsamp relies on.

Pure sympy: nothing here imports controlsamp or torch.  Each module derives one result from first
principles and checks the identities it must satisfy by exact simplification to zero:

=====================  ====================================================================
``ou_kernel``          OU transition kernel; moment ODEs, Fokker–Planck, Chapman–Kolmogorov
``cld_kernel``         critically-damped Langevin: double eigenvalue, exp(At), Lyapunov covariance
``gaussian_bridge``    1-d Gaussian Schrödinger bridge: coupling, marginals, drift, Fokker–Planck
``follmer``            Schrödinger–Föllmer h-function, drift, value (HJB), moments, Gaussian target
``lqr``                scalar LQR: Riccati closed form, r0, HJB and optimal feedback
``ula``                ULA on N(0, s): stationary variance, contraction
``noised_score``       noised Gaussian / mixture data: marginal, score, Fokker–Planck, Tweedie
``reverse_kernels``    sub-VP kernel; the linear part of a reverse-time SDE: moment ODEs, semigroup
``heat_kernel``        heat kernels of S^d and T^d: series terms, images, Varadhan; vMF Bessel-ratio coefficients
=====================  ====================================================================

Every module exposes ``derive()`` (cached; a dataclass of sympy expressions), ``checks()`` (a list
of :class:`theory._check.Check`, each unpacking as ``(name, holds)``), ``formulas()`` (name ->
expression, for printing), ``identity.names()`` (the identity names, known at import) and functions
returning the exported expressions for ``sympy.lambdify``.  ``python -m theory`` prints everything
and exits non-zero if any identity fails.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict, List

from ._check import Check

MODULE_NAMES = ("ou_kernel", "cld_kernel", "gaussian_bridge", "follmer", "lqr", "ula", "noised_score", "reverse_kernels")
MODULE_NAMES = MODULE_NAMES + ("heat_kernel",)

__all__ = ["MODULE_NAMES", "Check", "modules", "run_all"]


def modules() -> Dict[str, ModuleType]:
    """name -> imported theory module, in the order above."""
    return {name: importlib.import_module(f"{__name__}.{name}") for name in MODULE_NAMES}


def run_all() -> Dict[str, List[Check]]:
    """Run every module's checks: name -> list of Check."""
    return {name: mod.checks() for name, mod in modules().items()}
