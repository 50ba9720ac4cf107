"""Training jobs (layer 6): train a sampler on a named target, evaluate it and write the results.

``run_job`` is what ``controlsamp run`` and ``controlsamp demo`` call. It writes to ``out``:

* ``samples.npy`` (n x d, float32), the sampler's samples;
* ``metrics.json``: ``log_Z`` (importance estimate) with ``log_Z_se`` (bootstrap), ``elbo``, ``ess``
  (normalised), ``target_evals`` (energy evaluations spent training, each log-density or score of one
  point counted once), ``wall_time_s`` (training), and where the target allows: ``log_Z_true``,
  ``delta_log_Z`` (|ELBO - log Z|) and ``delta_log_Z_rw`` (|importance estimate - log Z|), ``eubo`` (backward
  paths from exact samples), ``w2`` (exact OT, POT emd2, against exact samples), ``sinkhorn`` (with its
  ``sinkhorn_eps``, on the first ``n_sinkhorn`` = 500 samples of each set, at most 2000 iterations: its
  cost per iteration is quadratic in the sample size), ``mode_coverage`` and ``emc`` for mixtures; the settings and seeds of the run;
* ``checkpoint.pt`` (training state, for ``--resume``) and ``sampler.pt`` (the trained sampler);
* ``samples.png``: the samples over the target's log-density (a slice through the first two coordinates,
  the other coordinates at 0, for d > 2).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from . import metrics, samplers, targets
from ._validate import check_points
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
    "funnel10": dict(sigma=1.0, sinkhorn_eps=10.0, mc_sigma=3.0),
    "funnel10_pis": dict(sigma=1.0, sinkhorn_eps=10.0, mc_sigma=1.0),
    "manywell32": dict(sigma=1.0, sinkhorn_eps=1.0),
    "dw4": dict(sigma=1.0, sinkhorn_eps=1.0),
    # dw4 in centre-of-mass-free coordinates: each coordinate has sd about 2.2 (long MALA runs)
    "dw4_com_free": dict(sigma=2.0, sinkhorn_eps=1.0),
    "lj13": dict(sigma=1.0, sinkhorn_eps=1.0),
}


def evaluate(sampler, n: int = 2000, seed: int = 12345, n_ot: int = 2000, sinkhorn_eps: float = 1.0,
             n_sinkhorn: int = 500, sinkhorn_iters: int = 2000, reference=None) -> dict:
    """Sample n paths and compute the metrics the target allows (see the module docstring).

    ``reference``: samples (m, d) standing in for exact ones where the target has no exact sampler
    (e.g. long MCMC runs on a particle target); W2, Sinkhorn and, for particle targets, the energy and
    interatomic-distance W2 are then measured against them (no EUBO: it needs exact samples).

    Weighted particles (AIS, SMC: ``sampler.trainable`` false) are resampled by their weights
    (systematic resampling) before the sample-based metrics, and the returned samples are the resampled
    ones: unweighted, the particles of an SMC run follow the tempered path, not the target (on
    dw4_com_free the interatomic-distance W2 of 2000 unweighted particles was 0.38, resampled 0.016,
    against 0.03 between two MALA reference sets). Diffusion samplers' samples are used as drawn.
    """
    target = sampler.target
    evals_before = sampler.target_evals
    t0 = time.perf_counter()
    x, lw = sampler.sample(n, seed=seed)
    sample_s = time.perf_counter() - t0
    resample = sampler.weighted
    if resample:  # AIS / SMC: weighted particles; the sample metrics and samples.npy use them resampled
        x = x[systematic_resample(lw, torch.Generator(device=lw.device).manual_seed(seed))]
    est, se = metrics.log_Z(lw, seed=seed)
    out = {"log_Z": est, "log_Z_se": se, "elbo": metrics.elbo(lw), "ess": metrics.ess(lw), "n_eval": n,
           "sample_s": sample_s, "resampled": resample}
    if target.log_Z is not None:
        out.update(log_Z_true=float(target.log_Z), delta_log_Z=abs(out["elbo"] - target.log_Z),
                   delta_log_Z_rw=abs(est - target.log_Z))
    gen = torch.Generator().manual_seed(seed + 1)
    exact = reference is None
    if exact:
        try:
            truth = target.sample(n, generator=gen).to(device=sampler.device, dtype=sampler.dtype)
        except ValueError:
            truth = None
    else:
        truth = check_points(reference, "reference", target.dim).to(device=sampler.device, dtype=sampler.dtype)
        out["reference_n"] = len(truth)
    eubo_lw = sampler.eubo_log_weights(truth, gen) if exact and truth is not None else None
    if eubo_lw is not None:  # paths from the truth under the sampler's path law
        out["eubo"] = metrics.eubo(eubo_lw)
    if truth is not None:
        a, b = x[:n_ot].double().cpu(), truth[:n_ot].double().cpu()
        k = min(n_sinkhorn, n_ot, n)
        out.update(w2=metrics.w2(a, b), n_ot=min(n_ot, n), sinkhorn_eps=sinkhorn_eps, n_sinkhorn=k,
                   sinkhorn=metrics.sinkhorn(a[:k], b[:k], eps=sinkhorn_eps, numItermax=sinkhorn_iters,
                                             stopThr=1e-6))
    if truth is not None and hasattr(target, "pairwise_distances") and hasattr(target, "energy"):
        xa, tb = x.detach().double().cpu(), truth.double().cpu()
        with torch.no_grad():
            out.update(energy_w2=metrics.energy_w2(target.energy(xa), target.energy(tb)),
                       distance_w2=metrics.wasserstein_1d(target.pairwise_distances(xa).reshape(-1),
                                                          target.pairwise_distances(tb).reshape(-1)))
    if isinstance(target, targets.GaussianMixture):
        out.update(mode_coverage=metrics.mode_coverage(x, target), emc=metrics.emc(x, target))
    sampler.target_evals = evals_before  # evaluation does not count toward the training budget
    return out, x


def plot_samples(target, x: np.ndarray, path: str, title: str = "") -> None:
    """Samples over the target's log-density (contours of a slice through the first two coordinates)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = np.quantile(x[:, :2], 0.005, axis=0), np.quantile(x[:, :2], 0.995, axis=0)
    try:
        ref = target.sample(5000, generator=torch.Generator().manual_seed(0)).numpy()
        lo, hi = np.minimum(lo, np.quantile(ref[:, :2], 0.005, 0)), np.maximum(hi, np.quantile(ref[:, :2], 0.995, 0))
    except ValueError:
        pass
    pad = 0.1 * (hi - lo) + 1e-3
    lo, hi = lo - pad, hi + pad
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    pts = torch.zeros(g0.size, target.dim, dtype=torch.float64)
    pts[:, 0], pts[:, 1] = torch.from_numpy(g0.ravel()), torch.from_numpy(g1.ravel())
    with torch.no_grad():
        lp = target.log_prob(pts).double().numpy().reshape(g0.shape)
    lp = np.maximum(lp, lp.max() - 15.0)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.contourf(g0, g1, lp, levels=30, cmap="Blues")
    ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", alpha=0.5, label="samples")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    slice_note = "" if target.dim == 2 else f" (log-density slice x_2..x_{target.dim - 1} = 0)"
    ax.set_title(title + slice_note, fontsize=9)
    ax.set_xlabel("x_0")
    ax.set_ylabel("x_1")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_job(target: str = "gmm25", sampler: str = "pis", loss: Optional[str] = None, iters: int = 1000, batch: int = 300,
            steps: int = 100, seed: int = 0, out: str = "runs/demo", device: str = "cpu", resume: bool = False,
            sigma: Optional[float] = None, lr: float = 1e-3, n_eval: int = 2000, progress: bool = True,
            fit_options: Optional[dict] = None, sampler_options: Optional[dict] = None, reference=None) -> dict:
    """Train ``sampler`` on ``target`` with ``loss``, evaluate, write the files; returns the metrics.

    AIS and SMC (``sampler.trainable`` false) train nothing: ``iters``, ``batch``, ``loss`` and the fit
    options do not apply, ``steps`` is their number of temperatures (AIS) or MALA moves per temperature
    (SMC), the evaluation run is the job (``n_eval`` particles) and its target evaluations and wall
    time are the reported ones.

    ``reference``: reference samples (an (m, d) array, or the path of a ``.npy`` file holding one) for a
    target without an exact sampler; the evaluation measures W2 and Sinkhorn (and, for particle
    targets, energy and interatomic-distance W2) against them (see :func:`evaluate`).
    """
    tgt = targets.get(target)
    ref_name = None
    if isinstance(reference, (str, os.PathLike)):
        ref_name, reference = os.fspath(reference), np.load(reference)
    if reference is not None:  # checked before training, not after it
        reference = check_points(reference, "reference", tgt.dim)
    defaults = TARGET_DEFAULTS.get(target, dict(sigma=1.0, sinkhorn_eps=1.0))
    cls = samplers.get(sampler)
    trainable = cls.trainable
    if sigma is None:
        sigma = defaults["sigma"] if trainable else defaults.get("mc_sigma", defaults["sigma"])
    sigma = float(sigma)
    loss = loss or cls.default_loss
    smp = cls(tgt, steps=steps, sigma=sigma, device=device, seed=seed, **(sampler_options or {}))
    os.makedirs(out, exist_ok=True)
    fit_kw = dict(fit_options or {}) if trainable else {}
    if trainable:
        smp.fit(iters, batch=batch, loss=loss, lr=lr, seed=seed, checkpoint=os.path.join(out, "checkpoint.pt"),
                resume=resume, progress=progress, **fit_kw)
    m, x = evaluate(smp, n=n_eval, seed=seed + 12345, sinkhorn_eps=defaults["sinkhorn_eps"], reference=reference)
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
    np.save(os.path.join(out, "samples.npy"), xn)
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(m, fh, indent=2, sort_keys=True)
    plot_samples(tgt, xn, os.path.join(out, "samples.png"),
                 f"{sampler.upper()}{f' ({loss})' if loss else ''} on {target}: log Z {m['log_Z']:.3f}, ESS {m['ess']:.2f}")
    return m
