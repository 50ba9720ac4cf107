"""controlsamp.metrics against independent sources: closed forms (lognormal means, Gaussian KLs, Bures W2,
Gaussian-kernel MMD), scipy (linear_sum_assignment, pdist, entropy), a NumPy log-domain Sinkhorn written
here, brute-force loops and sorting. Statistical checks use fixed seeds and bands derived from the
sample size (CLT, delta method, chi-square)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist, pdist
from scipy.special import logsumexp
from torch.distributions import Normal, kl_divergence

import controlsamp as cs
from controlsamp import metrics as M

pytest.importorskip("ot")


# ----------------------------------------------------------------------------------------------- importance
def test_log_Z_lognormal_weights_and_bootstrap_se():
    """w = exp(mu + s z): E w = exp(mu + s^2/2). The estimate lies within 5 bootstrap se of the truth, and the
    bootstrap se matches the delta-method se std(w) / (sqrt(n) mean(w)): with 200 replicates the bootstrap
    se has relative sd about 1/sqrt(2 * 200) = 5%, so 20% is a 4-sigma band."""
    rng = np.random.default_rng(0)
    n, mu, s = 20000, -1.3, 0.5
    lw = mu + s * rng.standard_normal(n)
    est, se = M.log_Z(lw)
    assert isinstance(est, float) and isinstance(se, float)
    assert abs(est - (mu + s * s / 2)) < 5 * se
    w = np.exp(lw)
    se_delta = w.std(ddof=1) / (math.sqrt(n) * w.mean())
    assert abs(se / se_delta - 1) < 0.2
    # stable for any scale: a shift of 1000 (exp overflows in float64) moves the estimate by exactly 1000
    est2, se2 = M.log_Z(torch.as_tensor(lw + 1000.0))
    assert abs(est2 - est - 1000.0) < 1e-9 and abs(se2 - se) < 1e-9
    assert M.log_Z(lw, seed=0) == (est, se)  # seeded


def test_constant_log_w():
    lw = np.full(1000, 3.7)
    est, se = M.log_Z(lw)
    assert abs(est - 3.7) < 1e-12 and se < 1e-12
    assert abs(M.ess(lw) - 1.0) < 1e-12
    assert abs(M.elbo(lw) - 3.7) < 1e-12


def test_elbo_log_Z_eubo_order_on_gaussians():
    """Proposal q = N(0, 1), unnormalised target pi~ = Z N(1, 1.5^2) with log Z = 0.7. Then
    ELBO = log Z - KL(q || p) and EUBO = log Z + KL(p || q) (KLs from torch.distributions), each within a
    5-sigma CLT band; and ELBO <= log-mean-exp for the sample (Jensen, exact)."""
    log_Z_true = 0.7
    q, p = Normal(0.0, 1.0), Normal(1.0, 1.5)
    gen = torch.Generator().manual_seed(1)
    n = 20000

    def log_w(x):
        return (log_Z_true + p.log_prob(x) - q.log_prob(x)).double()

    lw_q = log_w(torch.randn(n, generator=gen))
    lw_p = log_w(1.0 + 1.5 * torch.randn(n, generator=gen))
    elbo, eubo = M.elbo(lw_q), M.eubo(lw_p)
    assert abs(elbo - (log_Z_true - float(kl_divergence(q, p)))) < 5 * float(lw_q.std()) / math.sqrt(n)
    assert abs(eubo - (log_Z_true + float(kl_divergence(p, q)))) < 5 * float(lw_p.std()) / math.sqrt(n)
    est, se = M.log_Z(lw_q)
    assert elbo <= est <= eubo
    assert abs(est - log_Z_true) < 5 * se
    rng = np.random.default_rng(2)
    for scale in (0.1, 3.0, 30.0):
        lw = scale * rng.standard_normal(50)
        assert M.elbo(lw) <= M.log_Z(lw)[0]


def test_mean_se_is_the_clt_standard_error():
    """log w ~ N(mu, s^2): on n = 20000 paths mean_se matches s / sqrt(n) (the sample sd's relative sd is
    1/sqrt(2n) = 0.5%, so 2.5% is a 5-sigma band); and over 400 replicates of n = 50 the interval
    mean +- 1.96 se covers mu in a fraction within 4 binomial sd of the Student-t coverage
    P(|T_49| < 1.96) (scipy)."""
    rng = np.random.default_rng(4)
    mu, s, n = 0.3, 2.0, 20000
    se = M.mean_se(mu + s * rng.standard_normal(n))
    assert isinstance(se, float) and abs(se / (s / math.sqrt(n)) - 1) < 0.025
    reps, m = 400, 50
    draws = mu + s * rng.standard_normal((reps, m))
    covered = np.mean([abs(M.elbo(d) - mu) < 1.96 * M.mean_se(torch.as_tensor(d)) for d in draws])
    p = 2 * stats.t.cdf(1.96, m - 1) - 1
    assert abs(covered - p) < 4 * math.sqrt(p * (1 - p) / reps)
    assert M.mean_se(np.array([0.0, -np.inf, 1.0])) == math.inf  # the mean is -inf
    assert math.isnan(M.mean_se([2.5]))  # one path: no spread to measure
    with pytest.raises(ValueError, match="eubo log weights has 1 non-finite"):
        M.mean_se([0.0, np.nan], "eubo log weights")


def test_ess():
    rng = np.random.default_rng(3)
    n = 500
    one = np.full(n, -np.inf)
    one[17] = 2.0
    assert abs(M.ess(one) - 1.0 / n) < 1e-15
    assert M.log_Z(one)[0] == pytest.approx(2.0 - math.log(n), abs=1e-12)  # -inf entries are zero weights
    lw = 1.5 * rng.standard_normal(n)
    w = np.exp(lw)
    direct = w.sum() ** 2 / (n * (w ** 2).sum())
    assert abs(M.ess(lw) - direct) < 1e-12 * direct
    assert 1.0 / n <= M.ess(lw) <= 1.0
    # invariance to a constant, far beyond where exp overflows
    assert abs(M.ess(lw + 800.0) - direct) < 1e-12 and abs(M.ess(torch.as_tensor(lw) - 800.0) - direct) < 1e-12


def test_log_w_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"log_w has 1 non-finite entries .*1 NaN"):
        M.log_Z([0.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match=r"log_w has 2 non-finite entries .*2 \+inf"):
        M.ess(np.array([np.inf, 0.0, np.inf]))
    with pytest.raises(ValueError, match=r"log_w: all 3 entries are -inf"):
        M.elbo(np.full(3, -np.inf))
    with pytest.raises(ValueError, match="log_w_target"):
        M.eubo([np.nan])
    with pytest.raises(ValueError, match=r"log_w must have shape \(n,\)"):
        M.log_Z(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="n_boot"):
        M.log_Z(np.zeros(4), n_boot=1)


# ------------------------------------------------------------------------------------------------ transport
def test_w2_equals_exact_assignment():
    """Equal sizes, uniform weights: an optimal plan is a permutation (Birkhoff), so W2^2 is the mean cost of
    scipy's linear_sum_assignment on the squared distances."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((60, 3)), 2.0 * rng.standard_normal((60, 3)) + 0.5
    C = cdist(x, y, "sqeuclidean")
    r, c = linear_sum_assignment(C)
    assert abs(M.w2(x, y) ** 2 - C[r, c].mean()) < 1e-8
    assert M.w2(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y)) == pytest.approx(M.w2(x, y), abs=1e-12)
    assert M.w2(x, x) == 0.0 and M.w2(x, x[rng.permutation(60)]) == 0.0
    # max_samples >= n changes nothing; a smaller one is reproducible for a seed
    assert M.w2(x, y, max_samples=60) == M.w2(x, y)
    assert M.w2(x, y, max_samples=20, seed=5) == M.w2(x, y, max_samples=20, seed=5)
    with pytest.warns(RuntimeWarning, match="numItermax"):
        M.w2(x, y, numItermax=3)  # stopped before optimality: said, not silent


def test_w2_between_gaussian_samples_matches_bures():
    """Two 2-d Gaussian samples: W2^2 of the empirical measures fluctuates around the Bures value with the
    CLT variance Var(phi(X))/n + Var(psi(Y))/m, phi, psi the Kantorovich potentials of the quadratic cost
    (del Barrio & Loubes 2019; centred at the population value for d <= 3). With the Bures map
    T(x) = m1 + A(x - m0): phi(x) = |x|^2 - 2 f(x), f(x) = m1.x + (x-m0)'A(x-m0)/2, and
    psi(y) = |y|^2 - 2 f*(y), f*(y) = m0.y + (y-m1)'A^{-1}(y-m1)/2. Band: 5 sd plus the O(log n / n)
    empirical bias in d = 2, bounded here by 5 / n."""
    m0, S0 = np.array([0.0, 1.0]), np.array([[2.0, 0.6], [0.6, 1.0]])
    m1, S1 = np.array([1.5, -0.5]), np.array([[0.5, -0.2], [-0.2, 1.5]])
    rng = np.random.default_rng(6)
    n = 800
    x = rng.multivariate_normal(m0, S0, n)
    y = rng.multivariate_normal(m1, S1, n)
    bures2 = cs.exact.bures_wasserstein(m0, S0, m1, S1) ** 2
    A = cs.exact.bures_map(S0, S1).numpy()
    Ai = np.linalg.inv(A)
    f = x @ m1 + 0.5 * np.einsum("ni,ij,nj->n", x - m0, A, x - m0)
    fs = y @ m0 + 0.5 * np.einsum("ni,ij,nj->n", y - m1, Ai, y - m1)
    phi, psi = (x ** 2).sum(1) - 2 * f, (y ** 2).sum(1) - 2 * fs
    sd = math.sqrt(phi.var() / n + psi.var() / n)
    assert abs(M.w2(x, y) ** 2 - bures2) < 5 * sd + 5.0 / n


def _np_sinkhorn_cost(x, y, eps, iters=20000, tol=1e-13):
    """Independent log-domain Sinkhorn on uniform weights; returns <P, C>."""
    C = cdist(x, y, "sqeuclidean")
    la, lb = -np.log(len(x)) * np.ones(len(x)), -np.log(len(y)) * np.ones(len(y))
    f, g = np.zeros(len(x)), np.zeros(len(y))
    for _ in range(iters):
        f = -eps * logsumexp((g[None, :] - C) / eps + lb[None, :], axis=1)
        g = -eps * logsumexp((f[:, None] - C) / eps + la[:, None], axis=0)
        logP = (f[:, None] + g[None, :] - C) / eps + la[:, None] + lb[None, :]
        if np.abs(np.exp(logsumexp(logP, axis=1)) - np.exp(la)).sum() < tol:
            break
    return float((np.exp(logP) * C).sum())


def test_sinkhorn_matches_numpy_log_domain():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((40, 2)), rng.standard_normal((30, 2)) + [1.0, 0.0]
    for eps in (1.0, 0.1):
        ref = _np_sinkhorn_cost(x, y, eps)
        assert abs(M.sinkhorn(x, y, eps, stopThr=1e-12) - ref) < 1e-6
    assert abs(M.sinkhorn(x, y, 1.0) - _np_sinkhorn_cost(x, y, 1.0)) < 1e-6  # default knobs


def test_sinkhorn_decreases_to_w2_squared_from_above():
    """P_eps is feasible, so <P_eps, C> >= W2^2; the eps-optimality of P_eps against the OT plan bounds the
    excess by eps (H(P_eps) - H(P*)) <= eps log min(n, m), and it decreases with eps."""
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((30, 2)), 0.7 * rng.standard_normal((25, 2)) + 0.3
    w2sq = M.w2(x, y) ** 2
    epss = (1.0, 0.3, 0.1, 0.03)
    vals = [M.sinkhorn(x, y, eps, numItermax=100000, stopThr=1e-10) for eps in epss]
    for eps, v in zip(epss, vals):
        assert w2sq - 1e-8 <= v <= w2sq + eps * math.log(25) + 1e-8
    assert all(a >= b - 1e-8 for a, b in zip(vals, vals[1:]))


def _brute_mmd(x, y, h):
    k = lambda a, b: math.exp(-((a - b) ** 2).sum() / (2 * h * h))  # noqa: E731
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_mmd_matches_brute_force_and_median_heuristic():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((17, 3)) + 0.4
    assert abs(M.mmd(x, y, bandwidth=1.3) - _brute_mmd(x, y, 1.3)) < 1e-12
    z = np.vstack([x, y])  # 29 points: 406 pairs, an even count, so the median averages two middle values
    h = np.median(pdist(z))
    assert abs(M.median_bandwidth(x, y) - h) < 1e-12
    assert abs(M.mmd(x, y) - _brute_mmd(x, y, h)) < 1e-12
    assert abs(M.mmd(torch.as_tensor(x, dtype=torch.float32), y, 1.3) - _brute_mmd(x.astype(np.float32), y, 1.3)) < 1e-6


def test_mmd_is_unbiased_for_the_gaussian_closed_form():
    """X ~ N(0, I), Y ~ N(delta, I) in d dims, k = exp(-|a-b|^2 / (2h^2)):
    MMD^2 = 2 (h^2/(h^2+2))^{d/2} (1 - exp(-|delta|^2 / (2 (h^2+2)))). The U-statistic is unbiased, so its
    mean over R independent replicates lies within 5 standard errors of this, 0 for equal laws."""
    d, h, n, R = 2, 1.0, 150, 20
    gen = torch.Generator().manual_seed(10)
    shifted = 2 * (h * h / (h * h + 2)) ** (d / 2) * (1 - math.exp(-1.0 / (2 * (h * h + 2))))  # |delta| = 1
    for delta, truth in ((0.0, 0.0), (1.0, shifted)):
        shift = torch.tensor([delta, 0.0])
        vals = np.array([M.mmd(torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen) + shift, h)
                         for _ in range(R)])
        se = vals.std(ddof=1) / math.sqrt(R)
        assert abs(vals.mean() - truth) < 5 * se
        if delta > 0:
            assert vals.mean() > 10 * se  # clearly positive for shifted laws


def test_energy_w2_is_the_sorted_coupling():
    rng = np.random.default_rng(11)
    ex, ey = rng.standard_normal(300), 2.0 * rng.standard_normal(300) + 1.0
    assert abs(M.energy_w2(ex, ey) ** 2 - ((np.sort(ex) - np.sort(ey)) ** 2).mean()) < 1e-10
    assert M.energy_w2(ex, ex[::-1]) == 0.0
    # unequal sizes n vs 2n: the quantile coupling sends each x_(i) to y_(2i-1) and y_(2i), half each
    ey2 = rng.standard_normal(600)
    ref = ((np.repeat(np.sort(ex), 2) - np.sort(ey2)) ** 2).mean()
    assert abs(M.energy_w2(ex, torch.as_tensor(ey2)[:, None]) ** 2 - ref) < 1e-10


def test_transport_errors_name_the_argument():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"^x must have shape \(n, d\) \(for 1-d samples"):
        M.w2(np.zeros(5), x)
    with pytest.raises(ValueError, match=r"^y must have d = 2 columns to match x"):
        M.sinkhorn(x, np.zeros((5, 3)), 0.1)
    with pytest.raises(ValueError, match="^y contains NaN"):
        M.mmd(x, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="^x must hold at least 2"):
        M.mmd(np.zeros((1, 2)), x)
    with pytest.raises(ValueError, match="^eps"):
        M.sinkhorn(x, x, 0.0)
    with pytest.raises(TypeError):
        M.sinkhorn(x, x)  # eps is required
    with pytest.raises(ValueError, match="^bandwidth"):
        M.mmd(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="^max_samples"):
        M.w2(x, x, max_samples=0)
    with pytest.raises(ValueError, match="^e_y"):
        M.energy_w2(np.zeros(3), np.zeros((3, 2)))


# ---------------------------------------------------------------------------------------------------- modes
def _gmm25_exact(n, seed):
    """Exact gmm25 samples with their labels, drawn here from the target's means and covariances."""
    t = cs.targets.get("gmm25")
    rng = np.random.default_rng(seed)
    k = rng.integers(0, t.n_components, n)
    L = np.linalg.cholesky(t.covs.numpy())
    x = t.means.numpy()[k] + np.einsum("nij,nj->ni", L[k], rng.standard_normal((n, 2)))
    return t, x, k


def test_assign_modes_recovers_labels():
    """Equal weights and covariances 0.3 I: nearest mean = maximum posterior, exactly. Against the true labels,
    a sample is misassigned only if it crosses a half-spacing 2.5 towards one of <= 4 neighbours, so the
    expected count is <= 4 n Phi(-2.5 / sqrt(0.3)) ~ 0.05 for n = 5000; allow a Poisson 1e-6 tail."""
    t, x, k = _gmm25_exact(5000, 12)
    a = M.assign_modes(x, t)
    assert a.dtype == torch.long and a.shape == (5000,)
    post = t.component_log_prob(torch.as_tensor(x)).argmax(1)
    assert torch.equal(a, post)
    lam = 4 * len(x) * stats.norm.sf(2.5 / math.sqrt(0.3))
    assert (a.numpy() != k).sum() <= stats.poisson.isf(1e-6, lam)
    assert torch.equal(M.assign_modes(torch.as_tensor(x, dtype=torch.float32), t.means), a)  # means array accepted


def test_coverage_and_emc_of_exact_samples():
    """Exact samples (the target's own sampler): coverage 1; with p_hat the assignment frequencies,
    2 n log K (1 - EMC) = 2 n KL(p_hat || uniform) is the G-statistic, about chi^2_{K-1}: bound it at the
    0.999 quantile. EMC equals scipy's entropy of the counts / log K."""
    t = cs.targets.get("gmm25")
    n, K = 5000, 25
    x = t.sample(n, generator=torch.Generator().manual_seed(13))
    assert M.mode_coverage(x, t) == 1.0
    e = M.emc(x, t)
    assert 0.0 < 1.0 - e < stats.chi2.ppf(0.999, K - 1) / (2 * n * math.log(K))
    counts = np.bincount(t.component_log_prob(x).argmax(1).numpy(), minlength=K)
    assert abs(e - stats.entropy(counts) / math.log(K)) < 1e-12
    assert M.mode_coverage(x, t, min_count=n) == 0.0


def test_coverage_and_emc_of_partial_samples():
    t, x, k = _gmm25_exact(5000, 14)
    one = x[k == 7]
    assert M.mode_coverage(one, t) == pytest.approx(1 / 25) and M.emc(one, t) == 0.0
    # 40 samples on each of 5 means: EMC = log 5 / log 25 = 1/2 exactly, coverage 5/25
    five = np.repeat(t.means.numpy()[[0, 6, 12, 18, 24]], 40, axis=0)
    assert M.emc(five, t) == pytest.approx(0.5, abs=1e-14) and M.mode_coverage(five, t) == pytest.approx(0.2)


def test_mode_errors_name_the_argument():
    t = cs.targets.get("gmm25")
    with pytest.raises(ValueError, match=r"^x must have d = 2 columns"):
        M.assign_modes(np.zeros((4, 3)), t)
    with pytest.raises(ValueError, match="^mixture"):
        M.emc(np.zeros((4, 2)), "gmm25")
    with pytest.raises(ValueError, match="^min_count"):
        M.mode_coverage(np.zeros((4, 2)), t, min_count=0)


# ------------------------------------------------------------------------------------------------ particles
def test_interatomic_distances():
    tri = np.array([[0.0, 0.0, 3.0, 0.0, 0.0, 4.0]])  # a 3-4-5 triangle, particle-major
    th = 0.7
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    moved = (tri.reshape(3, 2) @ R.T + [5.0, -2.0])[[2, 0, 1]].reshape(1, 6)  # rotated, shifted, permuted
    d = M.interatomic_distances(np.vstack([tri, moved]), 3, 2)
    assert d.shape == (2, 3) and d.dtype == torch.float64
    np.testing.assert_allclose(d[0].numpy(), [3.0, 4.0, 5.0], atol=1e-15)
    np.testing.assert_allclose(np.sort(d[1].numpy()), [3.0, 4.0, 5.0], atol=1e-12)
    x = np.random.default_rng(15).standard_normal((7, 4 * 3))
    ref = np.stack([pdist(r.reshape(4, 3)) for r in x])
    np.testing.assert_allclose(M.interatomic_distances(torch.as_tensor(x), 4, 3).numpy(), ref, rtol=1e-13)


def test_distance_histogram_matches_numpy():
    x = np.random.default_rng(16).standard_normal((50, 4 * 2))
    dall = np.concatenate([pdist(r.reshape(4, 2)) for r in x])
    for rng_ in (None, (0.0, 3.0)):
        counts, edges = M.distance_histogram(x, 4, 2, bins=20, range=rng_)
        ref_c, ref_e = np.histogram(dall, bins=20, range=rng_, density=True)
        np.testing.assert_allclose(edges.numpy(), ref_e, rtol=1e-12)
        np.testing.assert_allclose(counts.numpy(), ref_c, rtol=1e-10)
        assert abs((counts * edges.diff()).sum() - 1.0) < 1e-12


def test_distance_histogram_w2():
    """Identical samples: 0. Positions scaled by c > 0 scale every distance by c, preserving order, so
    the 1-d W2 computed by sorting all distances in numpy is |c - 1| sqrt(mean d^2)."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal((40, 4 * 2))
    assert M.distance_histogram_w2(x, x, 4, 2) == 0.0
    c = 1.3
    dx = np.sort(np.concatenate([pdist(r.reshape(4, 2)) for r in x]))
    dy = np.sort(np.concatenate([pdist(r.reshape(4, 2)) for r in c * x]))
    ref = math.sqrt(((dx - dy) ** 2).mean())
    assert abs(M.distance_histogram_w2(x, torch.as_tensor(c * x), 4, 2) - ref) < 1e-12
    assert abs(ref - (c - 1) * math.sqrt((dx ** 2).mean())) < 1e-12
    # different numbers of configurations: x against x repeated twice is still 0
    assert M.distance_histogram_w2(x, np.vstack([x, x]), 4, 2) == 0.0


def _reference_aligned_distance(a, b, N, s):
    """The DEM / ASBS ground distance written out independently: scipy's Hungarian assignment on the centred
    positions, then the best orthogonal map by scipy's Rotation.align_vectors (s = 3, proper rotations of
    y and of -y, since O(3) = SO(3) u -SO(3)) or a fine search over angles and a reflection (s = 2)."""
    from scipy.optimize import minimize_scalar
    x, y = a.reshape(N, s), b.reshape(N, s)
    x, y = x - x.mean(0), y - y.mean(0)
    y = y[linear_sum_assignment(cdist(x, y))[1]]
    if s == 3:
        return math.sqrt(min(_rmsd3(x, y), _rmsd3(x, -y)))
    best = math.inf
    for flip in (np.eye(2), np.diag([1.0, -1.0])):
        def cost(t, yf=y @ flip):
            R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
            return float(((x - yf @ R) ** 2).sum())
        grid = np.linspace(0, 2 * math.pi, 721)
        t0 = grid[np.argmin([cost(t) for t in grid])]
        res = minimize_scalar(cost, bounds=(t0 - 0.01, t0 + 0.01), method="bounded", options=dict(xatol=1e-12))
        best = min(best, res.fun)
    return math.sqrt(best)


def _rmsd3(x, y):
    """min over proper rotations R of sum_i |x_i - R y_i|^2, by scipy."""
    from scipy.spatial.transform import Rotation
    R, _ = Rotation.align_vectors(x, y)
    return float(((x - R.apply(y)) ** 2).sum())


def test_aligned_distances_against_scipy_alignment():
    """DW-4-like (4 particles in 2-d, all 24 permutations tried) and 7 particles in 3-d (scipy's Hungarian
    solver): every entry equals the distance written out with scipy's assignment and an independent
    alignment (angle search in 2-d, Rotation.align_vectors in 3-d); both assignment methods agree."""
    rng = np.random.default_rng(5)
    for N, s, n, m in ((4, 2, 6, 5), (7, 3, 4, 3)):
        x, y = rng.standard_normal((n, N * s)) * 2, rng.standard_normal((m, N * s)) * 2
        got = M.aligned_distances(x, y, N, s)
        ref = np.array([[_reference_aligned_distance(a, b, N, s) for b in y] for a in x])
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-8)
        other = M.aligned_distances(x, y, N, s, brute_force=N > 6, chunk=2)
        np.testing.assert_allclose(other.numpy(), got.numpy(), rtol=1e-12, atol=1e-12)


def test_aligned_w2_is_invariant_to_what_the_particles_are_invariant_to():
    """Each configuration permuted, translated and rotated by a small angle (its particles stay matched):
    distance 0 to the original and W2 0; a configuration against a scaled copy c x: W2 = |c - 1| |x| for one
    configuration (the same assignment and Q = I); W2 of two sets is the OT over the aligned distances."""
    rng = np.random.default_rng(8)
    N, s, n = 4, 2, 30
    base = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.5]])
    x = base[None] + 0.3 * rng.standard_normal((n, N, s))
    y = np.empty_like(x)
    for k in range(n):
        t = rng.uniform(-0.15, 0.15)
        R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        y[k] = (x[k] @ R.T + rng.standard_normal(2) * 5)[rng.permutation(N)]
    x, y = x.reshape(n, -1), y.reshape(n, -1)
    d = M.aligned_distances(x, y, N, s)
    assert float(d.diagonal().abs().max()) < 1e-9 and float(d.min()) >= 0
    assert M.aligned_w2(x, y, N, s) < 1e-8
    one = x[:1]
    xc = one.reshape(N, s) - one.reshape(N, s).mean(0)  # (the metric centres each configuration)
    assert M.aligned_w2(one, 1.5 * one, N, s) == pytest.approx(0.5 * np.linalg.norm(xc), rel=1e-10)
    # two sets: the exact OT cost over the matrix of aligned distances (independently by scipy's assignment,
    # optimal for uniform weights and equal sizes)
    z = rng.standard_normal((n, N * s)) * 2
    D2 = M.aligned_distances(x, z, N, s).numpy() ** 2
    r, c = linear_sum_assignment(D2)
    assert M.aligned_w2(x, z, N, s) == pytest.approx(math.sqrt(D2[r, c].mean()), rel=1e-10)
    assert M.aligned_w2(x, z, N, s, max_samples=10) > 0


def test_particle_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^x must have shape \(n, n_particles \* spatial_dim\)"):
        M.interatomic_distances(np.zeros((3, 7)), 4, 2)
    with pytest.raises(ValueError, match="^y must have shape"):
        M.distance_histogram_w2(np.zeros((3, 8)), np.zeros((3, 6)), 4, 2)
    with pytest.raises(ValueError, match="^n_particles"):
        M.interatomic_distances(np.zeros((3, 2)), 1, 2)
    with pytest.raises(ValueError, match="^range"):
        M.distance_histogram(np.zeros((3, 8)), 4, 2, range=(1.0, 0.0))
    with pytest.raises(ValueError, match="^y must have shape"):
        M.aligned_w2(np.zeros((3, 8)), np.zeros((3, 6)), 4, 2)
    with pytest.raises(ValueError, match="NaN"):
        M.aligned_distances(np.full((2, 8), np.nan), np.zeros((3, 8)), 4, 2)


# ------------------------------------------------------------------------------------ issue 14 regressions
def test_logmeanexp_takes_numpy_and_lists_and_refuses_nan():
    rng = np.random.default_rng(3)
    lw = rng.normal(size=(4, 50)) * 40
    for arg in (lw, lw.tolist(), torch.as_tensor(lw)):
        got = M.logmeanexp(arg, dim=1)
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), logsumexp(lw, axis=1) - math.log(50), rtol=1e-14)
    assert float(M.logmeanexp(np.array([0, 0]))) == 0.0  # integers promoted
    assert float(M.logmeanexp(np.array([0.0, -np.inf]))) == pytest.approx(-math.log(2))
    for bad in (np.array([0.0, np.nan]), np.array([np.inf, 0.0])):
        with pytest.raises(ValueError, match="log_w"):
            M.logmeanexp(bad)


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e150])
def test_transport_metrics_are_exact_at_extreme_scales(scale):
    """Squared distances of points at 1e200 overflow float64 (W2 used to come out 0.0): the metrics are
    homogeneous, so they equal the scale times their value on the unit-scale points (exact assignment by
    scipy's linear_sum_assignment as the independent W2)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2)) + 1.0
    C = cdist(x, y, "sqeuclidean")
    r, c = linear_sum_assignment(C)
    w2_unit = math.sqrt(C[r, c].mean())
    assert M.w2(x * scale, y * scale) == pytest.approx(scale * w2_unit, rel=1e-12)
    assert M.mmd(x * scale, y * scale) == pytest.approx(M.mmd(x, y), rel=1e-10, abs=1e-14)
    assert M.median_bandwidth(x * scale, y * scale) == pytest.approx(scale * M.median_bandwidth(x, y), rel=1e-12)
    if scale == 1e150:  # eps and the cost scale like scale^2: representable in float64 only here
        assert M.sinkhorn(x * scale, y * scale, 0.5 * scale * scale) == pytest.approx(
            scale * scale * M.sinkhorn(x, y, 0.5), rel=1e-8)
    assert M.w2([[1e200, 0.0]], [[0.0, 1e200]]) == pytest.approx(math.sqrt(2) * 1e200, rel=1e-15)


def test_sinkhorn_with_eps_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="eps"):
        M.sinkhorn([[1e200, 0.0]], [[0.0, 1e200]], 1.0)


# ---------------------------------------------------------------------------------------------- histogram TV
def test_histogram_tv_by_hand():
    """A reference spread evenly over 10 bins of [0, 1] against a sample in the first bin: TV = (0.9 + 9 x 0.1) / 2 =
    0.9; values outside the range are dropped (the iDEM / DiKL convention) or counted."""
    ref = (np.arange(1000) + 0.5) / 1000
    u = np.array([0.01, 0.02, 0.05, 0.07])
    assert abs(M.histogram_tv(u, ref, bins=10) - 0.9) < 1e-12
    assert M.histogram_tv(ref[::-1], ref, bins=10) == 0.0
    u_out = np.concatenate([ref, [5.0] * 1000])  # half the sample beyond the reference's range
    assert M.histogram_tv(u_out, ref, bins=10) == 0.0
    assert abs(M.histogram_tv(u_out, ref, bins=10, outside="count") - 0.5) < 1e-12
    assert M.histogram_tv(np.array([7.0, 8.0]), ref, bins=10) == 1.0
    assert abs(M.histogram_tv(u, ref, bins=2, range=(0.0, 0.5)) - 0.5) < 1e-12  # [0, .25): u 1, ref .5


def test_histogram_tv_matches_the_binned_normal_laws():
    """N(0, 1) against N(1, 1), 50 bins on [-4, 5], n = m = 100000 (seed 0): the estimate matches the TV of the
    two laws pushed onto the bins (normal CDFs at the edges, each renormalised to the range) within 3 times the
    bound 0.5 sum_k (sqrt(p_k / n) + sqrt(q_k / m)) on the expected absolute error; that TV (0.3812) lies below
    the laws' own TV 2 Phi(1/2) - 1 = 0.3829."""
    from scipy.stats import norm
    rng = np.random.default_rng(0)
    n = 100_000
    u, v = rng.standard_normal(n), 1.0 + rng.standard_normal(n)
    edges = np.linspace(-4.0, 5.0, 51)
    p, q = np.diff(norm.cdf(edges)), np.diff(norm.cdf(edges - 1.0))
    p, q = p / p.sum(), q / q.sum()
    exact = 0.5 * np.abs(p - q).sum()
    bound = 0.5 * (np.sqrt(p / n).sum() + np.sqrt(q / n).sum())
    est = M.histogram_tv(u, v, bins=50, range=(-4.0, 5.0))
    assert abs(est - exact) < 3 * bound, (est, exact, bound)
    assert exact < 2 * norm.cdf(0.5) - 1


def test_histogram_tv_errors():
    with pytest.raises(ValueError, match="outside"):
        M.histogram_tv(np.zeros(3), np.ones(3), outside="keep")
    with pytest.raises(ValueError, match="range"):
        M.histogram_tv(np.zeros(3), np.ones(3), range=(1.0, 0.0))
    with pytest.raises(ValueError, match="NaN|finite"):
        M.histogram_tv(np.array([np.nan, 0.0]), np.ones(3))
    with pytest.raises(ValueError, match="bins"):
        M.histogram_tv(np.zeros(3), np.ones(3), bins=0)
