"""Exact Schrödinger bridges, drawn: a 1-d Gaussian bridge and the Föllmer process onto a mixture.

Left: the marginal density of the Gaussian Schrödinger bridge from N(-2, 0.3) to N(2, 1.5) with a
Brownian reference (sigma = 1), with exact sample paths. Right: exact Schrödinger–Föllmer paths from 0
to the gmm25 target (sigma = 5), which is what a perfectly trained path integral sampler would produce.

    python examples/exact_bridges.py --out exact_bridges.png
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402


def main(out: str = "exact_bridges.png", seed: int = 0) -> str:
    gen = torch.Generator().manual_seed(seed)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))

    br = cs.exact.GaussianBridge([-2.0], [[0.3]], [2.0], [[1.5]], sigma=1.0, T=1.0)
    ts = np.linspace(0, 1, 101)
    xs = np.linspace(-5, 6, 300)
    dens = np.empty((len(xs), len(ts)))
    for k, t in enumerate(ts):
        m, v = (float(a.reshape(-1)[0]) for a in br.marginal(float(t)))
        dens[:, k] = np.exp(-0.5 * (xs - m) ** 2 / v) / np.sqrt(2 * np.pi * v)
    im = ax0.imshow(dens, origin="lower", aspect="auto", extent=[0, 1, xs[0], xs[-1]], cmap="Blues")
    fig.colorbar(im, ax=ax0, label="marginal density of X_t")
    paths = br.sample_path(torch.tensor(ts), 12, generator=gen)
    for i, p in enumerate(paths[:, :, 0].numpy()):
        ax0.plot(ts, p, lw=0.8, color="k", alpha=0.6, label="exact sample paths" if i == 0 else None)
    ax0.set(title="Gaussian Schrödinger bridge: marginals and exact paths", xlabel="t", ylabel="x")
    ax0.legend(loc="upper left", fontsize=8)

    target = cs.targets.get("gmm25")
    sf = cs.exact.SchrodingerFollmer(target, sigma=5.0)
    g = torch.linspace(-14, 14, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    logp = target.log_prob(torch.stack([gx.ravel(), gy.ravel()], 1)).reshape(200, 200)
    cs1 = ax1.contourf(gx.numpy(), gy.numpy(), logp.exp().numpy(), levels=30, cmap="Greens")
    fig.colorbar(cs1, ax=ax1, label="target density (gmm25)")
    fpaths = sf.sample_path(torch.linspace(0, 1, 51), 30, generator=gen).numpy()
    for i, p in enumerate(fpaths):
        ax1.plot(p[:, 0], p[:, 1], lw=0.6, color="k", alpha=0.5, label="exact paths from X_0 = 0" if i == 0 else None)
    ax1.scatter(fpaths[:, -1, 0], fpaths[:, -1, 1], s=8, color="crimson", zorder=3, label="end points X_1")
    ax1.set(title="Schrödinger–Föllmer paths onto gmm25 (exact)", xlim=(-14, 14), ylim=(-14, 14),
            xlabel="x_1", ylabel="x_2", aspect="equal")
    ax1.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="exact_bridges.png", help="where to write the picture (PNG)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the exact sample paths")
    print("wrote", main(**vars(ap.parse_args())))
