"""Train a diffusion sampler from an energy alone, then look at its samples over the density.

The target is gmm25 (Sendera et al. 2024): 25 well-separated Gaussians on a 5 x 5 grid, known to the
sampler only through log pi~(x). The path integral sampler (Zhang & Chen 2022) is trained with trajectory
balance and the off-policy tools of Sendera et al. 2024: exploration noise, a replay buffer with backward
paths, and MALA local search on buffer samples. Left: samples over the log-density, with the importance
estimate of log Z (exact 0), the fraction of the 25 modes that received a sample, and W2 to as many exact
samples next to the sample floor (W2 between two independent exact sample sets of that size, the best any
sampler can show). Right: the training loss and the learned log Z of trajectory balance (exact 0).

    python examples/sample_gmm.py --out sample_gmm.png
"""
import argparse
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402


def main(out: str = "sample_gmm.png", iters: int = 400, seed: int = 0) -> str:
    torch.set_num_threads(1)
    target = cs.targets.get("gmm25")
    pis = cs.samplers.PIS(target, steps=50, sigma=math.sqrt(5.0), seed=seed)
    pis.fit(iters, batch=256, loss="tb", lr=1e-3, seed=seed, explore=1.0, buffer=20000, local_search_every=10,
            local_search_steps=20, lr_schedule="cosine", progress=False)
    n = 3000
    x, log_w = pis.sample(n, seed=seed + 1)
    log_Z, se = cs.metrics.log_Z(log_w)
    coverage = cs.metrics.mode_coverage(x, target)
    truth = target.sample(2 * n, generator=torch.Generator().manual_seed(seed + 2))
    w2, floor = cs.metrics.w2(x, truth[:n]), cs.metrics.w2(truth[n:], truth[:n])
    print(f"PIS on gmm25, {iters} iterations: log Z {log_Z:+.3f} +- {se:.3f} (exact 0); modes covered "
          f"{coverage:.0%}; W2 to {n} exact samples {w2:.3f} (sample floor {floor:.3f}: two exact sets of {n})")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    g = np.linspace(-14, 14, 300)
    gx, gy = np.meshgrid(g, g)
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1))
    lp = target.log_prob(pts).numpy().reshape(gx.shape)
    filled = ax.contourf(gx, gy, np.maximum(lp, lp.max() - 25), levels=30, cmap="Blues")
    fig.colorbar(filled, ax=ax, label="log density (cut 25 below its maximum)", shrink=0.8)
    ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", alpha=0.4, label=f"{n} PIS samples")
    ax.set(aspect="equal", xlabel="x_1", ylabel="x_2")
    ax.legend(loc="upper left", fontsize=8, markerscale=4, framealpha=0.9)
    ax.set_title(f"log Z = {log_Z:.3f} +- {se:.3f} (exact 0), modes covered {coverage:.0%}\n"
                 f"W2 to {n} exact samples {w2:.3f} (sample floor {floor:.3f})", fontsize=9)
    it = np.arange(len(pis.history["loss"]))
    ax2.plot(it, pis.history["loss"], label="trajectory-balance loss", lw=0.8)
    ax2.plot(it, np.abs(pis.history["log_Z_param"]), label="|learned log Z| (exact log Z = 0)", lw=0.8)
    ax2.set_yscale("log")
    ax2.set(xlabel="iteration", ylabel="loss, |log Z error|", title="training (trajectory balance)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="sample_gmm.png", help="where to write the picture (PNG)")
    parser.add_argument("--iters", type=int, default=400, help="training iterations (batch 256, 50 steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network, training and evaluation")
    main(**vars(parser.parse_args()))
