"""The ``controlsamp`` command.

* ``controlsamp run --target NAME --sampler NAME --loss NAME --iters N --batch B --steps K --seed S --out DIR
  [--device D] [--resume]`` trains a diffusion sampler and writes samples, metrics, a checkpoint and a
  picture (:func:`controlsamp.train.run_job`); ``--sampler ais`` / ``smc`` run the Monte Carlo
  baselines instead (nothing to train; ``--steps`` sets their temperatures / MALA moves).
* ``controlsamp demo``: the default job, PIS on gmm25, in about a minute on a CPU.
* ``--threads N`` (``run``, ``demo``): torch's intra-op CPU threads, a positive integer or ``auto`` (torch's
  default, one per core); the default is the package's (one thread, or ``CONTROLSAMP_THREADS``; see
  :mod:`controlsamp._threads`).
* ``controlsamp check`` prints a table: each closed form of :mod:`controlsamp.exact` and
  :mod:`controlsamp.processes` next to an independent numerical solver (scipy's ODE solvers, a
  log-domain Sinkhorn, Monte Carlo, scipy's matrix exponential), with the error between the two.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Callable, List, Tuple

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


METRIC_KEYS = ("log_Z", "log_Z_se", "log_Z_true", "delta_log_Z", "delta_log_Z_rw", "elbo", "eubo", "ess", "w2",
               "sinkhorn", "energy_w2", "distance_w2", "mode_coverage", "emc", "target_evals", "wall_time_s")

# The demo job: PIS trained by trajectory balance with exploration, a replay buffer and local search
# (Sendera et al. 2024) on the 25-mode mixture, sized to about a minute on one CPU core.
DEMO = dict(target="gmm25", sampler="pis", loss="tb", iters=500, batch=256, steps=50, seed=0, out="runs/demo",
            fit_options=dict(explore=1.0, buffer=20000, local_search_every=10, local_search_steps=20,
                             lr_schedule="cosine"))


def _print_metrics(m: dict, out: str) -> None:
    if m.get("loss"):
        print(f"{m['sampler'].upper()} / {m['loss']} on {m['target']} (d = {m['dim']}), {m['iters']} iterations of "
              f"{m['batch']} paths, {m['steps']} steps, seed {m['seed']}")
    else:  # AIS / SMC: nothing trained
        print(f"{m['sampler'].upper()} on {m['target']} (d = {m['dim']}), {m['n_particles']} particles, "
              f"{m['n_temps']} temperatures, seed {m['seed']}")
    for k in METRIC_KEYS:
        if k in m:
            v = m[k]
            print(f"  {k:16s} {v:.4g}" if isinstance(v, float) else f"  {k:16s} {v}")
    files = [f for f in ("metrics.json", "samples.png", "checkpoint.pt", "sampler.pt") if os.path.exists(os.path.join(out, f))]
    print(f"wrote {os.path.join(out, 'samples.npy')}, {', '.join(files)}")


def _given(**options) -> dict:
    """The fit options set on the command line (zero / None means: the sampler's default)."""
    return {k: v for k, v in options.items() if v}


def run(args: argparse.Namespace) -> int:
    from . import train
    m = train.run_job(target=args.target, sampler=args.sampler, loss=args.loss, iters=args.iters, batch=args.batch,
                      steps=args.steps, seed=args.seed, out=args.out, device=args.device, resume=args.resume,
                      sigma=args.sigma, lr=args.lr, n_eval=args.n_eval, progress=not args.quiet,
                      fit_options=_given(explore=args.explore, buffer=args.buffer,
                                         local_search_every=args.local_search_every,
                                         lr_schedule=args.lr_schedule),
                      reference=args.reference)
    _print_metrics(m, args.out)
    return 0


def demo(args: argparse.Namespace) -> int:
    from . import train
    print("controlsamp demo: the path integral sampler on gmm25 (25 modes), trained from the energy alone\n")
    cfg = dict(DEMO, out=args.out)
    m = train.run_job(**cfg, progress=not args.quiet)
    _print_metrics(m, args.out)
    return 0


def _threads_arg(value: str) -> str:
    from ._threads import _parse
    try:
        _parse(value, "--threads")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_threads_arg, default=str(torch.get_num_threads()),
                   help="torch intra-op CPU threads: a positive integer, or 'auto' for torch's default (one per "
                        "core); more than 1 only pays for large networks or batches, and slows down badly when "
                        "other processes share the cores (default: %(default)s, the count in effect: 1 unless "
                        "CONTROLSAMP_THREADS, OMP_NUM_THREADS or MKL_NUM_THREADS say otherwise)")


def main(argv=None) -> int:
    from . import samplers, set_threads, targets
    parser = argparse.ArgumentParser(prog="controlsamp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train a diffusion sampler on a target and evaluate it (or run AIS / SMC)")
    p_run.add_argument("--target", default="gmm25", choices=targets.names())
    p_run.add_argument("--sampler", default="pis", choices=sorted(samplers.SAMPLERS))
    p_run.add_argument("--loss", default=None, choices=samplers.LOSSES,
                       help="training loss (default: tb; am for asbs)")
    p_run.add_argument("--iters", type=int, default=1000)
    p_run.add_argument("--batch", type=int, default=300)
    p_run.add_argument("--steps", type=int, default=100,
                       help="time steps; for ais the temperatures, for smc the MALA moves per temperature")
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--out", default="runs/run")
    p_run.add_argument("--device", default="cpu")
    p_run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p_run.add_argument("--sigma", type=float, default=None, help="reference noise (default: per target)")
    p_run.add_argument("--lr", type=float, default=1e-3)
    p_run.add_argument("--explore", type=float, default=0.0, help="exploration noise (off-policy losses)")
    p_run.add_argument("--buffer", type=int, default=0, help="replay-buffer capacity (0: none)")
    p_run.add_argument("--local-search-every", type=int, default=0, help="MALA local search period (0: never)")
    p_run.add_argument("--lr-schedule", default=None, choices=[None, "cosine"])
    p_run.add_argument("--n-eval", type=int, default=2000, help="paths for the evaluation (particles for ais / smc)")
    p_run.add_argument("--reference", default=None,
                       help="a .npy file of reference samples (n x d) for a target without an exact sampler: "
                            "W2, Sinkhorn and particle metrics are measured against them")
    p_run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads(p_run)
    p_run.set_defaults(func=run)
    p_demo = sub.add_parser("demo", help="PIS on gmm25 in about a minute: picture and metrics")
    p_demo.add_argument("--out", default="runs/demo")
    p_demo.add_argument("--quiet", action="store_true")
    _add_threads(p_demo)
    p_demo.set_defaults(func=demo)
    p_check = sub.add_parser("check", help="closed forms next to independent numerical solvers")
    p_check.set_defaults(func=check)
    args = parser.parse_args(argv)
    if getattr(args, "threads", None) is not None:
        set_threads(args.threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
