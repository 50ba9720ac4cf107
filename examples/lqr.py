"""A learned controller next to the exact one: the stochastic adjoint method on a 2-d LQR.

A noisy damped oscillator dX = (A X + B u) dt + sigma dW, pushed by a force u on the velocity only, should
be brought to rest at the origin: cost E[int_0^T (X'QX + u'Ru) dt + X_T' F X_T]. `cs.solve` trains an
affine feedback u = K_i x + k_i on the time grid with `method="adjoint"` (torchsde's stochastic adjoint).
Left: the learned gains K_i next to the Riccati gains K(t) = -R^{-1} B' P(t) of `cs.exact.LQR` and the
exact optimum of the Euler-discretised problem that the policy is trained on (dashed). Right: sample paths
of the position under the learned control and without control, driven by the same noise.

    python examples/lqr.py --out lqr.png
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import controlsamp as cs  # noqa: E402


def main(out: str = "lqr.png", iters: int = 300, seed: int = 0) -> str:
    torch.set_num_threads(1)
    T, steps = 2.0, 50
    A = np.array([[0.0, 1.0], [-1.0, -0.2]])  # position, velocity: a lightly damped oscillator
    B = np.array([[0.0], [1.0]])               # the control is a force
    sigma = 0.5 * np.eye(2)
    Q, R, F = np.diag([1.0, 0.1]), np.array([[0.2]]), np.diag([5.0, 1.0])
    mean0, cov0 = np.array([2.0, 0.0]), 0.5 * np.eye(2)  # X_0 ~ N(mean0, cov0)
    At, Qt, Ft = (torch.tensor(v, dtype=torch.float32) for v in (A, Q, F))
    problem = cs.ControlProblem(
        2, drift=lambda t, x: x @ At.T, sigma=sigma,
        terminal_cost=lambda x: ((x @ Ft) * x).sum(1), running_cost=lambda t, x: ((x @ Qt) * x).sum(1),
        control_matrix=B, control_cost=R, x0=(mean0, cov0), T=T, steps=steps)
    lqr = cs.exact.LQR(A, B, Q, R, F, sigma, T)

    sol = cs.solve(problem, method="adjoint", policy="affine", iters=iters, batch=512, lr=0.2, seed=seed,
                   progress=False)
    cost, se = sol.cost(n=20_000, steps=500, seed=1)
    exact = lqr.cost(mean0, cov0)
    print(f"learned cost {cost:.4f} +- {se:.4f} (Monte Carlo, 500 Euler steps); Riccati optimum {exact:.4f} "
          f"(gap {100 * (cost - exact) / exact:+.2f}%). For reference, the optimal cost of the {steps}-step Euler "
          f"problem the policy trains on (its own discretisation, not comparable with the 500-step evaluation): "
          f"{lqr.euler_cost(mean0, cov0, steps=steps):.4f}")

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    h = T / steps
    t_grid = np.arange(steps) * h
    learned = sol.module.K.detach().double()[:, 0, :].numpy()          # (steps, d): u = K_i x
    euler = lqr.euler_gains(steps)[:, 0, :].numpy()
    ts = np.linspace(0, T, 201)
    riccati = np.stack([lqr.gain(float(t))[0].numpy() for t in ts])
    for j, (name, color) in enumerate([("position", "C0"), ("velocity", "C3")]):
        ax0.step(t_grid, learned[:, j], where="post", color=color, lw=1.8, label=f"learned K[{name}]")
        ax0.plot(ts, riccati[:, j], color="k", lw=0.9, label="Riccati K(t)" if j == 0 else None)
        ax0.step(t_grid, euler[:, j], where="post", color=color, ls="--", lw=1.0,
                 label=f"Euler-grid optimum K[{name}]")
    ax0.set(title=f"feedback gains: adjoint, {iters} iterations", xlabel="t", ylabel="gain (u = K x)")
    ax0.legend(fontsize=8)

    gen = torch.Generator().manual_seed(seed + 2)
    n = 10
    start = problem.sample_x0(n, gen)
    noise = torch.randn(n, steps, 2, generator=gen)  # standard normals: the same noise drives both paths
    controlled = problem.simulate(sol.module, start, noise=noise).xs
    free = problem.simulate(lambda t, x: torch.zeros(x.shape[0], 1, dtype=x.dtype), start, noise=noise).xs
    t_path = np.linspace(0, T, steps + 1)
    for i in range(n):
        ax1.plot(t_path, free[i, :, 0], color="0.6", lw=0.8, label="uncontrolled" if i == 0 else None)
        ax1.plot(t_path, controlled[i, :, 0], color="C2", lw=1.0, label="learned control" if i == 0 else None)
    ax1.axhline(0.0, color="crimson", lw=0.8, ls=":", label="target")
    ax1.set(title=f"position paths, same noise (cost {cost:.3f} vs optimum {exact:.3f})", xlabel="t",
            ylabel="position x1")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="lqr.png", help="where to write the picture (PNG)")
    ap.add_argument("--iters", type=int, default=300, help="training iterations (about 10 s on a laptop CPU)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the training noise")
    print("wrote", main(**vars(ap.parse_args())))
