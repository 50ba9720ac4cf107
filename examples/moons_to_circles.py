r"""A neural Schrödinger bridge between two data sets, two moons -> concentric circles, by bridge matching.

The Schrödinger bridge P* = argmin { KL(P | R) : P_0 = moons, P_1 = circles } for the Brownian reference
R: dX = sigma dW on [0, 1] is learned as a pair of drifts, dX_t = f(t, X_t) dt + sigma dW_t from the
moons and its time reversal from the circles. `cs.bridges.DSBM` (diffusion Schrödinger bridge matching,
Shi, De Bortoli, Campbell & Doucet 2023) alternates the reciprocal projection (draw a point of R's
Brownian bridge between coupled ends (X_0, X_1)) and the Markovian projection, a regression

    f = argmin_f E || f(t, X_t) - (X_1 - X_t) / (1 - t) ||^2,   X_t = (1 - t) X_0 + t X_1 + sigma sqrt(t (1 - t)) Z,

(and its mirror image for the backward drift) on couplings simulated with the other direction, starting from
R's own coupling; it is the iterative Markovian fitting counterpart of IPF (Fortet 1940; Kullback 1968),
whose half-bridges by mean matching are `cs.bridges.DSB` (De Bortoli, Thornton, Heng & Doucet 2021,
`--method dsb`). Top: the two data sets; 30 forward paths; generated X_1 over the circles. Bottom: the
untrained reference's X_1 (moons + N(0, sigma^2 I)); the backward process's X_0 over the moons; the
regression loss of each half-bridge. Printed: W2 (`cs.metrics.w2`, 1000 points) to fresh samples of the end
law, next to the sample floor (W2 between two independent sets of 1000 data points: the best possible).

    python examples/moons_to_circles.py --out moons_to_circles.png
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402


def main(out: str = "moons_to_circles.png", method: str = "dsbm", ipf_iters: int = 2,
         iters_per_half: int = 800, seed: int = 0) -> str:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    moons = cs.targets.sample_dataset("moons", 10_000, gen)
    circles = cs.targets.sample_dataset("circles", 10_000, gen)
    test_0, test_1 = (cs.targets.sample_dataset(name, 1000, gen) for name in ("moons", "circles"))
    # ema: the short run needs a short average (the default 0.999 would remember the initial weights)
    bridge = getattr(cs.bridges, method.upper())(moons, circles, sigma=1.0, T=1.0, steps=20, hidden=128,
                                                 ema=0.99, seed=seed)
    _, ref_1 = bridge.sample(1000, seed=seed + 1)  # an untrained forward drift is the reference's
    bridge.fit(ipf_iters, iters_per_half, batch=512, lr=3e-3, seed=seed, progress=False)
    _, gen_1 = bridge.sample(1000, seed=seed + 1)
    gen_0, _ = bridge.sample_backward(1000, seed=seed + 2)
    paths = bridge.sample_paths(30, "forward", seed=seed + 3).numpy()

    w2 = {"reference X_1": cs.metrics.w2(ref_1, test_1), "learned X_1": cs.metrics.w2(gen_1, test_1),
          "floor (two circles samples)": cs.metrics.w2(circles[:1000], test_1),
          "learned backward X_0 vs moons": cs.metrics.w2(gen_0, test_0),
          "floor (two moons samples)": cs.metrics.w2(moons[:1000], test_0)}
    print(f"{method.upper()}, {ipf_iters} IPF iterations x {iters_per_half} steps per half-bridge; W2 to 1000 "
          "fresh samples of the end law:")
    for name, v in w2.items():
        print(f"  {name:32s} {v:.3f}")

    fig, axes = plt.subplots(2, 3, figsize=(14, 9))
    kw = dict(s=2, alpha=0.4)
    lim = dict(xlim=(-5, 5), ylim=(-5, 5), aspect="equal")
    a = axes[0, 0]
    a.scatter(*moons[:2000].T, color="tab:blue", label="source: moons", **kw)
    a.scatter(*circles[:2000].T, color="tab:orange", label="target: circles", **kw)
    a.set(title="the two data sets", **lim)
    a.legend(loc="lower left", markerscale=4, fontsize=8)
    a = axes[0, 1]
    a.scatter(*moons[:2000].T, color="tab:blue", s=1, alpha=0.15)
    a.scatter(*circles[:2000].T, color="tab:orange", s=1, alpha=0.15)
    for p in paths:
        a.plot(p[:, 0], p[:, 1], color="k", lw=0.7, alpha=0.7)
    a.scatter(*paths[:, 0].T, color="tab:blue", s=14, zorder=3, label="X_0")
    a.scatter(*paths[:, -1].T, color="crimson", s=14, zorder=3, label="X_1")
    a.set(title=f"30 forward paths of the learned bridge ({bridge.steps} Euler steps)", **lim)
    a.legend(loc="lower left", fontsize=8)
    c_floor, m_floor = w2["floor (two circles samples)"], w2["floor (two moons samples)"]
    for a, pts, ref, title, labels in [
            (axes[0, 2], gen_1, test_1, f"learned X_1 over circles; W2 = {w2['learned X_1']:.3f} "
                                        f"(sample floor {c_floor:.3f})", ("circles", "learned X_1")),
            (axes[1, 0], ref_1, test_1, f"untrained reference X_1; W2 = {w2['reference X_1']:.3f} "
                                        f"(sample floor {c_floor:.3f})", ("circles", "reference X_1")),
            (axes[1, 1], gen_0, test_0, f"backward X_0 over moons; W2 = "
                                        f"{w2['learned backward X_0 vs moons']:.3f} (sample floor {m_floor:.3f})",
             ("moons", "learned backward X_0"))]:
        a.scatter(*ref.T, color="0.6", label=labels[0], **kw)
        a.scatter(*pts.T, color="crimson", label=labels[1], **kw)
        a.set(title=title, **lim)
        a.legend(loc="lower left", markerscale=4, fontsize=8)
    a = axes[1, 2]
    loss, half = np.array(bridge.history["loss"]), np.array(bridge.history["half"])
    for h in np.unique(half):
        idx = np.flatnonzero(half == h)
        smooth = np.convolve(loss[idx], np.ones(25) / 25, mode="valid")
        a.plot(idx[: len(smooth)] + 12, smooth, label=("backward" if h % 2 == 0 else "forward") + f" half {int(h)}")
    a.set(xlabel="step", ylabel="regression loss", title="regression loss of each half-bridge (moving average of 25)")
    a.legend(fontsize=8)
    for a in axes.flat:
        a.title.set_fontsize(9)
    for a in (axes[0, 0], axes[0, 1], axes[0, 2], axes[1, 0], axes[1, 1]):
        a.set(xlabel="x_1", ylabel="x_2")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="moons_to_circles.png", help="where to write the picture (PNG)")
    ap.add_argument("--method", choices=("dsbm", "dsb"), default="dsbm",
                    help="bridge matching (DSBM) or mean matching (DSB) half-bridges")
    ap.add_argument("--ipf-iters", dest="ipf_iters", type=int, default=2, help="IPF / IMF iterations")
    ap.add_argument("--iters-per-half", dest="iters_per_half", type=int, default=800,
                    help="training steps per half-bridge (batch 512)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the networks and the training")
    print("wrote", main(**vars(ap.parse_args())))
