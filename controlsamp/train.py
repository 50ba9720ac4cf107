"""Training jobs (layer 6): train a sampler on a named target, evaluate it and write the results.

``run_job`` is what ``controlsamp run`` and ``controlsamp demo`` call. It writes to ``out``:

* ``job.json``: the job's settings (written first; a resumed job must have the same ones, see
  :data:`JOB_KEYS`);
* ``samples.npy`` (n x d, float32), the sampler's samples;
* ``metrics.json``: ``log_Z`` (importance estimate) with ``log_Z_se`` (bootstrap), ``elbo`` with
  ``elbo_se`` (CLT), ``ess``
  (normalised), ``target_evals`` (energy evaluations spent training, each log-density or score of one
  point counted once), ``wall_time_s`` (training), and where the target allows: ``log_Z_true``,
  ``delta_log_Z`` (|ELBO - log Z|) and ``delta_log_Z_rw`` (|importance estimate - log Z|), ``eubo`` with ``eubo_se``
  (backward paths from exact samples), ``w2`` (exact OT, POT emd2, against exact samples) with ``w2_floor`` (the same
  W2 between two independent exact sample sets of the evaluation's sizes: what a perfect sampler would
  show), ``sinkhorn`` (with its ``sinkhorn_eps``, on the first ``n_sinkhorn`` = 500 samples of each set, at
  most 2000 iterations: its cost per iteration is quadratic in the sample size), ``mode_coverage`` and
  ``emc`` for mixtures, ``energy_w2``, ``distance_w2``, ``energy_tv`` and ``distance_tv`` for particle targets
  (the TVs over 200 bins spanning the reference's range, as iDEM and DiKL: :func:`metrics.histogram_tv`), and
  ``aligned_w2`` with ``aligned_w2_floor`` (W2 up to permutation and rotation, DEM's and ASBS's, on 1000
  configurations: :func:`metrics.aligned_w2`); the settings and seeds of the run. A non-finite value is written as null (the file
  is strict JSON);
* ``checkpoint.pt`` (training state, for ``resume``) and ``sampler.pt`` (the trained sampler);
* ``samples.png``: the samples over the target: its log-density for d = 2; for d > 2 the (x_0, x_1)
  marginal of exact samples where the target has an exact sampler (e.g. the funnel), else a slice of the
  log-density through the first two coordinates, the others at 0.

``samples.npy``, ``metrics.json``, ``job.json`` and the picture are written atomically (a temporary file
renamed over the old one, :func:`controlsamp.training.atomic_write`).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics, parallel, samplers, targets
from .control.objectives import REGISTRY as OBJECTIVES
from ._validate import check_device, check_dim, check_points
from .training import atomic_write, remove_stale_temporaries
from .weights import systematic_resample

# Settings per target: the reference noise scale (Sendera et al. 2024 use sigma^2 = 5 on gmm25, 1 on
# funnel and manywell), the evaluation's Sinkhorn epsilon (in the units of the squared distance) and,
# for AIS / SMC, the standard deviation of their Gaussian start when it differs from sigma (it must
# cover the modes: from std sqrt(5) SMC misweights gmm25's outer modes, log Z off by up to 1.9, measured;
# on the funnel it is x0's scale).
TARGET_DEFAULTS: Dict[str, dict] = {
    "gaussian": dict(sigma=1.0, sinkhorn_eps=0.1),
    "gmm25": dict(sigma=math.sqrt(5.0), sinkhorn_eps=1.0, mc_sigma=10.0),
    "gmm40": dict(sigma=20.0, sinkhorn_eps=10.0),
    "funnel": dict(sigma=1.0, sinkhorn_eps=10.0, mc_sigma=3.0),
    "funnel10": dict(sigma=1.0, sinkhorn_eps=10.0, mc_sigma=3.0),
    "funnel10_pis": dict(sigma=1.0, sinkhorn_eps=10.0, mc_sigma=1.0),
    "manywell": dict(sigma=1.0, sinkhorn_eps=1.0),
    "manywell32": dict(sigma=1.0, sinkhorn_eps=1.0),
    "dw4": dict(sigma=1.0, sinkhorn_eps=1.0),
    # dw4 in centre-of-mass-free coordinates: each coordinate has sd about 2.2 (long MALA runs)
    "dw4_com_free": dict(sigma=2.0, sinkhorn_eps=1.0),
    "lj13": dict(sigma=1.0, sinkhorn_eps=1.0),
    "lj13_com_free": dict(sigma=1.0, sinkhorn_eps=1.0),
}
DEFAULT_SETTINGS = dict(sigma=1.0, sinkhorn_eps=1.0)

# The files of a run in ``out``: a new run into a folder holding any of them replaces them all.
RUN_FILES = ("job.json", "checkpoint.pt", "sampler.pt", "metrics.json", "samples.npy", "samples.png")
# The settings a resumed job must share with the job that wrote the checkpoint (``iters`` may grow; the
# device, the evaluation and the progress display may change).
JOB_KEYS = ("target", "dim", "sampler", "loss", "batch", "steps", "seed", "sigma", "lr", "fit_options",
            "sampler_options")


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_job`. ``stage``: "training" or "evaluation"; ``iteration``: the training
    iterations done (of ``iters``); ``checkpoint``: the file that holds them (None when nothing was saved,
    e.g. AIS / SMC, which train nothing)."""

    def __init__(self, stage: str, iteration: int, iters: int, checkpoint: Optional[str]):
        super().__init__(f"interrupted during {stage} at iteration {iteration} of {iters}")
        self.stage, self.iteration, self.iters, self.checkpoint = stage, iteration, iters, checkpoint


def fmt(value, digits: int = 3) -> str:
    """A number for people: ``digits`` significant digits, in exponent notation when it is below 0.01 or
    at least 1e4 in magnitude (an ESS of 0.0029 is "2.9e-03" with 2 digits, never "0.00"); integers, None
    and non-finite values as they are; trailing zeros dropped (0.0029 with 4 digits is "2.9e-03")."""
    if value is None or isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v == 0.0:
        return "0"
    if 1e-2 <= abs(v) < 1e4:
        return f"{v:.{digits}g}"
    mantissa, exponent = f"{v:.{max(digits - 1, 0)}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


# ---------------------------------------------------------------------------------------- targets
def dim_is_parameter(name: str) -> bool:
    """Whether the registered target ``name`` takes its dimension as a parameter (``targets.get(name,
    dim=d)``: e.g. gaussian, funnel, manywell); the others (gmm25, funnel10, ...) have a fixed one."""
    factory = targets.registry._REGISTRY.get(name)
    if factory is None:
        raise ValueError(f"unknown target {name!r}; available: {', '.join(targets.names())}")
    return "dim" in inspect.signature(factory).parameters


def make_target(name: str, dim: Optional[int] = None):
    """The registered target ``name``, in dimension ``dim`` where its dimension is a parameter (None: its
    default). A ``dim`` for a target of fixed dimension is a ValueError naming the targets that take one."""
    if dim is None:
        return targets.get(name)
    dim = check_dim(dim, "dim")
    if not dim_is_parameter(name):
        settable = [n for n in targets.names() if dim_is_parameter(n)]
        raise ValueError(f"dim: target {name!r} has the fixed dimension {targets.get(name).dim}; a dimension can "
                         f"be chosen for {', '.join(settable)}")
    return targets.get(name, dim=dim)


def target_settings(name: str) -> dict:
    """The job settings of target ``name``: :data:`TARGET_DEFAULTS` or :data:`DEFAULT_SETTINGS`."""
    return TARGET_DEFAULTS.get(name, DEFAULT_SETTINGS)


# ---------------------------------------------------------------------------------------- files
def run_files(out: str) -> List[str]:
    """The files of a run (:data:`RUN_FILES`) that ``out`` holds."""
    return [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]


def _json_safe(obj):
    """``obj`` with every non-finite float replaced by None and numpy / torch scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        obj = obj.item()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def write_json(path: str, obj) -> None:
    """Strict JSON (NaN and infinities as null), written atomically."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False)

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")
    atomic_write(path, write)


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` written atomically (through a file handle: np.save would append .npy to the temporary name)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    atomic_write(path, write)


def prepare_out(out: str, job: dict, resume: bool, files: Callable[[str], List[str]]) -> None:
    """Rank 0 (the only process that writes; see :mod:`controlsamp.parallel`) makes ``out``, removes the
    temporary files of writes killed there (:func:`controlsamp.training.remove_stale_temporaries`) and the files
    ``files(out)`` of an earlier run unless ``resume``, and writes ``job.json``; every process of a group then
    waits until it has."""
    if parallel.rank() == 0:
        os.makedirs(out, exist_ok=True)
        remove_stale_temporaries(out)  # what a run killed mid-write (SIGKILL) left
        if not resume:  # a new run: nothing of an earlier one may remain next to it
            for f in files(out):
                os.remove(os.path.join(out, f))
        write_json(os.path.join(out, "job.json"), job)
    if parallel.world_size() > 1:
        parallel.DataParallel().barrier()  # the folder is ready before any process trains


def check_resume(out: str, job: dict) -> None:
    """Refuse to resume the run in ``out`` with settings other than those it was started with
    (:data:`JOB_KEYS`, from its ``job.json``): a one-line ValueError naming each differing setting."""
    path = os.path.join(out, "job.json")
    if not os.path.exists(path):  # a run written before job.json existed: the checkpoint's own check applies
        return
    with open(path) as fh:
        try:
            saved = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"resume: {path!r} is not valid JSON ({exc}); start a new run") from None
    now = _json_safe(job)
    diff = []
    for key in JOB_KEYS:
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) or isinstance(new, dict):  # options: name each one
            old, new = old or {}, new or {}
            diff += [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        elif old != new:
            diff.append((key, old, new))
    if diff:
        detail = "; ".join(f"{k}: {old!r} then, {new!r} now" for k, old, new in diff)
        raise ValueError(f"resume: the run in {out!r} was started with other settings ({detail}); resume it with "
                         "the same settings (only iters may grow), or start a new run in another folder")


# ---------------------------------------------------------------------------------------- evaluation
class _Stages:
    """Progress of the evaluation: a tqdm bar (stderr) over named stages, the running one shown."""

    def __init__(self, total: int, progress: bool):
        self.bar = tqdm(total=total, desc="evaluation", disable=not progress, leave=False,
                        bar_format="{desc} ({n_fmt}/{total_fmt} stages done, {elapsed})")

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.bar.set_description_str(f"evaluation: {name}", refresh=True)
        yield
        self.bar.update(1)


def _has_exact_sampler(target) -> bool:
    try:
        target.sample(1, generator=torch.Generator().manual_seed(0))
    except ValueError:
        return False
    return True


def evaluate(sampler, n: int = 2000, seed: int = 12345, n_ot: int = 2000, sinkhorn_eps: float = 1.0,
             n_sinkhorn: int = 500, sinkhorn_iters: int = 2000, reference=None, progress: bool = False,
             n_aligned: int = 1000):
    """Sample n paths and compute the metrics the target allows (see the module docstring); returns
    ``(metrics, samples)``. ``progress``: a bar over the stages (sampling, log Z, exact samples, EUBO,
    W2, its floor, Sinkhorn, ...), naming the one running.

    ``reference``: samples (m, d) standing in for exact ones where the target has no exact sampler
    (e.g. long MCMC runs on a particle target); W2, Sinkhorn and, for particle targets, the energy and
    interatomic-distance W2 are then measured against them (no EUBO: it needs exact samples). The W2
    floor is then measured between the reference points used for W2 and the next ones (when m is at
    least the two sets' sizes together).

    Particle targets also get ``aligned_w2``: W2 with configurations compared up to permutation, translation
    and an orthogonal map (:func:`controlsamp.metrics.aligned_w2`, the particle W2 of DEM's and ASBS's tables)
    between ``n_aligned`` samples and as many reference points (ASBS: 1000 against 1000), and its floor
    ``aligned_w2_floor`` between those reference points and the next ``n_aligned`` where there are enough.

    A sampler whose log-weights are all NaN (no importance weights: DiKL's one-step generator) gets the sample
    metrics only (no log Z, ELBO, ESS or EUBO).

    Weighted particles (AIS, SMC: ``sampler.trainable`` false) are resampled by their weights
    (systematic resampling) before the sample-based metrics, and the returned samples are the resampled
    ones: unweighted, the particles of an SMC run follow the tempered path, not the target (on
    dw4_com_free the interatomic-distance W2 of 2000 unweighted particles was 0.38, resampled 0.016,
    against 0.03 between two MALA reference sets). Diffusion samplers' samples are used as drawn.
    """
    target = sampler.target
    n_aligned = check_dim(n_aligned, "n_aligned")
    evals_before = sampler.target_evals
    exact = reference is None
    has_truth = _has_exact_sampler(target) if exact else True
    particles = has_truth and hasattr(target, "pairwise_distances") and hasattr(target, "energy")
    mixture = isinstance(target, targets.GaussianMixture)
    resample = getattr(sampler, "weighted", False)
    eubo = exact and not resample  # weighted particles have no path law to weigh paths from exact samples under
    stage = _Stages(2 + (3 + exact + eubo) * has_truth + 2 * particles + mixture, progress)
    try:
        what = f"running {type(sampler).__name__} ({n} particles)" if resample else f"sampling {n} paths"
        with stage(what):
            t0 = time.perf_counter()
            x, lw = sampler.sample(n, seed=seed)
            sample_s = time.perf_counter() - t0
            if resample:  # AIS / SMC: weighted particles; the sample metrics and samples.npy use them resampled
                x = x[systematic_resample(lw, torch.Generator(device=lw.device).manual_seed(seed))]
        out = {"n_eval": n, "sample_s": sample_s, "resampled": resample}
        weighted = not bool(torch.isnan(lw).all())  # all NaN: no importance weights (DiKL's one-step generator)
        with stage("log Z, ELBO, ESS" if weighted else "no importance weights: no log Z, ELBO or ESS"):
            if weighted:
                est, se = metrics.log_Z(lw, seed=seed)
                out.update(log_Z=est, log_Z_se=se, elbo=metrics.elbo(lw), elbo_se=metrics.mean_se(lw),
                           ess=metrics.ess(lw))
        if target.log_Z is not None and weighted:
            out.update(log_Z_true=float(target.log_Z), delta_log_Z=abs(out["elbo"] - target.log_Z),
                       delta_log_Z_rw=abs(est - target.log_Z))
        gen = torch.Generator().manual_seed(seed + 1)
        truth = None
        if exact and has_truth:
            with stage(f"drawing {n} exact samples"):
                truth = target.sample(n, generator=gen).to(device=sampler.device, dtype=sampler.dtype)
        elif not exact:
            truth = check_points(reference, "reference", target.dim).to(device=sampler.device, dtype=sampler.dtype)
            out["reference_n"] = len(truth)
        if exact and truth is not None and eubo:
            with stage("EUBO (backward paths from exact samples)"):
                dev = torch.device(getattr(sampler, "device", "cpu"))  # the backward paths' noise: on their device
                eubo_gen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed + 1)
                eubo_lw = sampler.eubo_log_weights(truth, eubo_gen)
            if eubo_lw is not None:  # paths from the truth under the sampler's path law
                out.update(eubo=metrics.eubo(eubo_lw), eubo_se=metrics.mean_se(eubo_lw, "eubo log weights"))
        if truth is not None:
            a, b = x[:n_ot].double().cpu(), truth[:n_ot].double().cpu()
            with stage(f"W2 (exact OT, {len(a)} x {len(b)} points)"):
                out.update(w2=metrics.w2(a, b), n_ot=min(n_ot, n))
            with stage("W2 floor (two exact sample sets)"):
                if exact:
                    other = target.sample(len(a), generator=torch.Generator().manual_seed(seed + 2)).double()
                else:
                    other = truth[len(b):len(b) + len(a)].double().cpu()
                if len(other) == len(a):
                    out["w2_floor"] = metrics.w2(other, b)
            k = min(n_sinkhorn, n_ot, n)
            with stage(f"Sinkhorn ({k} x {min(k, len(b))} points)"):
                out.update(sinkhorn_eps=sinkhorn_eps, n_sinkhorn=k,
                           sinkhorn=metrics.sinkhorn(a[:k], b[:k], eps=sinkhorn_eps, numItermax=sinkhorn_iters,
                                                     stopThr=1e-6))
        if truth is not None and particles:
            xa, tb = x.detach().double().cpu(), truth.double().cpu()
            with stage("energy and interatomic-distance W2 and TV"), torch.no_grad():
                ex, et = target.energy(xa), target.energy(tb)
                dx, dt = target.pairwise_distances(xa).reshape(-1), target.pairwise_distances(tb).reshape(-1)
                out.update(energy_w2=metrics.energy_w2(ex, et), distance_w2=metrics.wasserstein_1d(dx, dt))
                if torch.isfinite(ex).all():  # TV: 200 bins over the reference's range (iDEM / DiKL)
                    out.update(energy_tv=metrics.histogram_tv(ex, et), distance_tv=metrics.histogram_tv(dx, dt))
            k = min(n_aligned, len(xa), len(tb))
            with stage(f"aligned W2 ({k} x {k} configurations, up to permutation and rotation)"):
                pos = target.positions if hasattr(target, "positions") else (lambda v: v)
                N, s = target.n_particles, target.spatial_dim
                xp, tp = pos(xa[:k]), pos(tb[:k])
                if torch.isfinite(xp).all():
                    out.update(aligned_w2=metrics.aligned_w2(xp, tp, N, s), n_aligned=k)
                    if len(tb) >= 2 * k:
                        out["aligned_w2_floor"] = metrics.aligned_w2(pos(tb[k:2 * k]), tp, N, s)
        if mixture:
            with stage("mode coverage"):
                out.update(mode_coverage=metrics.mode_coverage(x, target), emc=metrics.emc(x, target))
    finally:
        stage.bar.close()
    sampler.target_evals = evals_before  # evaluation does not count toward the training budget
    return out, x


# ---------------------------------------------------------------------------------------- picture
def plot_samples(target, x: np.ndarray, path: str, title: str = "") -> None:
    """Samples over the target (written atomically as a PNG), with a colorbar for the shading: for d = 2 its
    log-density; for d > 2 the (x_0, x_1) marginal of 20000 exact samples where the target has an exact
    sampler (a histogram's log-density), else a slice of the log-density through the first two coordinates
    (the others at 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(x, dtype=np.float64)
    try:
        ref = target.sample(20000, generator=torch.Generator().manual_seed(0)).double().cpu().numpy()
    except ValueError:
        ref = None
    sets = [x[:, :2]] + ([ref[:, :2]] if ref is not None else [])
    lo = np.min([np.quantile(s, 0.005, axis=0) for s in sets], axis=0)
    hi = np.max([np.quantile(s, 0.995, axis=0) for s in sets], axis=0)
    pad = 0.1 * (hi - lo) + 1e-3
    lo, hi = lo - pad, hi + pad
    fig, ax = plt.subplots(figsize=(6.6, 5.6))
    if target.dim > 2 and ref is not None:
        hist, xe, ye = np.histogram2d(ref[:, 0], ref[:, 1], bins=80, range=[[lo[0], hi[0]], [lo[1], hi[1]]],
                                      density=True)
        logh = np.ma.masked_equal(hist.T, 0.0)  # empty bins stay white
        logh = np.ma.log(logh)
        shade = ax.pcolormesh(xe, ye, logh, cmap="Blues", shading="flat")
        label = f"log density of {len(ref)} exact samples, (x_0, x_1) marginal"
    else:
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
        pts = torch.zeros(g0.size, target.dim, dtype=torch.float64)
        pts[:, 0], pts[:, 1] = torch.from_numpy(g0.ravel()), torch.from_numpy(g1.ravel())
        with torch.no_grad():
            lp = target.log_prob(pts).double().numpy().reshape(g0.shape)
        lp = np.maximum(lp, lp.max() - 15.0)
        shade = ax.contourf(g0, g1, lp, levels=30, cmap="Blues")
        label = "target log-density (unnormalised)" + ("" if target.dim == 2 else
                                                       f", slice x_2..x_{target.dim - 1} = 0")
    fig.colorbar(shade, ax=ax, label=label)
    ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", alpha=0.5, label=f"{len(x)} samples")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x_0")
    ax.set_ylabel("x_1")
    ax.legend(loc="upper right", markerscale=4)
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    """Lay out ``fig``, write it to ``path`` as a PNG atomically, and close it (also on error)."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _title(m: dict) -> str:
    loss = f" ({m['loss']})" if m.get("loss") else ""
    head = f"{m['sampler'].upper()}{loss} on {m['target']} (d = {m['dim']})"
    parts = [f"log Z {fmt(m['log_Z'], 4)}" + (f" (true {fmt(m['log_Z_true'], 4)})" if "log_Z_true" in m else ""),
             f"ESS {fmt(m['ess'], 2)}"]
    if "w2" in m:
        parts.append(f"W2 {fmt(m['w2'])}" + (f" (floor {fmt(m['w2_floor'])})" if "w2_floor" in m else ""))
    return head + "\n" + ", ".join(parts)


# ---------------------------------------------------------------------------------------- the job
def _iterations_done(smp) -> int:
    """Training iterations recorded in the sampler's history (ASBS's corrector steps not counted)."""
    hist = smp.history
    return len(hist.get("loss", [])) - int(sum(hist.get("corrector", [])))


def run_job(target: str = "gmm25", sampler: str = "pis", loss: Optional[str] = None, iters: int = 1000, batch: int = 300,
            steps: int = 100, seed: int = 0, out: str = "runs/demo", device: str = "cpu", resume: bool = False,
            sigma: Optional[float] = None, lr: float = 1e-3, n_eval: int = 2000, progress: bool = True,
            fit_options: Optional[dict] = None, sampler_options: Optional[dict] = None, reference=None,
            dim: Optional[int] = None, checkpoint_every: int = 100) -> dict:
    """Train ``sampler`` on ``target`` with ``loss``, evaluate, write the files; returns the metrics.

    AIS and SMC (``sampler.trainable`` false) train nothing: ``iters``, ``batch``, ``loss`` and the fit
    options do not apply, ``steps`` is their number of temperatures (AIS) or MALA moves per temperature
    (SMC), the evaluation run is the job (``n_eval`` particles) and its target evaluations and wall
    time are the reported ones.

    ``dim``: the dimension of a target that takes one (gaussian, funnel, manywell; see
    :func:`make_target`). ``reference``: reference samples (an (m, d) array, or the path of a ``.npy``
    file holding one) for a target without an exact sampler; the evaluation measures W2 and Sinkhorn (and,
    for particle targets, energy and interatomic-distance W2) against them (see :func:`evaluate`).

    ``resume``: continue the training state in ``out/checkpoint.pt``. There must be one, and the job must
    have the settings it was started with (:data:`JOB_KEYS`; ``iters`` may grow): otherwise a ValueError
    says what is missing or which settings differ. Without ``resume`` the files of an earlier run in
    ``out`` (:data:`RUN_FILES`) are replaced. Ctrl-C raises :class:`JobInterrupted` (a KeyboardInterrupt)
    saying how far training got and where its checkpoint is. ``progress``: bars for training and
    evaluation. ``checkpoint_every``: iterations between checkpoints (and at the end and on Ctrl-C).

    Several processes (started by ``torchrun`` or ``controlsamp run --nproc N``: the environment holds
    ``WORLD_SIZE`` > 1): the job joins their ``torch.distributed`` group (:func:`controlsamp.parallel.init_from_env`;
    gloo on CPUs, NCCL with one GPU per process for ``device="cuda"``) and trains data-parallel
    (:mod:`controlsamp.parallel`) with ``fit_options["shards"]`` random shards (default: one per process; a resumed
    run needs the same). Rank 0 writes every file and evaluates; it returns the metrics, the other ranks ``{}``.
    """
    tgt = make_target(target, dim)
    check_device(device, "device")
    joined = not parallel.world_size() > 1 and parallel.init_from_env(device)
    try:
        return _run_job(tgt, target, sampler, loss, iters, batch, steps, seed, out, str(parallel.local_device(device)),
                        resume, sigma, lr, n_eval, progress, fit_options, sampler_options, reference, dim,
                        checkpoint_every)
    finally:
        if joined:
            parallel.destroy()


def _run_job(tgt, target, sampler, loss, iters, batch, steps, seed, out, device, resume, sigma, lr, n_eval, progress,
             fit_options, sampler_options, reference, dim, checkpoint_every) -> dict:
    world, writer = parallel.world_size(), parallel.rank() == 0
    ref_name = None
    if isinstance(reference, (str, os.PathLike)):
        ref_name = os.fspath(reference)
        if not os.path.isfile(ref_name):
            raise ValueError(f"reference: no such file {ref_name!r}")
        reference = np.load(ref_name)
    if reference is not None:  # checked before training, not after it
        reference = check_points(reference, "reference", tgt.dim)
    defaults = target_settings(target)
    cls = samplers.get(sampler)
    trainable = cls.trainable
    if sigma is None:
        sigma = defaults["sigma"] if trainable else defaults.get("mc_sigma", defaults["sigma"])
    sigma = float(sigma)
    loss = loss or cls.default_loss
    fit_kw = dict(fit_options or {}) if trainable else {}
    if world > 1:
        if not trainable:
            raise ValueError(f"sampler {sampler!r} trains nothing; run it in one process, not {world}")
        fit_kw.setdefault("shards", world)
    job = dict(target=target, dim=tgt.dim, sampler=sampler, loss=OBJECTIVES[loss].name if loss in OBJECTIVES else loss,
               batch=batch if trainable else None, steps=steps, seed=seed, sigma=sigma, lr=lr if trainable else None,
               fit_options=fit_kw, sampler_options=dict(sampler_options or {}), iters=iters if trainable else None)
    ckpt = os.path.join(out, "checkpoint.pt")
    if resume:
        if not trainable:
            raise ValueError(f"resume: sampler {sampler!r} trains nothing, so there is no training to resume; "
                             "run it without resume")
        if not os.path.isfile(ckpt):
            raise ValueError(f"resume: there is no checkpoint to resume in {out!r} ({ckpt} does not exist); "
                             "start the run without resume")
        check_resume(out, job)
    smp = cls(tgt, steps=steps, sigma=sigma, device=device, seed=seed, **(sampler_options or {}))
    prepare_out(out, job, resume, run_files)
    if trainable:
        try:
            smp.fit(iters, batch=batch, loss=loss, lr=lr, seed=seed, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                    resume=resume, progress=progress, **fit_kw)
        except KeyboardInterrupt as exc:
            raise JobInterrupted("training", _iterations_done(smp), iters,
                                 ckpt if os.path.isfile(ckpt) else None) from exc
    if not writer:
        return {}
    try:
        m, x = evaluate(smp, n=n_eval, seed=seed + 12345, sinkhorn_eps=defaults["sinkhorn_eps"], reference=reference,
                        progress=progress)
    except KeyboardInterrupt as exc:
        raise JobInterrupted("evaluation", iters if trainable else 0, iters if trainable else 0,
                             ckpt if trainable and os.path.isfile(ckpt) else None) from exc
    if ref_name is not None:
        m["reference"] = ref_name
    if trainable:
        train_time = float(sum(smp.history.get("seconds", [])))
    else:  # the job is the evaluation's run: its cost is the budget
        m.pop("n_eval", None)
        train_time, smp.target_evals = m["sample_s"], smp.last.target_evals
        m.update(n_particles=n_eval, n_temps=len(smp.last.betas) - 1, accept=float(np.nanmean(smp.last.accept)))
        iters = batch = 0
    smp.save(os.path.join(out, "sampler.pt"))
    m.update(target=target, sampler=sampler, loss=loss, iters=iters, batch=batch, steps=steps, seed=seed,
             sigma=sigma, lr=lr, device=device, fit_options=fit_kw, target_evals=int(smp.target_evals),
             wall_time_s=train_time, dim=tgt.dim)
    xn = x.detach().cpu().numpy().astype(np.float32)
    save_npy(os.path.join(out, "samples.npy"), xn)
    write_json(os.path.join(out, "metrics.json"), m)
    plot_samples(tgt, xn, os.path.join(out, "samples.png"), _title(m))
    return m
