"""Longer Monte-Carlo checks of the closed forms in higher dimension (`make test-slow`)."""
import math

import numpy as np
import pytest
import torch

import controlsamp as cs
from strategies import spd_from_seed

pytestmark = pytest.mark.slow


def test_follmer_euler_maruyama_10d_gaussian():
    """d = 10, condition number 100: EM with the exact drift (1000 steps, 1e5 paths) ends at N(m, S).

    5-standard-error bands per entry; the O(h) bias (h = 1e-3) is ~1e-3 of the scale, a fifth of a band."""
    d, n, steps = 10, 100_000, 1000
    S = spd_from_seed(5, d, 2.0, 0.1)
    m = np.linspace(-1, 1, d)
    sf = cs.exact.SchrodingerFollmer(cs.targets.Gaussian(m, S), sigma=1.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(n, d, dtype=torch.float64)
    h = 1.0 / steps
    for k in range(steps):
        x = x + sf.drift(k * h, x) * h + math.sqrt(h) * torch.randn(n, d, dtype=torch.float64, generator=gen)
    assert torch.all((x.mean(0) - torch.as_tensor(m)).abs() < 5 * x.std(0) / math.sqrt(n))
    xc = x - x.mean(0)
    prods = xc.unsqueeze(2) * xc.unsqueeze(1)
    assert torch.all((prods.mean(0) - torch.as_tensor(S)).abs() < 5 * prods.std(0) / math.sqrt(n))


def test_lqr_closed_loop_5d():
    """d = 5, m = 3: the simulated optimal cost (2000 steps, 1e5 paths) matches cost(x0) within 5 se,
    and a policy whose gain is off by 10% costs more, by more than 5 se of the difference."""
    rng = np.random.default_rng(7)
    d, m, n, steps, T = 5, 3, 100_000, 2000, 1.0
    A = rng.normal(size=(d, d)) / math.sqrt(d) - 0.3 * np.eye(d)
    B = rng.normal(size=(d, m))
    lqr = cs.exact.LQR(A, B, np.eye(d), 0.5 * np.eye(m), np.eye(d), 0.4, T)
    x0 = rng.normal(size=d)
    h = T / steps
    gains = [lqr.gain(k * h) for k in range(steps)]
    At, Bt = torch.as_tensor(A), torch.as_tensor(B)
    costs = {}
    for scale in (1.0, 1.1):
        gen = torch.Generator().manual_seed(1)  # common random numbers for the comparison
        x = torch.as_tensor(x0).expand(n, d).clone()
        c = torch.zeros(n, dtype=torch.float64)
        for k in range(steps):
            u = scale * x @ gains[k].T
            c += h * ((x * x).sum(1) + 0.5 * (u * u).sum(1))
            x = x + h * (x @ At.T + u @ Bt.T) + 0.4 * math.sqrt(h) * torch.randn(n, d, dtype=torch.float64, generator=gen)
        costs[scale] = c + (x * x).sum(1)
    opt = costs[1.0]
    assert abs(float(opt.mean()) - lqr.cost(x0)) < 5 * float(opt.std()) / math.sqrt(n)
    diff = costs[1.1] - opt
    assert float(diff.mean()) > 5 * float(diff.std()) / math.sqrt(n)
