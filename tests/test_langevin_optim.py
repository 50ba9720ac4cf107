"""controlsamp.langevin.optim (SGLD, TUSLA, TheoPouLa) against independent numerics.

* one step of each optimizer vs the update written out here in numpy from the papers' formulas, with
  the noise re-drawn from an identically seeded generator; TUSLA's |theta| is the norm of the whole
  parameter vector (every tensor of every group), checked on a case where a per-tensor or per-group
  norm gives a visibly different step;
* SGLD on N(0, s I): the long-run second moment equals the unadjusted Langevin invariant variance
  s / (beta (1 - h / (2 s))) (an exact AR(1) computation) within a CLT band whose effective sample size
  accounts for the autocorrelation, and the band is narrow enough to tell it from s / beta;
* an asymmetric double well: plain SGD stays in the local basin, TUSLA and TheoPouLa reach the global
  one; beta and the number of iterations come from the exact 1-d mean first-passage time and invariant
  law of the Langevin diffusion with each algorithm's own drift (quadrature here, not the package);
  then the same in 10-d;
* a quartic loss from |theta_0| = 10 at lr 0.1: SGD blows up, the tamed algorithms stay bounded and end
  within the noise scale of 0;
* a strongly convex quadratic at large beta: the iterates' mean is the minimiser (for TUSLA with eta > 0
  the minimiser of the regularised objective, from scipy);
* bad hyperparameters raise ValueError naming the argument; a non-finite gradient raises
  FloatingPointError naming the parameter and the optimizer.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch

from controlsamp.langevin.optim import SGLD, TUSLA, TheoPouLa

Z = 4.0  # CLT band half-width in standard errors
F64 = torch.float64


def _param(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, requires_grad=True)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------- 1. one step by hand
def _setup():
    """Three parameters in two groups; p1 has no gradient. |p0| = 5.03, |p1| = 8.06, |p2| = 0.37: the
    norm of the whole vector (9.51) differs a lot from each tensor's and each group's."""
    p0 = _param([3.0, -4.0, 0.5])
    p1 = _param([1.0, 8.0])                     # no gradient: not updated, but part of |theta|
    p2 = _param([[0.1, -0.2], [0.05, 0.3]])
    p0.grad = torch.tensor([0.7, -1.2, 2.0], dtype=F64)
    p2.grad = torch.tensor([[1.5, -0.3], [0.2, -2.5]], dtype=F64)
    return p0, p1, p2


def _reference_noise(seed):
    """The noise the optimizer should draw: group order, grad-None parameters skipped."""
    g = torch.Generator().manual_seed(seed)
    return _np(torch.randn((3,), generator=g, dtype=F64)), _np(torch.randn((2, 2), generator=g, dtype=F64))


def _tamed_np(g, lr, eps):
    return g / (1 + math.sqrt(lr) * np.abs(g)) * (1 + math.sqrt(lr) / (eps + np.abs(g)))


def test_sgld_one_step_by_hand():
    p0, p1, p2 = _setup()
    th0, th1, th2, g0, g2 = _np(p0), _np(p1), _np(p2), _np(p0.grad), _np(p2.grad)
    gen = torch.Generator().manual_seed(7)
    opt = SGLD([{"params": [p0, p1]}, {"params": [p2], "lr": 0.02, "beta": 3.0}], lr=0.1, beta=2.0,
               generator=gen)
    assert opt.step(lambda: 1.25) == 1.25  # the closure's loss comes back
    xi0, xi2 = _reference_noise(7)
    np.testing.assert_allclose(_np(p0), th0 - 0.1 * g0 + math.sqrt(2 * 0.1 / 2.0) * xi0, rtol=1e-13)
    np.testing.assert_allclose(_np(p2), th2 - 0.02 * g2 + math.sqrt(2 * 0.02 / 3.0) * xi2, rtol=1e-13)
    np.testing.assert_array_equal(_np(p1), th1)


def test_tusla_one_step_whole_vector_norm():
    p0, p1, p2 = _setup()
    th0, th1, th2, g0, g2 = _np(p0), _np(p1), _np(p2), _np(p0.grad), _np(p2.grad)
    gen = torch.Generator().manual_seed(11)
    hyper = [dict(lr=0.1, beta=50.0, eta=0.3, r=1.5), dict(lr=0.02, beta=5.0, eta=0.1, r=1.0)]
    opt = TUSLA([{"params": [p0, p1], **hyper[0]}, {"params": [p2], **hyper[1]}], lr=1.0, generator=gen)
    opt.step()
    xi0, xi2 = _reference_noise(11)

    def expected(th, g, xi, h, norm):
        t = norm ** (2 * h["r"])
        drift = (g + h["eta"] * th * t) / (1 + math.sqrt(h["lr"]) * t)
        return th - h["lr"] * drift + math.sqrt(2 * h["lr"] / h["beta"]) * xi

    whole = math.sqrt(np.sum(th0 ** 2) + np.sum(th1 ** 2) + np.sum(th2 ** 2))
    np.testing.assert_allclose(_np(p0), expected(th0, g0, xi0, hyper[0], whole), rtol=1e-13)
    np.testing.assert_allclose(_np(p2), expected(th2, g2, xi2, hyper[1], whole), rtol=1e-13)
    np.testing.assert_array_equal(_np(p1), th1)
    # the alternatives differ by far more than the tolerance, so the check above pins the whole norm
    alternatives = {
        "per tensor": (np.linalg.norm(th0), np.linalg.norm(th2)),
        "per group": (math.sqrt(np.sum(th0 ** 2) + np.sum(th1 ** 2)), np.linalg.norm(th2)),
        "grad-carrying only": (math.sqrt(np.sum(th0 ** 2) + np.sum(th2 ** 2)),) * 2,
    }
    for name, (n0, n2) in alternatives.items():
        gap = max(np.abs(expected(th0, g0, xi0, hyper[0], n0) - _np(p0)).max(),
                  np.abs(expected(th2, g2, xi2, hyper[1], n2) - _np(p2)).max())
        assert gap > 1e-3, name


def test_theopoula_one_step_by_hand():
    p0, p1, p2 = _setup()
    th0, th1, th2, g0, g2 = _np(p0), _np(p1), _np(p2), _np(p0.grad), _np(p2.grad)
    gen = torch.Generator().manual_seed(3)
    opt = TheoPouLa([{"params": [p0, p1]}, {"params": [p2], "lr": 0.02, "eta": 0.2, "r": 1.0}],
                    lr=0.1, beta=40.0, eps=0.05, generator=gen)
    opt.step()
    xi0, xi2 = _reference_noise(3)
    whole = math.sqrt(np.sum(th0 ** 2) + np.sum(th1 ** 2) + np.sum(th2 ** 2))
    exp0 = th0 - 0.1 * _tamed_np(g0, 0.1, 0.05) + math.sqrt(2 * 0.1 / 40.0) * xi0  # group 0: eta = 0
    conf2 = 0.2 * th2 * whole ** 2 / (1 + math.sqrt(0.02) * whole ** 2)  # subtracted, like the gradient
    exp2 = th2 - 0.02 * (_tamed_np(g2, 0.02, 0.05) + conf2) + math.sqrt(2 * 0.02 / 40.0) * xi2
    np.testing.assert_allclose(_np(p0), exp0, rtol=1e-13)
    np.testing.assert_allclose(_np(p2), exp2, rtol=1e-13)
    np.testing.assert_array_equal(_np(p1), th1)
    wrong_sign = th2 - 0.02 * (_tamed_np(g2, 0.02, 0.05) - conf2) + math.sqrt(2 * 0.02 / 40.0) * xi2
    assert np.abs(wrong_sign - exp2).max() > 1e-3


@pytest.mark.parametrize("make", [
    lambda ps, **kw: SGLD(ps, lr=0.1, beta=2.0, **kw),
    lambda ps, **kw: TUSLA(ps, lr=0.1, beta=2.0, eta=0.1, **kw),
    lambda ps, **kw: TheoPouLa(ps, lr=0.1, beta=2.0, eps=0.1, eta=0.1, **kw),
], ids=["sgld", "tusla", "theopoula"])
def test_state_dict_round_trip(make):
    """Hyperparameters edited after construction survive state_dict / load_state_dict, and the loaded
    optimizer then steps exactly like the original."""
    pa, pb = _param([1.0, -2.0]), _param([1.0, -2.0])
    opt_a = make([pa], generator=torch.Generator().manual_seed(5))
    opt_a.param_groups[0]["lr"] = 0.03
    opt_a.param_groups[0]["beta"] = 7.0
    opt_b = make([pb], generator=torch.Generator().manual_seed(5))
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.param_groups[0]["lr"] == 0.03 and opt_b.param_groups[0]["beta"] == 7.0
    for _ in range(3):
        for p, o in ((pa, opt_a), (pb, opt_b)):
            o.zero_grad()
            (p ** 4).sum().backward()
            o.step()
    np.testing.assert_array_equal(_np(pa), _np(pb))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_parameters():
    p = torch.zeros(5, dtype=F64, device="cuda", requires_grad=True)
    p.grad = torch.zeros_like(p)
    SGLD([p], lr=0.5, beta=1.0, generator=torch.Generator().manual_seed(2)).step()
    xi = torch.randn((5,), generator=torch.Generator().manual_seed(2), dtype=F64)
    np.testing.assert_allclose(_np(p), _np(xi), rtol=1e-13)  # sqrt(2 * 0.5 / 1) = 1


# --------------------------------------------------------------------------- 2. SGLD on a Gaussian
@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_sgld_gaussian_invariant_variance(beta):
    """U = |theta|^2 / (2 s): SGLD is the AR(1) chain theta' = a theta + sqrt(2 h / beta) xi, a = 1 - h / s,
    whose invariant variance is v = (2 h / beta) / (1 - a^2) = s / (beta (1 - h / (2 s))).

    Each of the 10 000 coordinates is an independent chain. After a burn-in (a^(2 B) < 1e-18) the
    estimator is the mean of theta^2 over chains and T steps (the mean 0 is known). For a stationary
    Gaussian AR(1) chain, Cov(theta_t^2, theta_{t+k}^2) = 2 v^2 a^(2k), so
    Var(v_hat) <= 2 v^2 / (n T) (1 + a^2) / (1 - a^2): n T (1 - a^2) / (1 + a^2) effectively independent
    samples, each with sd(theta^2) = v sqrt(2)."""
    s, h, chains, burn, steps = 1.0, 0.1, 10_000, 200, 1000
    a = 1 - h / s
    v = s / (beta * (1 - h / (2 * s)))
    theta = torch.zeros(chains, dtype=F64, requires_grad=True)
    opt = SGLD([theta], lr=h, beta=beta, generator=torch.Generator().manual_seed(int(beta)))
    acc = 0.0
    for k in range(burn + steps):
        opt.zero_grad()
        ((theta ** 2).sum() / (2 * s)).backward()
        opt.step()
        if k >= burn:
            acc += float((theta.detach() ** 2).mean())
    v_hat = acc / steps
    n_eff = chains * steps * (1 - a ** 2) / (1 + a ** 2)
    band = Z * v * math.sqrt(2 / n_eff)
    assert abs(v_hat - v) < band, (v_hat, v, band)
    assert abs(v_hat - s / beta) > band  # the band resolves ULA's O(h) bias: the test sees it


# --------------------------------------------------------------------------- 3. asymmetric double well
C_TILT = 0.2
X_GLOB, X_TOP, X_LOC = np.sort(np.roots([1.0, 0.0, -1.0, C_TILT]).real)  # U'(x) = x^3 - x + c
X_START = 2.0  # a poor start: in the local basin (x > X_TOP), beyond the local minimum
RUNS = 20


def _well(x: torch.Tensor) -> torch.Tensor:
    """sum_i x_i^4 / 4 - x_i^2 / 2 + c x_i: per coordinate a local minimum near 0.88 and a deeper global
    one near -1.09 (c > 0 tilts the well to the left)."""
    return (x ** 4 / 4 - x ** 2 / 2 + C_TILT * x).sum()


def _u_grad_np(x):
    return x ** 3 - x + C_TILT


def _design(drift, beta, x0=X_START, lo=-2.5, hi=3.0, n=200_001):
    """The 1-d Langevin diffusion dX = -drift(X) dt + sqrt(2 / beta) dW (the continuous-time limit of an
    algorithm whose step is -lr drift + sqrt(2 lr / beta) xi) has invariant density exp(-beta Phi),
    Phi' = drift, and mean first-passage time from x0 down to X_GLOB
        T = beta int_{X_GLOB}^{x0} exp(beta Phi(y)) int_y^inf exp(-beta Phi(z)) dz dy
    (solve L T = -1 with L = -drift d/dx + beta^-1 d^2/dx^2). Returns the barrier Phi(X_TOP) - Phi(X_LOC),
    the invariant mass of the global basin x < X_TOP, and T (in time units: T / lr steps)."""
    x = np.linspace(lo, hi, n)
    dx = x[1] - x[0]
    b = drift(x)
    phi = np.concatenate([[0.0], np.cumsum((b[1:] + b[:-1]) / 2) * dx])
    phi -= phi.min()
    top, loc = np.searchsorted(x, X_TOP), np.searchsorted(x, X_LOC)
    w = np.exp(-beta * phi)
    p_glob = w[:top].sum() / w.sum()
    tail = np.concatenate([np.cumsum(((w[1:] + w[:-1]) / 2)[::-1])[::-1] * dx, [0.0]])  # int_x^hi w
    i0, ig = np.searchsorted(x, x0), np.searchsorted(x, X_GLOB)
    with np.errstate(divide="ignore"):
        inner = np.exp(beta * phi[ig:i0 + 1] + np.log(tail[ig:i0 + 1]))
    T = beta * np.sum((inner[1:] + inner[:-1]) / 2) * dx
    return phi[top] - phi[loc], p_glob, T


def _tusla_drift_np(lr, eta=1e-4, r=1.0, others=0.0):
    """TUSLA's drift for one coordinate x when the rest of theta contributes |rest|^2 = others."""
    def drift(x):
        t = (x ** 2 + others) ** r
        return (_u_grad_np(x) + eta * x * t) / (1 + math.sqrt(lr) * t)
    return drift


def _theopoula_drift_np(lr, eps):
    return lambda x: _tamed_np(_u_grad_np(x), lr, eps)


def _run_sgd(lr, dim, steps):
    x = torch.full((RUNS, dim), X_START, dtype=F64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        _well(x).backward()
        opt.step()
    return _np(x)


def _run_tusla(lr, dim, betas, seed):
    """One TUSLA per run: its taming uses |theta| of all its parameters, so sharing one optimizer (or one
    batched tensor) between runs would couple them."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.full((dim,), X_START, dtype=F64, requires_grad=True) for _ in range(RUNS)]
    opts = [TUSLA([x], lr=lr, beta=float(betas[0]), generator=gen) for x in xs]
    for beta in betas:
        for x in xs:
            x.grad = None
        sum(_well(x) for x in xs).backward()
        for opt in opts:
            opt.param_groups[0]["beta"] = float(beta)
            opt.step()
    return np.stack([_np(x) for x in xs])


def _run_theopoula(lr, eps, beta, dim, steps, seed):
    """TheoPouLa with eta = 0 is coordinatewise, so the runs can share one (RUNS, dim) tensor exactly."""
    x = torch.full((RUNS, dim), X_START, dtype=F64, requires_grad=True)
    opt = TheoPouLa([x], lr=lr, beta=beta, eps=eps, generator=torch.Generator().manual_seed(seed))
    for _ in range(steps):
        opt.zero_grad()
        _well(x).backward()
        opt.step()
    return _np(x)


def _global_fraction(x):
    return float(np.mean((x < X_TOP).all(axis=1)))


# TUSLA: lr 0.1, beta 25: barrier 0.074 (U's is 0.082), mean passage 520 steps, global mass 0.9998;
# 2000 steps -> P(success) ~ (1 - exp(-2000 / 520)) * 0.9998 = 0.98 (measured: 20 of 20; 0.988 on 5000
# runs of the same recursion). TheoPouLa: lr 0.05, eps 0.01, beta 12: its boost (+sqrt(lr) in the descent
# direction) raises the barrier to 0.21, mean passage 690 steps, global mass 0.996; 3000 steps -> 0.98
# predicted (measured: 0.991 on 3 x 1000 runs).
TUSLA_1D = dict(lr=0.1, beta=25.0, steps=2000)
THEO_1D = dict(lr=0.05, eps=1e-2, beta=12.0, steps=3000)


def test_double_well_1d():
    assert X_GLOB < X_TOP < X_LOC < X_START
    u = lambda x: x ** 4 / 4 - x ** 2 / 2 + C_TILT * x
    assert u(X_GLOB) < u(X_LOC)  # the left minimum is the global one

    # design: the predicted success probability of each configuration is high
    for drift, cfg in ((_tusla_drift_np(TUSLA_1D["lr"]), TUSLA_1D),
                       (_theopoula_drift_np(THEO_1D["lr"], THEO_1D["eps"]), THEO_1D)):
        _, p_glob, T = _design(drift, cfg["beta"])
        assert (1 - math.exp(-cfg["steps"] * cfg["lr"] / T)) * p_glob > 0.95

    for lr in (TUSLA_1D["lr"], THEO_1D["lr"]):  # gradient descent converges to the local minimum
        x = _run_sgd(lr, 1, 500)
        assert _global_fraction(x) == 0.0
        np.testing.assert_allclose(x, X_LOC, atol=1e-8)

    x = _run_tusla(TUSLA_1D["lr"], 1, [TUSLA_1D["beta"]] * TUSLA_1D["steps"], seed=0)
    assert _global_fraction(x) >= 0.7, _global_fraction(x)
    x = _run_theopoula(THEO_1D["lr"], THEO_1D["eps"], THEO_1D["beta"], 1, THEO_1D["steps"], seed=0)
    assert _global_fraction(x) >= 0.7, _global_fraction(x)


@pytest.mark.slow  # 30 s on one core; the 1-d double well above is the default suite's check
def test_double_well_10d():
    """U(theta) = sum of 10 tilted wells, every coordinate started in its local basin; success = every
    coordinate in its global basin, so a run needs all 10 escapes and no way back.

    TheoPouLa (eta = 0) acts coordinatewise: exactly 10 independent copies of the 1-d chain, so the 1-d
    design gives P(success) = p^10: beta 12, 5000 steps -> 0.954 predicted (0.951 measured on 1000 runs).

    TUSLA's taming divides every coordinate's drift by D = 1 + sqrt(lr) |theta|^2 with |theta| over all
    10: D ~ 3.4 with every coordinate at the local minimum, ~ 4.7 at the global one. In the small-step
    limit that is a time change plus an effective inverse temperature beta / D, so at any single beta
    either the escapes are slow or the way back is open. Hence a geometric schedule beta 25 -> 100 over
    4000 steps at lr 0.1. Frozen-D approximation (the other nine coordinates held at a minimum): at
    beta 25 one escape takes ~ 440 steps on average, all ten (the maximum of ten exponentials, mean
    H_10 = 2.93 times as long) ~ 1300, within the first half of the run, while beta < 50; at beta 100 the
    global basin holds each coordinate with mass 1 - 2e-4, all ten with 0.998. Measured: 19 of 20 here,
    0.93 on 2000 runs of the same recursion."""
    dim = 10
    x = _run_sgd(0.1, dim, 500)
    assert _global_fraction(x) == 0.0

    _, p_glob, T = _design(_theopoula_drift_np(THEO_1D["lr"], THEO_1D["eps"]), THEO_1D["beta"])
    steps = 5000
    assert ((1 - math.exp(-steps * THEO_1D["lr"] / T)) * p_glob) ** dim > 0.9
    x = _run_theopoula(THEO_1D["lr"], THEO_1D["eps"], THEO_1D["beta"], dim, steps, seed=1)
    assert _global_fraction(x) >= 0.7, _global_fraction(x)

    lr, beta0, beta1, steps = 0.1, 25.0, 100.0, 4000
    _, _, T0 = _design(_tusla_drift_np(lr, others=(dim - 1) * X_LOC ** 2), beta0)
    harmonic_10 = sum(1 / k for k in range(1, dim + 1))
    assert harmonic_10 * T0 / lr < steps / 2  # all ten escapes are expected while beta is still low
    _, p1, _ = _design(_tusla_drift_np(lr, others=(dim - 1) * X_GLOB ** 2), beta1)
    assert p1 ** dim > 0.99  # and the final beta holds all ten in the global wells
    betas = beta0 * (beta1 / beta0) ** (np.arange(steps) / (steps - 1))
    x = _run_tusla(lr, dim, betas, seed=1)
    assert _global_fraction(x) >= 0.7, _global_fraction(x)


# --------------------------------------------------------------------------- 4. superlinear gradient
def test_superlinear_gradient_sgd_diverges_tamed_stay_bounded():
    """Loss |theta|^4, gradient 4 |theta|^2 theta, |theta_0| = 10, lr 0.1, d = 4.

    SGD: theta' = theta (1 - 4 lr |theta|^2), so |theta'| >= |theta| (4 lr |theta|^2 - 1) exceeds |theta|
    as soon as |theta|^2 > 1 / (2 lr) = 5: from 10 it is multiplied by 39, then by ~6e4, ... (faster than
    exponentially) and overflows within a few steps.

    TUSLA (r = 1): theta' = theta (1 - 4 lr s / (1 + sqrt(lr) s)) with s = |theta|^2 (the eta term only
    adds eta / 4 to the 4); the factor falls from 1 at s = 0 to 1 - 4 sqrt(lr) = -0.26 as s -> inf, so it
    lies in (-1, 1] and |theta| can only shrink (up to the small noise).

    TheoPouLa: each coordinate moves by at most lr |H_i| <= sqrt(lr) + lr^(3/2) = 0.35 per step, never
    past 0 while |theta_i| > 0.35, so |theta| cannot grow.

    At the end: the invariant law of the Langevin diffusion for beta |theta|^4 in d = 4 has radial density
    ~ r^3 exp(-beta r^4), i.e. beta |theta|^4 ~ Exp(1); we ask beta |theta_N|^4 < log(1e4) (a 1e-4 tail).
    (TheoPouLa's boost pulls harder towards 0 than the gradient does, so its law is tighter still.)"""
    beta, lr, steps = 1e4, 0.1, 1000
    theta0 = torch.full((4,), 5.0, dtype=F64)
    assert float(theta0.norm()) == 10.0

    x = theta0.clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=lr)
    blew_up = False
    for _ in range(5):
        opt.zero_grad()
        ((x ** 2).sum() ** 2).backward()
        opt.step()
        n = float(x.detach().norm())
        if not math.isfinite(n) or n > 1e10:
            blew_up = True
            break
    assert blew_up

    for make in (lambda ps, g: TUSLA(ps, lr=lr, beta=beta, generator=g),
                 lambda ps, g: TheoPouLa(ps, lr=lr, beta=beta, eps=1e-2, generator=g)):
        x = theta0.clone().requires_grad_(True)
        opt = make([x], torch.Generator().manual_seed(0))
        largest = 0.0
        for _ in range(steps):
            opt.zero_grad()
            ((x ** 2).sum() ** 2).backward()
            opt.step()
            largest = max(largest, float(x.detach().norm()))
        assert largest <= 10.0, largest
        assert beta * float(x.detach().norm()) ** 4 < math.log(1e4)


# --------------------------------------------------------------------------- 6. strongly convex quadratic
A_DIAG = np.array([1.0, 2.0, 4.0])
M = np.array([1.0, -2.0, 0.5])


def _quadratic_mean(opt_factory, steps=3000, tail=500):
    x = torch.zeros(3, dtype=F64, requires_grad=True)
    a, m = torch.tensor(A_DIAG), torch.tensor(M)
    opt = opt_factory([x], torch.Generator().manual_seed(0))
    acc = np.zeros(3)
    for k in range(steps):
        opt.zero_grad()
        (0.5 * a * (x - m) ** 2).sum().backward()
        opt.step()
        if k >= steps - tail:
            acc += _np(x)
    return acc / tail


def test_quadratic_mean_is_the_minimiser():
    """u = sum a_i (theta_i - m_i)^2 / 2 at beta = 1e8 (noise sd ~ 1e-4): the mean of the last iterates
    is m for SGLD, TUSLA with eta = 0 and TheoPouLa with eta = 0 (all three drifts vanish exactly where
    the gradient does). TUSLA with eta > 0 targets u + eta |theta|^4 / 4 (r = 1): its minimiser from
    scipy. TheoPouLa with eta > 0: its fixed point (the numpy drift's root), which lies closer to 0 than
    m (the confining term pulls in; the opposite sign would push out)."""
    beta, lr = 1e8, 0.1
    for make in (lambda ps, g: SGLD(ps, lr=lr, beta=beta, generator=g),
                 lambda ps, g: TUSLA(ps, lr=lr, beta=beta, eta=0.0, generator=g),
                 lambda ps, g: TheoPouLa(ps, lr=lr, beta=beta, eps=1e-2, generator=g)):
        np.testing.assert_allclose(_quadratic_mean(make), M, atol=1e-3)

    eta = 0.05
    reg = lambda th: 0.5 * np.sum(A_DIAG * (th - M) ** 2) + eta * np.sum(th ** 2) ** 2 / 4
    target = scipy.optimize.minimize(reg, M, method="BFGS", options=dict(gtol=1e-12)).x
    assert np.abs(target - M).max() > 0.05  # eta visibly moves the minimiser
    got = _quadratic_mean(lambda ps, g: TUSLA(ps, lr=lr, beta=beta, eta=eta, r=1.0, generator=g))
    np.testing.assert_allclose(got, target, atol=1e-3)

    def theo_drift(th):
        t = np.sum(th ** 2)
        return _tamed_np(A_DIAG * (th - M), lr, 1.0) + eta * th * t / (1 + math.sqrt(lr) * t)
    fixed = scipy.optimize.fsolve(theo_drift, M, xtol=1e-13)
    assert np.linalg.norm(fixed) < np.linalg.norm(M) - 0.05
    got = _quadratic_mean(lambda ps, g: TheoPouLa(ps, lr=lr, beta=beta, eps=1.0, eta=eta, r=1.0, generator=g))
    np.testing.assert_allclose(got, fixed, atol=1e-3)


# --------------------------------------------------------------------------- 5. errors
GOOD = dict(SGLD=dict(lr=0.1, beta=1.0), TUSLA=dict(lr=0.1, beta=1.0, eta=0.1, r=1.0),
            TheoPouLa=dict(lr=0.1, beta=1.0, eps=0.1, eta=0.1, r=1.0))
CLASSES = dict(SGLD=SGLD, TUSLA=TUSLA, TheoPouLa=TheoPouLa)
BAD = [("lr", 0.0), ("lr", -1.0), ("lr", float("nan")), ("lr", float("inf")), ("lr", "big"),
       ("beta", 0.0), ("beta", -2.0), ("beta", float("inf")),
       ("eps", 0.0), ("eps", -1e-3), ("eta", -0.1), ("eta", float("nan")), ("r", -1.0)]


@pytest.mark.parametrize("name,key,value", [(n, k, v) for n in CLASSES for k, v in BAD if k in GOOD[n]])
def test_bad_hyperparameters(name, key, value):
    kw = dict(GOOD[name], **{key: value})
    with pytest.raises(ValueError, match=rf"{name} {key}\b"):
        CLASSES[name]([_param([1.0])], **kw)
    # the same value in a param group of its own, at construction and added later
    with pytest.raises(ValueError, match=rf"{key} \(param group 1\)"):
        CLASSES[name]([{"params": [_param([1.0])]}, {"params": [_param([1.0])], key: value}], **GOOD[name])
    opt = CLASSES[name]([_param([1.0])], **GOOD[name])
    with pytest.raises(ValueError, match=rf"{key} \(param group 1\)"):
        opt.add_param_group({"params": [_param([2.0])], key: value})
    # and edited into a group after construction: caught at the next step
    p = _param([1.0])
    p.grad = torch.ones(1, dtype=F64)
    opt = CLASSES[name]([p], **GOOD[name])
    opt.param_groups[0][key] = value
    with pytest.raises(ValueError, match=rf"{key} \(param group 0\)"):
        opt.step()


def test_r_zero_and_eta_zero_are_allowed():
    TUSLA([_param([1.0])], lr=0.1, eta=0.0, r=0.0)
    TheoPouLa([_param([1.0])], lr=0.1, beta=1.0, eps=0.1, eta=0.0, r=0.0)


def test_generator_must_be_a_generator():
    with pytest.raises(ValueError, match="generator"):
        SGLD([_param([1.0])], lr=0.1, generator=0)


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient(name, bad):
    p0, p1, p2 = _param([1.0, 2.0]), _param([3.0]), _param([4.0, 5.0])
    p0.grad = torch.ones(2, dtype=F64)
    p2.grad = torch.tensor([1.0, bad], dtype=F64)   # parameter 2 overall: group 1, position 0
    opt = CLASSES[name]([{"params": [p0, p1]}, {"params": [p2]}], **GOOD[name])
    with pytest.raises(FloatingPointError, match=rf"^{name}: .*parameter 2 \(param group 1, position 0"):
        opt.step()
    np.testing.assert_array_equal(_np(p0), [1.0, 2.0])  # nothing was updated
    np.testing.assert_array_equal(_np(p2), [4.0, 5.0])
