"""Riemannian score-based generative models (cs.generative.riemannian, De Bortoli et al. 2022) on data with exact
densities, and on the earth-science event sets when their files are present.

Synthetic data (exact densities and entropies, cs.manifolds.mixtures):

* ``vmf5``: a mixture of five von Mises-Fisher laws on S^2 (kappa 8 to 60);
* ``wn4``: a mixture of four wrapped normals on T^2 (standard deviations 0.2 to 0.8).

Each model: an MLP 128 x 3 score network (the package's, on x or on (cos, sin) of the angles, output projected to
the tangent space and divided by sigma(t)), Brownian reference with beta from 1e-3 to the package default
(20 on S^2, 40 on T^2: prior error ~ e^-10), ``--iters`` steps of 512 fresh draws, Adam 2e-3 with a cosine
schedule, EMA 0.999; denoising score matching (heat-kernel score; on S^2 the noised draws by a 20-step geodesic
random walk) and implicit score matching (Hutchinson divergence). Test NLL through the Riemannian probability-flow
ODE (RK4, 50 steps, exact divergence) on 2000 fresh points, against the exact entropy (the smallest NLL any model
can have in expectation), and the paired estimate of KL(data || model) = mean(log p(x) - log q(x)) on the same
points (its standard error is much smaller than the NLL's). Seeds ``--seeds``.

Earth data (``--earth``; volcano, earthquake, flood, fire): read from ``--earth-root`` (default
``../shared/data/earth``, or CONTROLSAMP_EARTH_DATA) with cs.manifolds.data.load_earth, 80/10/10 split per seed,
trained on the training split, test NLL on the test split, next to the published RSGM numbers. When a file is not
there the row says so and nothing is trained.

    python benchmarks/manifolds.py                # the synthetic rows (about 30 minutes on one thread)
    python benchmarks/manifolds.py --earth        # the earth rows too, if the files exist
    python benchmarks/manifolds.py --quick        # smoke run
    python benchmarks/manifolds.py --iters 16000 --losses dsm --out benchmarks/results/manifolds-16k
                                                  # a longer training budget

Results: benchmarks/results/manifolds/{data}-{loss}-s{seed}.json; the table prints every row found.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch

import controlsamp as cs
from controlsamp.generative import riemannian
from controlsamp.manifolds import Sphere, data as mdata
from controlsamp.manifolds.mixtures import VonMisesFisherMixture, WrappedNormalMixture

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "manifolds")
#: RSGM's test NLL (De Bortoli et al. 2022, Table 2; mean +- std over 5 seeds)
RSGM = {"volcano": (-4.92, 0.25), "earthquake": (-0.19, 0.07), "flood": (0.48, 0.09), "fire": (-1.33, 0.06)}


def synthetic(name):
    if name == "vmf5":
        means = Sphere(2).from_lonlat([0.0, 72.0, 144.0, -144.0, -72.0], [60.0, -10.0, 30.0, -45.0, 5.0])
        return VonMisesFisherMixture([0.3, 0.2, 0.2, 0.15, 0.15], means, [60.0, 8.0, 25.0, 40.0, 15.0])
    return WrappedNormalMixture([0.4, 0.3, 0.2, 0.1], [[-2.0, 2.5], [-1.2, -0.8], [1.2, 0.9], [2.8, -2.8]],
                                [[0.25, 0.6], [0.3, 0.3], [0.8, 0.4], [0.2, 0.2]])


def run(name, loss, seed, a):
    path = os.path.join(a.out, f"{name}-{loss}-s{seed}.json")
    if os.path.exists(path) and not a.quick:
        with open(path) as fh:
            return json.load(fh)
    if name in RSGM:
        train, _, test = mdata.load_earth(name, root=a.earth_root, seed=seed)
        manifold, law = Sphere(2), None
    else:
        law = synthetic(name)
        manifold, train = law.manifold, law
        test = law.sample(a.n_test, generator=torch.Generator().manual_seed(1000 + seed))
    model = cs.generative.RiemannianDiffusionModel(manifold, hidden=128, depth=3, loss=loss, seed=seed)
    t0 = time.perf_counter()
    model.fit(train, iters=a.iters, batch=512, lr=2e-3, lr_schedule="cosine", seed=seed, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ll = riemannian.log_likelihood(model, test, steps=50)
    out = dict(data=name, loss=loss, seed=seed, iters=a.iters, fit_s=fit_s, nll_s=time.perf_counter() - t0,
               n_test=len(test), nll=-float(ll.mean()), nll_se=float(ll.std()) / math.sqrt(len(test)))
    if law is not None:
        d = law.log_prob(test) - ll
        out.update(entropy=float(law.entropy()), kl=float(d.mean()), kl_se=float(d.std()) / math.sqrt(len(test)))
    os.makedirs(a.out, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=4000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--losses", nargs="+", default=["dsm", "ism"], choices=["dsm", "ism"])
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--data", nargs="*", default=["vmf5", "wn4"], choices=["vmf5", "wn4"], help="synthetic rows")
    p.add_argument("--earth", action="store_true", help="the earth rows too (5 seeds, DSM)")
    p.add_argument("--earth-root", default=None)
    p.add_argument("--earth-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--earth-sets", nargs="+", default=list(RSGM), choices=list(RSGM))
    p.add_argument("--out", default=OUT)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.iters, a.seeds, a.n_test, a.out = 30, [0], 50, os.path.join("/tmp", "manifolds-quick")
    torch.set_num_threads(1)
    print("| data | loss | seeds | test NLL (nats) | exact entropy | NLL - entropy | KL(data \\|\\| model) | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.data:
        for loss in a.losses:
            rs = [run(name, loss, s, a) for s in a.seeds]
            nll = np.array([r["nll"] for r in rs])
            kl = np.array([r["kl"] for r in rs])
            spread = lambda v: f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else f" ± {rs[0]['nll_se']:.3f} (se)"
            print(f"| {name} | {loss} | {len(rs)} | {nll.mean():.3f}{spread(nll)} | {rs[0]['entropy']:.3f} | "
                  f"{nll.mean() - rs[0]['entropy']:+.3f} | {kl.mean():.4f}{spread(kl) if len(kl) > 1 else ''} | "
                  f"{np.mean([r['fit_s'] for r in rs]):.0f} |", flush=True)
    if a.earth:
        print("\n| earth data | seeds | test NLL (nats) | RSGM (De Bortoli et al. 2022) | train s |")
        print("|---|---|---|---|---|")
        for name, (ref, ref_sd) in ((k, RSGM[k]) for k in a.earth_sets):
            path = mdata.earth_path(name, a.earth_root)
            if not os.path.isfile(path):
                print(f"| {name} | - | not run: no file {path} | {ref:.2f} ± {ref_sd:.2f} | - |")
                continue
            rs = [run(name, "dsm", s, a) for s in a.earth_seeds]
            nll = np.array([r["nll"] for r in rs])
            sd = f"{nll.std(ddof=1):.2f}" if len(rs) > 1 else "-"
            print(f"| {name} | {len(rs)} | {nll.mean():.2f} ± {sd} | {ref:.2f} ± {ref_sd:.2f} | "
                  f"{np.mean([r['fit_s'] for r in rs]):.0f} |", flush=True)


if __name__ == "__main__":
    main()
