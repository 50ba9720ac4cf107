"""Control solvers of `cs.solve` on a 5-d linear–quadratic regulator with a known optimum.

The problem is a relative-entropy LQR (B = sigma, R = (rho/2) I, so that every method, the log-variance
loss included, solves the same problem):

    dX = (A X + sigma u) dt + sigma dW on [0, 1],  X_0 ~ N(1, I/2),
    J(u) = E[ int_0^1 (X'QX + (rho/2)|u|^2) dt + X_1' F X_1 ],

A random and stable, sigma = I + 0.5 N / sqrt(d) well conditioned, Q and F diagonal, rho = 1. The exact
optimal cost is `cs.exact.LQR.cost(mean0, cov0)` (the Riccati equation).

Table "methods": each method trains for a fixed budget of drift evaluations (one evaluation = f(t, x) at one
state; the drift is wrapped in a counter, so the adjoint's backward pass and the lean adjoint of adjoint
matching are counted too) and reports seconds per iteration, peak memory of one iteration, and the gap of the
learned cost (Euler–Maruyama, ``--eval-n`` paths, ``--eval-steps`` steps) to the Riccati cost.

The reversible-Heun adjoint runs in float64 (``cs.solve`` refuses it in float32, whose round-off corrupts its
gradient); every other row runs in float32.

Table "steps": adjoint (Euler) and backprop at 50, 100, 200, 400 time steps, a fixed number of iterations.

Peak memory is measured in a fresh subprocess per configuration: one warm-up iteration at batch 8, glibc's
malloc_trim, then the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``) and one iteration at the
full batch runs; "peak RSS / iter" is the peak resident set size during it minus the resident size before it
(this covers torch's CPU allocations, which tracemalloc does not see), "tracemalloc peak" the peak of Python
allocations during a second such iteration.

    .venv/bin/python benchmarks/control.py --table methods --out methods.json     # ~3 min
    .venv/bin/python benchmarks/control.py --table steps --out steps.json         # ~2 min
    .venv/bin/python benchmarks/control.py --quick            # both tables, small budgets (~1.5 min)

A configuration that raises a ValueError is reported as a failed row rather than ending the run.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import torch

torch.set_num_threads(1)

import controlsamp as cs  # noqa: E402
from controlsamp.control.objectives import Batch  # noqa: E402
from controlsamp.control.policies import AffinePolicy, make_policy  # noqa: E402
from controlsamp.control.solve import make_objective  # noqa: E402
from controlsamp.training import Streams  # noqa: E402

# (label, method, solver, dtype): the reversible-Heun adjoint needs float64 (cs.solve refuses float32)
SOLVERS = [
    ("adjoint (Euler)", "adjoint", "euler", "float32"),
    ("adjoint (reversible Heun), float64", "adjoint", "reversible_heun", "float64"),
    ("backprop (Euler)", "backprop", "euler", "float32"),
    ("log-variance", "log_variance", "euler", "float32"),
    ("adjoint matching", "adjoint_matching", "euler", "float32"),
]
LR = {"affine": 0.05, "mlp": 3e-3}
MEMORY_METHOD = ("peak RSS growth of one training iteration in a fresh subprocess, after a warm-up iteration at "
                 "batch 8 and glibc malloc_trim: VmHWM after the iteration (reset through /proc/self/clear_refs) "
                 "minus VmRSS before it; tracemalloc peak of the Python allocations of a second iteration")


class DriftCounter:
    """f(t, x) = A x that counts its calls and the states it is evaluated at (rows of x)."""

    def __init__(self, A: np.ndarray):
        self.A = torch.tensor(A, dtype=torch.float32)
        self.calls = self.rows = 0

    def __call__(self, t, x):
        self.calls += 1
        self.rows += x.shape[0]
        return x @ self.A.to(x.dtype).T


def lqr_problem(d: int = 5, seed: int = 0, steps: int = 50, T: float = 1.0, rho: float = 1.0):
    """(ControlProblem with a counting drift, exact LQR, mean0, cov0, counter)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / math.sqrt(d) - np.eye(d)
    S = np.eye(d) + 0.5 * rng.normal(size=(d, d)) / math.sqrt(d)
    assert np.linalg.eigvals(A).real.max() < 0 and np.linalg.cond(S) < 10
    R = 0.5 * rho * np.eye(d)
    Q = np.diag(rng.uniform(0.5, 1.5, d))
    F = np.diag(rng.uniform(0.5, 1.5, d))
    mean0, cov0 = np.ones(d), 0.5 * np.eye(d)
    Qt, Ft = (torch.tensor(v, dtype=torch.float32) for v in (Q, F))
    counter = DriftCounter(A)

    def running(t, x):
        return ((x @ Qt.to(x.dtype)) * x).sum(1)

    def terminal(x):
        return ((x @ Ft.to(x.dtype)) * x).sum(1)

    problem = cs.ControlProblem(d, counter, S, terminal, running_cost=running, control_matrix=S, control_cost=R,
                                x0=(mean0, cov0), T=T, steps=steps)
    assert problem.kl_scale() == rho
    return problem, cs.exact.LQR(A, S, Q, R, F, S, T), mean0, cov0, counter


# ---------------------------------------------------------------------------------------------------------
# memory probe (runs in a fresh subprocess)

def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"^{key}:\s+(\d+)", fh.read(), re.M).group(1))


def _malloc_trim() -> None:
    """Hand free heap pages back to the kernel (glibc), so that the next iteration's allocations show in RSS
    instead of reusing pages that are resident but free."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _probe(cfg: dict) -> dict:
    problem, *_ = lqr_problem(steps=cfg["steps"], seed=cfg["problem_seed"])
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    module = make_policy(cfg["policy"], problem).to(dtype)
    objective = make_objective(cfg["method"], cfg["solver"])
    opt = torch.optim.Adam(list(module.parameters()) + list(objective.parameters()), lr=1e-3)
    streams = Streams(0)

    def step(batch: int, it: int) -> None:  # what solve() does in one iteration
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(problem, module, Batch(batch, streams, streams.entropy(it), "cpu", dtype))
        loss.backward()
        opt.step()

    step(8, 0)
    gc.collect()
    _malloc_trim()
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        reset = False
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    step(cfg["batch"], 1)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    gc.collect()
    _malloc_trim()
    tracemalloc.start()
    step(cfg["batch"], 2)
    py_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rss_mib": (peak - before) / 1024, "py_mib": py_peak / 2 ** 20, "hwm_reset": reset,
            "first_step_s": seconds}


def memory(method: str, solver: str, policy: str, steps: int, batch: int, args, dtype: str = "float32") -> dict:
    cfg = dict(method=method, solver=solver, policy=policy, steps=steps, batch=batch, dtype=dtype,
               problem_seed=args.problem_seed)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_probe", json.dumps(cfg)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------

def train(problem, counter, method, solver, policy, iters, args, dtype: str = "float32"):
    counter.calls = counter.rows = 0
    sol = cs.solve(problem, method=method, solver=solver, policy=policy, iters=iters, batch=args.batch,
                   lr=LR[policy], seed=args.seed, progress=False, dtype=getattr(torch, dtype))
    return sol, counter.rows


def evaluate(sol, exact: float, args) -> dict:
    """Gap of the learned cost to the Riccati cost. Solution.cost draws its noise in the policy's dtype, so a
    float64 policy is evaluated as a float32 copy: every row then shares the same evaluation noise."""
    t0 = time.perf_counter()
    sol = cs.Solution(sol.problem, copy.deepcopy(sol.module).float(), {}, sol.method, (None, {}))
    c, se = sol.cost(n=args.eval_n, steps=args.eval_steps, seed=args.eval_seed)
    return {"cost": c, "cost_se": se, "gap_pct": 100 * (c - exact) / exact, "gap_se_pct": 100 * se / exact,
            "eval_s": time.perf_counter() - t0}


def reference_rows(problem, lqr, exact, steps, args) -> list:
    """The cost of the zero control and of the exact optimum of the Euler-discretised problem on the training
    grid (lqr.euler_gains), both evaluated like the learned policies."""
    rows = []
    for label, K in [("uncontrolled (u = 0)", None), (f"Euler-grid optimum (lqr.euler_gains({steps}))",
                                                      lqr.euler_gains(steps))]:
        pol = AffinePolicy(problem.dim, problem.control_dim, problem.T, steps)
        if K is not None:
            with torch.no_grad():
                pol.K.copy_(K.float())
        sol = cs.Solution(problem, pol, {}, "reference", (None, {}))
        rows.append({"label": label, **evaluate(sol, exact, args)})
    return rows


def evals_per_iter(method, solver, policy, args, steps, dtype="float32"):
    """Drift evaluations of cs.solve with 1 and 2 iterations: (per iteration, fixed overhead)."""
    problem, _, _, _, counter = lqr_problem(steps=steps, seed=args.problem_seed)
    n1 = train(problem, counter, method, solver, policy, 1, args, dtype)[1]
    n2 = train(problem, counter, method, solver, policy, 2, args, dtype)[1]
    return n2 - n1, 2 * n1 - n2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def table_methods(args) -> dict:
    problem, lqr, mean0, cov0, counter = lqr_problem(steps=args.steps, seed=args.problem_seed)
    exact = lqr.cost(mean0, cov0)
    configs = [(lab, m, s, "affine", dt) for lab, m, s, dt in SOLVERS]
    configs += [(lab, m, s, "mlp", dt) for lab, m, s, dt in SOLVERS if m in args.mlp_methods]
    rows = []
    for label, method, solver, policy, dtype in configs:
        try:
            per_iter, overhead = evals_per_iter(method, solver, policy, args, args.steps, dtype)
            iters = max(1, (args.budget - overhead) // per_iter)
            log(f"[methods] {label} / {policy}: {per_iter} drift evaluations per iteration -> {iters} iterations")
            sol, counted = train(problem, counter, method, solver, policy, iters, args, dtype)
        except ValueError as e:  # a failure of the package is a result, not a reason to lose the table
            log(f"[methods] {label} / {policy} failed: {e}")
            rows.append({"label": label, "method": method, "solver": solver, "policy": policy, "dtype": dtype,
                         "error": f"{type(e).__name__}: {e}"})
            continue
        sec = float(np.median(sol.history["seconds"]))
        row = {"label": label, "method": method, "solver": solver, "policy": policy, "dtype": dtype, "iters": iters,
               "drift_evals": counted, "drift_evals_per_iter": per_iter, "s_per_iter": sec,
               "s_per_1M_drift_evals": sec / per_iter * 1e6, "train_s": float(sum(sol.history["seconds"])),
               **evaluate(sol, exact, args)}
        row["memory"] = memory(method, solver, policy, args.steps, args.batch, args, dtype)
        rows.append(row)
    refs = reference_rows(problem, lqr, exact, args.steps, args)
    return {"exact_cost": exact, "rows": rows, "references": refs}


def table_steps(args) -> dict:
    rows = []
    for steps in args.steps_list:
        problem, lqr, mean0, cov0, counter = lqr_problem(steps=steps, seed=args.problem_seed)
        exact = lqr.cost(mean0, cov0)
        ref = reference_rows(problem, lqr, exact, steps, args)[1]
        for label, method, solver, _ in [SOLVERS[0], SOLVERS[2]]:
            log(f"[steps] {label}, {steps} steps, {args.steps_iters} iterations")
            try:
                sol, counted = train(problem, counter, method, solver, "affine", args.steps_iters, args)
            except ValueError as e:
                log(f"[steps] {label}, {steps} steps failed: {e}")
                rows.append({"label": label, "method": method, "solver": solver, "steps": steps,
                             "error": f"{type(e).__name__}: {e}"})
                continue
            row = {"label": label, "method": method, "solver": solver, "steps": steps, "iters": args.steps_iters,
                   "drift_evals": counted, "s_per_iter": float(np.median(sol.history["seconds"])),
                   "exact_cost": exact, "euler_optimum_gap_pct": ref["gap_pct"], **evaluate(sol, exact, args)}
            row["memory_affine"] = memory(method, solver, "affine", steps, args.batch, args)
            row["memory_mlp"] = memory(method, solver, "mlp", steps, args.batch, args)
            rows.append(row)
    return {"rows": rows}


# ---------------------------------------------------------------------------------------------------------

def _mib(m: dict) -> str:
    if "error" in m:
        return "fails"
    return f"{m['rss_mib']:.1f}" if m["hwm_reset"] else f"{m['rss_mib']:.1f}*"


def _py(m: dict) -> str:
    return "fails" if "error" in m else f"{m['py_mib']:.2f}"


def markdown_methods(res: dict, args) -> str:
    lines = [f"Fixed budget: {args.budget:,} drift evaluations; batch {args.batch}, {args.steps} steps; "
             f"Riccati cost {res['exact_cost']:.4f}; gap of the cost over {args.eval_n:,} paths, "
             f"{args.eval_steps} Euler steps (± MC standard error).", "",
             "| method | policy | iterations | drift evals (counted) | evals / iter | s / iter | s / 10^6 evals "
             "| peak RSS / iter (MiB) | tracemalloc peak (MiB) | cost gap (%) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['policy']} | fails: {r['error']} | | | | | | | |")
            continue
        m = r["memory"]
        lines.append(f"| {r['label']} | {r['policy']} | {r['iters']} | {r['drift_evals']:,} | "
                     f"{r['drift_evals_per_iter']:,} | {r['s_per_iter']:.4f} | {r['s_per_1M_drift_evals']:.2f} | "
                     f"{_mib(m)} | {_py(m)} | {r['gap_pct']:+.2f} ± {r['gap_se_pct']:.2f} |")
    for r in res["references"]:
        lines.append(f"| *{r['label']}* | affine | | | | | | | | {r['gap_pct']:+.2f} ± {r['gap_se_pct']:.2f} |")
    return "\n".join(lines)


def markdown_steps(res: dict, args) -> str:
    lines = [f"{args.steps_iters} iterations, batch {args.batch}, affine policy (gap over {args.eval_n:,} paths, "
             f"{args.eval_steps} Euler steps, the same noise for the learned policy and for the exact optimum of "
             "the Euler-discretised problem, lqr.euler_gains(steps)); memory of one iteration also for the MLP "
             "policy (whose parameter count does not depend on the number of steps).", "",
             "| method | steps | s / iter | peak RSS / iter, affine (MiB) | peak RSS / iter, MLP (MiB) "
             "| tracemalloc peak, affine (MiB) | cost gap (%) | gap of the Euler-grid optimum (%) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(res["rows"], key=lambda r: (r["method"], r["steps"])):
        if "error" in r:
            lines.append(f"| {r['label']} | {r['steps']} | fails: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['label']} | {r['steps']} | {r['s_per_iter']:.4f} | {_mib(r['memory_affine'])} | "
                     f"{_mib(r['memory_mlp'])} | {_py(r['memory_affine'])} | "
                     f"{r['gap_pct']:+.2f} ± {r['gap_se_pct']:.2f} | {r['euler_optimum_gap_pct']:+.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", choices=["methods", "steps", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="small budgets: a smoke run of a few minutes")
    ap.add_argument("--out", help="write the raw results as JSON")
    ap.add_argument("--budget", type=int, help="drift evaluations per method (default 10,240,000; quick 1,280,000)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50, help="time steps of the methods table")
    ap.add_argument("--steps-list", type=int, nargs="+", default=[50, 100, 200, 400])
    ap.add_argument("--steps-iters", type=int, help="iterations of the steps table (default 100; quick 10)")
    ap.add_argument("--mlp-methods", nargs="*", default=["adjoint", "backprop", "log_variance", "adjoint_matching"],
                    help="methods also run with the MLP policy in the methods table")
    ap.add_argument("--eval-n", type=int, help="paths of the cost estimate (default 40,000; quick 10,000)")
    ap.add_argument("--eval-steps", type=int, default=500)
    ap.add_argument("--eval-seed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--problem-seed", type=int, default=0, help="seed of the random LQR")
    ap.add_argument("--_probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._probe:
        print(json.dumps(_probe(json.loads(args._probe))))
        return {}
    if args.budget is None:
        args.budget = 1_280_000 if args.quick else 10_240_000
    if args.steps_iters is None:
        args.steps_iters = 10 if args.quick else 100
    if args.eval_n is None:
        args.eval_n = 10_000 if args.quick else 40_000

    import torchsde
    meta = {"command": " ".join([os.path.relpath(sys.executable), *sys.argv]) if argv is None else argv,
            "torch": torch.__version__, "torchsde": torchsde.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
            "memory_method": MEMORY_METHOD, "args": {k: v for k, v in vars(args).items() if k != "_probe"}}
    print(f"# Control solvers on a 5-d LQR\n\n{meta['machine']}; torch {meta['torch']}, torchsde {meta['torchsde']}"
          f"\n\nMemory: {MEMORY_METHOD}.\n", flush=True)
    out = {"meta": meta}
    t0 = time.perf_counter()
    if args.table in ("methods", "all"):
        out["methods"] = table_methods(args)
        print("## Methods at a fixed budget of drift evaluations\n\n" + markdown_methods(out["methods"], args) + "\n",
              flush=True)
    if args.table in ("steps", "all"):
        out["steps"] = table_steps(args)
        print("## Adjoint vs backprop as the number of time steps grows\n\n" + markdown_steps(out["steps"], args)
              + "\n", flush=True)
    meta["wall_s"] = time.perf_counter() - t0
    print(f"total {meta['wall_s']:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
        print("wrote", args.out)
    return out


if __name__ == "__main__":
    main()
