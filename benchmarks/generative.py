"""Generative-model benchmark: score-based models (cs.generative.DiffusionModel) on VP, VE and CLD references,
learned from data at one training budget, and the NFE each sampler needs with the exact score.

Part 1, learned models. Per data set (moons, eight Gaussians, checkerboard, a 2-d and a 10-d Gaussian mixture
with known log-density, scikit-learn's 8x8 digits dequantised) and reference (vp, ve, cld: the settings of
``controlsamp fit-data``, controlsamp.train_generative.make_reference), a model is trained by denoising (CLD:
hybrid) score matching and measured on held-out data:

* test NLL in nats per point through the probability-flow ODE (as controlsamp.train_generative._nll, with the
  divergence exact up to data dimension 16 and Hutchinson's estimate above; for CLD the velocity-marginalised
  bound of Dockhorn et al.), bits/dim for digits (dequantisation constant included); for the two mixtures the exact log-density of the
  held-out points and the gap, and the NLL the same pipeline gives with the exact score (ExactScore), which
  separates the pipeline's own error (t_min, CLD bound, Hutchinson noise, ODE tolerance) from the learned score's;
* W2 and squared MMD of samples to held-out data (controlsamp.train_generative._sample_metrics) with their
  sample floors: the same metrics between a second held-out set and the held-out set (2-d sets and mixtures;
  for digits, which has one held-out set of 359 images, a draw of 359 dequantised training images);
* score evaluations per sample of each sampler, sampling seconds, training seconds per iteration (median).

Part 2, "NFE needed for a fixed W2": with the exact score of the 2-d mixture (ExactScore, no learning error), each
sampler at each number of steps draws ``--sweep-n`` samples; W2 to a fresh exact data set of the same size,
averaged over ``--sweep-reps`` repetitions (common random numbers across samplers), against the floor (W2
between two fresh exact sets, same size and repetitions). Reported: the smallest NFE whose mean W2 is within
10% of the floor, with the standard error of the ratio over the repetitions (paired: every sampler and the floor
use the same exact sets). One W2 of 500 points of this mixture varies by about 30% between draws (mode counts),
hence 64 repetitions of 500 points rather than a few of 2000. The adaptive ODE sweeps its tolerance
(rtol = atol) instead of steps.

    python benchmarks/generative.py                              # the default run (26 min on one busy thread)
    python benchmarks/generative.py --datasets digits --references vp cld --no-sweep
    python benchmarks/generative.py --quick                      # smoke run, results in a temporary folder

Results: benchmarks/results/generative/{data}-{reference}.json, nfe-sweep.json, digits-grid.png (the sample grid
of every digits model found in the results folder, next to held-out images).
"""
import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import torch

import controlsamp as cs
from controlsamp.generative.data import TOY_DATASETS, from_model_space, image_grid, load_data, max_pairwise_distance
from controlsamp.targets.datasets import sample_dataset
from controlsamp.train import fmt, save_figure, save_npy, write_json
from controlsamp.train_generative import _sample_metrics, make_reference

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "generative")
DATASETS = ("moons", "eight_gaussians", "checkerboard", "gmm2", "gmm10", "digits")
REFERENCES = ("vp", "ve", "cld")
MIXTURES = ("gmm2", "gmm10")
SWEEP_SAMPLERS = {"vp": ("euler", "exponential", "pc", "ddim", "heun", "ode"), "cld": ("euler", "sscs", "heun", "ode")}
FLOOR_FACTOR = 1.1  # "within 10% of the sample floor"
EXACT_MAX_DATA_DIM = 16  # exact divergence up to this data dimension, Hutchinson's estimate above


# ---------------------------------------------------------------------------------------------- data
def mixture(name):
    """The benchmark's Gaussian mixtures with known log-density, (weights, means, covs) float64, fixed seeds.

    gmm2: 8 components in 2-d, means uniform in [-3, 3]^2, covariances R diag(s) R' with a random rotation and
    standard deviations in [0.15, 0.6], weights uniform in [0.5, 1.5] normalised (seed 2).
    gmm10: 5 components in 10-d, means N(0, 2^2 I), covariances Q diag(e) Q' with a random orthogonal Q and
    eigenvalues in [0.05, 0.5], weights uniform in [0.5, 1.5] normalised (seed 10)."""
    if name == "gmm2":
        g = torch.Generator().manual_seed(2)
        K, d = 8, 2
        means = 6.0 * torch.rand(K, d, generator=g, dtype=torch.float64) - 3.0
        ang = 2 * math.pi * torch.rand(K, generator=g, dtype=torch.float64)
        sd = 0.15 + 0.45 * torch.rand(K, d, generator=g, dtype=torch.float64)
        R = torch.stack([torch.stack([ang.cos(), -ang.sin()], 1), torch.stack([ang.sin(), ang.cos()], 1)], 1)
        covs = R @ torch.diag_embed(sd ** 2) @ R.transpose(1, 2)
    elif name == "gmm10":
        g = torch.Generator().manual_seed(10)
        K, d = 5, 10
        means = 2.0 * torch.randn(K, d, generator=g, dtype=torch.float64)
        Q = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))[0]
        eig = 0.05 + 0.45 * torch.rand(K, d, generator=g, dtype=torch.float64)
        covs = Q @ torch.diag_embed(eig) @ Q.transpose(1, 2)
    else:
        raise ValueError(name)
    weights = 0.5 + torch.rand(K, generator=g, dtype=torch.float64)
    covs = 0.5 * (covs + covs.transpose(1, 2))
    return weights / weights.sum(), means, covs


def get_data(name, a):
    """(train, test, second held-out set or None, info, mixture or None) of a data set, seeded by a.seed."""
    if name in MIXTURES:
        w, m, c = mixture(name)
        law = cs.targets.GaussianMixture(w, m, c)
        draw = lambda n, k: law.sample(n, generator=torch.Generator().manual_seed(1000 * a.seed + k)).double()
        train, test, test2 = draw(a.n_train, 1), draw(a.n_test, 2), draw(a.n_test, 3)
        info = dict(name=name, dim=m.shape[1], levels=None, log_scale=0.0, max_distance=max_pairwise_distance(train))
        return train, test, test2, info, (w, m, c)
    train, test, info = load_data(name, n_train=a.n_train, n_test=a.n_test, seed=a.seed)
    if name == "digits":  # one held-out set: the floor is against dequantised training images of its size
        test2 = train(len(test), torch.Generator().manual_seed(1000 * a.seed + 3))
    else:
        test2 = sample_dataset(TOY_DATASETS[name], a.n_test, torch.Generator().manual_seed(1000 * a.seed + 3)).double()
    return train, test, test2, info, None


def exact_source(ref_name, reference, settings, mix, t_min):
    """ExactScore of mixture data (w, m, c) under the reference (CLD: with its initial velocity law)."""
    w, m, c = mix
    if ref_name == "cld":
        nm = cs.exact.NoisedMixture.with_velocity(reference, w, m, c, velocity_var=settings["velocity_var"])
    else:
        nm = cs.exact.NoisedMixture(reference, w, m, c)
    return cs.generative.ExactScore(nm, t_min=t_min)


def nll(source, x, seed):
    """Negative log-likelihood (nats) of held-out points x (n, data_dim) through the probability-flow ODE, with the
    calls, seed and defaults of controlsamp.train_generative._nll (dopri5, rtol = atol = 1e-5, one Rademacher probe;
    for CLD Dockhorn et al.'s bound with one velocity draw per point), except that the divergence is exact when the
    *data* dimension is at most 16 (_nll decides by the state dimension, which would give CLD on the 10-d mixture,
    state dimension 20, Hutchinson's estimate). ``nll_nfe`` counts the score calls on the batch."""
    divergence = "exact" if source.data_dim <= EXACT_MAX_DATA_DIM else "hutchinson"
    gen = torch.Generator().manual_seed(seed)
    calls = [0]
    score = source.score

    def counted(t, y):
        calls[0] += 1
        return score(t, y)
    source.score = counted  # an instance attribute over the method, removed below
    t0 = time.perf_counter()
    try:
        if source.velocity:
            ll = cs.generative.cld_data_log_likelihood(source, x, generator=gen, divergence=divergence)
        else:
            ll = cs.generative.log_likelihood(source, x, divergence=divergence, generator=gen)
    finally:
        del source.score
    ll = ll.double()
    return dict(nll=float(-ll.mean()), nll_se=float(ll.std() / len(ll) ** 0.5), nll_n=len(ll),
                nll_divergence=divergence, nll_nfe=calls[0], nll_s=time.perf_counter() - t0, nll_per_point=ll)


def parse_sampler(spec):
    """'euler:500' -> ('euler', 500); 'ode' -> ('ode', None)."""
    name, _, steps = spec.partition(":")
    if name not in cs.generative.SAMPLERS:
        raise argparse.ArgumentTypeError(f"sampler must be one of {cs.generative.SAMPLERS}; got {name!r}")
    return name, int(steps) if steps else None


# ---------------------------------------------------------------------------------------------- part 1
def learned_row(name, ref_name, a, data):
    train, test, test2, info, mix = data
    d = info["dim"]
    iters = a.digits_iters if name == "digits" else a.iters
    ref, settings = make_reference(ref_name, d, info["max_distance"])
    model = cs.generative.DiffusionModel(ref, hidden=a.hidden, depth=a.depth, seed=a.seed,
                                         velocity_var=settings.get("velocity_var"))
    t0 = time.perf_counter()
    model.fit(train, iters=iters, batch=a.batch, lr=a.lr, seed=a.seed, progress=False)
    row = dict(data=name, reference=ref_name, dim=d, reference_settings=settings, iters=iters, batch=a.batch,
               lr=a.lr, hidden=a.hidden, depth=a.depth, seed=a.seed, t_min=model.t_min,
               train_s=time.perf_counter() - t0, s_per_iter=float(np.median(model.history["seconds"])),
               final_loss=float(np.mean(model.history["loss"][-100:])))
    # likelihood
    x_nll = test[:a.nll_n]
    nll_ = nll(model, x_nll, a.seed + 23456)
    ll = nll_.pop("nll_per_point")
    row.update(nll_)
    if info["levels"] is not None:
        row["bits_per_dim"] = float(cs.generative.bits_per_dim(ll.mean(), d, info["log_scale"]))
        row["bits_per_dim_se"] = row["nll_se"] / (d * math.log(2.0))
    if mix is not None:
        exact_ll = cs.targets.GaussianMixture(*mix).log_prob(x_nll).double()
        gap = exact_ll - ll  # model NLL - exact NLL, per point
        row.update(exact_nll=float(-exact_ll.mean()), gap=float(gap.mean()),
                   gap_se=float(gap.std() / len(gap) ** 0.5))
        src = exact_source(ref_name, ref, settings, mix, model.t_min)
        ex = nll(src, x_nll, a.seed + 23456)
        eg = exact_ll - ex.pop("nll_per_point")
        row.update(exact_score_nll=ex["nll"], exact_score_gap=float(eg.mean()),
                   exact_score_gap_se=float(eg.std() / len(eg) ** 0.5), exact_score_nll_s=ex["nll_s"])
    # samples
    n_ot = min(a.n_samples, len(test))
    row["samples"] = []
    for sampler, steps in a.samplers:
        if sampler == "sscs" and ref_name != "cld" or sampler == "ddim" and ref_name == "cld":
            continue
        t0 = time.perf_counter()
        x, s_info = cs.generative.sample(model, a.n_samples, sampler=sampler, steps=steps or 500,
                                         generator=torch.Generator().manual_seed(a.seed + 12345))
        x = x.detach().double()
        r = dict(sampler=sampler, steps=steps, nfe=int(s_info["nfe"]), sample_s=time.perf_counter() - t0,
                 finite=bool(torch.isfinite(x).all()))
        if r["finite"]:
            r.update(_sample_metrics(x, test2, test, n_ot=n_ot))
        row["samples"].append(r)
        if name == "digits" and sampler == a.samplers[0][0]:
            save_npy(os.path.join(a.out, f"digits-{ref_name}-samples.npy"),
                     from_model_space(x[:64], info["levels"]).numpy().astype(np.int8))
    return row


def print_learned(rows):
    print("\n| data | reference | iters | s / iter | test NLL (nats) | exact NLL | gap (model - exact) | exact-score NLL "
          "(pipeline) | bits/dim | divergence | NLL NFE |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        ex = lambda k: fmt(r[k], 4) if k in r else ""
        bpd = f"{r['bits_per_dim']:.3f} ± {r['bits_per_dim_se']:.3f}" if "bits_per_dim" in r else ""
        gap = f"{r['gap']:+.3f} ± {r['gap_se']:.3f}" if "gap" in r else ""
        pipe = f"{r['exact_score_nll']:.3f} ({r['exact_score_gap']:+.3f} ± {r['exact_score_gap_se']:.3f})" \
            if "exact_score_nll" in r else ""
        print(f"| {r['data']} | {r['reference']} | {r['iters']} | {r['s_per_iter'] * 1000:.1f} ms | "
              f"{r['nll']:.3f} ± {r['nll_se']:.3f} | {ex('exact_nll')} | {gap} | {pipe} | {bpd} | "
              f"{r['nll_divergence']} | {r['nll_nfe']} |")
    print("\n| data | reference | sampler | NFE / sample | W2 | W2 floor | MMD^2 | MMD^2 floor | sample s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for s in r["samples"]:
            name = s["sampler"] + (f" ({s['steps']} steps)" if s["steps"] else "")
            if not s["finite"]:
                print(f"| {r['data']} | {r['reference']} | {name} | {s['nfe']} | non-finite samples | | | | "
                      f"{s['sample_s']:.1f} |")
                continue
            print(f"| {r['data']} | {r['reference']} | {name} | {s['nfe']} | {fmt(s['w2'])} | "
                  f"{fmt(s.get('w2_floor'))} | {fmt(s['mmd'])} | {fmt(s.get('mmd_floor'))} | {s['sample_s']:.1f} |")


def digits_grid(a):
    """digits-grid.png: 64 samples of every digits model in the results folder, and 64 held-out images."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = []
    for ref_name in REFERENCES:
        p = os.path.join(a.out, f"digits-{ref_name}-samples.npy")
        j = os.path.join(a.out, f"digits-{ref_name}.json")
        if os.path.exists(p) and os.path.exists(j):
            with open(j) as fh:
                r = json.load(fh)
            s = r["samples"][0]
            panels.append((np.load(p).astype(np.float64),
                           f"{ref_name.upper()}, {r['iters']} iters\n{s['sampler']} ({s['nfe']} NFE), "
                           f"{r['bits_per_dim']:.3f} bits/dim"))
    if not panels:
        return None
    test = from_model_space(load_data("digits", seed=a.seed)[1][:64], 17).numpy()
    panels.append((test, "64 held-out images\n"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.2))
    for ax, (imgs, title) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.ma.masked_invalid(image_grid(imgs)), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    path = os.path.join(a.out, "digits-grid.png")
    save_figure(fig, path)
    return path


# ---------------------------------------------------------------------------------------------- part 2
def nfe_sweep(a):
    w, m, c = mixture("gmm2")
    law = cs.targets.GaussianMixture(w, m, c)
    R, n = a.sweep_reps, a.sweep_n
    exact = law.sample(R * n, generator=torch.Generator().manual_seed(5000)).double().reshape(R, n, 2)
    other = law.sample(R * n, generator=torch.Generator().manual_seed(6000)).double().reshape(R, n, 2)
    floors = np.array([cs.metrics.w2(exact[r], other[r]) for r in range(R)])
    floor = float(floors.mean())
    out = dict(data="gmm2", n=n, reps=R, t_min=a.sweep_t_min, floor=floor, floor_runs=floors.tolist(),
               floor_se=float(floors.std(ddof=1) / R ** 0.5) if R > 1 else None, steps=list(a.sweep_steps),
               tolerances=list(a.sweep_tols), factor=FLOOR_FACTOR, rows=[])
    print(f"\nNFE sweep, exact score of gmm2 (t_min {a.sweep_t_min}): W2 floor (two exact sets of {n}, mean of {R}) "
          f"= {floor:.4f}" + (f" ± {out['floor_se']:.4f} (se; sd of one draw {floors.std(ddof=1):.4f})" if R > 1 else "")
          + f"; target W2 <= {FLOOR_FACTOR} x floor = {FLOOR_FACTOR * floor:.4f}")
    print("\n| reference | sampler | steps or tol | NFE / sample | W2 (mean over reps) | W2 / floor (± se) | s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for ref_name in a.sweep_references:
        ref, settings = make_reference(ref_name, 2, max_pairwise_distance(exact[0]))
        src = exact_source(ref_name, ref, settings, (w, m, c), a.sweep_t_min)
        for sampler in SWEEP_SAMPLERS.get(ref_name, ("euler", "heun", "ode")):
            grid = [("tol", tol) for tol in a.sweep_tols] if sampler == "ode" else [("steps", k) for k in a.sweep_steps]
            for kind, v in grid:
                t0 = time.perf_counter()
                # one call draws all R sets (the same prior draws for every sampler of a reference), then split
                opts = dict(rtol=v, atol=v) if kind == "tol" else {}
                x, info = cs.generative.sample(src, R * n, sampler=sampler, steps=v if kind == "steps" else 100,
                                               generator=torch.Generator().manual_seed(7000), **opts)
                x = x.double().reshape(R, n, 2)
                t_sample = time.perf_counter() - t0
                if bool(torch.isfinite(x).all()):
                    w2s = np.array([cs.metrics.w2(x[r], exact[r]) for r in range(R)])
                else:
                    w2s = np.full(R, np.nan)
                ratio = float(w2s.mean() / floor)
                se = float((w2s - ratio * floors).std(ddof=1) / R ** 0.5 / floor) if R > 1 else float("nan")
                row = dict(reference=ref_name, sampler=sampler, kind=kind, value=v, nfe=int(info["nfe"]),
                           w2=float(w2s.mean()), w2_runs=w2s.tolist(), ratio=ratio, ratio_se=se,
                           sample_s=t_sample, seconds=time.perf_counter() - t0)
                out["rows"].append(row)
                print(f"| {ref_name} | {sampler} | {kind} {v:g} | {row['nfe']} | {row['w2']:.4f} | "
                      f"{ratio:.3f} ± {se:.3f} | {row['seconds']:.1f} |", flush=True)
    # the smallest NFE within 10% of the floor, per (reference, sampler)
    out["summary"] = []
    print(f"\n| reference | sampler | smallest NFE with W2 <= {FLOOR_FACTOR} x floor | its W2 / floor | "
          "every larger NFE also within? |")
    print("|---|---|---:|---:|---|")
    for ref_name in a.sweep_references:
        for sampler in SWEEP_SAMPLERS.get(ref_name, ("euler", "heun", "ode")):
            rows = sorted([r for r in out["rows"] if r["reference"] == ref_name and r["sampler"] == sampler],
                          key=lambda r: r["nfe"])
            ok = [r for r in rows if r["ratio"] <= FLOOR_FACTOR]
            best = ok[0] if ok else None
            stays = best is not None and all(r["ratio"] <= FLOOR_FACTOR for r in rows if r["nfe"] >= best["nfe"])
            s = dict(reference=ref_name, sampler=sampler, nfe=best["nfe"] if best else None,
                     ratio=best["ratio"] if best else None, ratio_se=best["ratio_se"] if best else None,
                     stays=stays, best_ratio=min(r["ratio"] for r in rows) if rows else None)
            out["summary"].append(s)
            if best:
                print(f"| {ref_name} | {sampler} | {best['nfe']} | {best['ratio']:.3f} ± {best['ratio_se']:.3f} | "
                      f"{'yes' if stays else 'no'} |")
            else:
                print(f"| {ref_name} | {sampler} | not reached (best W2 / floor {s['best_ratio']:.3f}) | | |")
    return out


# ---------------------------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS,
                   help="data sets of part 1 (none: skip part 1)")
    p.add_argument("--references", nargs="+", default=list(REFERENCES), choices=REFERENCES,
                   help="references of part 1")
    p.add_argument("--iters", type=int, default=3000, help="training iterations (2-d sets and the 10-d mixture)")
    p.add_argument("--digits-iters", type=int, default=8000, help="training iterations for digits (every reference)")
    p.add_argument("--batch", type=int, default=256, help="training batch")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (no schedule)")
    p.add_argument("--hidden", type=int, default=128, help="MLP width")
    p.add_argument("--depth", type=int, default=3, help="MLP depth")
    p.add_argument("--n-train", type=int, default=10_000, help="training points of the 2-d sets and mixtures")
    p.add_argument("--n-test", type=int, default=2000, help="held-out points (and of the second held-out set)")
    p.add_argument("--n-samples", type=int, default=2000, help="samples per sampler for W2 and MMD")
    p.add_argument("--nll-n", type=int, default=500, help="held-out points whose NLL is measured")
    p.add_argument("--samplers", nargs="+", type=parse_sampler, default=[("euler", 500), ("ode", None)],
                   metavar="NAME[:STEPS]", help="samplers of part 1 (the first one draws the digits grid)")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True, help="run part 2")
    p.add_argument("--sweep-references", nargs="+", default=["vp", "cld"], choices=REFERENCES,
                   help="references of part 2")
    p.add_argument("--sweep-steps", nargs="+", type=int, default=[5, 10, 20, 40, 80, 160, 320],
                   help="steps of the fixed-step samplers in part 2")
    p.add_argument("--sweep-tols", nargs="+", type=float, default=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6],
                   help="rtol = atol of the adaptive ODE in part 2")
    p.add_argument("--sweep-n", type=int, default=500, help="samples per W2 in part 2")
    p.add_argument("--sweep-reps", type=int, default=64, help="W2 repetitions averaged in part 2")
    p.add_argument("--sweep-t-min", type=float, default=1e-3, help="where the exact-score samplers stop")
    p.add_argument("--seed", type=int, default=0, help="seed of data, networks, training and sampling")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, results in a temporary folder")
    p.add_argument("--out", default=None, help=f"results folder (default {os.path.relpath(OUT)}; --quick: a "
                   "temporary folder)")
    a = p.parse_args()
    if a.quick:
        a.iters, a.n_train, a.n_test, a.n_samples, a.nll_n = 30, 500, 200, 200, 20
        a.samplers = [(s, min(k, 20) if k else None) for s, k in a.samplers]
        a.sweep_steps, a.sweep_tols, a.sweep_n, a.sweep_reps = [5, 20], [1e-2], 100, 3
        a.digits_iters = min(a.digits_iters, a.iters)
    a.out = a.out or (os.path.join(tempfile.gettempdir(), "controlsamp-generative-quick") if a.quick else OUT)
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    print(f"settings: {a.iters} iterations (digits {a.digits_iters}) of batch {a.batch}, lr {a.lr}, MLP width "
          f"{a.hidden} depth {a.depth}, eps parametrisation, simple weighting, uniform t; samplers "
          f"{', '.join(s + (f':{k}' if k else '') for s, k in a.samplers)}; {a.n_samples} samples, NLL of "
          f"{a.nll_n} held-out points; seed {a.seed}; torch threads {torch.get_num_threads()}; out {a.out}",
          flush=True)
    t_start = time.perf_counter()
    rows = []
    for name in a.datasets:
        data = get_data(name, a)
        for ref_name in a.references:
            t0 = time.perf_counter()
            row = learned_row(name, ref_name, a, data)
            row["total_s"] = time.perf_counter() - t0
            rows.append(row)
            write_json(os.path.join(a.out, f"{name}-{ref_name}.json"), row)
            s = row["samples"][0]
            print(f"  {name} {ref_name}: NLL {row['nll']:.3f}" + (f" (gap {row['gap']:+.3f})" if "gap" in row else "")
                  + (f", W2 {fmt(s['w2'])} (floor {fmt(s.get('w2_floor'))})" if s["finite"] else ", non-finite")
                  + f", {row['total_s']:.0f} s", flush=True)
    if rows:
        print_learned(rows)
    if "digits" in a.datasets:
        path = digits_grid(a)
        if path:
            print(f"\ndigits sample grid: {os.path.relpath(path)}")
    if a.sweep:
        sweep = nfe_sweep(a)
        write_json(os.path.join(a.out, "nfe-sweep.json"), sweep)
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s", flush=True)
    write_json(os.path.join(a.out, "run.json"), dict(args={k: v for k, v in vars(a).items()}, total_s=total,
                                                     torch=torch.__version__, threads=torch.get_num_threads()))


if __name__ == "__main__":
    main()
