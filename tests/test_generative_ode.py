"""The probability-flow ODE samplers and the ODE likelihood (controlsamp.generative.ode, .likelihood).

Every check is against an independent answer: the closed-form law of Gaussian data (the PF-ODE is linear there, so
the sampler's affine map must push the exact prior onto the exact data law), the closed-form log-density of
Gaussian-mixture data (NoisedMixture.log_prob), a tight adaptive solve for the measured order of the fixed-step
methods, the normalisation of a learned model's ODE density (quadrature), scipy's normal CDF for the discrete
probability of dequantised data, and Monte Carlo with CLT bands for the Hutchinson estimator and dequantisation.
The score is ExactScore(NoisedMixture(...)) (no learning error) except in the model tests.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from controlsamp.exact import NoisedMixture
from controlsamp.generative import (DiffusionModel, ExactScore, ORDERS, bits_per_dim, cld_data_log_likelihood,
                                    dequantisation_log_scale, dequantise, log_likelihood, pf_drift, pf_ode_sample)
from controlsamp.processes import CLD, VE, VP

M_DATA = torch.tensor([0.5, -0.3], dtype=torch.float64)
S_DATA = torch.tensor([[0.4, 0.15], [0.15, 0.2]], dtype=torch.float64)
MIX_W = [0.4, 0.6]
MIX_M = [[-1.0, 0.5], [1.0, -0.5]]
MIX_S = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.25]]]


def reference(name):
    return {"vp": lambda: VP(2), "ve": lambda: VE(2, sigma_max=10.0), "cld": lambda: CLD(2)}[name]()


def mixture(name, data="gaussian"):
    ref = reference(name)
    w, m, S = ([1.0], M_DATA[None], S_DATA[None]) if data == "gaussian" else (MIX_W, MIX_M, MIX_S)
    if name == "cld":
        return NoisedMixture.with_velocity(ref, w, m, S, velocity_var=0.04 * ref.M)
    return NoisedMixture(ref, w, m, S)


class CountingScore(ExactScore):
    """ExactScore that counts its score calls (an independent count of the network evaluations)."""

    calls = 0

    def score(self, t, x):
        self.calls += 1
        return super().score(t, x)


# ---------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("method", ["dopri5", "scipy"])
@pytest.mark.parametrize("name", ["vp", "ve", "cld"])
def test_pf_ode_pushes_exact_prior_onto_gaussian_data(name, method):
    """Gaussian data: the score is affine, the PF-ODE linear and the solver's map x_T -> x_0 affine, A x + b. The
    pushforward of the exact prior N(mu_T, C_T) is N(A mu_T + b, A C_T A^T), which must be the data law N(m, S)
    (for CLD the phase-space law N((m, 0), diag(S, gamma M I))). A and b are read off by pushing mu_T and
    mu_T + e_i through (exact for an affine map); the only error is the solver's (rtol = atol = 1e-8)."""
    mix = mixture(name)
    src = ExactScore(mix)
    _, mu, C = mix.marginal(src.T)
    D = src.state_dim
    xs = torch.cat([mu, mu + torch.eye(D, dtype=torch.float64)], 0)
    y, info = pf_ode_sample(src, x_T=xs, method=method, rtol=1e-8, atol=1e-8, return_state=True)
    A = (y[1:] - y[:1]).T
    assert torch.allclose(y[0], mix.means[0], atol=1e-5, rtol=0)
    assert torch.allclose(A @ C[0] @ A.T, mix.covs[0], atol=1e-5, rtol=0)
    assert info["method"] == method and info["nfe"] > 0
    # the data part alone by default
    x, _ = pf_ode_sample(src, x_T=xs[:1], method=method, rtol=1e-8, atol=1e-8)
    assert x.shape == (1, 2) and torch.allclose(x[0], M_DATA, atol=1e-5, rtol=0)


def test_pf_ode_samples_from_prior_match_mixture_moments():
    """Draws from the exact prior pushed through dopri5 (default tolerances) have the mixture's mean and covariance
    within CLT bands (4 standard errors, n = 4000)."""
    mix = mixture("vp", "mixture")
    src = ExactScore(mix)
    n = 4000
    x, _ = pf_ode_sample(src, n=n, generator=torch.Generator().manual_seed(11))
    w, m, S = mix.weights, mix.means, mix.covs
    mean = (w[:, None] * m).sum(0)
    cov = (w[:, None, None] * (S + m[:, :, None] * m[:, None, :])).sum(0) - torch.outer(mean, mean)
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert bool(((x.mean(0) - mean).abs() < 4 * se).all()), (x.mean(0), mean, se)
    # var of the sample covariance entry (i, j) ~ E[(x_i x_j - c_ij)^2]/n, estimated from the draws
    xc = x - x.mean(0)
    prods = xc[:, :, None] * xc[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    assert bool(((prods.mean(0) - cov).abs() < 4 * se_cov).all()), (prods.mean(0), cov, se_cov)


def _slope(steps, errs):
    return float(np.polyfit(np.log(1.0 / np.asarray(steps, dtype=float)), np.log(errs), 1)[0])


def test_fixed_step_methods_have_their_declared_order():
    """Mixture data under VP: the global error at t_min of euler / ddim / heun for 8, 16, 32, 64 steps against a
    tight dopri5 (rtol = atol = 1e-10) from the same x_T has log-log slope within 0.3 of ORDERS (measured:
    euler 0.96, ddim 0.96, heun 1.86)."""
    src = ExactScore(mixture("vp", "mixture"))
    x_T = src.prior_sample(64, torch.Generator().manual_seed(0))
    x_ref, _ = pf_ode_sample(src, x_T=x_T, method="dopri5", rtol=1e-10, atol=1e-10)
    steps = [8, 16, 32, 64]
    for method, order in ORDERS.items():
        errs = [float((pf_ode_sample(src, x_T=x_T, method=method, steps=k)[0] - x_ref).norm(dim=1).mean())
                for k in steps]
        assert abs(_slope(steps, errs) - order) < 0.3, (method, errs, _slope(steps, errs))
    assert ORDERS == {"euler": 1, "ddim": 1, "heun": 2}


def test_ddim_is_exact_for_point_data():
    """DDIM solves the PF-ODE exactly when eps_hat is constant along the flow, as for (nearly) point data
    N(m, 1e-12 I): three steps land on m; Euler with three steps does not."""
    ref = VP(2)
    mix = NoisedMixture(ref, [1.0], M_DATA[None], 1e-12 * torch.eye(2, dtype=torch.float64)[None])
    src = ExactScore(mix)
    x_T = src.prior_sample(8, torch.Generator().manual_seed(2))
    x, info = pf_ode_sample(src, x_T=x_T, method="ddim", steps=3)
    assert info["nfe"] == 3
    assert float((x - M_DATA).abs().max()) < 1e-5
    xe, _ = pf_ode_sample(src, x_T=x_T, method="euler", steps=3)
    assert float((xe - M_DATA).abs().max()) > 1e-2


@pytest.mark.parametrize("method,per_step", [("euler", 1), ("ddim", 1), ("heun", 2), ("dopri5", None), ("scipy", None)])
def test_nfe_counts_every_score_evaluation(method, per_step):
    src = CountingScore(mixture("vp", "mixture"))
    _, info = pf_ode_sample(src, n=5, method=method, steps=7, generator=torch.Generator().manual_seed(0))
    assert info["nfe"] == src.calls
    if per_step is not None:
        assert info["nfe"] == per_step * 7
    src.calls = 0
    _, info = log_likelihood(src, torch.zeros(3, 2), method="scipy" if method == "scipy" else "dopri5",
                             return_info=True)
    assert info["nfe"] == src.calls > 0


def test_pf_drift_closed_forms():
    """pf_drift against the formulas: k x - g^2 s / 2 (VP) and f(u) - (0, Gamma beta s_v) (CLD)."""
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    mix = mixture("vp", "mixture")
    src = ExactScore(mix)
    t = 0.37
    ref = mix.reference
    beta = 0.1 + t * (20.0 - 0.1)
    expect = -0.5 * beta * x - 0.5 * beta * mix.score(t, x)
    assert torch.allclose(pf_drift(src, t, x), expect, atol=1e-12, rtol=0)
    assert ref.k(t) == pytest.approx(-0.5 * beta) and ref.g(t) ** 2 == pytest.approx(beta)
    cmix = mixture("cld", "mixture")
    c = cmix.reference
    u = torch.tensor([[0.3, -0.2, 0.1, 0.4]], dtype=torch.float64)
    s = cmix.score(t, u)[:, 2:]
    b = c.beta_at(t)
    pos, vel = u[:, :2], u[:, 2:]
    expect = torch.cat([b / c.M * vel, -b * pos - b * c.Gamma / c.M * vel - c.Gamma * b * s], 1)
    assert torch.allclose(pf_drift(ExactScore(cmix), t, u), expect, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- likelihood
@pytest.mark.parametrize("data", ["gaussian", "mixture"])
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_log_likelihood_equals_exact_density(name, data):
    """Exact score, exact divergence, exact prior, t_min = 0: the ODE likelihood is log p_0(x), the data density
    (measured errors ~1e-6 nats at rtol = atol = 1e-7)."""
    mix = mixture(name, data)
    src = ExactScore(mix)
    x = mix.sample(0.0, 6, generator=torch.Generator().manual_seed(3))
    lp = log_likelihood(src, x, rtol=1e-7, atol=1e-7)
    assert lp.dtype == torch.float64 and lp.shape == (6,)
    assert float((lp - mix.log_prob(0.0, x)).abs().max()) < 1e-3


def test_log_likelihood_scipy_agrees():
    mix = mixture("vp", "mixture")
    src = ExactScore(mix)
    x = mix.sample(0.0, 4, generator=torch.Generator().manual_seed(4))
    lp = log_likelihood(src, x, method="scipy", rtol=1e-7, atol=1e-7)
    assert float((lp - mix.log_prob(0.0, x)).abs().max()) < 1e-3


@pytest.mark.parametrize("t_min", [0.0, 1e-3])
def test_log_likelihood_cld_phase_space(t_min):
    """CLD: log_likelihood of phase-space states is the exact log p_{t_min}(x, v). t_min = 0 is fine: the law at 0
    is p_data(x) N(v; 0, gamma M I), non-degenerate, and its score is exact there."""
    mix = mixture("cld", "mixture")
    src = ExactScore(mix, t_min=t_min)
    u = mix.sample(t_min, 5, generator=torch.Generator().manual_seed(5))
    lp = log_likelihood(src, u, rtol=1e-7, atol=1e-7)
    assert float((lp - mix.log_prob(t_min, u)).abs().max()) < 1e-3


def test_cld_data_log_likelihood_is_tight_for_exact_model():
    """At t_min = 0 the exact model's velocity is independent of the data with law q = N(0, gamma M I), so
    log p(x, v) - log q(v) = log p_data(x) for every draw v: the bound equals the data density (scipy)."""
    mix = mixture("cld", "mixture")
    src = ExactScore(mix)
    vv = 0.04 * mix.reference.M
    x0 = mix.sample(0.0, 4, generator=torch.Generator().manual_seed(6))[:, :2]
    est = cld_data_log_likelihood(src, x0, velocity_samples=2, velocity_var=vv,
                                  generator=torch.Generator().manual_seed(7), rtol=1e-7, atol=1e-7)
    dens = sum(w * stats.multivariate_normal(m, S).pdf(x0.numpy()) for w, m, S in zip(MIX_W, MIX_M, MIX_S))
    assert np.abs(est.numpy() - np.log(dens)).max() < 1e-3
    assert src.velocity_var == pytest.approx(vv, rel=1e-12)  # the source knows its velocity law
    with_info, info = cld_data_log_likelihood(src, x0, velocity_samples=2, velocity_var=vv, return_info=True,
                                              generator=torch.Generator().manual_seed(7), rtol=1e-7, atol=1e-7)
    assert torch.equal(with_info, est) and info["nfe"] > 0
    again = cld_data_log_likelihood(src, x0, velocity_samples=2, generator=torch.Generator().manual_seed(7),
                                    rtol=1e-7, atol=1e-7)
    assert torch.equal(again, est)
    with pytest.raises(ValueError, match="CLD"):
        cld_data_log_likelihood(ExactScore(mixture("vp")), x0, velocity_var=1.0)


@pytest.mark.parametrize("noise,k", [("rademacher", 1), ("gaussian", 2)])
def test_hutchinson_is_unbiased(noise, k):
    """R = 250 independent probe sets per point (the points repeated in one batch): the mean of the Hutchinson
    log-likelihoods equals the exact-divergence value within 4 standard errors (the Jacobian of the mixture's drift
    is not diagonal, so the Rademacher estimator has positive variance too)."""
    mix = mixture("vp", "mixture")
    src = ExactScore(mix)
    x = mix.sample(0.0, 4, generator=torch.Generator().manual_seed(3))
    exact = log_likelihood(src, x, rtol=1e-7, atol=1e-7)
    R = 250
    h = log_likelihood(src, x.repeat(R, 1), divergence="hutchinson", noise=noise, hutchinson_samples=k,
                       rtol=1e-7, atol=1e-7, generator=torch.Generator().manual_seed(5)).reshape(R, 4)
    se = h.std(0) / math.sqrt(R)
    assert bool((se > 1e-3).all())  # a genuine Monte Carlo estimate
    assert bool(((h.mean(0) - exact).abs() < 4 * se).all()), (h.mean(0) - exact, se)


# ---------------------------------------------------------------------------------------------- a learned model
class _SmoothNet(torch.nn.Module):
    """A score (t, x) -> (n, 1): -x (the exact score of N(0, 1) data under VP, which VP keeps at N(0, 1)) plus a
    fixed random tanh network, seeded: a non-trivial, non-exact score whose model stays near N(0, 1)."""

    def __init__(self, seed=0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.a = torch.nn.Linear(2, 16)
            self.b = torch.nn.Linear(16, 1)

    def forward(self, t, x):
        return -x + 0.5 * self.b(torch.tanh(self.a(torch.cat([x, t.reshape(-1, 1).to(x.dtype)], 1))))


def test_model_ode_density_integrates_to_one():
    """For a model with a non-exact score the ODE likelihood is the density of the ODE's model, so it must integrate
    to 1 (trapezoid rule on [-9, 9], 721 points, in 1-d); dopri5 and scipy agree, and so do the samplers."""
    model = DiffusionModel(VP(1), network=_SmoothNet(), parametrisation="score", dtype=torch.float64)
    grid = torch.linspace(-9.0, 9.0, 721, dtype=torch.float64)[:, None]
    lp = log_likelihood(model, grid, rtol=1e-8, atol=1e-8)
    mass = float(torch.trapezoid(lp.exp(), grid[:, 0]))
    assert abs(mass - 1.0) < 1e-4, mass
    lp_s = log_likelihood(model, grid[::40], method="scipy", rtol=1e-8, atol=1e-8)
    assert float((lp_s - lp[::40]).abs().max()) < 1e-5
    # the model's density is not the prior's pushed by the zero-score flow (the score matters)
    assert float((lp - torch.as_tensor(stats.norm.logpdf(grid[:, 0].numpy()))).abs().max()) > 1e-2
    x_T = model.prior_sample(16, torch.Generator().manual_seed(0))
    xd, _ = pf_ode_sample(model, x_T=x_T, rtol=1e-8, atol=1e-8)
    xs, _ = pf_ode_sample(model, x_T=x_T, method="scipy", rtol=1e-8, atol=1e-8)
    xh, info = pf_ode_sample(model, x_T=x_T, method="heun", steps=200)
    assert float((xd - xs).abs().max()) < 1e-5 and float((xh - xd).abs().max()) < 1e-3
    assert info["nfe"] == 400


# ---------------------------------------------------------------------------------------------- bits per dim
def test_bits_per_dim_uniform_density():
    """The uniform density on [-1, 1]^D (log p_y = -D log 2) of L-level data is the uniform discrete law: log2 L bits
    per dimension (8 for 8-bit images, 1 for binary data)."""
    D = 3072
    ls = dequantisation_log_scale(D, 256)
    assert ls == pytest.approx(-D * math.log(128.0))
    assert bits_per_dim(-D * math.log(2.0), D, ls) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim(-math.log(2.0), 1, dequantisation_log_scale(1, 2)) == pytest.approx(1.0, abs=1e-12)
    out = bits_per_dim(torch.tensor([-D * math.log(2.0), 0.0], dtype=torch.float64), D, ls)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert torch.allclose(out, torch.tensor([8.0, 7.0], dtype=torch.float64), atol=1e-12, rtol=0)
    assert bits_per_dim(-1000.0, 100) == pytest.approx(1000.0 / (100 * math.log(2.0)))


def test_dequantised_gaussian_bound_against_discrete_probability():
    """A Gaussian model N(0, s^2 I) on y in [-1, 1]: the dequantised bound E_u[log p_y(y)] + D log(2/L) is below the
    discrete log-probability sum_i log(Phi(b_i/s) - Phi(a_i/s)) (scipy), by at most the Jensen gap's Hoeffding bound
    sum_i range_i^2 / 8 (range_i: the range of log p_y over cell i, the log-density being quadratic); its Monte Carlo
    estimate
    through dequantise (n = 20000 draws) is within 4 standard errors of its closed form
    sum_i [-log(2 pi s^2)/2 - (a_i^2 + a_i b_i + b_i^2)/(6 s^2)] + D log(2/L)."""
    L, s = 4, 0.7
    x = np.array([0, 1, 3, 2])
    D = x.size
    a, b = 2 * x / L - 1, 2 * (x + 1) / L - 1
    exact = float(np.log(stats.norm.cdf(b / s) - stats.norm.cdf(a / s)).sum())
    ls = dequantisation_log_scale(D, L)
    bound = float((-0.5 * np.log(2 * np.pi * s * s) - (a * a + a * b + b * b) / (6 * s * s)).sum()) + ls
    hi, lo = np.maximum(a * a, b * b), np.where(a * b < 0, 0.0, np.minimum(a * a, b * b))
    hoeffding = float((((hi - lo) / (2 * s * s)) ** 2 / 8).sum())
    assert 0 < exact - bound <= hoeffding, (exact - bound, hoeffding)
    n = 20000
    y = dequantise(torch.as_tensor(x).repeat(n, 1), L, generator=torch.Generator().manual_seed(8))
    assert y.shape == (n, D) and y.dtype == torch.float64
    assert bool((y >= torch.as_tensor(a)).all()) and bool((y < torch.as_tensor(b)).all())
    logp = torch.as_tensor(stats.norm(0, s).logpdf(y.numpy()).sum(1))
    est = logp + ls
    assert abs(float(est.mean()) - bound) < 4 * float(est.std()) / math.sqrt(n)
    # bits per dimension of the bound
    assert bits_per_dim(float(logp.mean()), D, ls) == pytest.approx(-(float(logp.mean()) + ls) / (D * math.log(2)))


# ---------------------------------------------------------------------------------------------- errors
def test_errors_name_the_argument():
    src = ExactScore(mixture("vp"))
    csrc = ExactScore(mixture("cld"))
    with pytest.raises(ValueError, match="method"):
        pf_ode_sample(src, n=2, method="rk4")
    with pytest.raises(ValueError, match="ddim"):
        pf_ode_sample(csrc, n=2, method="ddim")
    with pytest.raises(ValueError, match="x_T"):
        pf_ode_sample(src, x_T=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="pass n"):
        pf_ode_sample(src)
    with pytest.raises(ValueError, match="n must equal"):
        pf_ode_sample(src, n=4, x_T=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="steps"):
        pf_ode_sample(src, n=2, method="euler", steps=0)
    with pytest.raises(ValueError, match="rtol"):
        pf_ode_sample(src, n=2, rtol=-1.0)
    with pytest.raises(ValueError, match="source"):
        pf_ode_sample(object(), n=2)
    with pytest.raises(ValueError, match="x must have shape"):
        log_likelihood(src, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="x must have shape"):
        pf_drift(src, 0.5, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="t must lie"):
        pf_drift(src, 2.0, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(src, torch.zeros(3, 2), divergence="trace")
    with pytest.raises(ValueError, match="noise"):
        log_likelihood(src, torch.zeros(3, 2), divergence="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match="method"):
        log_likelihood(src, torch.zeros(3, 2), method="euler")
    with pytest.raises(ValueError, match="hutchinson_samples"):
        log_likelihood(src, torch.zeros(3, 2), hutchinson_samples=0)
    with pytest.raises(ValueError, match="x_int"):
        dequantise([0, 4], 4)
    with pytest.raises(ValueError, match="x_int"):
        dequantise([0.5], 4)
    with pytest.raises(ValueError, match="levels"):
        dequantise([0], 0)
    with pytest.raises(ValueError, match="dim"):
        bits_per_dim(-1.0, 0)
    with pytest.raises(ValueError, match="log_scale"):
        bits_per_dim(-1.0, 2, log_scale=float("nan"))
