r"""IPF iterates converging to the closed-form Gaussian Schrödinger bridge.

The Schrödinger bridge P* = argmin { KL(P | R) : P_0 = mu_0, P_1 = mu_1 } for the Brownian reference
R: dX = sigma dW on [0, 1] (sigma = 1) is the limit of iterative proportional fitting (Fortet 1940;
Kullback 1968; as diffusion half-bridges De Bortoli et al. 2021), which alternates two KL projections,

    P^{2n+1} = argmin_{P_1 = mu_1} KL(P | P^{2n}),    P^{2n+2} = argmin_{P_0 = mu_0} KL(P | P^{2n+1}),

starting from P^0 = R started at mu_0, each the time reversal of the previous iterate started from the
other end. Between two Gaussians mu_0, mu_1 every iterate is Gaussian, so `cs.bridges.GaussianIPF` does
each half-bridge exactly by moment equations (or, `method="regression"`, by least squares on simulated
paths, as a learned solver would); `cs.exact.GaussianBridge` is the fixed point. Near it the coupling
error |Cov(X_0, X_1) - C*| contracts per iteration by rho_max^4, rho_max the largest canonical
correlation of the bridge's coupling.

Top: 2-sigma ellipses of the marginals at t = 0, 1/4, ..., 1 of IPF iterates (colour; red: mean path)
over the exact bridge's (dashed). Bottom left: the coupling error per iteration, exact half-bridges and regression
half-bridges (10^4 paths, which floor at the Monte Carlo level), with the fitted rate. Bottom right:
the mean and 2-sigma band of coordinate 0 over t.

    python examples/gaussian_bridge.py --out gaussian_bridge.png
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402


def rotated(angle: float, variances) -> np.ndarray:
    R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return R @ np.diag(variances) @ R.T


def ellipse(mean, cov, k: float = 2.0) -> np.ndarray:
    """Points of the k-sigma ellipse of N(mean, cov), (100, 2)."""
    a = np.linspace(0, 2 * np.pi, 100)
    return mean.numpy() + k * np.stack([np.cos(a), np.sin(a)], 1) @ np.linalg.cholesky(cov.numpy()).T


def main(out: str = "gaussian_bridge.png", iters: int = 40, show=(0, 1, 3), seed: int = 0) -> str:
    torch.set_num_threads(1)
    m0, S0, m1, S1 = [-3.0, 0.0], np.diag([0.5, 3.0]), [3.0, 1.0], rotated(0.6, [4.0, 0.3])
    ipf = cs.bridges.GaussianIPF(m0, S0, m1, S1, sigma=1.0, T=1.0)
    bridges = {}
    for n in range(iters + 1):  # the bridge between an iterate's own marginals is the iterate itself
        if n in show:
            bridges[f"iterate {n}"] = ipf.bridge()
        if n < iters:
            ipf.fit(1)
    bridges[f"iterate {iters}"] = ipf.bridge()
    exact, rate = ipf.target, ipf.convergence_rate()
    reg = cs.bridges.GaussianIPF(m0, S0, m1, S1, method="regression", steps=50, n_samples=10_000,
                                 seed=seed).fit(12)
    err = np.array([h["coupling_error"] for h in ipf.history])
    c_star = float(torch.linalg.matrix_norm(exact.coupling()[1][:2, 2:]))
    print(f"coupling error after {iters} IPF iterations: {err[-1]:.2e} (|C*| = {c_star:.3f}); "
          f"fitted rate {rate:.4f} per iteration")
    print(f"regression half-bridges: coupling error {reg.history[-1]['coupling_error']:.2e} after {reg.iterations}")

    ts = np.linspace(0, 1, 5)
    colors = plt.cm.viridis(ts)
    fig = plt.figure(figsize=(15, 8))
    for j, (name, br) in enumerate(bridges.items()):
        ax = fig.add_subplot(2, 4, j + 1)
        for t, c in zip(ts, colors):
            e = ellipse(*exact.marginal(float(t)))
            ax.plot(e[:, 0], e[:, 1], "k--", lw=0.8)
            e = ellipse(*br.marginal(float(t)))
            ax.plot(e[:, 0], e[:, 1], color=c, lw=1.6, label=f"t = {t:.2f}")
        fine = np.linspace(0, 1, 41)
        me = np.stack([exact.marginal(float(t))[0].numpy() for t in fine])
        mb = np.stack([br.marginal(float(t))[0].numpy() for t in fine])
        ax.plot(me[:, 0], me[:, 1], "k--", lw=0.8, label="exact bridge (2-sigma, mean)")
        ax.plot(mb[:, 0], mb[:, 1], color="tab:red", lw=1.2, label="mean path of the iterate")
        ax.set(xlim=(-8, 8), ylim=(-6, 7), aspect="equal", xlabel="x_t[0]")
        if j == 0:
            ax.set_ylabel("x_t[1]")
        ax.set_title(f"{name}: KL(P_1 | mu_1) = {ipf.history[int(name.split()[1])]['klT']:.2g}", fontsize=9)
        if j == 0:  # one legend for the row, above it: the colours of t, the mean path, the exact bridge
            fig.legend(*ax.get_legend_handles_labels(), loc="upper center", ncol=7, fontsize=8,
                       title="top row: 2-sigma ellipses of the marginals of X_t", title_fontsize=8)
    ax = fig.add_subplot(2, 2, 3)
    ns = np.arange(len(err))
    ax.semilogy(ns, err, "o-", ms=3, label="exact (moment) half-bridges")
    ax.semilogy(np.arange(len(reg.history)), [h["coupling_error"] for h in reg.history], "s-", ms=3,
                label="regression half-bridges (10^4 paths, 50 steps)")
    ref = np.flatnonzero(err > 1e-10)[-1]
    ax.semilogy(ns, err[ref] * rate ** (ns - ref), "k:", label=f"fitted rate {rate:.3f}^n")
    ax.set(xlabel="IPF iteration n", ylabel="|C_n - C*|_F", ylim=(1e-16, 10),
           title="coupling error: Cov(X_0, X_1) of the iterate vs the exact bridge")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 2, 4)
    fine = np.linspace(0, 1, 101)
    for (name, br), c in zip(list(bridges.items()) + [("exact bridge", exact)], ["C0", "C1", "C2", "C3", "k"]):
        mv = [br.marginal(float(t)) for t in fine]
        m = np.array([float(a[0]) for a, _ in mv])
        s = np.array([float(b[0, 0]) ** 0.5 for _, b in mv])
        ls = "--" if c == "k" else "-"
        ax.plot(fine, m, color=c, ls=ls, label=name)
        ax.plot(fine, np.stack([m - 2 * s, m + 2 * s], 1), color=c, lw=0.7, ls=ls)
        ax.fill_between(fine, m - 2 * s, m + 2 * s, color=c, alpha=0.08 if c != "k" else 0.0)
    ax.set(xlabel="t", ylabel="x_t[0]", title="coordinate 0: mean and 2-sigma band over t")
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="gaussian_bridge.png", help="where to write the picture (PNG)")
    ap.add_argument("--iters", type=int, default=40, help="IPF iterations with exact half-bridges")
    ap.add_argument("--seed", type=int, default=0, help="seed of the regression half-bridges' paths")
    print("wrote", main(**vars(ap.parse_args())))
