"""SchrodingerFollmer against Monte Carlo (sigma^2 grad log h), Euler–Maruyama and the Kolmogorov equation."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import controlsamp as cs
from strategies import log_uniform, spd, spd_from_seed, vector


def _mixture(seed, d=2, K=3):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-2, 2, size=(K, d))
    covs = np.stack([spd_from_seed(seed + k, d, 0.5, 0.5) for k in range(K)])
    return cs.targets.GaussianMixture(rng.uniform(0.5, 1.5, size=K), means, covs)


def _mc_drift(target, sigma, T, t, x, n, gen):
    """Self-normalised Monte Carlo of sigma^2 grad log h(t, x) with h = E[pi(Y)/p_T(Y)], Y ~ N(x, sigma^2 (T-t) I).

    Gaussian integration by parts: grad h = E[w(Y) (Y - x)] / (sigma^2 (T - t)), so
    b = E[w (Y - x)] / ((T - t) E[w]); the standard error is the delta-method one of this ratio."""
    d = x.shape[0]
    var = sigma ** 2 * (T - t)
    y = x + math.sqrt(var) * torch.randn(n, d, dtype=torch.float64, generator=gen)
    log_pT = -(y * y).sum(1) / (2 * sigma ** 2 * T)
    logw = target.log_prob(y) - log_pT
    w = torch.exp(logw - logw.max())
    num = w.unsqueeze(1) * (y - x) / (T - t)
    est = num.mean(0) / w.mean()
    resid = (num - est * w.unsqueeze(1)) / w.mean()  # linearised ratio estimator
    return est, resid.std(0) / math.sqrt(n)


@pytest.mark.parametrize("kind", ["gaussian", "mixture"])
def test_drift_matches_monte_carlo(kind):
    """The closed-form drift equals sigma^2 grad log h by Monte Carlo within 5 standard errors."""
    gen = torch.Generator().manual_seed(1)
    if kind == "gaussian":
        target = cs.targets.Gaussian([1.0, -0.5], spd_from_seed(11, 2, 1.0, 0.7))
    else:
        target = _mixture(5)
    sigma, T = 1.3, 1.5
    sf = cs.exact.SchrodingerFollmer(target, sigma=sigma, T=T)
    for t, x in [(0.0, [0.0, 0.0]), (0.3, [0.5, -1.0]), (0.9, [-1.0, 1.0]), (1.4, [1.5, 0.2])]:
        x = torch.tensor(x, dtype=torch.float64)
        est, se = _mc_drift(target, sigma, T, t, x, 400_000, gen)
        exact = sf.drift(t, x.unsqueeze(0))[0]
        assert torch.all((est - exact).abs() < 5 * se), (t, est, exact, se)


@settings(max_examples=40, deadline=None)
@given(ms=st.integers(1, 4).flatmap(lambda d: st.tuples(vector(d), spd(d, max_log10_cond=2.0))),
       sigma=log_uniform(0.1, 10.0), T=log_uniform(0.1, 10.0), r=st.floats(0.0, 1.0))
def test_gaussian_drift_is_the_references_formula_and_minus_sigma2_grad_value(ms, sigma, T, r):
    """b(t, x) = m/T + (S/T - sigma^2 I)(rS + sigma^2 (T-t) I)^{-1}(x - r m) = -sigma^2 grad V(t, x)."""
    m, S = ms
    d = len(m)
    t = r * T
    sf = cs.exact.SchrodingerFollmer(cs.targets.Gaussian(m, S), sigma=sigma, T=T)
    x = torch.randn(4, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Mt = r * S + sigma ** 2 * (T - t) * np.eye(d)
    ref = m / T + (x.numpy() - r * m) @ np.linalg.solve(Mt, (S / T - sigma ** 2 * np.eye(d)).T)
    b = sf.drift(t, x).numpy()
    np.testing.assert_allclose(b, ref, rtol=1e-8, atol=1e-8 * (1 + np.abs(ref).max()))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(sf.value(t, xg).sum(), xg)
    np.testing.assert_allclose(-sigma ** 2 * g.numpy(), b, rtol=1e-6, atol=1e-6 * (1 + np.abs(b).max()))


@pytest.mark.parametrize("t", [0.0, 0.2, 0.7, 1.0])
def test_mixture_value_solves_hjb_and_gives_the_drift(t):
    """For a mixture, V = -log h solves  d_t V + sigma^2/2 lap V - sigma^2/2 |grad V|^2 = 0  and b = -sigma^2 grad V.

    d_t V by a central difference (step 1e-4, error O(1e-8)), derivatives in x by autograd."""
    target = _mixture(3)
    sigma, T = 0.9, 1.0
    sf = cs.exact.SchrodingerFollmer(target, sigma=sigma, T=T)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    V = sf.value(t, x)
    (g,) = torch.autograd.grad(V.sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    np.testing.assert_allclose((-sigma ** 2 * g).detach().numpy(), sf.drift(t, x.detach()).numpy(), atol=1e-8)
    if 0.0 < t < T:
        h = 1e-4
        dV = (sf.value(t + h, x.detach()) - sf.value(t - h, x.detach())) / (2 * h)
        hjb = dV + 0.5 * sigma ** 2 * lap - 0.5 * sigma ** 2 * (g * g).sum(1)
        assert hjb.abs().max() < 1e-6


def test_mixture_drift_at_zero_is_mean_over_T():
    target = _mixture(9)
    sf = cs.exact.SchrodingerFollmer(target, sigma=0.7, T=2.0)
    mean, _ = target.moments()
    np.testing.assert_allclose(sf.drift(0.0, torch.zeros(1, 2))[0].numpy(), (mean / 2.0).numpy(), atol=1e-12)
    # t = 0 is the limit of t -> 0+: continuity of the posterior weights
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    np.testing.assert_allclose(sf.drift(0.0, x).numpy(), sf.drift(1e-7, x).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "mixture"])
def test_euler_maruyama_with_exact_drift_reaches_the_target(kind):
    """Euler–Maruyama with the exact drift from X_0 = 0 ends at the target's mean and covariance.

    Bands: 5 standard errors from the CLT (per-entry standard errors estimated from the samples);
    with 250 steps the O(h) discretisation bias is ~4e-3 of the scale, a tenth of a band (5 / sqrt(n) = 5%)."""
    if kind == "gaussian":
        target = cs.targets.Gaussian([1.0, -2.0], spd_from_seed(4, 2, 1.0, 1.0))
        mean, cov = target.mean, target.cov
    else:
        target = _mixture(21)
        mean, cov = target.moments()
    sigma, T, steps, n = 1.0, 1.0, 250, 10000
    sf = cs.exact.SchrodingerFollmer(target, sigma=sigma, T=T)
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 2, dtype=torch.float64)
    h = T / steps
    for k in range(steps):
        x = x + sf.drift(k * h, x) * h + sigma * math.sqrt(h) * torch.randn(n, 2, dtype=torch.float64, generator=gen)
    se_mean = x.std(0) / math.sqrt(n)
    assert torch.all((x.mean(0) - mean).abs() < 5 * se_mean)
    xc = x - x.mean(0)
    prods = xc.unsqueeze(2) * xc.unsqueeze(1)
    se_cov = prods.std(0) / math.sqrt(n)
    assert torch.all((prods.mean(0) - cov).abs() < 5 * se_cov)


def test_marginal_and_exact_paths():
    target = cs.targets.Gaussian([2.0, 0.0], [[1.0, 0.3], [0.3, 0.5]])
    sf = cs.exact.SchrodingerFollmer(target, sigma=0.8, T=1.0)
    ts = torch.tensor([0.25, 0.5, 1.0])
    paths = sf.sample_path(ts, 20000, generator=torch.Generator().manual_seed(3))
    for k, t in enumerate(ts.tolist()):
        mean, cov = sf.marginal(t)
        np.testing.assert_allclose(mean.numpy(), t * np.array([2.0, 0.0]))
        se = torch.sqrt(torch.diagonal(cov) / 20000)
        assert torch.all((paths[:, k].mean(0) - mean).abs() < 5 * se)
    kl = sf.kl()
    assert abs(kl - cs.exact.gaussian_kl([2.0, 0.0], target.cov, [0.0, 0.0], 0.64 * np.eye(2))) < 1e-12


def test_mixture_kl_monte_carlo_is_consistent():
    """A 'mixture' of two identical components is a Gaussian: its Monte-Carlo KL agrees with the closed form
    within 5 standard errors."""
    S = spd_from_seed(1, 2, 0.5, 1.0)
    one = cs.targets.GaussianMixture([1.0, 1.0], [[0.5, 0.5], [0.5, 0.5]], [S, S])
    sf = cs.exact.SchrodingerFollmer(one, sigma=1.0)
    exact = cs.exact.SchrodingerFollmer(cs.targets.Gaussian([0.5, 0.5], S), sigma=1.0).kl()
    gen = torch.Generator().manual_seed(0)
    n = 50000
    xs = one.sample(n, generator=gen)
    lr = one.log_prob(xs) + (xs * xs).sum(1) / 2 + math.log(2 * math.pi)
    est = sf.kl(n_samples=n, generator=torch.Generator().manual_seed(0))
    assert abs(est - exact) < 5 * float(lr.std()) / math.sqrt(n)
    with pytest.raises(ValueError, match="n_samples"):
        sf.kl()


def test_bad_input():
    with pytest.raises(ValueError, match="target"):
        cs.exact.SchrodingerFollmer(object())
    sf = cs.exact.SchrodingerFollmer(cs.targets.Gaussian([0.0], [[1.0]]), sigma=1.0)
    with pytest.raises(ValueError, match="t must lie"):
        sf.drift(1.5, torch.zeros(1, 1))
    with pytest.raises(ValueError, match="sigma"):
        cs.exact.SchrodingerFollmer(cs.targets.Gaussian([0.0], [[1.0]]), sigma=-1.0)
