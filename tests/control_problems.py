"""Problems with known answers for the control tests: random LQRs and a linearly solvable double well."""
import math

import numpy as np
import torch

import controlsamp as cs


def random_lqr(d: int, seed: int, kl: bool = False, steps: int = 50, T: float = 1.0):
    """A random stable LQR as (ControlProblem, exact LQR, x0 mean, x0 covariance).

    ``kl=True`` makes it a relative-entropy problem (B = sigma, R = (rho/2) I) for the log-variance loss."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / math.sqrt(d) - np.eye(d)
    if kl:
        B = 0.5 * rng.normal(size=(d, d)) / math.sqrt(d) + np.eye(d)
        sigma, R = B, 0.5 * rng.uniform(0.5, 2.0) * np.eye(d)
    else:
        m = max(1, d // 2)
        B = rng.normal(size=(d, m))
        sigma, R = 0.5 * np.eye(d), np.diag(rng.uniform(0.3, 1.0, m))
    Q = np.diag(rng.uniform(0.5, 1.5, d))
    F = np.diag(rng.uniform(0.5, 1.5, d))
    mean0, cov0 = np.ones(d), 0.5 * np.eye(d)
    At, Qt, Ft = (torch.tensor(v, dtype=torch.float32) for v in (A, Q, F))

    def drift(t, x):
        return x @ At.to(x.dtype).T

    def running(t, x):
        return ((x @ Qt.to(x.dtype)) * x).sum(1)

    def terminal(x):
        return ((x @ Ft.to(x.dtype)) * x).sum(1)

    problem = cs.ControlProblem(d, drift, sigma, terminal, running_cost=running, control_matrix=B,
                                control_cost=R, x0=(mean0, cov0), T=T, steps=steps)
    return problem, cs.exact.LQR(A, B, Q, R, F, sigma, T), mean0, cov0


def gain_error(solution, lqr, euler: bool = False) -> float:
    """sqrt(sum_i |K_i - K*_i|^2 / sum_i |K*_i|^2) over the affine policy's grid, K*_i the Riccati gain at t_i
    or, with ``euler``, the exact optimum of the Euler-discretised problem the policy was trained on."""
    pol = solution.module
    h = pol.T / pol.steps
    ref = lqr.euler_gains(pol.steps) if euler else [lqr.gain(i * h) for i in range(pol.steps)]
    num = den = 0.0
    for i in range(pol.steps):
        K = ref[i]
        num += float(torch.linalg.norm(pol.K[i].detach().double() - K) ** 2)
        den += float(torch.linalg.norm(K) ** 2)
    return math.sqrt(num / den)


def double_well(steps: int = 50, barrier: float = 0.5):
    """dX = -U'(X) dt + (u dt + dW), U = barrier (x^2 - 1)^2, X_0 = -1, R = 1/2, q = (x - 1)^2 / 2,
    g = 2 (x - 1)^2: a linearly solvable problem whose optimal cost is -log E[exp(-int q dt - g(X_T))]
    without control."""
    def drift(t, x):
        return -4 * barrier * x * (x ** 2 - 1)

    def running(t, x):
        return 0.5 * (x[:, 0] - 1) ** 2

    def terminal(x):
        return 2.0 * (x[:, 0] - 1) ** 2

    return cs.ControlProblem(1, drift, 1.0, terminal, running_cost=running, x0=[-1.0], steps=steps)


def free_energy(problem, n: int, steps: int, seed: int = 0):
    """-log E[exp(-int q dt - g(X_T))] under the uncontrolled Euler scheme: (estimate, delta-method se)."""
    gen = torch.Generator().manual_seed(seed)
    x = problem.sample_x0(n, gen, dtype=torch.float64)
    h = problem.T / steps
    w = torch.zeros(n, dtype=torch.float64)
    for i in range(steps):
        w += h * problem.q(i * h, x)
        x = x + problem.f(i * h, x) * h + math.sqrt(h) * torch.randn(n, 1, generator=gen, dtype=torch.float64) @ \
            problem.sigma.T
    w += problem.g(x)
    lw = -w
    mx = lw.max()
    e = torch.exp(lw - mx)
    est = -(torch.log(e.mean()) + mx)
    return float(est), float(e.std() / (e.mean() * math.sqrt(n)))
