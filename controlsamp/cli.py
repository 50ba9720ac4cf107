"""The ``controlsamp`` command.

* ``controlsamp run --target NAME --sampler NAME --loss NAME --iters N --batch B --steps K --seed S --out DIR
  [--dim D] [--device D] [--resume | --force]`` trains a diffusion sampler and writes samples, metrics, a
  checkpoint and a picture (:func:`controlsamp.train.run_job`); ``--sampler ais`` / ``smc`` run the Monte
  Carlo baselines instead (nothing to train; ``--steps`` sets their temperatures / MALA moves). ``--dim``
  sets the dimension of a target that takes one (gaussian, funnel, manywell). An ``--out`` that already
  holds a run is refused unless ``--resume`` (continue it: the same settings, ``--iters`` may grow) or
  ``--force`` (replace it). Ctrl-C stops with exit code 130 and prints the command that resumes. Errors in
  the arguments or the job are one line (``controlsamp: error: ...``, exit code 2), never a traceback.
* ``controlsamp fit-data --data NAME|FILE.npy --reference vp|ve|cld --sampler NAME --out DIR`` learns a score-based
  generative model from data (a 2-d toy set, scikit-learn's digits, a ``.npy`` file), samples it and measures it on
  held-out data (:func:`controlsamp.train_generative.run_generative_job`), with the same ``--out``, ``--resume``,
  ``--force`` and Ctrl-C behaviour as ``run``.
* ``controlsamp list``: the targets (dimension, log Z, exact samples), samplers (default loss, the losses
  each accepts), losses and reference processes, read from the package's registries.
* ``controlsamp demo``: the default job, DDS on gmm25, in about a minute on a CPU, with what a good result is.
* ``--threads N`` (``run``, ``fit-data``, ``demo``): torch's intra-op CPU threads, a positive integer or ``auto`` (torch's
  default, one per core); the default is the package's (one thread, or ``CONTROLSAMP_THREADS``; see
  :mod:`controlsamp._threads`).
* ``controlsamp check`` prints a table: each closed form of :mod:`controlsamp.exact` and
  :mod:`controlsamp.processes` next to an independent numerical solver (scipy's ODE solvers, a
  log-domain Sinkhorn, Monte Carlo, scipy's matrix exponential), with the error between the two.

Every ``--help`` shows the defaults.
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import shlex
import sys
import time
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

Row = Tuple[str, str, float, str]


def _spd(rng: np.random.Generator, d: int, cond: float = 10.0) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * np.geomspace(1.0, cond, d)) @ q.T


def _bridge_vs_sinkhorn() -> Row:
    from scipy.special import logsumexp

    from . import exact
    m0, v0, m1, v1, sigma = -1.0, 0.5, 2.0, 2.0, 0.8
    x = np.linspace(m0 - 7 * v0 ** 0.5, m0 + 7 * v0 ** 0.5, 241)
    y = np.linspace(m1 - 7 * v1 ** 0.5, m1 + 7 * v1 ** 0.5, 241)
    la, lb = -0.5 * (x - m0) ** 2 / v0, -0.5 * (y - m1) ** 2 / v1
    la, lb = la - logsumexp(la), lb - logsumexp(lb)
    M, eps = (x[:, None] - y[None, :]) ** 2, 2 * sigma ** 2
    f, g = np.zeros_like(x), np.zeros_like(y)
    for _ in range(5000):
        f_new = -eps * logsumexp((g[None, :] - M) / eps + lb[None, :], axis=1)
        g = -eps * logsumexp((f_new[:, None] - M) / eps + la[:, None], axis=0)
        done, f = np.abs(f_new - f).max() < 1e-12, f_new
        if done:
            break
    P = np.exp(la[:, None] + lb[None, :] + (f[:, None] + g[None, :] - M) / eps)
    c_num = float((P * (x[:, None] - P.sum(1) @ x) * (y[None, :] - P.sum(0) @ y)).sum())
    c = float(exact.GaussianBridge([m0], [[v0]], [m1], [[v1]], sigma=sigma).coupling()[1][0, 1])
    return ("Gaussian SB 1-d: Cov(X0, XT)", "log-domain Sinkhorn, 241^2 grid", abs(c - c_num), f"{c:.6f}")


def _bridge_vs_moment_ode() -> Row:
    from scipy.integrate import solve_ivp

    from . import exact
    rng = np.random.default_rng(0)
    d = 3
    br = exact.GaussianBridge(rng.normal(size=d), _spd(rng, d), rng.normal(size=d), _spd(rng, d), sigma=0.7)
    eye = np.eye(d)

    def rhs(t, y):
        mu, S = y[:d], y[d:].reshape(d, d)
        b = br.drift(t, np.vstack([mu, mu + eye])).numpy()
        J = (b[1:] - b[0]).T
        return np.concatenate([b[0], (J @ S + S @ J.T + 0.49 * eye).ravel()])

    y0 = np.concatenate([br.mean0.numpy(), br.cov0.numpy().ravel()])
    sol = solve_ivp(rhs, (0, 1), y0, rtol=1e-10, atol=1e-12, method="DOP853")
    mean, cov = br.marginal(1.0)
    err = max(np.abs(sol.y[:d, -1] - mean.numpy()).max(), np.abs(sol.y[d:, -1] - cov.numpy().ravel()).max())
    return ("Gaussian SB 3-d: drift transports mu0 to mu1", "solve_ivp on the moment ODEs", float(err), "")


def _follmer_vs_mc() -> Row:
    from . import exact, targets
    mix = targets.get("gmm25")
    sf = exact.SchrodingerFollmer(mix, sigma=5.0)
    t, x = 0.5, torch.tensor([2.0, -1.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    n, var = 400_000, 25.0 * (1 - t)
    y = x + math.sqrt(var) * torch.randn(n, 2, dtype=torch.float64, generator=gen)
    logw = mix.log_prob(y) + (y * y).sum(1) / (2 * 25.0)
    w = torch.exp(logw - logw.max())
    num = w.unsqueeze(1) * (y - x) / (1 - t)
    est = num.mean(0) / w.mean()
    se = ((num - est * w.unsqueeze(1)) / w.mean()).std(0) / math.sqrt(n)  # delta method for the ratio
    b = sf.drift(t, x.unsqueeze(0))[0]
    return ("Föllmer drift, gmm25, t = 0.5", "Monte Carlo sigma^2 grad log h (4e5)", float((est - b).abs().max()),
            f"standard error {float(se.max()):.1e}")


def _lqr_vs_riccati_ode() -> Row:
    from scipy.integrate import solve_ivp

    from . import exact
    rng = np.random.default_rng(1)
    d, m = 3, 2
    A, B = rng.normal(size=(d, d)) - np.eye(d), rng.normal(size=(d, m))
    Q, R, F = np.eye(d), 0.5 * np.eye(m), 2 * np.eye(d)
    lqr = exact.LQR(A, B, Q, R, F, sigma=0.5, T=2.0)
    BRB = B @ np.linalg.solve(R, B.T)
    sol = solve_ivp(lambda t, p: -(A.T @ p.reshape(d, d) + p.reshape(d, d) @ A
                                   - p.reshape(d, d) @ BRB @ p.reshape(d, d) + Q).ravel(),
                    (2.0, 0.0), F.ravel(), rtol=1e-11, atol=1e-12, method="DOP853")
    err = np.abs(sol.y[:, -1].reshape(d, d) - lqr.riccati(0.0).numpy()).max()
    return ("LQR 3-d: Riccati P(0)", "solve_ivp on the Riccati ODE", float(err), f"cost(1) = {lqr.cost(np.ones(d)):.4f}")


def _kernel_vs_expm() -> Row:
    from scipy.linalg import expm

    from . import processes
    cld = processes.CLD(1, beta=4.0)
    A0 = 4.0 * np.array([[0.0, 4.0], [-1.0, -4.0]])  # beta * [[0, 1/M], [-1, -Gamma/M]], M = 1/4, Gamma = 1
    D = np.diag([0.0, 8.0])
    h = 0.3
    blk = expm(h * np.block([[-A0, D], [np.zeros((2, 2)), A0.T]]))
    Phi, Q = blk[2:, 2:].T, blk[2:, 2:].T @ blk[:2, 2:]
    P, _, Qc = cld.transition(0.0, h)
    err = max(np.abs(P.numpy() - Phi).max(), np.abs(Qc.numpy() - Q).max())
    return ("CLD kernel (critical damping), closed form", "scipy expm (Van Loan block)", float(err), "")


CHECKS: List[Callable[[], Row]] = [_bridge_vs_sinkhorn, _bridge_vs_moment_ode, _follmer_vs_mc,
                                   _lqr_vs_riccati_ode, _kernel_vs_expm]


def check(args: argparse.Namespace) -> int:
    """Closed forms against independent solvers, as a table."""
    print("controlsamp check: closed forms vs independent numerical solvers\n")
    head = f"{'closed form':46s} {'independent solver':38s} {'|error|':>9s}  note"
    print(head)
    print("-" * len(head))
    for check in CHECKS:
        t0 = time.perf_counter()
        name, solver, err, note = check()
        print(f"{name:46s} {solver:38s} {err:9.2e}  {note} ({time.perf_counter() - t0:.1f}s)")
    print("\nThe Monte-Carlo row's error is statistical (compare it with its standard error); the others are\n"
          "the tolerance of the independent solver.")
    return 0


METRIC_KEYS = ("log_Z", "log_Z_se", "log_Z_true", "delta_log_Z", "delta_log_Z_rw", "elbo", "elbo_se", "eubo",
               "eubo_se", "ess", "w2", "w2_floor", "sinkhorn", "energy_w2", "distance_w2", "aligned_w2",
               "aligned_w2_floor", "mode_coverage", "emc", "target_evals", "wall_time_s")

# One short gloss per printed metric (controlsamp.metrics has the definitions and references).
GLOSS = {
    "log_Z": "estimate of log Z: log of the mean importance weight, log mean w",
    "log_Z_se": "standard error of log_Z (bootstrap over the paths / particles)",
    "log_Z_true": "the target's exact log Z",
    "delta_log_Z": "|log Z - ELBO|, the ELBO gap: KL(sampler || target) on paths; 0 is perfect",
    "delta_log_Z_rw": "|log_Z - log_Z_true|, the error of the log Z estimate",
    "elbo": "ELBO = mean log w, a lower bound on log Z",
    "elbo_se": "standard error of elbo and of delta_log_Z (CLT: std of log w / sqrt(n))",
    "eubo": "EUBO = mean log w of paths from exact samples, an upper bound on log Z",
    "eubo_se": "standard error of eubo (CLT); large where a few exact samples carry huge log w",
    "ess": "effective sample size of the weights / n, in (0, 1]; 1 is perfect",
    "w2": "2-Wasserstein distance to exact samples (to the --reference samples where given)",
    "w2_floor": "W2 between two exact sample sets of these sizes: what a perfect sampler shows",
    "sinkhorn": "entropic OT cost to the same points at sinkhorn_eps (>= their W2^2)",
    "energy_w2": "W2 between the energies of the samples and of the reference",
    "distance_w2": "W2 between the interatomic distances of the samples and of the reference",
    "aligned_w2": "W2 to the reference up to permutation and rotation of the particles (DEM's and ASBS's W2)",
    "aligned_w2_floor": "the same W2 between two reference sets of these sizes: what a perfect sampler shows",
    "mode_coverage": "fraction of the mixture's modes holding at least one sample",
    "emc": "entropic mode coverage: entropy of the samples' mode counts / log(modes); 1 is even",
    "target_evals": "energy evaluations spent training (a point's log-density or score counts once)",
    "wall_time_s": "training time, seconds",
}
# AIS / SMC train nothing: their budget is the run's.
GLOSS_MC = dict(delta_log_Z="|log Z - mean log w| of the particles' weights",
                elbo="mean log w of the particles' weights, a lower bound on log Z",
                target_evals="energy evaluations of the run", wall_time_s="the run's time, seconds")


def _log_Z_note(m: dict):
    """A note when log_Z is more than 3 standard errors from the exact log Z (None otherwise)."""
    est, se, true = m.get("log_Z"), m.get("log_Z_se"), m.get("log_Z_true")
    if any(v is None or not math.isfinite(v) for v in (est, se, true)) or se <= 0:
        return None
    z = (est - true) / se
    if abs(z) <= 3:
        return None
    mc = not m.get("loss")  # AIS / SMC
    units = "particles" if mc else "paths"
    more = "particles (--n-eval) or temperatures / MALA moves (--steps)" if mc else "paths (--n-eval) or training"
    if z < 0:
        return (f"note: log_Z is {-z:.0f} standard errors below log_Z_true. It is the log of an unbiased estimate "
                f"of Z, so it is biased low at a finite number of {units} (Jensen); the standard error measures its "
                f"noise, not this bias. More {more} shrink it.")
    return (f"note: log_Z is {z:.0f} standard errors above log_Z_true: the bootstrap standard error understates "
            "the spread when a few weights dominate (see ess); the ELBO and EUBO bracket log Z.")


# The demo job: DDS (Vargas et al. 2023) trained by the log-variance loss (Richter et al. 2020) on the
# 25-mode mixture, sized to about a minute on one CPU core. The reference's scale sigma = 7 matches the
# mixture's spread (its coordinates have variance 50), so the learned control only has to split the mass
# among the modes; with the benchmarks' sigma^2 = 5 the same minute leaves the outer modes short (W2 about 3.7
# against 1.5, measured).
DEMO = dict(target="gmm25", sampler="dds", loss="lv", iters=1200, batch=256, steps=50, seed=0, out="runs/demo",
            sigma=7.0, lr=3e-3, fit_options=dict(lr_schedule="cosine"))
# What a good result is on gmm25: the best published W2 (Sendera et al. 2024, Table 1: 25 000 iterations of
# 300 paths, 100 steps, about 50x this demo's energy evaluations).
DEMO_PUBLISHED_W2 = 1.13


def _mode_grid(samples: np.ndarray) -> List[str]:
    """Lines of a 5 x 5 table: how many of the samples fall nearest each of gmm25's modes (x across, y down)."""
    from . import metrics, targets
    counts = np.bincount(metrics.assign_modes(torch.as_tensor(samples), targets.get("gmm25")).numpy(),
                         minlength=25)
    means = targets.get("gmm25").means.numpy()
    grid = np.zeros((5, 5), dtype=int)
    for k, (mx, my) in enumerate(means):
        grid[int(round((10 - my) / 5)), int(round((mx + 10) / 5))] = counts[k]
    head = "  samples per mode (x = -10 .. 10 across, y = 10 .. -10 down):"
    return [head] + ["    " + " ".join(f"{c:4d}" for c in row) for row in grid]


def _demo_verdict(m: dict, out: str) -> None:
    """The demo's result against what good is: the sample floor, the published best, log Z's error bar."""
    from .train import fmt
    samples = np.load(os.path.join(out, "samples.npy"))
    for line in _mode_grid(samples):
        print(line)
    even = len(samples) / 25
    print(f"  a perfect sampler puts about {even:.0f} +- {math.sqrt(even * 24 / 25):.0f} samples in each mode")
    print(f"What good is: W2 {fmt(m['w2'])} against the sample floor {fmt(m['w2_floor'])} (two exact sample sets "
          f"differ by this much) and the published best {DEMO_PUBLISHED_W2} (Sendera et al. 2024, about 50x this "
          f"budget); log Z error {fmt(m['delta_log_Z_rw'])} against its standard error {fmt(m['log_Z_se'])}; "
          f"{int(round(m['mode_coverage'] * 25))} of 25 modes hold samples.")


def _print_metrics(m: dict, out: str) -> None:
    if m.get("loss"):
        print(f"{m['sampler'].upper()} / {m['loss']} on {m['target']} (d = {m['dim']}), {m['iters']} iterations of "
              f"{m['batch']} paths, {m['steps']} steps, seed {m['seed']}")
    else:  # AIS / SMC: nothing trained
        print(f"{m['sampler'].upper()} on {m['target']} (d = {m['dim']}), {m['n_particles']} particles, "
              f"{m['n_temps']} temperatures, seed {m['seed']}")
    _print_rows(m, METRIC_KEYS, dict(GLOSS, **({} if m.get("loss") else GLOSS_MC)))
    note = _log_Z_note(m)
    if note:
        print(note)
    _print_files(out, ("metrics.json", "samples.png", "checkpoint.pt", "sampler.pt"))


def _print_rows(m: dict, keys, gloss: dict) -> None:
    """One line per metric of ``keys`` that ``m`` holds (None skipped): name, value, gloss, and the sample floor
    where ``m`` has one (``KEY_floor``)."""
    from .train import fmt
    for k in keys:
        if m.get(k) is not None:
            note = gloss[k]
            if m.get(f"{k}_floor") is not None:
                note += f"; sample floor {fmt(m[f'{k}_floor'])}"
            print(f"  {k:15s} {fmt(m[k], 4):>10s}  {note}")


def _print_files(out: str, names) -> None:
    files = [f for f in names if os.path.exists(os.path.join(out, f))]
    print(f"wrote {os.path.join(out, 'samples.npy')}, {', '.join(files)}")


def _given(**options) -> dict:
    """The fit options set on the command line (zero / None means: the sampler's default)."""
    return {k: v for k, v in options.items() if v}


def _resume_command(argv: List[str], resume: bool = True) -> str:
    """The command line that resumes (or, ``resume`` false, reruns) the ``run`` given by ``argv``."""
    tokens = [t for t in argv if t not in ("--force", "--resume")]
    return "controlsamp " + shlex.join(tokens + (["--resume"] if resume else ["--force"]))


def _report_interrupt(args: argparse.Namespace, exc) -> None:
    """What Ctrl-C left behind and how to go on (stderr)."""
    say = lambda line: print(line, file=sys.stderr)
    say("")
    if exc.checkpoint is None:
        say(f"controlsamp: interrupted during the {exc.stage}; --sampler {args.sampler} trains nothing, so there is "
            "nothing to resume. Run it again with:")
        say(f"  {_resume_command(getattr(args, 'argv', sys.argv[1:]), resume=False)}")
        return
    if exc.stage == "training":
        say(f"controlsamp: interrupted at iteration {exc.iteration} of {exc.iters}; the checkpoint is {exc.checkpoint}")
    else:
        say(f"controlsamp: interrupted during the evaluation; training had finished ({exc.iters} iterations) and "
            f"the checkpoint is {exc.checkpoint}")
    say("Resume with:")
    say(f"  {_resume_command(getattr(args, 'argv', sys.argv[1:]))}")


def _check_run_args(args: argparse.Namespace) -> None:
    """Refuse, as an argparse error, what the run's files or the target make impossible."""
    from . import samplers, targets, train
    p = args.parser
    if args.dim is not None and not train.dim_is_parameter(args.target):
        settable = ", ".join(n for n in targets.names() if train.dim_is_parameter(n))
        p.error(f"--dim: target {args.target} has the fixed dimension {targets.get(args.target).dim}; "
                f"--dim applies to {settable}")
    if not samplers.get(args.sampler).trainable:
        for flag in ("langevin", "hidden", "depth", "n_freq"):
            if getattr(args, flag) is not None:
                name = "--" + flag.replace("_", "-")
                p.error(f"{name}: --sampler {args.sampler} has no control network; leave {name} out")
    if args.grad_clip is not None and not samplers.get(args.sampler).trainable:
        p.error(f"--grad-clip: --sampler {args.sampler} trains nothing; leave --grad-clip out")
    if args.resume and not samplers.get(args.sampler).trainable:
        p.error(f"--resume: --sampler {args.sampler} trains nothing, so there is nothing to resume; "
                "run it without --resume")
    _check_out(args, train.run_files(args.out))


def _check_out(args: argparse.Namespace, files: List[str]) -> None:
    """Refuse, as an argparse error, --resume with --force, --resume without a checkpoint in --out, and a new run
    into an --out that holds ``files`` of another without --force."""
    p = args.parser
    if args.resume and args.force:
        p.error("--resume continues the run in --out and --force replaces it: give one of them")
    if args.resume:
        if "checkpoint.pt" not in files:
            p.error(f"--resume: there is no checkpoint to resume in --out {args.out} (no checkpoint.pt there); "
                    "run without --resume to start")
    elif files and not args.force:
        p.error(f"--out {args.out} already holds a run ({', '.join(files)}); add --resume to continue it, "
                "--force to overwrite it, or choose another --out")


def _without_nproc(argv: List[str]) -> List[str]:
    """The command line without its ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch(args: argparse.Namespace) -> int:
    """``controlsamp run`` in ``--nproc`` processes on this machine through torchrun's launcher
    (``torch.distributed.run --standalone``); each process runs the same command without ``--nproc``."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun
    argv = ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "controlsamp"] + _without_nproc(args.argv)
    try:
        torchrun(argv)
    except ChildFailedError as exc:
        print(f"controlsamp: error: a training process failed ({' '.join(str(exc).split())[:400]})", file=sys.stderr)
        return 1
    return 0


def _checked_or_launched(args: argparse.Namespace, check: Callable[[], None]) -> Optional[int]:
    """``check()`` the arguments where this process owns --out (rank 0, or the launcher), then, for ``--nproc`` > 1,
    run the command in that many processes and return its exit status; None: go on in this process."""
    if args.nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        args.parser.error("--nproc starts the processes itself; under torchrun (WORLD_SIZE is set) leave it out")
    if int(os.environ.get("RANK", "0")) == 0:  # rank 0 owns --out; the others must not race it
        check()
    return _launch(args) if args.nproc > 1 else None


def _sampler_options(args: argparse.Namespace) -> dict:
    """The control network's settings given on the command line (the sampler's defaults for the others)."""
    options = _given(hidden=args.hidden, depth=args.depth, n_freq=args.n_freq)
    if args.langevin is not None:
        options["langevin"] = args.langevin == "on"
    return options


def run(args: argparse.Namespace) -> int:
    from . import train
    status = _checked_or_launched(args, lambda: _check_run_args(args))
    if status is not None:
        return status
    fit_options = _given(explore=args.explore, buffer=args.buffer, local_search_every=args.local_search_every,
                         local_search_steps=args.local_search_steps, local_search_buffer=args.local_search_buffer,
                         lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule,
                         grad_clip=args.grad_clip)
    if args.local_search_burn_in is not None:  # (0 is a burn-in, not "unset")
        fit_options["local_search_burn_in"] = args.local_search_burn_in
    if args.shards is not None:
        fit_options["shards"] = args.shards
    try:
        m = train.run_job(target=args.target, sampler=args.sampler, loss=args.loss, iters=args.iters,
                          batch=args.batch, steps=args.steps, seed=args.seed, out=args.out, device=args.device,
                          resume=args.resume, sigma=args.sigma, lr=args.lr, n_eval=args.n_eval,
                          progress=not args.quiet, fit_options=fit_options,
                          sampler_options=_sampler_options(args) or None,
                          reference=args.reference, dim=args.dim, checkpoint_every=args.checkpoint_every)
    except train.JobInterrupted as exc:
        _report_interrupt(args, exc)
        return 130
    if m:  # (the other processes of a multi-process run return nothing)
        _print_metrics(m, args.out)
    return 0


# One short gloss per printed metric of `controlsamp fit-data` (controlsamp.train_generative has the definitions).
GENERATIVE_KEYS = ("nll", "nll_se", "bits_per_dim", "w2", "mmd", "nfe", "final_loss", "wall_time_s", "epsilon", "delta",
                   "noise_multiplier")
GENERATIVE_GLOSS = {
    "nll": "test NLL: mean -log p of held-out points under the probability-flow ODE, nats per point",
    "nll_se": "standard error of nll (over the held-out points)",
    "bits_per_dim": "nll in bits per dimension",
    "w2": "2-Wasserstein distance of the samples to held-out data",
    "mmd": "squared MMD of the samples to held-out data (Gaussian kernel, bandwidth mmd_bandwidth)",
    "nfe": "score evaluations per sample of the sampler",
    "final_loss": "score-matching loss, mean of the last 100 iterations",
    "wall_time_s": "training time, seconds",
    "epsilon": "privacy spent: the epsilon of (epsilon, delta)-DP (opacus accountant) over the training steps",
    "delta": "the delta of (epsilon, delta)-DP",
    "noise_multiplier": "DP-SGD noise standard deviation over the clipping norm, set to reach the epsilon",
}


def _print_generative_metrics(m: dict) -> None:
    print(f"{m['reference'].upper()} score model ({m['parametrisation']}, {m['weighting']} weighting) on {m['data']} "
          f"(d = {m['dim']}), {m['iters']} iterations of {m['batch']} points; sampler {m['sampler']}, "
          f"{m['steps']} steps, seed {m['seed']}")
    gloss = dict(GENERATIVE_GLOSS)
    if m.get("bits_per_dim_dequantised"):
        gloss["bits_per_dim"] += (f" of the {m['levels']}-level data (dequantised: an upper bound, "
                                  "the dequantisation constant included)")
    if m.get("nll_divergence"):
        gloss["nll"] += f" ({m['nll_n']} points, {m['nll_divergence']} divergence)"
    _print_rows(m, GENERATIVE_KEYS, gloss)


def fit_data(args: argparse.Namespace) -> int:
    from . import train, train_generative
    status = _checked_or_launched(args, lambda: _check_out(args, train_generative.generative_files(args.out)))
    if status is not None:
        return status
    try:
        m = train_generative.run_generative_job(
            data=args.data, reference=args.reference, parametrisation=args.parametrisation, weighting=args.weighting,
            t_sampling=args.t_sampling, iters=args.iters, batch=args.batch, lr=args.lr,
            lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule, hidden=args.hidden,
            depth=args.depth, sampler=args.sampler, steps=args.steps, n_samples=args.n_samples,
            nll_samples=args.nll_samples, seed=args.seed, out=args.out, device=args.device, resume=args.resume,
            progress=not args.quiet, checkpoint_every=args.checkpoint_every, n_train=args.n_train,
            n_test=args.n_test, dp_epsilon=args.dp_epsilon, dp_delta=args.dp_delta,
            dp_max_grad_norm=args.dp_max_grad_norm, dp_noise_multiplicity=args.dp_noise_multiplicity,
            shards=args.shards)
    except train.JobInterrupted as exc:
        _report_interrupt(args, exc)
        return 130
    if not m:  # (the other processes of a multi-process run return nothing)
        return 0
    _print_generative_metrics(m)
    _print_files(args.out, ("metrics.json", "samples.png", "checkpoint.pt", "model.pt"))
    return 0


def _summary(obj) -> str:
    """A short description of a class from its docstring (or its module's, where the class's first line is a
    call signature): the first line, up to a citation, a formula or the end of the first sentence."""
    lines = (obj.__doc__ or "").strip().splitlines()
    if not lines or lines[0].startswith("``"):
        lines = (sys.modules[obj.__module__].__doc__ or "").strip().splitlines()
    if not lines:
        return ""
    head = re.split(r"\s\((?=[A-Z])|,?\s*:math:|:\s|\.\s|\.$", lines[0].strip())[0]
    return head.strip(" ,;")


def _table(header: Tuple[str, ...], rows: List[Tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header) - 1)]
    for r in [header] + rows:
        print("  " + "  ".join(f"{str(c):{w}s}" for c, w in zip(r, widths)) + "  " + str(r[-1]))


def _accepted_losses(cls) -> List[str]:
    """The names of :data:`controlsamp.control.objectives.REGISTRY` that sampler class ``cls`` trains with:
    its own ``LOSSES`` where it declares them, else those whose ``check`` accepts its problem (built on a
    2-d Gaussian) and that need no data the sampler does not supply."""
    from . import targets
    from .control.objectives import REGISTRY
    if not cls.trainable:
        return []
    own = getattr(cls, "LOSSES", None)
    if own is not None:
        return [name for name in sorted(REGISTRY) if name in own]
    smp = cls(targets.get("gaussian"), steps=2)
    names = []
    for name in sorted(REGISTRY):
        objective = smp.make_objective(name)
        try:
            objective.check(smp.problem)
        except ValueError:
            continue
        if not objective.needs_data:
            names.append(name)
    return names


def list_registries(args: argparse.Namespace) -> int:
    """The targets, samplers, losses and reference processes, from the package's registries."""
    from . import processes, samplers, targets, train
    from .control.objectives import REGISTRY
    print("targets (--target NAME; --dim D where the dimension is a parameter)")
    rows = []
    for name in targets.names():
        t = targets.get(name)
        exact = "yes" if train._has_exact_sampler(t) else "no"
        rows.append((name, str(t.dim), "unknown" if t.log_Z is None else train.fmt(float(t.log_Z), 6), exact,
                     "yes" if train.dim_is_parameter(name) else "no", train.fmt(train.target_settings(name)["sigma"])))
    _table(("name", "dim", "log Z", "exact samples", "--dim", "default --sigma"), rows)

    groups = {}  # objective class -> its names, the shortest first
    for name, cls in REGISTRY.items():
        groups.setdefault(cls, set()).add(name)
    groups = {cls: sorted(names, key=lambda n: (len(n), n)) for cls, names in groups.items()}
    accepted = {s: set(_accepted_losses(cls)) for s, cls in samplers.SAMPLERS.items()}

    print("\nsamplers (--sampler NAME)")
    rows = []
    for s, cls in sorted(samplers.SAMPLERS.items()):
        losses = [next(n for n in names if n in accepted[s]) for names in groups.values() if accepted[s] & set(names)]
        rows.append((s, cls.default_loss or "-", ", ".join(sorted(losses)) if losses else "- (trains nothing)",
                     _summary(cls)))
    _table(("name", "default --loss", "accepts --loss", "method"), rows)

    print("\nlosses (--loss NAME; the names of one objective are interchangeable)")
    rows = []
    for cls, names in sorted(groups.items(), key=lambda kv: kv[1][0]):
        users = [s for s in sorted(samplers.SAMPLERS) if accepted[s] & set(names)]
        rows.append((" / ".join(names), "yes" if cls.off_policy else "no",
                     ", ".join(users) if users else "- (needs data a method supplies)", _summary(cls)))
    _table(("name", "off-policy", "samplers", "objective"), rows)

    print("\nreference processes (controlsamp.processes; the samplers' uncontrolled SDEs)")
    rows = []
    for name in processes.__all__:
        obj = getattr(processes, name)
        if inspect.isclass(obj) and issubclass(obj, processes.LinearSDE) and not inspect.isabstract(obj):
            rows.append((name, _summary(obj)))
    _table(("name", "process"), rows)
    return 0


def demo(args: argparse.Namespace) -> int:
    from . import train
    print("controlsamp demo: the denoising diffusion sampler on gmm25 (25 modes), trained from the energy alone\n")
    cfg = dict(DEMO, out=args.out)
    m = train.run_job(**cfg, progress=not args.quiet)
    _print_metrics(m, args.out)
    _demo_verdict(m, args.out)
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Help with every option's default: "(default: X)" appended, unless the help already says what the
    default is (a default of None is described in words)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default:" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def _number(kind, lowest: float, strict: bool, what: str):
    def parse(value: str):
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}; got {value!r}") from None
        if not (v > lowest if strict else v >= lowest) or (kind is float and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be {what}; got {value!r}")
        return v
    parse.__name__ = what
    return parse


_positive_int = _number(int, 0, True, "a positive integer")
_count = _number(int, 0, False, "an integer >= 0")
_positive_float = _number(float, 0.0, True, "a positive number")
_nonnegative_float = _number(float, 0.0, False, "a number >= 0")


def _checked_by(check: Callable[[str, str], object], option: str) -> Callable[[str], str]:
    """An argparse ``type`` that runs the library's ``check(value, option)`` and turns its ValueError into an
    argparse error (the option's usage line and message, no traceback); the value is kept as given."""
    def parse(value: str) -> str:
        try:
            check(value, option)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value
    return parse


def _add_threads(p: argparse.ArgumentParser) -> None:
    from ._threads import _parse as parse_threads
    p.add_argument("--threads", type=_checked_by(parse_threads, "--threads"), default=str(torch.get_num_threads()),
                   help="torch intra-op CPU threads: a positive integer, or 'auto' for torch's default (one per "
                        "core); more than 1 only pays for large networks or batches, and slows down badly when "
                        "other processes share the cores (default: %(default)s, the count in effect: 1 unless "
                        "CONTROLSAMP_THREADS, OMP_NUM_THREADS or MKL_NUM_THREADS say otherwise)")


def _add_parallel(p: argparse.ArgumentParser, command: str) -> None:
    """--nproc and --shards (data-parallel training, controlsamp.parallel)."""
    p.add_argument("--nproc", type=_positive_int, default=1,
                   help="training processes on this machine (data-parallel, torch.distributed: gloo on CPUs, NCCL "
                        f"with one GPU each for --device cuda); or start `python -m controlsamp {command} ...` under "
                        "torchrun yourself (several machines)")
    p.add_argument("--shards", type=_positive_int, default=None,
                   help="random shards of the batch (default: one per process); a run depends on --seed and "
                        "--shards, not on --nproc, so `--shards 2` in one process reproduces `--nproc 2`")


def _add_fit_data_options(p: argparse.ArgumentParser) -> None:
    """The options of `controlsamp fit-data` (choices read from controlsamp.generative)."""
    from . import generative, train_generative
    from ._validate import check_device
    from .generative.data import TOY_DATASETS
    toys = [n for n in TOY_DATASETS if n != "8gaussians"]
    p.add_argument("--data", default="moons", metavar="NAME|FILE.npy",
                   help=f"the data: a 2-d toy set ({', '.join(toys)}), digits (scikit-learn's 8x8 images, 17 "
                        "levels, dequantised into [-1, 1]^64; a fixed 80/20 split), or a .npy file of shape (N, d) "
                        "(a seeded 80/20 split)")
    p.add_argument("--reference", default="vp", choices=list(train_generative.REFERENCES),
                   help="the noising process: vp (linear beta 0.1 .. 20, Song et al. 2021), ve (sigma_min 0.01, "
                        "sigma_max the largest pairwise distance of the training data, Song & Ermon 2020's technique "
                        "1) or cld (critically damped Langevin, Dockhorn et al. 2022: beta 4, M 0.25, gamma 0.04)")
    p.add_argument("--parametrisation", default="eps", choices=generative.PARAMETRISATIONS,
                   help="what the network predicts (eps or score for cld)")
    p.add_argument("--weighting", default="simple", choices=generative.WEIGHTINGS,
                   help="weighting of the score-matching loss over time (likelihood: Song et al. 2021's "
                        "likelihood weighting)")
    p.add_argument("--t-sampling", default="uniform", choices=generative.T_SAMPLINGS,
                   help="how training times are drawn (importance: proportional to the likelihood weighting)")
    p.add_argument("--iters", type=_positive_int, default=4000, help="training iterations")
    p.add_argument("--batch", type=_positive_int, default=256, help="data points per training iteration")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate of the network")
    p.add_argument("--lr-schedule", default="none", choices=["none", "cosine"], type=str.lower,
                   help="learning-rate schedule: constant, or cosine annealing to 0 over --iters")
    p.add_argument("--hidden", type=_positive_int, default=128, help="width of the score network (an MLP)")
    p.add_argument("--depth", type=_positive_int, default=3, help="hidden layers of the score network")
    p.add_argument("--sampler", default="euler", choices=list(train_generative.SAMPLERS),
                   help="sampler: euler / exponential (reverse SDE), pc (predictor-corrector), ald (annealed "
                        "Langevin), sscs (cld only), ode (adaptive probability-flow ODE), ddim, heun")
    p.add_argument("--steps", type=_positive_int, default=500, help="sampler steps (unused by ode)")
    p.add_argument("--n-samples", type=_positive_int, default=2000, help="samples drawn for samples.npy and the metrics")
    p.add_argument("--nll-samples", type=_count, default=500,
                   help="held-out points whose log-likelihood is measured (probability-flow ODE; exact divergence "
                        f"for data dimension <= {train_generative.EXACT_DIVERGENCE_MAX_DIM}, else Hutchinson's "
                        "estimate; 0: none)")
    p.add_argument("--n-train", type=_positive_int, default=10_000, help="training points of a toy set")
    p.add_argument("--n-test", type=_positive_int, default=2_000, help="held-out points of a toy set")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split, the network, training and sampling")
    p.add_argument("--out", default="runs/fit-data", help="folder for the run's files")
    p.add_argument("--device", type=_checked_by(check_device, "--device"), default="cpu",
                   help="torch device: cpu, cuda or cuda:N")
    p.add_argument("--dp-epsilon", type=_positive_float, default=None,
                   help="train with differential privacy (DPDM: DP-SGD, Poisson batches of expected size --batch, "
                        "per-example clipping) to this epsilon over --iters steps; vp or ve only")
    p.add_argument("--dp-delta", type=_positive_float, default=1e-5, help="the delta of (epsilon, delta)-DP")
    p.add_argument("--dp-max-grad-norm", type=_positive_float, default=1.0, help="per-example clipping norm C")
    p.add_argument("--dp-noise-multiplicity", type=_positive_int, default=1,
                   help="DSM draws averaged inside each example's loss (DPDM's noise multiplicity K)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its checkpoint.pt (the same settings, --iters "
                        "included; the sampler and evaluation sizes may change)")
    p.add_argument("--force", action="store_true", help="overwrite the run already in --out")
    p.add_argument("--checkpoint-every", type=_positive_int, default=500,
                   help="iterations between checkpoints (one is also written at the end and on Ctrl-C)")
    _add_parallel(p, "fit-data")
    p.add_argument("--quiet", action="store_true", help="no progress bars (training and evaluation)")


def build_parser() -> argparse.ArgumentParser:
    """The ``controlsamp`` argument parser (choices and defaults read from the registries)."""
    from . import samplers, targets, train
    from ._validate import check_device
    parser = argparse.ArgumentParser(prog="controlsamp", formatter_class=_Help,
                                     description="controlsamp: diffusion samplers as stochastic optimal control. "
                                                 "`controlsamp list` shows the targets, samplers and losses; "
                                                 "`controlsamp COMMAND --help` the options of a command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,fit-data,list,demo,check}")
    p_run = sub.add_parser("run", help="train a diffusion sampler on a target and evaluate it (or run AIS / SMC)",
                           description="Train a diffusion sampler on a target and evaluate it (or run AIS / SMC); "
                                       "writes samples.npy, metrics.json, checkpoint.pt, sampler.pt and samples.png "
                                       "to --out. `controlsamp list` shows the targets, samplers and losses.",
                           formatter_class=_Help)
    trainable = [n for n, c in sorted(samplers.SAMPLERS.items()) if c.trainable]
    dims = [n for n in targets.names() if train.dim_is_parameter(n)]
    p_run.add_argument("--target", default="gmm25", choices=targets.names(), metavar="NAME",
                       help=f"target density, one of {', '.join(targets.names())}")
    p_run.add_argument("--dim", type=_positive_int, default=None,
                       help=f"dimension of a target that takes one ({', '.join(dims)}) (default: the target's: "
                            + ", ".join(f"{n} {targets.get(n).dim}" for n in dims) + ")")
    p_run.add_argument("--sampler", default="pis", choices=sorted(samplers.SAMPLERS),
                       help="diffusion sampler to train, or ais / smc (Monte Carlo, nothing to train)")
    p_run.add_argument("--loss", default=None, choices=samplers.LOSSES, metavar="NAME",
                       help="training loss, one of " + ", ".join(samplers.LOSSES) + " (default: the sampler's: "
                            + ", ".join(f"{samplers.SAMPLERS[n].default_loss} for {n}" for n in trainable) + ")")
    p_run.add_argument("--iters", type=_positive_int, default=1000, help="training iterations")
    p_run.add_argument("--batch", type=_positive_int, default=300, help="paths per training iteration")
    p_run.add_argument("--steps", type=_positive_int, default=100,
                       help="time steps; for ais the temperatures, for smc the MALA moves per temperature")
    p_run.add_argument("--seed", type=int, default=0, help="seed of the network, the paths and the evaluation")
    p_run.add_argument("--out", default="runs/run", help="folder for the run's files")
    p_run.add_argument("--device", type=_checked_by(check_device, "--device"), default="cpu", help="torch device: cpu, cuda or cuda:N")
    p_run.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint.pt (same settings; --iters may grow)")
    p_run.add_argument("--force", action="store_true", help="overwrite the run already in --out")
    p_run.add_argument("--checkpoint-every", type=_positive_int, default=100,
                       help="iterations between checkpoints (one is also written at the end and on Ctrl-C)")
    p_run.add_argument("--langevin", default=None, choices=["on", "off"], type=str.lower,
                       help="the Langevin parametrisation of the control (a learned time gain times the clipped target "
                            "score, added to the network; Sendera et al. 2024's LP): on or off (default: the sampler's, "
                            "on for pis, dds and dis, off for asbs)")
    p_run.add_argument("--hidden", type=_positive_int, default=None,
                       help="width of the control network's hidden layers (default: the sampler's, 64)")
    p_run.add_argument("--depth", type=_positive_int, default=None,
                       help="hidden layers of the control network (default: the sampler's, 2)")
    p_run.add_argument("--n-freq", type=_positive_int, default=None,
                       help="Fourier frequencies of the network's time features sin/cos(2 pi k t / T), k = 1..N "
                            "(default: the sampler's, 4)")
    p_run.add_argument("--sigma", type=_positive_float, default=None,
                       help="reference noise scale (default: per target, see `controlsamp list`)")
    p_run.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate of the network")
    p_run.add_argument("--lr-schedule", default="none", choices=["none", "cosine"], type=str.lower,
                       help="learning-rate schedule: constant, or cosine annealing to 0 over --iters")
    p_run.add_argument("--grad-clip", type=_positive_float, default=None,
                       help="clip the gradient's norm to this before each step (default: no clipping); a run "
                            "whose loss spikes at a high --lr can otherwise take one ruinous step")
    p_run.add_argument("--explore", type=_nonnegative_float, default=0.0,
                       help="exploration noise of the behaviour paths (off-policy losses: lv, tb, vargrad)")
    p_run.add_argument("--buffer", type=_count, default=0, help="replay-buffer capacity (0: none)")
    p_run.add_argument("--local-search-every", type=_count, default=0,
                       help="MALA local-search period in iterations (0: never; needs --buffer)")
    p_run.add_argument("--local-search-steps", type=_positive_int, default=None,
                       help="MALA steps of one local search (default 20)")
    p_run.add_argument("--local-search-burn-in", type=_count, default=None,
                       help="keep every state of a local search after this many steps, not only the last "
                            "(Sendera et al.: 100 of 200; default: the last only)")
    p_run.add_argument("--local-search-buffer", type=_count, default=0,
                       help="capacity of a second buffer that holds the samples of the local searches, the only "
                            "start of the backward paths (Sendera et al.'s buffer_ls; 0: the searches fill --buffer)")
    p_run.add_argument("--n-eval", type=_positive_int, default=2000,
                       help="paths for the evaluation (particles for ais / smc)")
    p_run.add_argument("--reference", default=None,
                       help="a .npy file of reference samples (n x d) for a target without an exact sampler: "
                            "W2, Sinkhorn and particle metrics are measured against them (default: none; the "
                            "target's exact samples where it has them)")
    _add_parallel(p_run, "run")
    p_run.add_argument("--quiet", action="store_true", help="no progress bars (training and evaluation)")
    _add_threads(p_run)
    p_run.set_defaults(func=run, parser=p_run)
    p_fit = sub.add_parser("fit-data", help="learn a score-based generative model from data, sample it and measure it",
                           description="Learn a score-based generative model from data (denoising score matching on "
                                       "a VP, VE or CLD reference), sample it and measure it on held-out data; writes "
                                       "samples.npy, metrics.json, checkpoint.pt, model.pt and samples.png to --out.",
                           formatter_class=_Help)
    _add_fit_data_options(p_fit)
    _add_threads(p_fit)
    p_fit.set_defaults(func=fit_data, parser=p_fit)
    p_list = sub.add_parser("list", help="the targets, samplers, losses and reference processes",
                            description="The targets (dimension, known log Z, exact samples), the samplers (default "
                                        "loss, accepted losses), the losses and the reference processes, read from "
                                        "the package's registries.", formatter_class=_Help)
    p_list.set_defaults(func=list_registries, parser=p_list)
    p_demo = sub.add_parser("demo", help="DDS on gmm25 in about a minute: picture, metrics and what good is", formatter_class=_Help)
    p_demo.add_argument("--out", default="runs/demo", help="folder for the run's files")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threads(p_demo)
    p_demo.set_defaults(func=demo, parser=p_demo)
    p_check = sub.add_parser("check", help="closed forms next to independent numerical solvers", formatter_class=_Help)
    p_check.set_defaults(func=check, parser=p_check)
    return parser


def main(argv=None) -> int:
    from . import set_threads
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "threads", None) is not None:
        set_threads(args.threads)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C outside a training job (run reports its own)
        print("\ncontrolsamp: interrupted", file=sys.stderr)
        return 130
    except ValueError as exc:  # a job's bad setting or failure (run, demo): the library's message, no traceback
        if args.command not in ("run", "fit-data", "demo"):
            raise
        print(f"controlsamp: error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
