"""Distillation benchmark (cs.generative.distill): students of several widths regress a teacher's noise
prediction; their test NLL, W2, parameters and sampling time per sample against the teacher's.

* ``gmm2`` (the 2-d mixture of benchmarks/generative.py): the teacher is the exact score (ExactScore, t_min 1e-3),
  so the students' gap is the distillation error alone; 20 000 training points, 2000 held out.
* ``digits`` (``--digits``): the teacher is a DiffusionModel (MLP 256 x 3, eps, ``--teacher-iters`` steps of DSM
  on the dequantised training images), the students distil it on the same data.

Students: MLPs of depth 2 and widths ``--widths`` (2-d) or ``--digits-widths``, ``--iters`` steps of 256, Adam 3e-3 with a cosine schedule,
EMA 0.99. Metrics: test NLL (probability-flow ODE, exact divergence in 2-d, Hutchinson in 64-d; bits/dim for
digits), W2 of 2000 reverse-SDE samples (500 Euler steps) to held-out data in 2-d (on digits: the first 360
samples to the 360 held-out images, the floor from 360 training images dequantised once), the relative L2 error of the
student's score on the exact noised marginals (2-d), parameters, and the sampling wall time per sample (500
Euler steps, batch 2000, one thread).

    python benchmarks/distill.py                  # 2-d
    python benchmarks/distill.py --digits         # digits too
    python benchmarks/distill.py --only-digits    # the digits rows alone

Results: benchmarks/results/distill/{data}-{model}.json; the table prints every row.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

import controlsamp as cs
from controlsamp.generative import distill, parameter_count
from controlsamp.generative.data import load_data
from controlsamp.generative.likelihood import dequantise
from controlsamp.train_generative import _nll, _sample_metrics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generative import mixture  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "distill")
TS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def rel_score_error(model, mix, n=2000, seed=5):
    g = torch.Generator().manual_seed(seed)
    num = den = 0.0
    for t in TS:
        x = mix.sample(t, n, generator=g)
        s = mix.score(t, x)
        with torch.no_grad():
            sh = model.score(t, x.to(getattr(model, "dtype", torch.float64))).double()
        num += float(((sh - s) ** 2).sum(1).mean())
        den += float((s ** 2).sum(1).mean())
    return math.sqrt(num / den)


def measure(name, model, train, test, info, a, mix=None, fit_s=None):
    out = dict(model=name, parameters=parameter_count(model) if hasattr(model, "network") else None, fit_s=fit_s)
    t0 = time.perf_counter()
    x, _ = cs.generative.sample(model, a.n_samples, sampler="euler", steps=500,
                                generator=torch.Generator().manual_seed(12345))
    out["sample_s_per_sample"] = (time.perf_counter() - t0) / a.n_samples
    nll = _nll(model, test[:a.nll_points], 23456)
    ll = nll.pop("nll_per_point")
    out.update(nll, bits_per_dim=float(cs.generative.bits_per_dim(ll.mean(), info["dim"], info["log_scale"])))
    if info["dim"] == 2:
        out.update(_sample_metrics(x.detach().double().cpu(), train, test))
    else:  # W2 to all held-out images at their count; the floor: as many training images dequantised once
        ref = dequantise(train.x_int, train.levels, generator=torch.Generator().manual_seed(7))
        out.update(_sample_metrics(x.detach().double().cpu(), ref, test, n_ot=len(test)))
    if mix is not None:
        out["rel_score_error"] = rel_score_error(model, mix)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="student widths in 2-d")
    p.add_argument("--digits-widths", type=int, nargs="+", default=[32, 64, 128], help="student widths on digits")
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--teacher-iters", type=int, default=8000)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--nll-points", type=int, default=500)
    p.add_argument("--digits", action="store_true")
    p.add_argument("--only-digits", action="store_true", help="the digits rows alone")
    p.add_argument("--out", default=OUT)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.widths, a.digits_widths, a.iters, a.teacher_iters, a.n_samples, a.nll_points = [8], [8], 20, 20, 200, 20
        a.out = os.path.join("/tmp", "distill-quick")
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for data in (["digits"] if a.only_digits else ["gmm2"] + (["digits"] if a.digits else [])):
        if data == "gmm2":
            w, m, c = mixture("gmm2")
            ref = cs.processes.VP(2)
            mix = cs.exact.NoisedMixture(ref, w, m, c)
            train = mix.sample(0.0, 20000, generator=torch.Generator().manual_seed(0))
            test = mix.sample(0.0, 2000, generator=torch.Generator().manual_seed(1))
            info = dict(dim=2, log_scale=0.0)
            teacher = cs.generative.ExactScore(mix, t_min=1e-3)
            teacher_fit = None
        else:
            train, test, info = load_data("digits", seed=0)
            mix = None
            ref = cs.processes.VP(info["dim"])
            teacher = cs.generative.DiffusionModel(ref, hidden=256, depth=3, seed=0)
            t0 = time.perf_counter()
            teacher.fit(train, iters=a.teacher_iters, batch=256, lr=1e-3, lr_schedule="cosine", progress=False)
            teacher_fit = time.perf_counter() - t0
        r = measure("teacher (exact score)" if data == "gmm2" else "teacher (MLP 256 x 3)", teacher, train, test,
                    info, a, mix, teacher_fit)
        rows.append(dict(r, data=data))
        for width in (a.widths if data == "gmm2" else a.digits_widths):
            t0 = time.perf_counter()
            student = distill(teacher, train, hidden=width, depth=2, ema=0.99, iters=a.iters, batch=256, lr=3e-3,
                              lr_schedule="cosine", progress=False)
            r = measure(f"student MLP {width} x 2", student, train, test, info, a, mix, time.perf_counter() - t0)
            rows.append(dict(r, data=data))
        with open(os.path.join(a.out, f"{data}.json"), "w") as fh:
            json.dump([r for r in rows if r["data"] == data], fh, indent=2)
    print("| data | model | parameters | test NLL | bits/dim | W2 (floor) | score rel. error | train s | "
          "ms per sample |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w2 = f"{r['w2']:.3f} ({r['w2_floor']:.3f})" if "w2" in r else "-"
        err = f"{r['rel_score_error']:.3f}" if "rel_score_error" in r else "-"
        fit = f"{r['fit_s']:.0f}" if r["fit_s"] is not None else "-"
        par = r["parameters"] if r["parameters"] is not None else "-"
        print(f"| {r['data']} | {r['model']} | {par} | {r['nll']:.3f} ± {r['nll_se']:.3f} | {r['bits_per_dim']:.3f} | "
              f"{w2} | {err} | {fit} | {1000 * r['sample_s_per_sample']:.3f} |")


if __name__ == "__main__":
    main()
