"""GENIE benchmark (cs.generative.genie, Dockhorn, Vahdat & Kreis 2022): the second-order Taylor step against
DDIM at 5, 10 and 20 steps, on the 2-d mixture gmm2 of benchmarks/generative.py (8 components, known density),
VP reference, t_min 1e-3.

Part 1, exact score (ExactScore: no learning error): DDIM and GENIE with the exact JVP.
Part 2, learned: a DiffusionModel (MLP 128 x 3, eps) trained on exact samples, a GenieHead (MLP 128 x 2) trained
on its exact JVPs (the head's held-out relative error is reported), then DDIM, GENIE with the head and GENIE with
the exact JVP of the learned model.

Two settings: a uniform time grid with every step using the network, and the GENIE code's quadratic striding
(uniform in sqrt t) with the analytical first step (AFS: the first step's noise estimate is that of standardised
data, no network call). Per sampler and number of steps K, from the same 2000 prior draws: the ODE error (root-mean-square distance at
t_min to the same source's probability-flow ODE solved by torchdiffeq's dopri5 at rtol = atol = 1e-9), W2 to 2000
fresh exact data samples (exact OT; the floor is W2 between two exact sets), and the cost: score-network
evaluations, JVPs, head evaluations and the sampling wall time (one thread), whose ratio to DDIM's at the same K
says what GENIE costs. DDIM is also run at the K whose wall time matches GENIE's (``DDIM equal time``).

    python benchmarks/genie.py                   # about 4 minutes on one thread
    python benchmarks/genie.py --quick           # smoke run

Results: benchmarks/results/genie/genie.json.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import controlsamp as cs
from controlsamp.generative import genie

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generative import mixture  # noqa: E402  (the benchmark's fixed 2-d mixture)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "genie")
T_MIN = 1e-3


def timed(fn):
    t0 = time.perf_counter()
    x, info = fn()
    return x, info, time.perf_counter() - t0


SETTINGS = (("uniform", False), ("quadratic", True))  # (time grid, analytical first step)


def rows_for(source, x_T, exact, floor, steps, head=None, label=""):
    ref, _ = cs.generative.pf_ode_sample(source, x_T=x_T, method="dopri5", rtol=1e-9, atol=1e-9)

    def measure(name, K, fn):
        x, info, wall = timed(fn)
        return dict(K=K, sampler=name, ode_rms=float(((x - ref) ** 2).sum(1).mean().sqrt()),
                    w2=cs.metrics.w2(x.double(), exact), nfe=int(info["nfe"]), jvp=int(info.get("jvp", 0)),
                    head_evals=int(info.get("head_evals", 0)), wall_s=wall)

    rows = []
    for grid, afs in SETTINGS:
        for K in steps:
            opts = dict(x_T=x_T, steps=K, grid=grid, afs=afs)
            out = {"DDIM": measure("DDIM", K, lambda: genie.genie_sample(source, order=1, **opts)),
                   "GENIE exact JVP": measure("GENIE exact JVP", K, lambda: genie.genie_sample(source, **opts))}
            if head is not None:
                out["GENIE head"] = measure("GENIE head", K, lambda: genie.genie_sample(source, head=head, **opts))
            base = out["DDIM"]["wall_s"]
            for v in out.values():
                v["time_vs_ddim"] = v["wall_s"] / base
            slowest = max(v["time_vs_ddim"] for v in out.values())
            K_eq = max(K, int(round(K * slowest)))
            eq = measure(f"DDIM equal time (K={K_eq})", K_eq,
                         lambda: genie.genie_sample(source, order=1, **dict(opts, steps=K_eq)))
            eq["time_vs_ddim"] = eq["wall_s"] / base
            for v in list(out.values()) + [eq]:
                v.update(part=label, floor=floor, grid=grid, afs=afs)
                rows.append(v)
    return rows


def table(rows):
    print("| part | grid, first step | K | sampler | ODE error (rms) | W2 (floor) | network evals | JVPs | head evals | "
          "time / DDIM's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        first = "AFS" if r["afs"] else "network"
        print(f"| {r['part']} | {r['grid']}, {first} | {r['K']} | {r['sampler']} | {r['ode_rms']:.4f} | {r['w2']:.4f} ({r['floor']:.4f}) | "
              f"{r['nfe']} | {r['jvp']} | {r['head_evals']} | {r['time_vs_ddim']:.2f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--iters", type=int, default=4000, help="score-model training iterations")
    p.add_argument("--head-iters", type=int, default=1500)
    p.add_argument("--out", default=OUT)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.n, a.iters, a.head_iters, a.steps = 200, 100, 50, [5]
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    w, m, c = mixture("gmm2")
    law = cs.targets.GaussianMixture(w, m, c)
    exact = law.sample(a.n, generator=torch.Generator().manual_seed(1)).double()
    floor = cs.metrics.w2(law.sample(a.n, generator=torch.Generator().manual_seed(2)).double(), exact)
    ref_proc = cs.processes.VP(2)
    src = cs.generative.ExactScore(cs.exact.NoisedMixture(ref_proc, w, m, c), t_min=T_MIN)
    x_T = src.prior_sample(a.n, torch.Generator().manual_seed(3))
    rows = rows_for(src, x_T, exact, floor, a.steps, label="exact score")

    model = cs.generative.DiffusionModel(ref_proc, hidden=128, depth=3, t_min=T_MIN, dtype=torch.float64)
    train = law.sample(20000, generator=torch.Generator().manual_seed(4)).double()
    t0 = time.perf_counter()
    model.fit(train, iters=a.iters, batch=256, lr_schedule="cosine", progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    head = genie.fit_genie_head(model, train, iters=a.head_iters, batch=256, lr=1e-3, hidden=128, progress=False)
    head_s = time.perf_counter() - t0
    # held-out relative error of the head: fresh exact points noised at stratified times
    g = torch.Generator().manual_seed(5)
    x0 = law.sample(2000, generator=g).double()
    t = T_MIN + (1 - T_MIN) * (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000
    t = t[torch.randperm(2000, generator=g)]
    errs, norms = [], []
    for chunk in torch.arange(2000).split(125):  # 16 chunks, their times distinct: group by rounded time
        tc = torch.round(t[chunk] * 20) / 20
        tc = tc.clamp(T_MIN, 1.0)
        al, sg = model.kernel.coefficients(tc, len(chunk), x0)
        xt = al * x0[chunk] + sg * torch.randn(len(chunk), 2, generator=g, dtype=torch.float64)
        eps, d_eps = genie.eps_and_derivative(model, tc, xt)
        target = genie.ddim_rates(model.reference, tc)["gamma"][:, None] * d_eps  # the head's scaled target
        with torch.no_grad():
            pred = head(tc, xt, eps)
        errs.append(((pred - target) ** 2).sum().item())
        norms.append((target ** 2).sum().item())
    head_rel = float(np.sqrt(sum(errs) / sum(norms)))
    x_T2 = model.prior_sample(a.n, torch.Generator().manual_seed(3))
    rows += rows_for(model, x_T2, exact, floor, a.steps, head=head, label="learned")
    result = dict(data="gmm2", reference="VP", t_min=T_MIN, n=a.n, floor=floor, model_iters=a.iters, fit_s=fit_s,
                  head_iters=a.head_iters, head_s=head_s, head_rel_err_heldout=head_rel,
                  head_rel_err_train_last=float(np.mean(head.history["rel_err"][-50:])), rows=rows)
    with open(os.path.join(a.out, "genie.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"score model: {a.iters} iterations, {fit_s:.0f} s; head: {a.head_iters} iterations, {head_s:.0f} s, "
          f"held-out relative error {head_rel:.3f} (training, last 50: {result['head_rel_err_train_last']:.3f})")
    table(rows)


if __name__ == "__main__":
    main()
