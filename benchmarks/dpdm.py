"""DPDM benchmark (cs.generative.dpdm, Dockhorn, Cao, Vahdat & Kreis 2022): differentially private score models
against the non-private one at the same budget, and the noise-multiplicity ablation.

Data: the 2-d mixture gmm2 of benchmarks/generative.py (known log-density; 10000 training points, 2000 held out)
and, with ``--digits``, scikit-learn's 8x8 digits (dequantised once, the fixed 80/20 split). VP reference, an MLP
score model (width 128, depth 3, eps), Adam at 1e-3, ``--iters`` steps of expected batch ``--batch`` (Poisson
sampling for DP, plain draws for the non-private model), clipping norm C = 1, delta = 1e-5. Rows: non-private;
DP at epsilon 1 and 10, each with noise multiplicity K = 1 and K = 8.

Metrics: test NLL through the probability-flow ODE (nats per point; exact divergence in 2-d, Hutchinson in 64-d,
bits/dim for digits), W2 of 2000 samples (reverse SDE, 500 Euler steps) to held-out data (2-d only) with its floor,
the spent epsilon, the noise multiplier, the fraction of clipped per-example gradients, the wall time.

    python benchmarks/dpdm.py                     # the 2-d rows
    python benchmarks/dpdm.py --digits            # the digits rows too
    python benchmarks/dpdm.py --quick             # smoke run
    python benchmarks/dpdm.py --only-digits --tag b720 --batch 720 --hidden 64 --depth 2 --iters 2000
                                                  # digits at another setting (files digits-b720-*.json)

Results: benchmarks/results/dpdm/{data}-{row}.json; the table prints every row found.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import controlsamp as cs
from controlsamp.generative import dpdm, parameter_count
from controlsamp.generative.data import load_data
from controlsamp.generative.likelihood import dequantise
from controlsamp.train_generative import _nll, _sample_metrics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generative import mixture  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "dpdm")
ROWS = [("non-private", None, 1), ("eps1-K1", 1.0, 1), ("eps1-K8", 1.0, 8), ("eps10-K1", 10.0, 1),
        ("eps10-K8", 10.0, 8)]


def get_data(name, seed=0):
    if name == "gmm2":
        w, m, c = mixture("gmm2")
        law = cs.targets.GaussianMixture(w, m, c)
        train = law.sample(10000, generator=torch.Generator().manual_seed(seed)).double()
        test = law.sample(2000, generator=torch.Generator().manual_seed(seed + 1)).double()
        return train, test, dict(dim=2, log_scale=0.0, levels=None)
    train, test, info = load_data("digits", seed=seed)
    return dequantise(train.x_int, train.levels, generator=torch.Generator().manual_seed(seed)), test, info


def run_row(data, row, a):
    name, epsilon, K = row
    path = os.path.join(a.out, f"{data}{'-' + a.tag if a.tag else ''}-{name}.json")
    if os.path.exists(path) and not a.quick:
        with open(path) as fh:
            return json.load(fh)
    train, test, info = get_data(data)
    model = cs.generative.DiffusionModel(cs.processes.VP(info["dim"]), hidden=a.hidden, depth=a.depth, seed=0)
    t0 = time.perf_counter()
    if epsilon is None:
        model.fit(train, iters=a.iters, batch=a.batch, lr=a.lr, progress=False)
        out = dict(epsilon=None)
    else:
        dpdm.fit_private(model, train, iters=a.iters, batch=a.batch, target_epsilon=epsilon, delta=1e-5,
                         max_grad_norm=1.0, noise_multiplicity=K, lr=a.lr, progress=False)
        out = dict(model.privacy, clipped=float(np.mean(model.history["clipped"][-100:])))
    out.update(data=data, row=name, K=K, iters=a.iters, batch=a.batch, hidden=a.hidden, depth=a.depth, lr=a.lr,
               parameters=parameter_count(model), fit_s=time.perf_counter() - t0)
    k = min(a.nll_points, len(test))
    nll = _nll(model, test[:k], 23456)
    ll = nll.pop("nll_per_point")
    out.update(nll)
    out["bits_per_dim"] = float(cs.generative.bits_per_dim(ll.mean(), info["dim"], info["log_scale"]))
    if info["dim"] == 2:
        x, _ = cs.generative.sample(model, a.n_samples, sampler="euler", steps=500,
                                    generator=torch.Generator().manual_seed(12345))
        out.update(_sample_metrics(x.detach().double().cpu(), train, test))
    os.makedirs(a.out, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128, help="expected batch (the Poisson rate is batch / N)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--only-digits", action="store_true", help="the digits rows alone")
    p.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS],
                   help="run these rows only")
    p.add_argument("--tag", default="", help="a suffix of the data name in the result files (another setting)")
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--nll-points", type=int, default=1000)
    p.add_argument("--digits", action="store_true")
    p.add_argument("--out", default=OUT)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.iters, a.n_samples, a.nll_points, a.out = 20, 200, 50, os.path.join("/tmp", "dpdm-quick")
    torch.set_num_threads(1)
    print("| data | row | parameters | batch | steps | epsilon (noise multiplier) | K | test NLL | bits/dim | "
          "W2 (floor) | clipped | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for data in (["digits"] if a.only_digits else ["gmm2"] + (["digits"] if a.digits else [])):
        for row in (r for r in ROWS if r[0] in a.rows):
            r = run_row(data, row, a)
            eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f} ({r['noise_multiplier']:.3f})"
            w2 = f"{r['w2']:.3f} ({r['w2_floor']:.3f})" if "w2" in r else "-"
            clip = f"{r['clipped']:.2f}" if "clipped" in r else "-"
            name = f"{data} {a.tag}" if a.tag else data
            print(f"| {name} | {r['row']} | {r.get('parameters', '-')} | {r['batch']} | {r['iters']} | {eps} | "
                  f"{r['K']} | {r['nll']:.3f} ± {r['nll_se']:.3f} | "
                  f"{r['bits_per_dim']:.3f} | {w2} | {clip} | {r['fit_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
