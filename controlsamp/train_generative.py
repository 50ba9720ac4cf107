"""Generative training jobs (layer 5, next to :mod:`controlsamp.train`): learn a score-based generative model from
data, sample it, measure it on held-out data and write the results.

``run_generative_job`` is what ``controlsamp fit-data`` calls. The data come from
:func:`controlsamp.generative.data.load_data` (a 2-d toy set, scikit-learn's digits, or a ``.npy`` file), the model is
a :class:`controlsamp.generative.DiffusionModel` on a reference of :data:`REFERENCES`, and it writes to ``out``:

* ``job.json``: the job's settings, written first. A resumed job must have the same ones: the keys of
  :data:`controlsamp.train.JOB_KEYS` checked by :func:`controlsamp.train.check_resume` (``target`` is the data set,
  ``fit_options`` the model's and the training's settings), and the same ``iters`` (the model's checkpoint holds
  the run's length). The evaluation settings (sampler, steps, sample and NLL sizes) may change;
* ``samples.npy`` (n x d, float32) in data space: the integer levels for digits;
* ``metrics.json`` (strict JSON, a non-finite value as null): ``nll`` (the mean negative log-likelihood of
  ``nll_n`` held-out points under the probability-flow ODE's density, nats per point) with ``nll_se``,
  ``bits_per_dim`` (for digits of the discrete images: the dequantisation constant included, an upper bound),
  ``nfe`` (score evaluations per sample of the sampler), ``sample_s``, ``wall_time_s`` (training), ``iters``,
  ``final_loss``; for 2-d data ``w2`` and ``mmd`` (squared MMD, Gaussian kernel of bandwidth ``mmd_bandwidth``)
  of the samples to the held-out data, each with its sample floor (the same metric between training and held-out
  data of the same sizes: what a perfect model would show); and the settings of the run;
* ``checkpoint.pt`` (the training state of :meth:`DiffusionModel.fit`, for resume) and ``model.pt`` (the trained
  model: ``DiffusionModel(...).load(path)``);
* ``samples.png``: the samples over the held-out data (2-d; for d > 2 their first two coordinates), or a grid of
  sampled images next to held-out ones (digits).
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np
import torch

from . import metrics, parallel
from ._validate import check_count, check_device, check_dim, check_positive
from .generative import DiffusionModel, sample
from .generative.data import TOY_DATASETS, DequantisedData, from_model_space, image_grid, load_data
from .generative.dpdm import fit_private
from .generative.likelihood import bits_per_dim, cld_data_log_likelihood, dequantise, log_likelihood
from .processes import CLD, VE, VP
from .train import JobInterrupted, _Stages, check_resume, fmt, prepare_out, save_figure, save_npy, write_json

from .generative import SAMPLERS

__all__ = ["run_generative_job", "make_reference", "REFERENCES", "GENERATIVE_FILES", "EXACT_DIVERGENCE_MAX_DIM"]

# The references and their settings: VP with the linear schedule of Song et al. 2021 (beta 0.1 .. 20); VE with
# sigma_min 0.01 and sigma_max the largest pairwise distance of the training data (Song & Ermon 2020, technique 1);
# CLD with Dockhorn, Vahdat & Kreis's beta = 4, M = 0.25, critical damping and initial velocity variance gamma M,
# gamma = 0.04.
REFERENCES = {"vp": dict(schedule="linear", beta_min=0.1, beta_max=20.0),
              "ve": dict(sigma_min=0.01),
              "cld": dict(beta=4.0, M=0.25, gamma=0.04)}
# The files of a generative run in ``out``: a new run into a folder holding any of them replaces them all.
GENERATIVE_FILES = ("job.json", "checkpoint.pt", "model.pt", "metrics.json", "samples.npy", "samples.png")
# The likelihood's divergence is exact (one vector-Jacobian product per state coordinate) up to this data dimension
# (so CLD, whose state is twice the data, keeps the exact divergence on the same data), Hutchinson's estimate above.
EXACT_DIVERGENCE_MAX_DIM = 16


def generative_files(out: str):
    """The files of a generative run (:data:`GENERATIVE_FILES`) that ``out`` holds."""
    return [f for f in GENERATIVE_FILES if os.path.exists(os.path.join(out, f))]


def make_reference(name: str, dim: int, max_distance: Optional[float] = None):
    """The reference process ``name`` (:data:`REFERENCES`) for data of dimension ``dim``, and its settings (a dict,
    for the record; CLD's ``velocity_var`` = gamma M is the model's). VE needs ``max_distance``, the largest
    pairwise distance of the training data, as its sigma_max."""
    if name not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}; got {name!r}")
    s = dict(REFERENCES[name])
    if name == "vp":
        return VP(dim, **s), s
    if name == "ve":
        if max_distance is None or not max_distance > 2 * s["sigma_min"]:
            raise ValueError(f"reference ve: sigma_max is the largest pairwise distance of the training data, which "
                             f"is {max_distance}: it must exceed twice sigma_min = {s['sigma_min']}")
        s["sigma_max"] = float(max_distance)
        return VE(dim, **s), s
    s["velocity_var"] = s["gamma"] * s["M"]
    return CLD(dim, beta=s["beta"], M=s["M"]), s


def _nll(model: DiffusionModel, x: torch.Tensor, seed: int) -> dict:
    """Negative log-likelihood of held-out points x (n, data_dim) under the model's probability-flow ODE."""
    divergence = "exact" if model.data_dim <= EXACT_DIVERGENCE_MAX_DIM else "hutchinson"
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    if model.velocity:  # CLD: the velocity marginalised, Dockhorn et al.'s bound
        ll = cld_data_log_likelihood(model, x, generator=gen, divergence=divergence)
        nfe = None
    else:
        ll, info = log_likelihood(model, x, divergence=divergence, generator=gen, return_info=True)
        nfe = info["nfe"]
    nll = -ll.double()
    se = float(nll.std() / len(nll) ** 0.5) if len(nll) > 1 else float("nan")
    return dict(nll=float(nll.mean()), nll_se=se, nll_n=len(nll), nll_divergence=divergence, nll_nfe=nfe,
                nll_s=time.perf_counter() - t0, nll_per_point=ll)


def _sample_metrics(x: torch.Tensor, train: torch.Tensor, test: torch.Tensor, n_ot: int = 2000) -> dict:
    """W2 and squared MMD of samples x to the held-out points, each with its floor (training against held-out
    points, the same sizes); one bandwidth (median heuristic of training and held-out points) for both MMDs."""
    a, b = x[:n_ot].double().cpu(), test[:n_ot].double().cpu()
    out = dict(w2=metrics.w2(a, b), n_ot=len(a))
    ref = train[:len(a)].double().cpu()
    h = metrics.median_bandwidth(ref, b)
    out.update(mmd=metrics.mmd(a, b, bandwidth=h), mmd_bandwidth=h)
    if len(ref) == len(a):
        out.update(w2_floor=metrics.w2(ref, b), mmd_floor=metrics.mmd(ref, b, bandwidth=h))
    return out


def plot_generative(x: np.ndarray, test: np.ndarray, path: str, title: str = "", levels: Optional[int] = None) -> None:
    """The samples as a picture (PNG, written atomically): for image data (``levels`` given, square images) a grid
    of up to 64 samples next to 64 held-out images; otherwise the samples' first two coordinates over the held-out
    points' (histograms for 1-d data)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = int(round(x.shape[1] ** 0.5))
    if levels is not None and side * side == x.shape[1]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 5.8))
        for ax, imgs, name in ((axes[0], x, f"{min(len(x), 64)} samples"),
                               (axes[1], test, f"{min(len(test), 64)} held-out images")):
            ax.imshow(np.ma.masked_invalid(image_grid(imgs)), cmap="gray_r", vmin=0, vmax=levels - 1,
                      interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    elif x.shape[1] == 1:
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
        bins = np.histogram_bin_edges(np.concatenate([x[:, 0], test[:, 0]]), bins=60)
        ax.hist(test[:, 0], bins=bins, density=True, color="0.6", alpha=0.6, label=f"{len(test)} held-out points")
        ax.hist(x[:, 0], bins=bins, density=True, histtype="step", color="tab:red", label=f"{len(x)} samples")
        ax.set(xlabel="x_0", ylabel="density")
        ax.legend(loc="upper right")
    else:
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
        ax.scatter(test[:, 0], test[:, 1], s=2, c="0.6", alpha=0.5, label=f"{len(test)} held-out points")
        ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", alpha=0.5, label=f"{len(x)} samples")
        both = np.concatenate([x[:, :2], test[:, :2]])
        lo, hi = np.quantile(both, 0.002, axis=0), np.quantile(both, 0.998, axis=0)
        pad = 0.1 * (hi - lo) + 1e-3
        ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]), xlabel="x_0",
               ylabel="x_1")
        ax.legend(loc="upper right", markerscale=4)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def _title(m: dict) -> str:
    head = (f"{m['reference'].upper()} score model ({m['parametrisation']}) on {m['data']} (d = {m['dim']}), "
            f"{m['iters']} iterations\nsampler {m['sampler']}, {m['nfe']} score evaluations per sample")
    parts = []
    if m.get("nll") is not None:
        parts.append(f"test NLL {fmt(m['nll'], 4)} nats ({fmt(m['bits_per_dim'], 4)} bits/dim)")
    if "w2" in m:
        parts.append(f"W2 {fmt(m['w2'])}" + (f" (floor {fmt(m['w2_floor'])})" if "w2_floor" in m else ""))
    return head + ("\n" + ", ".join(parts) if parts else "")


def run_generative_job(data: str = "moons", reference: str = "vp", parametrisation: str = "eps",
                       weighting: str = "simple", t_sampling: str = "uniform", iters: int = 4000, batch: int = 256,
                       lr: float = 1e-3, lr_schedule: Optional[str] = None, hidden: int = 128, depth: int = 3,
                       sampler: str = "euler", steps: int = 500, n_samples: int = 2000, nll_samples: int = 500,
                       seed: int = 0, out: str = "runs/fit-data", device: str = "cpu", resume: bool = False,
                       progress: bool = True, checkpoint_every: int = 500, n_train: int = 10_000,
                       n_test: int = 2_000, dp_epsilon: Optional[float] = None, dp_delta: float = 1e-5,
                       dp_max_grad_norm: float = 1.0, dp_noise_multiplicity: int = 1,
                       shards: Optional[int] = None) -> dict:
    """Learn ``data`` with a score model on ``reference``, sample it, measure it, write the files (see the module
    docstring); returns the metrics.

    Several processes (``torchrun`` or ``controlsamp fit-data --nproc N``): as :func:`controlsamp.train.run_job`,
    data-parallel training with ``shards`` random shards (default one per process; not with differential
    privacy), rank 0 writing the files and evaluating; the other ranks return ``{}``.

    ``data``: a name or a ``.npy`` path for :func:`~controlsamp.generative.data.load_data` (``n_train`` and
    ``n_test`` points of a toy set; digits and files have a fixed 80/20 split). ``reference``, ``parametrisation``,
    ``hidden``, ``depth``: the model (:class:`~controlsamp.generative.DiffusionModel`); ``weighting``,
    ``t_sampling``, ``iters``, ``batch``, ``lr``, ``lr_schedule`` (None or "cosine"): its training
    (:meth:`~controlsamp.generative.DiffusionModel.fit`). ``sampler``, ``steps``: the sampler of
    :func:`~controlsamp.generative.sample` that draws ``n_samples``. ``nll_samples``: held-out points whose
    likelihood is measured (0: none), with the exact divergence up to data dimension
    :data:`EXACT_DIVERGENCE_MAX_DIM`, Hutchinson's estimate above.

    ``dp_epsilon``: train with differential privacy (:func:`~controlsamp.generative.dpdm.fit_private`, DP-SGD at
    (``dp_epsilon``, ``dp_delta``) over ``iters`` steps, Poisson batches of expected size ``batch``, per-example
    clipping at ``dp_max_grad_norm``, noise multiplicity ``dp_noise_multiplicity``; isotropic references; digits
    are dequantised once, a fixed data set). The metrics then hold ``epsilon``, ``delta``, ``noise_multiplier``,
    ``sample_rate``; ``weighting`` and ``t_sampling`` must be their defaults.

    ``resume``: continue the training state in ``out/checkpoint.pt`` (there must be one, and the job must have the
    settings it was started with, ``iters`` included: a ValueError says what differs). Without ``resume`` the files
    of an earlier run in ``out`` are replaced. Ctrl-C raises :class:`~controlsamp.train.JobInterrupted` saying how far
    training got and where its checkpoint is. ``progress``: bars for training and evaluation.
    """
    check_device(device, "device")
    joined = not parallel.world_size() > 1 and parallel.init_from_env(device)
    try:
        return _run_generative_job(data, reference, parametrisation, weighting, t_sampling, iters, batch, lr,
                                   lr_schedule, hidden, depth, sampler, steps, n_samples, nll_samples, seed, out,
                                   str(parallel.local_device(device)), resume, progress, checkpoint_every, n_train,
                                   n_test, dp_epsilon, dp_delta, dp_max_grad_norm, dp_noise_multiplicity, shards)
    finally:
        if joined:
            parallel.destroy()


def _run_generative_job(data, reference, parametrisation, weighting, t_sampling, iters, batch, lr, lr_schedule,
                        hidden, depth, sampler, steps, n_samples, nll_samples, seed, out, device, resume, progress,
                        checkpoint_every, n_train, n_test, dp_epsilon, dp_delta, dp_max_grad_norm,
                        dp_noise_multiplicity, shards) -> dict:
    world, writer = parallel.world_size(), parallel.rank() == 0
    check_device(device, "device")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}; got {reference!r}")
    if (sampler == "sscs") != (reference == "cld") and sampler in ("sscs", "ddim", "genie"):  # refused before training
        raise ValueError(f"sampler {sampler!r} needs " + ("the cld reference (it splits CLD's phase-space SDE)"
                         if sampler == "sscs" else "an isotropic reference (vp or ve), not cld"))
    iters, steps, n_samples = check_dim(iters, "iters"), check_dim(steps, "steps"), check_dim(n_samples, "n_samples")
    nll_samples = check_count(nll_samples, "nll_samples")
    dp = None
    if dp_epsilon is not None:
        if reference == "cld":
            raise ValueError("differential privacy (dp_epsilon) needs an isotropic reference (vp or ve), not cld")
        if weighting != "simple" or t_sampling != "uniform":
            raise ValueError("differentially private training uses the simple weighting and uniform times; leave "
                             "weighting and t_sampling at their defaults")
        dp = dict(epsilon=check_positive(dp_epsilon, "dp_epsilon"), delta=float(dp_delta),
                  max_grad_norm=check_positive(dp_max_grad_norm, "dp_max_grad_norm"),
                  noise_multiplicity=check_dim(dp_noise_multiplicity, "dp_noise_multiplicity"))
    train_data, test, info = load_data(data, n_train=n_train, n_test=n_test, seed=seed)
    if dp is not None and isinstance(train_data, DequantisedData):  # DP-SGD samples a fixed data set
        train_data = dequantise(train_data.x_int, train_data.levels, generator=torch.Generator().manual_seed(seed))
    ref, ref_settings = make_reference(reference, info["dim"], info["max_distance"])
    fit_options = dict(reference=reference, parametrisation=parametrisation, weighting=weighting,
                       t_sampling=t_sampling, lr_schedule=lr_schedule, hidden=hidden, depth=depth)
    if data in TOY_DATASETS:  # fresh samples: their number is a setting
        fit_options.update(n_train=n_train, n_test=n_test)
    if dp is not None:
        fit_options.update(dp=dp)
    if world > 1 and shards is None:
        shards = world
    if shards is not None:
        if dp is not None:
            raise ValueError("shards: differentially private training (dp_epsilon) runs in one process, unsharded")
        fit_options.update(shards=int(shards))
    job = dict(target=data, dim=info["dim"], batch=batch, seed=seed, lr=lr, fit_options=fit_options, iters=iters,
               evaluation=dict(sampler=sampler, steps=steps, n_samples=n_samples, nll_samples=nll_samples))
    ckpt = os.path.join(out, "checkpoint.pt")
    if resume:
        if not os.path.isfile(ckpt):
            raise ValueError(f"resume: there is no checkpoint to resume in {out!r} ({ckpt} does not exist); "
                             "start the run without resume")
        check_resume(out, job)
        with open(os.path.join(out, "job.json")) as fh:
            saved_iters = json.load(fh).get("iters")
        if saved_iters is not None and saved_iters != iters:
            raise ValueError(f"resume: the run in {out!r} was started with iters = {saved_iters} (now {iters}); a "
                             "score model's training resumes with the same number of iterations (its checkpoint "
                             "holds the run's length): resume with that, or start a new run in another folder")
    model = DiffusionModel(ref, parametrisation=parametrisation, hidden=hidden, depth=depth, seed=seed, device=device,
                           velocity_var=ref_settings.get("velocity_var"))
    prepare_out(out, job, resume, generative_files)
    try:
        if dp is None:
            model.fit(train_data, iters=iters, batch=batch, lr=lr, weighting=weighting, t_sampling=t_sampling,
                      lr_schedule=lr_schedule, seed=seed, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                      resume=resume, progress=progress, shards=shards)
        else:
            fit_private(model, train_data, iters=iters, batch=batch, target_epsilon=dp["epsilon"], delta=dp["delta"],
                        max_grad_norm=dp["max_grad_norm"], noise_multiplicity=dp["noise_multiplicity"], lr=lr,
                        lr_schedule=lr_schedule, seed=seed, checkpoint=ckpt, checkpoint_every=checkpoint_every,
                        resume=resume, progress=progress)
    except KeyboardInterrupt as exc:
        if not os.path.isfile(ckpt):
            raise
        raise JobInterrupted("training", len(model.history.get("loss", [])), iters, ckpt) from exc
    if not writer:
        return {}
    model.save(os.path.join(out, "model.pt"))

    levels = info["levels"]
    m = dict(data=data, dim=info["dim"], n_train=info["n_train"], n_test=info["n_test"], levels=levels,
             data_scale=info["scale"], max_distance=info["max_distance"], reference=reference,
             reference_settings=ref_settings, parametrisation=parametrisation, weighting=weighting,
             t_sampling=t_sampling, iters=len(model.history.get("loss", [])), batch=batch, lr=lr,
             lr_schedule=lr_schedule, hidden=hidden, depth=depth, sampler=sampler, steps=steps, n_samples=n_samples,
             seed=seed, device=device, t_min=model.t_min,
             wall_time_s=float(sum(model.history.get("seconds", []))),
             final_loss=float(np.mean(model.history["loss"][-100:])))
    if dp is not None:
        m.update({k: model.privacy[k] for k in ("epsilon", "delta", "noise_multiplier", "sample_rate",
                                               "max_grad_norm", "noise_multiplicity", "accountant")})
    plane = info["dim"] == 2
    stage = _Stages(2 + plane, progress)
    try:
        with stage(f"sampling {n_samples} points ({sampler}, {steps} steps)"):
            t0 = time.perf_counter()
            x, s_info = sample(model, n_samples, sampler=sampler, steps=steps,
                               generator=torch.Generator(device=model.device).manual_seed(seed + 12345))
            x = x.detach().double().cpu()
            m.update(nfe=int(s_info["nfe"]), sample_s=time.perf_counter() - t0)
        k = min(nll_samples, len(test))
        with stage(f"test NLL of {k} held-out points"):
            if k:
                nll = _nll(model, test[:k], seed + 23456)
                ll = nll.pop("nll_per_point")
                m.update(nll, bits_per_dim=float(bits_per_dim(ll.mean(), info["dim"], info["log_scale"])),
                         bits_per_dim_dequantised=levels is not None)
            else:
                m.update(nll=None, bits_per_dim=None)
        if plane:
            with stage("W2 and MMD to held-out data, and their floors"):
                m.update(_sample_metrics(x, train_data, test))
    except KeyboardInterrupt as exc:
        raise JobInterrupted("evaluation", iters, iters, ckpt) from exc
    finally:
        stage.bar.close()
    if levels is not None:
        xs, shown = from_model_space(x, levels), from_model_space(test, levels)
    else:
        xs, shown = x, test
    xn = xs.numpy().astype(np.float32)
    save_npy(os.path.join(out, "samples.npy"), xn)
    write_json(os.path.join(out, "metrics.json"), m)
    plot_generative(xn, shown.numpy(), os.path.join(out, "samples.png"), _title(m), levels=levels)
    return m
