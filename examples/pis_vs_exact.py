"""A learned path integral sampler next to the exact Schrödinger–Föllmer drift it should converge to.

PIS (Zhang & Chen 2022) trains the control of dX = sigma u dt + sigma dW, X_0 = 0, so that X_1 follows a
target known only through its energy. For a Gaussian-mixture target the optimum is known in closed form:
`cs.exact.SchrodingerFollmer`. Here PIS is trained with the log-variance loss on a three-mode mixture.
Top: the learned drift field (red) over the exact one (black) at three times, over the exact marginal
density of X_t. Bottom left: the relative L2 error of the drift along the model's paths at each time step.
Bottom middle: samples over the target density, with their W2 distance to as many exact samples and the
sample floor (W2 between two independent exact sample sets of that size: the best any sampler can show).
Bottom right: the training loss.

    python examples/pis_vs_exact.py --out pis_vs_exact.png
"""
import argparse

import matplotlib
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402


def main(out: str = "pis_vs_exact.png", iters: int = 400, seed: int = 0) -> str:
    torch.set_num_threads(1)
    target = cs.targets.GaussianMixture([0.2, 0.3, 0.5], [[-2.0, 1.0], [2.0, 1.5], [0.5, -2.0]],
                                        0.25 * np.eye(2)[None].repeat(3, 0))
    exact = cs.exact.SchrodingerFollmer(target, sigma=1.0)
    pis = cs.samplers.PIS(target, steps=50, sigma=1.0, hidden=64, seed=seed)
    pis.fit(iters, batch=256, loss="lv", lr=3e-3, lr_schedule="cosine", seed=seed, progress=False)

    gen = torch.Generator().manual_seed(seed + 1)
    xs = pis.simulate(2000, gen).xs
    errs = []
    for i in range(pis.steps):
        t = i * pis.reference.h
        b, bs = pis.drift(t, xs[:, i]).double(), exact.drift(t, xs[:, i].double())
        errs.append(float((((b - bs) ** 2).sum(1).mean() / (bs ** 2).sum(1).mean()) ** 0.5))
    n = 3000
    x, log_w = pis.sample(n, seed=seed + 2)
    log_Z = float(torch.logsumexp(log_w, 0) - np.log(len(log_w)))
    truth = target.sample(2 * n, generator=torch.Generator().manual_seed(seed + 3))
    w2, floor = cs.metrics.w2(x, truth[:n]), cs.metrics.w2(truth[n:], truth[:n])
    print(f"PIS, {iters} iterations: log Z {log_Z:+.3f} (exact 0); W2 to {n} exact samples {w2:.3f} "
          f"(sample floor {floor:.3f}: two exact sets of {n}); drift error at t = 0.5: {errs[pis.steps // 2]:.3f}")

    fig = plt.figure(figsize=(12, 8))
    g = np.linspace(-4, 4, 15)
    gx, gy = np.meshgrid(g, g)
    pts = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float64)
    fine = np.linspace(-4, 4, 120)
    fx, fy = np.meshgrid(fine, fine)
    fpts = torch.tensor(np.stack([fx.ravel(), fy.ravel()], 1), dtype=torch.float64)
    for k, t in enumerate((0.2, 0.5, 0.8)):
        ax = fig.add_subplot(2, 3, k + 1)
        w, m, S = exact.marginal_components(t)
        dens = sum(float(w[j]) * torch.distributions.MultivariateNormal(m[j], S[j]).log_prob(fpts).exp()
                   for j in range(len(w)))
        ax.contourf(fx, fy, dens.numpy().reshape(fx.shape), levels=20, cmap="Blues")
        be = exact.drift(t, pts).numpy()
        bl = pis.drift(t, pts.float()).double().numpy()
        ax.quiver(gx, gy, be[:, 0], be[:, 1], color="black", angles="xy", scale_units="xy", scale=8, width=0.004)
        ax.quiver(gx, gy, bl[:, 0], bl[:, 1], color="tab:red", angles="xy", scale_units="xy", scale=8,
                  width=0.003, alpha=0.8)
        ax.set_title(f"t = {t}: exact (black) vs learned (red) drift", fontsize=9)
        ax.set(aspect="equal", xlabel="x_1", ylabel="x_2" if k == 0 else None)
        if k == 0:
            ax.legend(handles=[Line2D([], [], color="black", lw=1.5, label="exact drift b*(t, x)"),
                               Line2D([], [], color="tab:red", lw=1.5, label="learned drift b_theta(t, x)"),
                               Patch(color=plt.cm.Blues(0.6), label="exact density of X_t")],
                      loc="lower left", fontsize=7, framealpha=0.9)
    ax = fig.add_subplot(2, 3, 4)
    ax.plot(np.arange(pis.steps) * pis.reference.h, errs)
    ax.set_xlabel("t")
    ax.set_ylabel("|b_theta - b*| / |b*| along the paths")
    ax.set_yscale("log")
    ax.set_title(f"drift error after {iters} iterations (lv loss)", fontsize=9)
    ax = fig.add_subplot(2, 3, 5)
    ax.contourf(fx, fy, target.log_prob(fpts).exp().numpy().reshape(fx.shape), levels=20, cmap="Blues")
    ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", alpha=0.4, label=f"{n} PIS samples")
    ax.set_title(f"log Z {log_Z:.3f} (exact 0); W2 {w2:.3f} (sample floor {floor:.3f})", fontsize=9)
    ax.set(aspect="equal", xlabel="x_1", ylabel="x_2")
    ax.legend(handles=[ax.collections[-1], Patch(color=plt.cm.Blues(0.6), label="target density")],
              loc="lower left", fontsize=7, markerscale=4, framealpha=0.9)
    ax = fig.add_subplot(2, 3, 6)
    ax.plot(pis.history["loss"])
    ax.set_yscale("log")
    ax.set(xlabel="iteration", ylabel="loss (variance of log w over the batch)")
    ax.set_title("log-variance loss", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="pis_vs_exact.png", help="where to write the picture (PNG)")
    parser.add_argument("--iters", type=int, default=400, help="training iterations (batch 256, 50 steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the network, training and evaluation")
    main(**vars(parser.parse_args()))
