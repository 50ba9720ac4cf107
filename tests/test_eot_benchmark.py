"""The entropic OT benchmark pairs (controlsamp.exact.EOTBenchmarkPair) and their metrics
(controlsamp.metrics.cbw2_uvp / bw2_uvp), Gushchin et al. 2023.

What is checked, and against what:
- the conditional pi*(y | x) against independent formulas (explicit inverses, torch.distributions) and
  against brute-force grid quadrature of exp(-|x - y|^2 / (2 eps)) f*(y) in D = 1 and 2;
- that pi* is the entropic OT plan: log pi*(x, y) + |x - y|^2 / (2 eps) is additively separable, and POT's
  log-domain Sinkhorn on a grid, given pi*'s own grid marginals, the cost |x - y|^2 and the regularisation
  2 eps (= 2 sigma^2 T, docs/architecture.md), returns pi* itself (to the solver's tolerance); with eps instead of
  2 eps it does not (the convention is pinned);
- samplers against exact moments within CLT bands: z = 4.5 per compared statistic (two-sided normal
  tail 7e-6, so a few dozen comparisons fail by chance with probability < 1e-3); variances of sample
  covariance entries are estimated from the samples' fourth moments;
- p1's moments (no closed form) by Gauss-Hermite quadrature over x ~ p0 of the exact conditional moments,
  its accuracy checked by comparing two quadrature orders;
- cbw2_uvp: exact samples score the Monte Carlo floor predicted by a second-order expansion, a mean shift
  adds exactly 100 |delta|^2 / Var(p1) in expectation, a wrong model (the independent coupling) scores far
  above the floor.
"""
import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from controlsamp.exact import EOTBenchmarkPair, bures_wasserstein
from controlsamp.metrics import bures_wasserstein_squared, bw2_uvp, cbw2_uvp, gaussian_fit
from controlsamp.targets import Gaussian, GaussianMixture

ot = pytest.importorskip("ot")

Z = 4.5
F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _cov_band(y, mean_true):
    """Standard errors of the entries of the sample covariance of rows y (m, D) around the truth:
    Var(C_hat_ij) ~ (E[d_i^2 d_j^2] - C_ij^2) / m, d = y - mean (fourth moments from the sample)."""
    m = y.shape[0]
    d = y - mean_true
    c = d.T @ d / m
    mu4 = (d ** 2).T @ (d ** 2) / m
    return ((mu4 - c ** 2).clamp_min(0) / m).sqrt()


# ----------------------------------------------------------------------------- construction, validation
def test_conventions_and_reproducibility():
    for eps in EOTBenchmarkPair.PAPER_EPS:
        p = EOTBenchmarkPair(3, eps)
        assert p.sigma == pytest.approx(math.sqrt(eps), rel=1e-15)
        assert p.sinkhorn_eps == pytest.approx(2 * eps, rel=1e-15)
    a, b, c = EOTBenchmarkPair(4, 1.0, seed=7), EOTBenchmarkPair(4, 1.0, seed=7), EOTBenchmarkPair(4, 1.0, seed=8)
    assert torch.equal(a.potential.means, b.potential.means) and torch.equal(a.potential.covs, b.potential.covs)
    assert not torch.allclose(a.potential.means, c.potential.means)
    assert a.n_components == 5 and a.potential.dim == 4
    # default recipe: each coordinate of the K centres is a permutation of an even grid on [-2, 2]
    grid = torch.linspace(-2, 2, 5, dtype=F64)
    assert torch.allclose(a.potential.means.sort(0).values, grid.unsqueeze(1).expand(5, 4))
    lam = torch.linalg.eigvalsh(a.potential.covs)
    assert lam.min() >= 0.1 - 1e-12 and lam.max() <= 0.5 + 1e-12
    # draws are reproducible given a generator
    assert torch.equal(a.sample_target(50, _gen(1)), b.sample_target(50, _gen(1)))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="dim"):
        EOTBenchmarkPair(0, 1.0)
    for bad in (0.0, -1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="eps"):
            EOTBenchmarkPair(2, bad)
    with pytest.raises(ValueError, match="n_components"):
        EOTBenchmarkPair(2, 1.0, n_components=0)
    with pytest.raises(ValueError, match="seed"):
        EOTBenchmarkPair(2, 1.0, seed=1.5)
    with pytest.raises(ValueError, match="cov_range"):
        EOTBenchmarkPair(2, 1.0, cov_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="source"):
        EOTBenchmarkPair(2, 1.0, source="gaussian")
    with pytest.raises(ValueError, match="source"):
        EOTBenchmarkPair(2, 1.0, source=Gaussian(torch.zeros(3), torch.eye(3)))
    with pytest.raises(ValueError, match="potential"):
        EOTBenchmarkPair(2, 1.0, potential=Gaussian(torch.zeros(2), torch.eye(2)))
    with pytest.raises(ValueError, match="potential"):
        EOTBenchmarkPair(2, 1.0, potential=(torch.ones(2), torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3)))
    p = EOTBenchmarkPair(2, 1.0)
    with pytest.raises(ValueError, match="x"):
        p.conditional(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\bm\b"):
        p.sample_conditional(torch.zeros(4, 2), 0)
    with pytest.raises(ValueError, match=r"\bn\b"):
        p.sample_target(-1)
    with pytest.raises(ValueError, match="same number of rows"):
        p.conditional_log_prob(torch.zeros(4, 2), torch.zeros(3, 2))


# ----------------------------------------------------------------------------- the conditional pi*(y | x)
@pytest.mark.parametrize("eps", EOTBenchmarkPair.PAPER_EPS)
def test_conditional_matches_direct_formulas(eps):
    """Sigma_k = (I/eps + S_k^{-1})^{-1}, mu_k = Sigma_k (x/eps + S_k^{-1} r_k), w_k ∝ a_k N(x; r_k, S_k + eps I),
    computed here with explicit inverses and torch.distributions (the paper's own formulas)."""
    p = EOTBenchmarkPair(3, eps, n_components=4, seed=11)
    a, r, S = p.potential.weights, p.potential.means, p.potential.covs
    eye = torch.eye(3, dtype=F64)
    x = p.sample_source(6, _gen(0)) * 2.0
    w, mu, covs = p.conditional(x)
    Sinv = torch.linalg.inv(S)
    covs_direct = torch.linalg.inv(eye / eps + Sinv)
    mu_direct = torch.einsum("kij,nkj->nki", covs_direct, x.unsqueeze(1) / eps + (Sinv @ r.unsqueeze(-1)).squeeze(-1))
    logw = torch.stack([torch.distributions.MultivariateNormal(r[k], S[k] + eps * eye).log_prob(x)
                        for k in range(4)], dim=1) + torch.log(a)
    assert torch.allclose(covs, covs_direct, rtol=1e-10, atol=1e-12)
    assert torch.allclose(mu, mu_direct, rtol=1e-10, atol=1e-10)
    assert torch.allclose(w, torch.softmax(logw, dim=1), rtol=1e-10, atol=1e-14)
    assert torch.allclose(w.sum(1), torch.ones(6, dtype=F64))


@pytest.mark.parametrize("eps", EOTBenchmarkPair.PAPER_EPS)
def test_conditional_vs_grid_quadrature_1d(eps):
    """pi*(y | x) ∝ exp(-(x - y)^2 / (2 eps)) f*(y), normalised by a Riemann sum on a fine grid (spectrally
    accurate for these smooth, rapidly decaying integrands): density and moments to 1e-7."""
    p = EOTBenchmarkPair(1, eps, n_components=3, seed=5)
    for x0 in (-2.0, 0.3, 1.7):
        x = torch.tensor([[x0]], dtype=F64)
        mean, cov = p.conditional_mean_cov(x)
        sd = math.sqrt(float(cov[0, 0, 0]))
        y = torch.linspace(float(mean[0, 0]) - 14 * sd - 3.0, float(mean[0, 0]) + 14 * sd + 3.0, 20001, dtype=F64)
        dy = float(y[1] - y[0])
        log_q = -(x0 - y) ** 2 / (2 * eps) + p.potential.log_prob(y.unsqueeze(1))
        q = torch.exp(log_q - log_q.max())
        dens = q / (q.sum() * dy)
        ours = torch.exp(p.conditional_log_prob(x.expand(y.shape[0], 1), y.unsqueeze(1)))
        assert (ours - dens).abs().max() <= 1e-7 * dens.max()
        m_quad = float((y * dens).sum() * dy)
        v_quad = float(((y - m_quad) ** 2 * dens).sum() * dy)
        assert m_quad == pytest.approx(float(mean[0, 0]), abs=1e-7 * (1 + abs(m_quad)))
        assert v_quad == pytest.approx(float(cov[0, 0, 0]), rel=1e-7)
        # the normaliser Z(x) = int exp(-(x - y)^2 / (2 eps)) f*(y) dy
        assert float(p.log_normalizer(x)) == pytest.approx(float(log_q.max() + torch.log(q.sum() * dy)), abs=1e-8)


def test_conditional_vs_grid_quadrature_2d():
    eps = 1.0
    p = EOTBenchmarkPair(2, eps, n_components=4, seed=6)
    x = torch.tensor([[0.4, -1.1]], dtype=F64)
    mean, cov = p.conditional_mean_cov(x)
    sd = float(torch.linalg.eigvalsh(cov[0]).max().sqrt())
    g0 = torch.linspace(float(mean[0, 0]) - 12 * sd, float(mean[0, 0]) + 12 * sd, 401, dtype=F64)
    g1 = torch.linspace(float(mean[0, 1]) - 12 * sd, float(mean[0, 1]) + 12 * sd, 401, dtype=F64)
    y = torch.cartesian_prod(g0, g1)
    area = float((g0[1] - g0[0]) * (g1[1] - g1[0]))
    log_q = -((x - y) ** 2).sum(1) / (2 * eps) + p.potential.log_prob(y)
    q = torch.exp(log_q - log_q.max())
    dens = q / (q.sum() * area)
    ours = torch.exp(p.conditional_log_prob(x.expand(y.shape[0], 2), y))
    assert (ours - dens).abs().max() <= 1e-7 * dens.max()
    m_quad = (y * dens.unsqueeze(1)).sum(0) * area
    d = y - m_quad
    c_quad = (d.T * dens) @ d * area
    assert torch.allclose(m_quad, mean[0], atol=1e-7)
    assert torch.allclose(c_quad, cov[0], atol=1e-7)


def test_plan_has_schrodinger_form():
    """log pi*(x, y) + |x - y|^2 / (2 eps) = phi(x) + psi(y) with psi = log f* and
    phi = log p0 - log Z: every mixed second difference over a grid of (x, y) vanishes."""
    eps = 0.7
    p = EOTBenchmarkPair(2, eps, n_components=5, seed=9)
    g = _gen(3)
    xs = 1.5 * torch.randn(7, 2, dtype=F64, generator=g)
    ys = p.sample_target(7, g)
    X = xs.repeat_interleave(7, 0)
    Y = ys.repeat(7, 1)
    L = (p.log_density(X, Y) + ((X - Y) ** 2).sum(1) / (2 * eps)).reshape(7, 7)
    mixed = L - L[:1, :] - L[:, :1] + L[:1, :1]
    assert mixed.abs().max() <= 1e-9 * (1 + L.abs().max())
    psi = L[0] - L[0, 0]
    f = p.potential.log_prob(ys)
    assert torch.allclose(psi, f - f[0], atol=1e-9)
    phi = L[:, 0] - L[0, 0]
    phi_true = p.source.log_prob(xs) - p.log_normalizer(xs)
    assert torch.allclose(phi, phi_true - phi_true[0], atol=1e-9)


def _grid_plan(p, xs, ys):
    X = xs.repeat_interleave(ys.shape[0], 0)
    Y = ys.repeat(xs.shape[0], 1)
    L = p.log_density(X, Y).reshape(xs.shape[0], ys.shape[0])
    P = torch.exp(L - L.max())
    return P / P.sum()


@pytest.mark.parametrize("dim,eps", [(1, 0.1), (1, 1.0), (1, 10.0), (2, 1.0)])
def test_sinkhorn_on_grid_recovers_the_plan(dim, eps):
    """pi* on a grid, normalised, has marginals (a, b) and the Schrödinger form u_i exp(-|x_i - y_j|^2 / (2 eps)) v_j,
    so it is the unique discrete entropic OT plan between (a, b) for the cost |x - y|^2 with regularisation 2 eps
    (POT's convention; docs/architecture.md's 2 sigma^2 T with sigma^2 = eps). POT's log-domain Sinkhorn must return it to
    its stopping tolerance; with regularisation eps it returns a different plan."""
    p = EOTBenchmarkPair(dim, eps, n_components=3, seed=2)
    mean, cov = p.target_moments(20_000, _gen(0))
    sd = cov.diagonal().sqrt()
    if dim == 1:
        xs = torch.linspace(-6, 6, 241, dtype=F64).unsqueeze(1)
        ys = torch.linspace(float(mean[0] - 7 * sd[0]), float(mean[0] + 7 * sd[0]), 241, dtype=F64).unsqueeze(1)
    else:
        g = torch.linspace(-5, 5, 25, dtype=F64)
        xs = torch.cartesian_prod(g, g)
        ys = torch.cartesian_prod(*[torch.linspace(float(mean[i] - 6 * sd[i]), float(mean[i] + 6 * sd[i]), 25,
                                                   dtype=F64) for i in range(2)])
    P = _grid_plan(p, xs, ys)
    a, b = P.sum(1).numpy(), P.sum(0).numpy()
    M = (torch.cdist(xs, ys) ** 2).numpy()
    P_sk = ot.sinkhorn(a, b, M, p.sinkhorn_eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    assert np.abs(P_sk - P.numpy()).sum() <= 1e-9
    P_wrong = ot.sinkhorn(a, b, M, p.eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    assert np.abs(P_wrong - P.numpy()).sum() >= 0.05


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("dim,eps", [(3, 1.0), (16, 0.1)])
def test_sample_conditional_moments(dim, eps):
    p = EOTBenchmarkPair(dim, eps, seed=4)
    g = _gen(5)
    x = p.sample_source(3, g)
    m = 40_000
    y = p.sample_conditional(x, m, g)
    assert y.shape == (3, m, dim) and y.dtype == F64
    mean, cov = p.conditional_mean_cov(x)
    for i in range(3):
        sd = cov[i].diagonal().sqrt()
        assert ((y[i].mean(0) - mean[i]).abs() <= Z * sd / math.sqrt(m)).all()
        d = y[i] - mean[i]
        assert ((d.T @ d / m - cov[i]).abs() <= Z * _cov_band(y[i], mean[i]) + 1e-12).all()


def _gh_nodes(k, dim):
    """Tensor-product Gauss-Hermite rule for E over N(0, I_dim): nodes (k^dim, dim), weights (k^dim,)."""
    t, w = hermegauss(k)
    w = w / w.sum()
    nodes = torch.cartesian_prod(*[torch.as_tensor(t, dtype=F64)] * dim).reshape(-1, dim)
    weights = torch.cartesian_prod(*[torch.as_tensor(w, dtype=F64)] * dim).reshape(-1, dim).prod(1)
    return nodes, weights


def _p1_quadrature(p, k):
    """Gauss-Hermite nodes x_q over each Gaussian component of p0 with weights w_q, and the exact
    conditional moments m(x_q), C(x_q): E_p1[g] = sum_q w_q E[g(Y) | x_q]."""
    src = p.source
    if isinstance(src, Gaussian):
        comps = [(torch.ones((), dtype=F64), src.mean, src.cov)]
    else:
        comps = list(zip(src.weights, src.means, src.covs))
    nodes, weights = _gh_nodes(k, p.dim)
    x = torch.cat([mk + nodes @ torch.linalg.cholesky(Sk).T for _, mk, Sk in comps])
    w = torch.cat([wk * weights for wk, _, _ in comps])
    m, C = p.conditional_mean_cov(x)
    return w, m, C


def _p1_moments_quadrature(p, k):
    """Mean and covariance of p1: E[Y] = E_x m(x), Cov(Y) = E_x C(x) + Cov_x m(x)."""
    w, m, C = _p1_quadrature(p, k)
    mean = w @ m
    d = m - mean
    return mean, torch.einsum("n,nij->ij", w, C) + (d.T * w) @ d


def _check_p1_sample_moments(y, mean, cov):
    n = y.shape[0]
    sd = cov.diagonal().sqrt()
    assert ((y.mean(0) - mean).abs() <= Z * sd / math.sqrt(n)).all()
    d = y - mean
    assert ((d.T @ d / n - cov).abs() <= Z * _cov_band(y, mean)).all()


def test_sample_target_matches_p1_moments_gaussian_source():
    p = EOTBenchmarkPair(2, 1.0, n_components=4, seed=12)
    mean40, cov40 = _p1_moments_quadrature(p, 40)
    mean, cov = _p1_moments_quadrature(p, 60)
    assert torch.allclose(mean, mean40, atol=1e-10) and torch.allclose(cov, cov40, atol=1e-10)  # quadrature converged
    _check_p1_sample_moments(p.sample_target(100_000, _gen(13)), mean, cov)
    # the Rao-Blackwellised estimates average m(x) and h(x) = tr C(x) + |m(x) - E Y|^2 over n draws of x:
    # their standard errors are sd_x(m_j(x)) / sqrt(n) and sd_x(h(x)) / sqrt(n), by quadrature
    n = 50_000
    w, m, C = _p1_quadrature(p, 60)
    sd_m = (w @ (m - mean) ** 2).sqrt()
    h = torch.diagonal(C, dim1=1, dim2=2).sum(1) + ((m - mean) ** 2).sum(1)
    sd_h = float((w @ (h - w @ h) ** 2).sqrt())
    mean_rb, cov_rb = p.target_moments(n, _gen(14))
    assert ((mean_rb - mean).abs() <= Z * sd_m / math.sqrt(n)).all()
    assert abs(float(torch.trace(cov_rb)) - float(torch.trace(cov))) <= Z * sd_h / math.sqrt(n)
    assert abs(p.target_variance(n, seed=15) - float(torch.trace(cov))) <= Z * sd_h / math.sqrt(n)


def test_sample_target_matches_p1_moments_mixture_source():
    src = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-2.0], [1.5]]), torch.tensor([[[0.3]], [[0.6]]]))
    p = EOTBenchmarkPair(1, 0.1, n_components=3, seed=16, source=src)
    x = p.sample_source(50_000, _gen(17))
    comp_mean = float(src.weights @ src.means[:, 0])
    assert abs(float(x.mean()) - comp_mean) <= Z * float(src.moments()[1][0, 0].sqrt()) / math.sqrt(50_000)
    mean80, cov80 = _p1_moments_quadrature(p, 80)
    mean, cov = _p1_moments_quadrature(p, 120)
    assert torch.allclose(mean, mean80, atol=1e-9) and torch.allclose(cov, cov80, atol=1e-9)
    _check_p1_sample_moments(p.sample_target(100_000, _gen(18)), mean, cov)


# ----------------------------------------------------------------------------- metrics
def test_bures_wasserstein_squared():
    g = _gen(20)
    A = torch.randn(6, 4, 4, dtype=F64, generator=g)
    B = torch.randn(6, 4, 4, dtype=F64, generator=g)
    S0 = A @ A.transpose(1, 2) + 0.1 * torch.eye(4, dtype=F64)
    S1 = B @ B.transpose(1, 2) + 0.1 * torch.eye(4, dtype=F64)
    m0, m1 = torch.randn(6, 4, dtype=F64, generator=g), torch.randn(6, 4, dtype=F64, generator=g)
    got = bures_wasserstein_squared(m0, S0, m1, S1)
    assert got.shape == (6,)
    ref = torch.tensor([bures_wasserstein(m0[i], S0[i], m1[i], S1[i]) ** 2 for i in range(6)], dtype=F64)
    assert torch.allclose(got, ref, rtol=1e-9)
    assert torch.allclose(got, bures_wasserstein_squared(m1, S1, m0, S0), rtol=1e-9)  # symmetric
    # commuting (diagonal) case: sum (sqrt a - sqrt b)^2; a singular (PSD) covariance is allowed
    a, b = torch.tensor([0.0, 1.0, 4.0], dtype=F64), torch.tensor([1.0, 1.0, 9.0], dtype=F64)
    z = torch.zeros(3, dtype=F64)
    assert float(bures_wasserstein_squared(z, torch.diag(a), z, torch.diag(b))) == pytest.approx(2.0, rel=1e-12)
    with pytest.raises(ValueError, match="cov0"):
        bures_wasserstein_squared(z, torch.eye(2), z, torch.eye(3))


def test_gaussian_fit_is_numpy_cov():
    y = torch.randn(3, 50, 4, dtype=F64, generator=_gen(21))
    mean, cov = gaussian_fit(y)
    for i in range(3):
        assert np.allclose(cov[i].numpy(), np.cov(y[i].numpy().T))
        assert np.allclose(mean[i].numpy(), y[i].numpy().mean(0))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_fit(torch.zeros(3, 1, 4))


def _expected_floor(y, mean, C):
    """Second-order expectation of BW2^2(Gaussian fit of the m rows of y, N(mean, C)) per input:
    E|m_hat - m|^2 = tr C / m, plus (1/2) sum_ij Var(C_hat_ij) / (l_i + l_j) in the eigenbasis of C
    (the Hessian of the Bures distance, W2^2(C + Delta, C) = tr(X C X) + O(Delta^3), X C + C X = Delta);
    Var(C_hat_ij) = (E[u_i^2 u_j^2] - l_i^2 delta_ij) / m from the sample's fourth moments."""
    m = y.shape[1]
    lam, Q = torch.linalg.eigh(C)
    u = torch.einsum("nmi,nij->nmj", y - mean.unsqueeze(1), Q)
    mu4 = torch.einsum("nmi,nmj->nij", u ** 2, u ** 2) / m
    var_c = (mu4 - torch.diag_embed(lam) ** 2) / m
    return lam.sum(1) / m + 0.5 * (var_c / (lam.unsqueeze(2) + lam.unsqueeze(1))).sum((1, 2))


@pytest.mark.parametrize("dim,eps,n_test", [(2, 1.0, 200), (16, 0.1, 100), (16, 10.0, 100)])
def test_cbw2_uvp_exact_model_at_floor_wrong_model_far(dim, eps, n_test):
    m = 1000
    p = EOTBenchmarkPair(dim, eps, seed=3)
    g = _gen(22)
    x = p.sample_source(n_test, g)
    y = p.sample_conditional(x, m, g)
    var = p.target_variance()
    per = cbw2_uvp(y, p, x, reduction="none")
    assert per.shape == (n_test,) and float(per.mean()) == pytest.approx(cbw2_uvp(y, p, x), rel=1e-12)
    mean, C = p.conditional_mean_cov(x)
    floor = 100.0 * _expected_floor(y, mean, C) / var
    diff = per - floor
    se = float(diff.std()) / math.sqrt(n_test)
    # neglected third-order terms are O(1/m) relative to the floor (0.1% here); allow 5%
    assert abs(float(diff.mean())) <= Z * se + 0.05 * float(floor.mean())
    # a mean shift delta adds 100 (|delta|^2 + 2 delta.(m_hat - m)) / Var: exactly 100 |delta|^2 / Var on average
    delta = torch.full((dim,), 0.3 / math.sqrt(dim), dtype=F64)
    shifted = cbw2_uvp(y + delta, p, x, reduction="none")
    inc = shifted - per
    expected_inc = 100.0 * float(delta @ delta) / var
    assert abs(float(inc.mean()) - expected_inc) <= Z * float(inc.std()) / math.sqrt(n_test) + 1e-12
    # the independent coupling (y ~ p1 whatever x) is far from pi*
    wrong = cbw2_uvp(p.sample_target(n_test * m, g).reshape(n_test, m, dim), p, x)
    assert wrong >= 20 * (float(floor.mean()) + Z * se)


def test_cbw2_uvp_bad_inputs():
    p = EOTBenchmarkPair(2, 1.0)
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="model_samples"):
        cbw2_uvp(torch.zeros(4, 10, 2), p, x, var_p1=1.0)
    with pytest.raises(ValueError, match="x_test"):
        cbw2_uvp(torch.zeros(5, 10, 2), p, torch.zeros(5, 3), var_p1=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        cbw2_uvp(torch.zeros(5, 1, 2), p, x, var_p1=1.0)
    with pytest.raises(ValueError, match="var_p1"):
        cbw2_uvp(torch.zeros(5, 10, 2), p, x, var_p1=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        cbw2_uvp(torch.zeros(5, 10, 2), p, x, var_p1=1.0, reduction="sum")


def test_bw2_uvp():
    dim, n, reps = 16, 5000, 20
    p = EOTBenchmarkPair(dim, 1.0, seed=23)
    g = _gen(24)
    mean, cov = p.target_moments()
    var = float(torch.trace(cov))
    y = p.sample_target(n, g)
    # the definition, through the independent single-pair implementation of exact.bures_wasserstein
    m_hat, c_hat = gaussian_fit(y)
    assert bw2_uvp(y, p) == pytest.approx(100.0 * bures_wasserstein(m_hat, c_hat, mean, cov) ** 2 / var, rel=1e-8)
    # exact samples: over replicates, the mean value is the Monte Carlo floor of one Gaussian fit (against the
    # pair's moments) or of two fits (against ground-truth samples, the reference code's protocol: floors add).
    # The band is Z standard errors of the replicate mean, plus 5% for the second-order expansion and for the
    # reference moments' own Monte Carlo error (10^5 Rao-Blackwellised draws: a floor about n / 10^5 = 5% of this one).
    vs_pair, vs_samples, floors = [], [], []
    for _ in range(reps):
        y, y_ref = p.sample_target(n, g), p.sample_target(n, g)
        vs_pair.append(bw2_uvp(y, p))
        vs_samples.append(bw2_uvp(y, y_ref))
        floors.append(100.0 * float(_expected_floor(y.unsqueeze(0), mean.unsqueeze(0), cov.unsqueeze(0))[0]) / var)
    vs_pair, vs_samples, floor = torch.tensor(vs_pair), torch.tensor(vs_samples), sum(floors) / reps
    assert abs(float(vs_pair.mean()) - floor) <= Z * float(vs_pair.std()) / math.sqrt(reps) + 0.05 * floor
    assert abs(float(vs_samples.mean()) - 2 * floor) <= Z * float(vs_samples.std()) / math.sqrt(reps) + 0.1 * floor
    assert bw2_uvp(y, y) == pytest.approx(0.0, abs=1e-9)
    # the source law is not the target
    assert bw2_uvp(p.sample_source(n, g), p) >= 20 * float(vs_pair.max())
    with pytest.raises(ValueError, match="model_samples"):
        bw2_uvp(torch.zeros(10), p)
    with pytest.raises(ValueError, match="columns"):
        bw2_uvp(torch.zeros(10, 3), y_ref)
