r"""Empirical convergence orders of torchsde's Euler–Maruyama (``method="euler"``) on the reference SDEs.

The order is the least-squares slope of log(error) against log(dt) over five dyadic step sizes, all
driven by the *same* Brownian path (common random numbers).

Theory (Kloeden & Platen 1992, §10.2 and §14.1; Milstein 1995):

* Euler–Maruyama has strong order 0.5 in general. The half order comes from the neglected Itô
  double integral :math:`\tfrac12 g g' ((\Delta W)^2 - h)` of the Milstein scheme, so it shows up only
  with **multiplicative** noise. Geometric Brownian motion :math:`dX = \mu X dt + s X dW` has the exact
  solution :math:`X_T = x_0 \exp((\mu - s^2/2) T + s W_T)` on the same path: strong order 0.5.
* With **additive** noise (:math:`g` independent of :math:`x`, as for OU, VP, VE, CLD) the Milstein
  correction vanishes, Euler–Maruyama *is* the Milstein scheme and its strong order is 1.0. So the
  expectation "OU strong order 0.5" is wrong: OU converges strongly at order 1, which we test against a
  fine-grid Euler solution on the same path (its own error is 2^4 times smaller than the finest one
  measured).
* The weak order of Euler–Maruyama is 1 for smooth coefficients; we measure it on
  :math:`E[X_T^2]` of OU against the exact moments (``OU.marginal``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchsde

from controlsamp.sde import GridBrownian

from controlsamp.processes import OU

DT = torch.float64
T = 1.0
STEPS = [2.0 ** -k for k in range(4, 9)]  # 1/16 ... 1/256


def slope(hs, errs) -> float:
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def euler(sde, y0, bm, h):
    ts = torch.tensor([0.0, T], dtype=DT)
    with torch.no_grad():
        return torchsde.sdeint(sde, y0, ts, bm=bm, dt=h, method="euler")[-1]


class GBM(torch.nn.Module):
    """dX = mu X dt + s X dW (multiplicative, diagonal noise)."""
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, mu: float, s: float):
        super().__init__()
        self.mu, self.s = mu, s

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        return self.s * y


def check_mc_error(errs, ses, what):
    """The Monte-Carlo standard error of every error estimate must be well below the estimate itself,
    else the slope would measure noise: require SE <= error / 10 at every step size."""
    for h, e, se in zip(STEPS, errs, ses):
        assert se <= 0.1 * abs(e), f"{what}: MC standard error {se:.2e} not << error {e:.2e} at dt={h}"


def test_gbm_strong_order_half():
    """Multiplicative noise: strong order 0.5 (Kloeden & Platen Thm 10.2.2), exact solution on the same path."""
    n, mu, s = 4000, 0.5, 1.0
    bm = torchsde.BrownianInterval(0.0, T, size=(n, 1), dtype=DT, entropy=2024, dt=STEPS[-1])
    y0 = torch.ones(n, 1, dtype=DT)
    exact = torch.exp((mu - 0.5 * s * s) * T + s * bm(0.0, T))
    errs, ses = [], []
    for h in STEPS:
        e = (euler(GBM(mu, s), y0, bm, h) - exact).abs()
        errs.append(float(e.mean()))
        ses.append(float(e.std()) / math.sqrt(n))
    check_mc_error(errs, ses, "GBM strong")
    order = slope(STEPS, errs)
    assert abs(order - 0.5) <= 0.15, f"GBM strong order {order:.3f}, errors {errs}"


def test_ou_strong_order_one():
    """Additive noise: Euler–Maruyama = Milstein, strong order 1.0 (not 0.5); reference = Euler at dt/16."""
    n = 2000
    proc = OU(1, theta=1.0, sigma=1.0, T=T)
    h_ref = STEPS[-1] / 16
    bm = torchsde.BrownianInterval(0.0, T, size=(n, 1), dtype=DT, entropy=77, dt=h_ref)
    y0 = torch.ones(n, 1, dtype=DT)
    ref = euler(proc.sde(), y0, bm, h_ref)
    errs, ses = [], []
    for h in STEPS:
        e = (euler(proc.sde(), y0, bm, h) - ref).abs()
        errs.append(float(e.mean()))
        ses.append(float(e.std()) / math.sqrt(n))
    # the coarse solves saw the same path: its increments add up to W_T
    grid = torch.arange(0.0, T + 1e-12, STEPS[0], dtype=DT).tolist()
    incs = sum(bm(a, b) for a, b in zip(grid[:-1], grid[1:]))
    assert torch.allclose(incs, bm(0.0, T), atol=1e-12)
    check_mc_error(errs, ses, "OU strong")
    order = slope(STEPS, errs)
    assert abs(order - 1.0) <= 0.15, f"OU strong order {order:.3f}, errors {errs}"


def test_ou_weak_order_one():
    r"""Weak order 1 on :math:`E[X_T^2]` of OU (theta = 4, sigma = 1, x0 = 1), exact value from ``OU.marginal``.

    Variance reduction, common to all step sizes: the control variate
    :math:`C = (e^{-\theta T} x_0 + \sigma \sum_k e^{-\theta (T - t_k - h/2)} \Delta W_k)^2` on the finest grid,
    whose mean :math:`m^2 + \sigma^2 h \sum_k w_k^2` is known exactly, is highly correlated with
    :math:`X_T^2` at every step size; the estimate is :math:`\overline{X_T^2 - C} + E[C] - E[X_T^2]`. The test
    checks its Monte-Carlo standard error is below a tenth of the measured error at every step size, and
    that the measured error agrees (within 5 SE) with the Euler chain's own closed-form second moment.
    """
    n, theta, sigma, x0 = 20000, 4.0, 1.0, 1.0
    proc = OU(1, theta=theta, sigma=sigma, T=T)
    mean, cov = proc.marginal(T, torch.tensor([x0]))
    target = float(mean[0] ** 2 + cov[0, 0])
    hf = STEPS[-1]
    N = round(T / hf)
    gen = torch.Generator().manual_seed(11)
    dW = torch.randn(N, n, 1, dtype=DT, generator=gen) * math.sqrt(hf)
    bm = GridBrownian(dW, dW.shape[0] * hf)  # W on the finest grid, from fixed increments
    w = torch.exp(-theta * (T - hf * torch.arange(N, dtype=DT) - hf / 2))
    m_T = math.exp(-theta * T) * x0
    C = (m_T + sigma * (w[:, None] * dW[:, :, 0]).sum(0)) ** 2
    EC = m_T ** 2 + sigma ** 2 * hf * float((w * w).sum())
    y0 = torch.full((n, 1), x0, dtype=DT)
    errs, ses = [], []
    for h in STEPS:
        x = euler(proc.sde(), y0, bm, h)[:, 0]
        d = x * x - C
        est = float(d.mean()) + EC - target
        se = float(d.std()) / math.sqrt(n)
        # closed-form second moment of the Euler chain X' = (1 - theta h) X + sigma dW
        r, K = 1.0 - theta * h, round(T / h)
        euler_m2 = (x0 * r ** K) ** 2 + sigma ** 2 * h * (1 - r ** (2 * K)) / (1 - r * r)
        assert abs(est - (euler_m2 - target)) <= 5 * se, f"dt={h}: measured {est:.3e} vs Euler {euler_m2 - target:.3e}"
        errs.append(est)
        ses.append(se)
    check_mc_error(errs, ses, "OU weak")
    order = slope(STEPS, [abs(e) for e in errs])
    assert abs(order - 1.0) <= 0.15, f"OU weak order {order:.3f}, errors {errs}"
