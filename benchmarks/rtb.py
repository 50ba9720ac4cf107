"""RTB benchmark: the 2-d experiment of Venkatraman et al. (2024). The prior is a diffusion model whose data law is a
25-mode Gaussian mixture (means on {-4, -2, 0, 2, 4}^2, variance 0.09), either exact (its closed-form noised score,
cs.generative.ExactScore) or learned from 20000 samples (cs.generative.DiffusionModel, VP, eps); the reward is
r = p9 / p25 with p9 the 9 inner modes, so the posterior p25 r / Z is the 9-mode mixture (Z = 1 for the exact
prior). Per row: the fraction of samples in the 9 inner modes, W2 to exact 9-mode samples against the sample floor,
log Z (importance sampling) and TB's learned log Z, training seconds. Printed as markdown rows.

    python benchmarks/rtb.py --priors exact learned --losses tb vargrad --iters 1000
"""
import argparse
import json
import os
import time

import torch

import controlsamp as cs

GRID = [-4.0, -2.0, 0.0, 2.0, 4.0]
MEANS25 = torch.tensor([[a, b] for a in GRID for b in GRID], dtype=torch.float64)
COVS25 = 0.09 * torch.eye(2, dtype=torch.float64).repeat(25, 1, 1)
INNER = [i for i, m in enumerate(MEANS25.tolist()) if abs(m[0]) <= 2 and abs(m[1]) <= 2]
P25 = cs.targets.GaussianMixture(torch.ones(25), MEANS25, COVS25)
P9 = cs.targets.GaussianMixture(torch.ones(9), MEANS25[INNER], COVS25[INNER])


def log_r(x):
    return P9.log_prob(x) - P25.log_prob(x)


def make_prior(kind, a):
    mix = cs.exact.NoisedMixture(cs.processes.VP(2), torch.ones(25), MEANS25, COVS25)
    if kind == "exact":
        return cs.generative.ExactScore(mix, dtype=torch.float32), 0.0
    data = mix.sample(0.0, 20000, generator=torch.Generator().manual_seed(a.seed))
    model = cs.generative.DiffusionModel(cs.processes.VP(2), hidden=128, depth=3, ema=0.999, seed=a.seed)
    t0 = time.perf_counter()
    model.fit(data, iters=a.prior_iters, batch=512, lr=2e-3, lr_schedule="cosine", progress=False, seed=a.seed)
    return model, time.perf_counter() - t0


def inner_fraction(x):
    d = ((x[:, None, :].double() - MEANS25[None]) ** 2).sum(-1).argmin(1)
    return sum(float((d == i).double().mean()) for i in INNER)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--priors", nargs="+", default=["exact", "learned"], choices=["exact", "learned"])
    p.add_argument("--losses", nargs="+", default=["tb", "vargrad"])
    p.add_argument("--langevin", nargs="+", type=int, default=[1], help="1: with the grad log r term, 0: without")
    p.add_argument("--iters", type=int, default=1000, help="RTB iterations")
    p.add_argument("--prior-iters", type=int, default=4000, help="training iterations of the learned prior")
    p.add_argument("--steps", type=int, default=50, help="steps of the prior's reverse chain")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n-eval", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/rtb/rtb.json")
    a = p.parse_args()
    ref = P9.sample(a.n_eval, generator=torch.Generator().manual_seed(101))
    floor = cs.metrics.w2(P9.sample(a.n_eval, generator=torch.Generator().manual_seed(102)), ref)
    rows = []
    print(f"W2 sample floor ({a.n_eval} vs {a.n_eval} exact 9-mode samples): {floor:.3f}")
    print("| prior | loss | langevin | iters | inner-mode fraction | W2 | W2 / floor | log Z (IS) | TB log Z | prior s | RTB s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in a.priors:
        prior, prior_s = make_prior(kind, a)
        rtb0 = cs.samplers.RTB(prior, log_r, steps=a.steps, hidden=128, depth=2, dtype=torch.float32, seed=a.seed)
        x0, lw0 = rtb0.sample(a.n_eval, seed=a.seed + 1)
        row = dict(prior=kind, loss="(prior chain)", langevin=None, iters=0, inner=inner_fraction(x0),
                   w2=cs.metrics.w2(x0, ref), log_Z=cs.metrics.log_Z(lw0)[0], tb_log_Z=None, prior_s=prior_s, rtb_s=0.0)
        rows.append(row)
        print(f"| {kind} | prior chain, reweighted by r: log Z | - | 0 | {row['inner']:.3f} | {row['w2']:.3f} | "
              f"{row['w2'] / floor:.1f} | {row['log_Z']:.3f} | - | {prior_s:.0f} | 0 |", flush=True)
        for loss in a.losses:
            for lgv in a.langevin:
                rtb = cs.samplers.RTB(prior, log_r, steps=a.steps, hidden=128, depth=2, langevin=bool(lgv),
                                      dtype=torch.float32, seed=a.seed)
                t0 = time.perf_counter()
                rtb.fit(iters=a.iters, batch=a.batch, loss=loss, lr=3e-3, lr_log_Z=1e-1, lr_schedule="cosine",
                        progress=False, seed=a.seed)
                secs = time.perf_counter() - t0
                x, lw = rtb.sample(a.n_eval, seed=a.seed + 1)
                tb = float(rtb.objective.log_Z.detach()) if hasattr(rtb.objective, "log_Z") else None
                row = dict(prior=kind, loss=loss, langevin=bool(lgv), iters=a.iters, inner=inner_fraction(x),
                           w2=cs.metrics.w2(x, ref), log_Z=cs.metrics.log_Z(lw)[0], tb_log_Z=tb, prior_s=prior_s,
                           rtb_s=secs)
                rows.append(row)
                print(f"| {kind} | {loss} | {bool(lgv)} | {a.iters} | {row['inner']:.3f} | {row['w2']:.3f} | "
                      f"{row['w2'] / floor:.1f} | {row['log_Z']:.3f} | {'-' if tb is None else f'{tb:.3f}'} | "
                      f"{prior_s:.0f} | {secs:.0f} |", flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"args": vars(a), "w2_floor": floor, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
