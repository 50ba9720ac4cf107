"""``python -m theory [MODULE ...]``: print every derivation and the status of each identity.

Exits with status 1 if any identity fails (or raises), 0 otherwise.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import sympy as sp

from . import MODULE_NAMES, modules
from ._check import Check


def _one_line(expr) -> str:
    return sp.sstr(expr).replace("\n", " ")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m theory", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"run only these modules (default: all): {', '.join(MODULE_NAMES)}")
    parser.add_argument("--pretty", action="store_true", help="pretty-print formulas (2-d) instead of one line")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULE_NAMES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULE_NAMES)}")
    wanted = args.modules or list(MODULE_NAMES)

    n_ok = n_fail = 0
    t_start = time.perf_counter()
    for i, (name, mod) in enumerate((k, v) for k, v in modules().items() if k in wanted):
        t0 = time.perf_counter()
        print(f"== {i + 1}. {mod.TITLE}  [theory.{name}]")
        try:
            for label, expr in mod.formulas().items():
                if args.pretty:
                    print(f"  {label} =")
                    print("    " + sp.pretty(expr).replace("\n", "\n    "))
                else:
                    print(f"  {label} = {_one_line(expr)}")
        except Exception:  # noqa: BLE001 - report and count as failure
            print("  derive() raised:\n" + traceback.format_exc())
            n_fail += 1
            continue
        for ident in mod.identity.names():
            try:
                check = mod.identity.run(ident)
            except Exception as exc:  # noqa: BLE001
                check = Check(ident, False, f"raised {type(exc).__name__}: {exc}")
            n_ok += check.holds
            n_fail += not check.holds
            print(f"  [{check.status:4s}] {check.name}  ({check.method})")
        print(f"  ({time.perf_counter() - t0:.1f} s)\n")
    total = time.perf_counter() - t_start
    print(f"{n_ok} identities OK, {n_fail} FAIL, {total:.1f} s")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
