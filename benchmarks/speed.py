"""Seconds per training iteration of the diffusion samplers, old tree against new, in one run (issue 13).

Configurations (public API only: ``cs.samplers.PIS/DDS(...)``, ``.fit(iters=, batch=, loss=, explore=,
progress=False)``, which every tree since issue 4 shares):

* ``pis-tb-expl-lgv``   PIS, trajectory balance with exploration 1.0, on gmm25: batch 300, 100 steps,
  2x64 MLP, sigma sqrt(5), with the Langevin (score-gain) parametrisation;
* ``pis-tb-expl``       the same without it (``langevin=False``);
* ``dds-lv-manywell32`` DDS, log-variance loss, on manywell32: batch 300, 100 steps, 2x64 MLP, sigma 1
  (the package's defaults otherwise, so with the Langevin parametrisation).

Each measurement is one fresh process (``PYTHONPATH`` = the tree measured; the process checks that it
imported controlsamp from there) with one intra-op thread: build the sampler, warm up with a short
``fit``, then time one ``fit(iters=N)`` and report wall / N. Old and new alternate, the order flipping
every repeat, so both see the same machine load; the table gives the median over repeats.

    git -C /work/main worktree add /tmp/controlsamp_old c6ff9c7      # the tree before issue 13
    python benchmarks/speed.py --old /tmp/controlsamp_old             # the table
    python benchmarks/speed.py --threads-sweep 1 2 default            # s/iter against torch's thread count
    python benchmarks/speed.py --profile pis-tb-expl-lgv              # where the time goes, FLOP lower bound

``--new`` defaults to the tree holding this script.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TAG = "SPEED-RESULT "

NET = dict(hidden=64, depth=2)
CONFIGS = {
    "pis-tb-expl-lgv": dict(sampler="PIS", target="gmm25",
                            kwargs=dict(steps=100, sigma=math.sqrt(5.0), langevin=True, **NET),
                            fit=dict(batch=300, loss="tb", explore=1.0)),
    "pis-tb-expl": dict(sampler="PIS", target="gmm25",
                        kwargs=dict(steps=100, sigma=math.sqrt(5.0), langevin=False, **NET),
                        fit=dict(batch=300, loss="tb", explore=1.0)),
    "dds-lv-manywell32": dict(sampler="DDS", target="manywell32", kwargs=dict(steps=100, sigma=1.0, **NET),
                              fit=dict(batch=300, loss="lv")),
}


# ---------------------------------------------------------------------------------------------- worker
def _build(name: str, batch=None):
    import controlsamp as cs
    cfg = CONFIGS[name]
    smp = getattr(cs.samplers, cfg["sampler"])(cs.targets.get(cfg["target"]), **cfg["kwargs"])
    fit = dict(cfg["fit"], progress=False)
    if batch is not None:
        fit["batch"] = batch
    return smp, fit


def worker(args) -> None:
    """One measurement in this process: warm-up, then wall time of fit(iters) / iters."""
    import torch
    torch_default = torch.get_num_threads()  # before controlsamp can change it
    import controlsamp
    torch.set_num_threads(torch_default if args.threads == "default" else int(args.threads))
    if args.tree and not os.path.abspath(controlsamp.__file__).startswith(os.path.abspath(args.tree) + os.sep):
        raise SystemExit(f"imported controlsamp from {controlsamp.__file__}, not from {args.tree}")
    smp, fit = _build(args.worker, args.batch)
    smp.fit(iters=args.warmup, **fit)
    t0, c0 = time.perf_counter(), time.process_time()
    smp.fit(iters=args.iters, **fit)
    dt, dc = (time.perf_counter() - t0) / args.iters, (time.process_time() - c0) / args.iters
    print(TAG + json.dumps(dict(s_per_iter=dt, cpu_s_per_iter=dc, threads=torch.get_num_threads(),
                                file=controlsamp.__file__)))


def measure(tree: str, config: str, threads: str, iters: int, warmup: int, batch=None, cpu: bool = False) -> float:
    """Run :func:`worker` in a fresh process on ``tree``; wall seconds per iteration (``cpu``: also the
    process's CPU seconds per iteration, as a pair)."""
    env = dict(os.environ, PYTHONPATH=tree)
    for var in ("CONTROLSAMP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)  # the worker sets the count itself (torch's default stays measurable)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", config, "--tree", tree, "--threads", threads,
           "--iters", str(iters), "--warmup", str(warmup)] + (["--batch", str(batch)] if batch else [])
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith(TAG):
            rec = json.loads(line[len(TAG):])
            return (rec["s_per_iter"], rec["cpu_s_per_iter"]) if cpu else rec["s_per_iter"]
    raise RuntimeError(f"{' '.join(cmd)} failed (PYTHONPATH={tree}):\n{out.stdout}\n{out.stderr}")


def describe(tree: str) -> str:
    """The commit of a tree and how many files under controlsamp/ differ from it."""
    try:
        head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "controlsamp"], capture_output=True,
                               text=True).stdout.splitlines()
        return f"{tree} @ {head or '?'}" + (f" + {len(dirty)} changed files in controlsamp/" if dirty else "")
    except OSError:
        return tree


# ---------------------------------------------------------------------------------------------- old vs new
def compare(args) -> None:
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    print(f"# benchmarks/speed.py: seconds per training iteration, median of {args.repeats} repeats "
          f"(fresh process each, 1 thread, {args.warmup} warm-up + {args.iters} timed iterations)")
    for k, t in trees.items():
        print(f"# {k}: {describe(t)}")
    print(f"# python {sys.version.split()[0]}, load average at start {os.getloadavg()[0]:.2f}")
    times = {(c, k): [] for c in args.configs for k in trees}
    cpu = {(c, k): [] for c in args.configs for k in trees}
    for r in range(args.repeats):
        for c in args.configs:
            for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
                wall, cpu_s = measure(trees[k], c, "1", args.iters, args.warmup, cpu=True)
                times[c, k].append(wall)
                cpu[c, k].append(cpu_s)
                if args.verbose:
                    print(f"  repeat {r} {c:18s} {k}: {wall:.4f} s/iter wall, {cpu_s:.4f} CPU", flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.2f}\n")
    print("Wall seconds per iteration (what a user waits), and the process's CPU seconds per iteration (less "
          "sensitive to other jobs on a shared machine), medians:\n")
    print("| config | old s/iter | new s/iter | speed-up | old CPU s/iter | new CPU s/iter | CPU speed-up "
          "| old repeats (wall) | new repeats (wall) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in args.configs:
        o, n = statistics.median(times[c, "old"]), statistics.median(times[c, "new"])
        oc, nc = statistics.median(cpu[c, "old"]), statistics.median(cpu[c, "new"])
        reps = [" ".join(f"{x:.3f}" for x in times[c, k]) for k in ("old", "new")]
        print(f"| {c} | {o:.4f} | {n:.4f} | {o / n:.2f}x | {oc:.4f} | {nc:.4f} | {oc / nc:.2f}x | {reps[0]} "
              f"| {reps[1]} |")


def sweep(args) -> None:
    tree = os.path.abspath(args.new)
    print(f"# thread sweep on {describe(tree)}: {args.configs[0]}, seconds per iteration, median of "
          f"{args.repeats} (fresh process each, {args.warmup} warm-up + {args.iters} timed iterations); "
          f"os.cpu_count() = {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    times = {t: [] for t in args.threads_sweep}
    for r in range(args.repeats):
        for t in (args.threads_sweep if r % 2 == 0 else args.threads_sweep[::-1]):
            times[t].append(measure(tree, args.configs[0], t, args.iters, args.warmup))
            if args.verbose:
                print(f"  repeat {r} threads={t}: {times[t][-1]:.4f} s/iter", flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.2f}\n")
    base = statistics.median(times[args.threads_sweep[0]])
    print(f"| threads | s/iter | vs threads={args.threads_sweep[0]} | repeats |")
    print("|---|---|---|---|")
    for t, v in times.items():
        m = statistics.median(v)
        print(f"| {t} | {m:.4f} | {m / base:.2f}x | {' '.join(f'{x:.3f}' for x in v)} |")


# ---------------------------------------------------------------------------------------------- profile
def _gflops(m: int, k: int, n: int, seconds: float = 0.5) -> float:
    """Measured single-thread GFLOP/s of torch.mm on an (m, k) x (k, n) float32 product."""
    import torch
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def _sigmoid_ns(rows: int, width: int, seconds: float = 0.3) -> float:
    """Measured single-thread nanoseconds per element of one logistic sigmoid at (rows, width): the only
    transcendental an MLP step with SiLU needs (the recorder keeps sigmoid(z) and differentiates SiLU from it
    without a second exp)."""
    import torch
    z, out = torch.randn(rows, width), torch.empty(rows, width)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.sigmoid(z, out=out)
        reps += 1
    return (time.perf_counter() - t0) / reps / (rows * width) * 1e9


def flop_bound(name: str, s_per_iter: float) -> None:
    """FLOP count of one training iteration's MLP matmuls and the time they need at this machine's measured
    single-thread matmul rate; plus the activation floor (one sigmoid per hidden unit and point, its exp at the
    measured elementwise rate)."""
    cfg = CONFIGS[name]
    import controlsamp as cs
    d = cs.targets.get(cfg["target"]).dim
    B, K, H, depth = cfg["fit"]["batch"], cfg["kwargs"]["steps"], NET["hidden"], NET["depth"]
    lgv = cfg["kwargs"].get("langevin", True)
    tf = 2 * 4 + 1  # Fourier time features (n_freq = 4, plus t)
    widths = [d] + [H] * depth + [d]  # the time features enter through a per-step bias computed once per grid
    mac = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    fwd = 2 * mac * B * K                 # one forward pass over the B x K grid points
    rollout, bwd = fwd, 2 * fwd           # no-grad rollout; backward (input and weight gradients) in blocks
    total = rollout + bwd
    peak = _gflops(2048, 2048, 2048)
    r_roll = _gflops(B, H, H)                                        # the rollout's shape: (B, H) x (H, H)
    r_bwd = _gflops(8 * B, H, H)                                     # the backward's blocks of 8 steps
    t_peak = total / peak / 1e9
    t_shape = rollout / r_roll / 1e9 + bwd / r_bwd / 1e9
    silu = _sigmoid_ns(B, H) * depth * B * K * H * 1e-9              # one exp per activation
    print(f"\n## FLOP lower bound, {name} (MLP widths {widths}{' + per-step gain' if lgv else ''}; B = {B}, K = {K})")
    print(f"  MLP matmul FLOPs per iteration: rollout {rollout / 1e9:.3f} G + backward {bwd / 1e9:.3f} G "
          f"= {total / 1e9:.3f} GFLOP")
    if cfg["target"] == "gmm25":
        M = 25
        per_lp = M * (2 * d + d * d + 2 * d + 6)   # diff, triangular solve, square-sum, logsumexp
        per_sc = 2 * per_lp + M * 2 * d           # + posterior, cholesky_solve, weighted sum
        tgt = B * per_lp + (B * K * per_sc if lgv else 0)
        print(f"  target FLOPs (log_prob at x_K{', score at every step for the Langevin feature' if lgv else ''}): "
              f"{tgt / 1e9:.4f} G (elementwise; negligible next to the MLP)")
    print(f"  single-thread torch.mm: {peak:.1f} GFLOP/s at 2048^3, {r_roll:.1f} at ({B}x{H})x({H}x{H}), "
          f"{r_bwd:.1f} at ({8 * B}x{H})x({H}x{H})")
    print(f"  lower bound at peak rate: {t_peak * 1e3:.1f} ms/iter; at the shapes' rates: {t_shape * 1e3:.1f} ms/iter; "
          f"one sigmoid per activation at the measured rate: {silu * 1e3:.1f} ms/iter")
    print(f"  measured {s_per_iter * 1e3:.1f} ms/iter = {s_per_iter / t_peak:.1f}x the peak bound, "
          f"{s_per_iter / t_shape:.1f}x the shape bound, {s_per_iter / (t_shape + silu):.1f}x shape bound + sigmoids "
          f"(other elementwise work, the target, the noise and Adam not counted)")


GROUPS = [  # (label, file suffix, function name; None: the largest cumulative time in that file)
    ("fit step (one iteration)", "base.py", "step"),
    ("  simulate: rollout without autograd", "sampling.py", "simulate"),
    ("    policy steps (recorded)", "grid_mlp.py", "__call__"),
    ("    Langevin feature (target score)", "sampling.py", "langevin_feature"),
    ("  objective (loss of log w)", "base.py", "forward"),
    ("  backward (autograd)", "graph.py", "_engine_run_backward"),
    ("    blocked MLP backward", "grid_mlp.py", "backward"),
    ("  Adam step", "adam.py", "step"),
    ("target log_prob (reward)", "sampling.py", "log_reward"),
    ("terminal_log_prob", "reference.py", "terminal_log_prob"),
    ("torch.randn", "~", "torch.randn"),
]


def _cum(st: pstats.Stats, fsuf: str, fn) -> tuple:
    """Cumulative seconds and calls of the functions matching (file suffix, name) in a cProfile result."""
    hits = [v for k, v in st.stats.items() if k[0].endswith(fsuf)
            and (fn is None or (fn in k[2] if fsuf == "~" else k[2] == fn))]
    if not hits:
        return 0.0, 0
    if fn is None:
        best = max(hits, key=lambda v: v[3])
        return best[3], best[1]
    return sum(v[3] for v in hits), sum(v[1] for v in hits)


def profile(args) -> None:
    import torch
    torch.set_num_threads(1)
    import controlsamp
    torch.set_num_threads(1)
    name = args.profile
    print(f"# profile of {name} on {describe(args.new)} (controlsamp from {os.path.dirname(controlsamp.__file__)}), "
          f"1 thread, load average {os.getloadavg()[0]:.2f}")
    smp, fit = _build(name)
    smp.fit(iters=args.warmup, **fit)
    t0 = time.perf_counter()
    smp.fit(iters=args.iters, **fit)
    s_iter = (time.perf_counter() - t0) / args.iters
    print(f"unprofiled: {s_iter * 1e3:.1f} ms/iter")
    small, sfit = _build(name, batch=2)  # 2: the lv loss needs a variance
    small.fit(iters=args.warmup, **sfit)
    t0 = time.perf_counter()
    small.fit(iters=args.iters, **sfit)
    s_small = (time.perf_counter() - t0) / args.iters
    print(f"same at batch 2 (Python + op dispatch, almost no arithmetic): {s_small * 1e3:.1f} ms/iter = "
          f"{100 * s_small / s_iter:.0f}% of the batch-{fit['batch']} iteration")

    prof = cProfile.Profile()
    prof.enable()
    smp.fit(iters=args.iters, **fit)
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[3] for k, v in st.stats.items() if k[2] == "step" and k[0].endswith("base.py")) or \
        max(v[3] for v in st.stats.values())
    print(f"\n## cProfile, {args.iters} iterations (inflates Python-level costs); share of the iteration "
          f"(cumulative time of 'step')")
    for label, fsuf, fn in GROUPS:
        cum, calls = _cum(st, fsuf, fn)
        print(f"  {label:40s} {cum / args.iters * 1e3:8.1f} ms/iter {100 * cum / total:5.1f}%  "
              f"({calls / args.iters:.0f} calls/iter)")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
    print("\n## cProfile, top by own time\n" + "\n".join(out.getvalue().splitlines()[6:]))

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile
    with tprofile(activities=[ProfilerActivity.CPU]) as tp:
        smp.fit(iters=max(2, args.iters // 2), **fit)
    print("## torch.profiler, top ops by self CPU time")
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    if name in CONFIGS:
        flop_bound(name, s_iter)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", help="the tree before the change (a git worktree of the old commit)")
    p.add_argument("--new", default=ROOT, help="the tree after (default: %(default)s)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=10, help="timed iterations per process (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per process (default: %(default)s)")
    p.add_argument("--threads-sweep", nargs="+", metavar="N",
                   help="instead of old vs new: s/iter of the first config on --new with each intra-op thread "
                        "count (an integer, or 'default' for torch's own)")
    p.add_argument("--profile", choices=list(CONFIGS), help="profile one config of --new in this process")
    p.add_argument("--top", type=int, default=25, help="rows of each profile table")
    p.add_argument("--verbose", action="store_true", help="print every measurement as it comes")
    p.add_argument("--worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--tree", help=argparse.SUPPRESS)
    p.add_argument("--threads", default="1", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
    elif args.profile:
        sys.path.insert(0, os.path.abspath(args.new))  # ahead of an editable install of another tree
        profile(args)
    elif args.threads_sweep:
        sweep(args)
    elif args.old:
        compare(args)
    else:
        p.error("give --old PATH (old vs new), --threads-sweep or --profile")


if __name__ == "__main__":
    main()
