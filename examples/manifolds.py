"""Learn a score-based generative model on the sphere and on the torus, and look at its samples.

Riemannian score-based generative modelling (De Bortoli et al. 2022): data on a compact manifold are noised by
Brownian motion on it (the heat semigroup), a score network is trained by denoising score matching against the
heat kernel's score, and samples come back by the reverse geodesic random walk. Two data laws with exact densities:
a mixture of four von Mises-Fisher laws on the sphere S^2 (drawn in the Mollweide map projection, longitude and
latitude) and a mixture of three wrapped normals on the torus T^2 (the angle plane, as for protein torsion angles).
Each panel's title gives the model's test NLL through the probability-flow ODE next to the exact entropy of the
data law, the best any model can reach.

    python examples/manifolds.py --out manifolds.png
"""
import argparse
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402
from controlsamp.generative import riemannian  # noqa: E402
from controlsamp.manifolds import Sphere  # noqa: E402
from controlsamp.manifolds.mixtures import VonMisesFisherMixture, WrappedNormalMixture  # noqa: E402


def laws():
    s2 = Sphere(2)
    means = s2.from_lonlat([-100.0, 20.0, 110.0, 140.0], [40.0, 10.0, 30.0, -25.0])
    sphere = VonMisesFisherMixture([0.3, 0.25, 0.25, 0.2], means, [30.0, 20.0, 40.0, 15.0])
    torus = WrappedNormalMixture([0.45, 0.35, 0.2], [[-1.2, 2.4], [-1.3, -0.7], [1.0, 0.8]],
                                 [[0.35, 0.5], [0.3, 0.3], [0.5, 0.4]])
    return sphere, torus


def fit_and_measure(law, iters, n_test, seed):
    model = cs.generative.RiemannianDiffusionModel(law.manifold, hidden=64, depth=3, seed=seed)
    model.fit(law, iters=iters, batch=256, lr=2e-3, lr_schedule="cosine", seed=seed, progress=False)
    test = law.sample(n_test, generator=torch.Generator().manual_seed(seed + 1))
    ll = riemannian.log_likelihood(model, test, steps=30)
    nll, se = -float(ll.mean()), float(ll.std()) / math.sqrt(n_test)
    x = riemannian.sample(model, 2000, steps=100, generator=torch.Generator().manual_seed(seed + 2))
    return model, x.detach(), nll, se


def main(out: str = "manifolds.png", iters: int = 1500, n_test: int = 300, seed: int = 0) -> str:
    torch.set_num_threads(1)
    sphere, torus = laws()
    fig = plt.figure(figsize=(12, 8.5))
    rows = []
    for r, (name, law) in enumerate((("sphere S^2", sphere), ("torus T^2", torus))):
        _, x, nll, se = fit_and_measure(law, iters, n_test, seed)
        data = law.sample(2000, generator=torch.Generator().manual_seed(seed + 3))
        H = law.entropy()
        rows.append(f"{name}: test NLL {nll:.3f} +- {se:.3f} nats, exact entropy {H:.3f} (the best reachable)")
        print(rows[-1])
        for c, (pts, what) in enumerate(((data, "2000 draws of the data law"),
                                         (x, f"2000 model samples ({iters} iterations)"))):
            if r == 0:
                ax = fig.add_subplot(2, 2, 1 + c, projection="mollweide")
                lon, lat = Sphere(2).to_lonlat(pts, degrees=False)
                ax.scatter(lon.numpy(), lat.numpy(), s=1.5, alpha=0.5, c="tab:blue" if c == 0 else "tab:red")
                ax.grid(True, lw=0.3)
                ax.set_xticklabels([])
            else:
                ax = fig.add_subplot(2, 2, 3 + c)
                g = np.linspace(-math.pi, math.pi, 150)
                gx, gy = np.meshgrid(g, g)
                lp = law.log_prob(torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1))).numpy().reshape(gx.shape)
                ax.contour(gx, gy, lp, levels=10, colors="0.6", linewidths=0.5)
                ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=1.5, alpha=0.5,
                           c="tab:blue" if c == 0 else "tab:red")
                ax.set(xlim=(-math.pi, math.pi), ylim=(-math.pi, math.pi), aspect="equal", xlabel="angle 1",
                       ylabel="angle 2")
            title = f"{name}: {what}"
            if c == 1:
                title += f"\ntest NLL {nll:.3f} +- {se:.3f} nats (exact entropy {H:.3f})"
            ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="manifolds.png", help="where to write the picture (PNG)")
    parser.add_argument("--iters", type=int, default=1500, help="training iterations of each model (batch 256)")
    parser.add_argument("--n-test", type=int, default=300, help="held-out points for the test NLL")
    parser.add_argument("--seed", type=int, default=0, help="seed of the networks, training and evaluation")
    main(**vars(parser.parse_args()))
