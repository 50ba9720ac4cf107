"""GaussianBridge against independent numerics: Sinkhorn (grid and samples), moment ODEs, limits, KL."""
import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.integrate import quad, solve_ivp
from scipy.special import logsumexp

import controlsamp as cs
from strategies import log_uniform, spd, spd_from_seed, vector

DIMS = st.integers(1, 6)


@st.composite
def bridge_problem(draw, max_d=6, sigma=(0.1, 10.0), T=(0.1, 10.0)):
    d = draw(st.integers(1, max_d))
    return dict(mean0=draw(vector(d)), cov0=draw(spd(d)), mean1=draw(vector(d)), cov1=draw(spd(d)),
                sigma=draw(log_uniform(*sigma)), T=draw(log_uniform(*T)))


@settings(max_examples=60, deadline=None)
@given(bridge_problem())
def test_precision_identity(p):
    """The off-diagonal block of the joint precision of (X_0, X_T) is -I / (sigma^2 T)."""
    br = cs.exact.GaussianBridge(**p)
    _, cov = br.coupling()
    d, s2 = br.dim, p["sigma"] ** 2 * p["T"]
    prec = torch.linalg.inv(cov)
    off = prec[:d, d:]
    assert torch.allclose(off * s2, -torch.eye(d, dtype=torch.float64), atol=1e-6)
    # and the diagonal blocks of the coupling are the prescribed marginals
    assert torch.allclose(cov[:d, :d], torch.as_tensor(p["cov0"]), rtol=1e-12, atol=1e-12)
    assert torch.allclose(cov[d:, d:], torch.as_tensor(p["cov1"]), rtol=1e-12, atol=1e-12)


def _sinkhorn_log(loga, logb, M, eps, iters=20000, tol=1e-13):
    """Log-domain Sinkhorn for min <P, M> + eps KL(P | a x b), written here as an independent solver."""
    f = np.zeros_like(loga)
    g = np.zeros_like(logb)
    for _ in range(iters):
        f_new = -eps * logsumexp((g[None, :] - M) / eps + logb[None, :], axis=1)
        g = -eps * logsumexp((f_new[:, None] - M) / eps + loga[:, None], axis=0)
        if np.max(np.abs(f_new - f)) < tol:
            f = f_new
            break
        f = f_new
    return loga[:, None] + logb[None, :] + (f[:, None] + g[None, :] - M) / eps


@settings(max_examples=12, deadline=None)
@given(m0=st.floats(-2, 2), m1=st.floats(-2, 2), v0=log_uniform(0.2, 5.0), v1=log_uniform(0.2, 5.0),
       sigma=log_uniform(0.3, 3.0), T=log_uniform(0.3, 3.0))
def test_coupling_and_value_vs_grid_sinkhorn_1d(m0, m1, v0, v1, sigma, T):
    """1-d: the closed-form coupling and entropic OT value agree with log-domain Sinkhorn on a fine grid."""
    s2 = sigma ** 2 * T
    n = 301
    x = np.linspace(m0 - 7 * math.sqrt(v0), m0 + 7 * math.sqrt(v0), n)
    y = np.linspace(m1 - 7 * math.sqrt(v1), m1 + 7 * math.sqrt(v1), n)
    loga = -0.5 * (x - m0) ** 2 / v0
    loga -= logsumexp(loga)
    logb = -0.5 * (y - m1) ** 2 / v1
    logb -= logsumexp(logb)
    M = (x[:, None] - y[None, :]) ** 2
    eps = 2 * s2
    logP = _sinkhorn_log(loga, logb, M, eps)
    P = np.exp(logP)
    ex, ey = P.sum(1) @ x, P.sum(0) @ y
    c_sink = float((P * (x[:, None] - ex) * (y[None, :] - ey)).sum())
    br = cs.exact.GaussianBridge([m0], [[v0]], [m1], [[v1]], sigma=sigma, T=T)
    _, cov = br.coupling()
    assert abs(c_sink - float(cov[0, 1])) < 1e-6 * math.sqrt(v0 * v1)
    value_sink = float((P * M).sum() + eps * (P * (logP - loga[:, None] - logb[None, :])).sum())
    assert abs(value_sink - br.entropic_ot_cost()) < 1e-6 * (1 + abs(value_sink))


@pytest.mark.parametrize("seed", [0, 1])
def test_coupling_vs_pot_sinkhorn_on_samples_2d(seed):
    """2-d: POT's Sinkhorn plan between n samples of each marginal has the closed-form cross-covariance.

    The entropic plan between empirical measures converges at the parametric rate n^{-1/2}; the band
    is 5 standard errors of a cross-covariance entry of n independent pairs, sqrt((S0_ii S1_jj + C_ij^2)/n).
    """
    rng = np.random.default_rng(seed)
    S0, S1 = spd_from_seed(seed, 2, 1.0, 1.0), spd_from_seed(seed + 100, 2, 1.0, 1.0)
    m0, m1 = rng.normal(size=2), rng.normal(size=2)
    sigma, T = 1.0, 0.5
    br = cs.exact.GaussianBridge(m0, S0, m1, S1, sigma=sigma, T=T)
    C = br.coupling()[1][:2, 2:].numpy()
    n = 1000
    xs = rng.multivariate_normal(m0, S0, size=n)
    ys = rng.multivariate_normal(m1, S1, size=n)
    M = ot.dist(xs, ys)  # squared Euclidean
    w = np.full(n, 1.0 / n)
    P = ot.sinkhorn(w, w, M, reg=2 * sigma ** 2 * T, method="sinkhorn_log", stopThr=1e-9, numItermax=20000)
    xc, yc = xs - P.sum(1) @ xs, ys - P.sum(0) @ ys
    C_sink = xc.T @ P @ yc
    se = np.sqrt((np.outer(np.diag(S0), np.diag(S1)) + C ** 2) / n)
    assert np.all(np.abs(C_sink - C) < 5 * se), (C_sink, C, se)


def _moment_ode_check(br, t_end, t_points):
    """Integrate mean' = b(t, mean) and Sigma' = J Sigma + Sigma J' + G G' with J the drift's Jacobian."""
    d = br.dim
    eye = np.eye(d)
    ref = br.reference

    def rhs(t, y):
        mu, S = y[:d], y[d:].reshape(d, d)
        pts = np.vstack([mu, mu + eye])
        b = br.drift(t, pts).numpy()
        J = (b[1:] - b[0]).T  # the drift is affine in x
        GG = ref.diffusion_cov(t).numpy()
        return np.concatenate([b[0], (J @ S + S @ J.T + GG).ravel()])

    y0 = np.concatenate([br.mean0.numpy(), br.cov0.numpy().ravel()])
    sol = solve_ivp(rhs, (0.0, t_end), y0, t_eval=t_points, rtol=1e-10, atol=1e-12, method="DOP853")
    for k, t in enumerate(t_points):
        mean, cov = br.marginal(t)
        scale = 1 + float(cov.abs().max())
        np.testing.assert_allclose(sol.y[:d, k], mean.numpy(), atol=1e-6 * scale)
        np.testing.assert_allclose(sol.y[d:, k].reshape(d, d), cov.numpy(), atol=1e-6 * scale)


@settings(max_examples=25, deadline=None)
@given(bridge_problem(max_d=4, sigma=(0.3, 3.0), T=(0.3, 3.0)))
def test_drift_transports_marginals_brownian(p):
    """The drift carries N(m0, S0) through marginal(t) to N(m1, S1): moment ODEs by solve_ivp."""
    br = cs.exact.GaussianBridge(**p)
    T = p["T"]
    _moment_ode_check(br, T, [0.25 * T, 0.5 * T, 0.9 * T, T])
    mean, cov = br.marginal(T)
    np.testing.assert_allclose(cov.numpy(), p["cov1"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mean.numpy(), p["mean1"], atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(p=bridge_problem(max_d=3, sigma=(0.5, 2.0), T=(0.5, 2.0)), theta=log_uniform(0.1, 3.0))
def test_drift_transports_marginals_ou_reference(p, theta):
    """Same with an OU reference: the whitening construction, marginals and drift are consistent."""
    ref = cs.processes.OU(len(p["mean0"]), theta=theta, sigma=p["sigma"], T=p["T"])
    br = cs.exact.GaussianBridge(p["mean0"], p["cov0"], p["mean1"], p["cov1"], T=p["T"], reference=ref)
    T = p["T"]
    _moment_ode_check(br, 0.999 * T, [0.3 * T, 0.7 * T, 0.999 * T])
    mean, cov = br.marginal(T)
    np.testing.assert_allclose(cov.numpy(), p["cov1"], rtol=1e-8, atol=1e-8)
    # the OU bridge's static coupling satisfies its own precision identity: the off-diagonal block of the
    # joint precision is -Phi' Q^{-1}, the cross term of log p_ref(x_T | x_0)
    Phi, _, Q = ref.transition(0.0, T)
    prec = torch.linalg.inv(br.coupling()[1])
    d = br.dim
    np.testing.assert_allclose(prec[:d, d:].numpy(), -(Phi.T @ torch.linalg.inv(Q)).numpy(), rtol=1e-6, atol=1e-6)


def test_ou_reference_with_vanishing_theta_is_the_brownian_bridge():
    d = 3
    S0, S1 = spd_from_seed(3, d, 1.0, 1.0), spd_from_seed(4, d, 1.0, 2.0)
    m0, m1 = np.zeros(d), np.ones(d)
    br = cs.exact.GaussianBridge(m0, S0, m1, S1, sigma=0.8, T=1.5)
    ou = cs.exact.GaussianBridge(m0, S0, m1, S1, T=1.5, reference=cs.processes.OU(d, theta=1e-7, sigma=0.8, T=1.5))
    np.testing.assert_allclose(ou.coupling()[1].numpy(), br.coupling()[1].numpy(), atol=1e-5)
    x = torch.randn(5, d, dtype=torch.float64)
    np.testing.assert_allclose(ou.drift(0.7, x).numpy(), br.drift(0.7, x).numpy(), atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(DIMS.flatmap(lambda d: st.tuples(spd(d), spd(d))))
def test_small_noise_limit_is_the_bures_map(covs):
    """sigma -> 0: Cov(X_0, X_T) -> S0 A with A the W2-optimal (Bures) map; the gap is O(sigma^2)."""
    S0, S1 = covs
    d = S0.shape[0]
    A = cs.exact.bures_map(S0, S1).numpy()
    for sigma in (1e-2, 1e-3):
        C = cs.exact.GaussianBridge(np.zeros(d), S0, np.zeros(d), S1, sigma=sigma).coupling()[1][:d, d:].numpy()
        gap = np.abs(C - S0 @ A).max()
        assert gap < 10 * sigma ** 2 * d, (sigma, gap)


@settings(max_examples=30, deadline=None)
@given(DIMS.flatmap(lambda d: st.tuples(spd(d), spd(d))))
def test_large_noise_limit_is_the_independent_coupling(covs):
    """sigma -> infinity: C -> 0 like S0 S1 / (sigma^2 T)."""
    S0, S1 = covs
    d = S0.shape[0]
    s2 = 1e6
    C = cs.exact.GaussianBridge(np.zeros(d), S0, np.zeros(d), S1, sigma=math.sqrt(s2)).coupling()[1][:d, d:].numpy()
    np.testing.assert_allclose(C * s2, S0 @ S1, rtol=0, atol=1e-3 * np.abs(S0 @ S1).max() + 1e-6)


def _kl_by_control_energy(br, f_matrix, T_end):
    """KL(P* | R) = 1/2 int_0^T E|G^{-1}(b - f)|^2 dt (Girsanov), by quad over the Gaussian marginals."""
    d = br.dim
    eye = np.eye(d)

    def integrand(t):
        mean, cov = (v.numpy() for v in br.marginal(t))
        pts = np.vstack([np.zeros(d), eye])
        u = br.drift(t, pts).numpy() - pts @ f_matrix.T
        N, v = (u[1:] - u[0]).T, u[0]
        GG = br.reference.diffusion_cov(t).numpy()
        W = np.linalg.inv(GG)
        return 0.5 * (np.trace(N.T @ W @ N @ cov) + (N @ mean + v) @ W @ (N @ mean + v))

    return quad(integrand, 0.0, T_end, epsabs=1e-10, epsrel=1e-9, limit=200)[0]


@settings(max_examples=12, deadline=None)
@given(bridge_problem(max_d=3, sigma=(0.5, 2.0), T=(0.5, 2.0)))
def test_kl_equals_control_energy_and_entropic_ot(p):
    """kl() = Girsanov energy of the drift = OT_eps / (2 s2) - H(mu_T) + d/2 log(2 pi s2)."""
    br = cs.exact.GaussianBridge(**p)
    d, s2 = br.dim, p["sigma"] ** 2 * p["T"]
    kl = br.kl()
    energy = _kl_by_control_energy(br, np.zeros((d, d)), p["T"])
    assert abs(kl - energy) < 1e-6 * (1 + kl)
    H1 = 0.5 * (d * math.log(2 * math.pi * math.e) + np.linalg.slogdet(p["cov1"])[1])
    via_ot = br.entropic_ot_cost() / (2 * s2) - H1 + 0.5 * d * math.log(2 * math.pi * s2)
    assert abs(kl - via_ot) < 1e-8 * (1 + abs(kl))


def test_kl_with_ou_reference_equals_control_energy():
    d, theta, sigma, T = 2, 0.7, 1.3, 1.2
    ref = cs.processes.OU(d, theta=theta, sigma=sigma, T=T)
    br = cs.exact.GaussianBridge([1.0, -1.0], spd_from_seed(7, d, 1.0, 1.0), [0.5, 2.0], spd_from_seed(8, d, 1.0, 0.5),
                                 T=T, reference=ref)
    energy = _kl_by_control_energy(br, -theta * np.eye(d), T)
    assert abs(br.kl() - energy) < 1e-6 * (1 + energy)


def test_sample_path_moments_within_clt_bands():
    """Exact path samples have the closed-form marginals: means within 5 standard errors."""
    d = 2
    br = cs.exact.GaussianBridge([0.0, 1.0], spd_from_seed(1, d, 1.0, 1.0), [2.0, -1.0], spd_from_seed(2, d, 1.0, 0.5),
                                 sigma=1.0, T=1.0)
    n = 20000
    ts = torch.linspace(0, 1, 6)
    paths = br.sample_path(ts, n, generator=torch.Generator().manual_seed(0))
    assert paths.shape == (n, 6, d)
    for k, t in enumerate(ts.tolist()):
        mean, cov = br.marginal(t)
        xs = paths[:, k]
        se = torch.sqrt(torch.diagonal(cov) / n)
        assert torch.all((xs.mean(0) - mean).abs() <= 5 * se + 1e-12)
        emp = torch.cov(xs.T)
        se_cov = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov ** 2) / n)
        assert torch.all((emp - cov).abs() <= 5 * se_cov + 1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cov0=[[1.0, 2.0], [2.0, 1.0]]), "cov0"),
    (dict(cov1=[[1.0, 0.5], [0.0, 1.0]]), "cov1.*symmetric"),
    (dict(mean1=[0.0, 0.0, 0.0]), "mean1"),
    (dict(sigma=0.0), "sigma"),
    (dict(T=-1.0), "T"),
])
def test_bad_input_names_the_argument(kwargs, match):
    base = dict(mean0=[0.0, 0.0], cov0=np.eye(2), mean1=[1.0, 1.0], cov1=np.eye(2))
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cs.exact.GaussianBridge(**base)


def test_time_outside_horizon_is_rejected():
    br = cs.exact.GaussianBridge([0.0], [[1.0]], [1.0], [[1.0]], T=2.0)
    with pytest.raises(ValueError, match="t must lie in"):
        br.marginal(2.5)
    with pytest.raises(ValueError, match="x must have shape"):
        br.drift(0.5, torch.zeros(3, 2))


def test_time_one_ulp_past_the_horizon_is_the_horizon():
    # scipy's Runge-Kutta stages evaluate at t + c h, which can pass the end time by an ulp
    # (a hypothesis draw with T = 0.8976871324473142 hit 0.8976871324473144); that is round-off, not
    # a bad time: it must give the drift at T, while a time 1e-9 past T is still rejected.
    T = 0.8976871324473142
    br = cs.exact.GaussianBridge([0.0], [[1.0]], [1.0], [[2.0]], T=T)
    x = torch.tensor([[0.3]], dtype=torch.float64)
    t_past = np.nextafter(np.nextafter(T, 2.0), 2.0)
    assert t_past > T
    assert torch.equal(br.drift(t_past, x), br.drift(T, x))
    assert torch.equal(br.drift(-1e-300, x), br.drift(0.0, x))
    with pytest.raises(ValueError, match="t must lie in"):
        br.drift(T + 1e-9, x)


# ------------------------------------------------------------------------------------ issue 14 regressions
@pytest.mark.parametrize("theta", [8.5, 17.0, 25.0, 60.0])
def test_strongly_contracting_ou_reference_accepts_identity_ends(theta):
    """With an OU reference and theta T around 17 the whitened start Q^-1/2 Phi cov0 Phi' Q^-1/2 is of order
    e^{-34}: valid, and no longer refused as "cov0 not SPD". Its cross-covariance equals the scalar closed form
    C = Phi^-1 q c_uv, c_uv = (sqrt(4 a b + 1) - 1) / 2, a = Phi^2 s0 / q, b = s1 / q, evaluated in 50-digit
    arithmetic (mpmath) as the independent reference."""
    import mpmath
    s0, s1, T = 1.0, 2.0, 1.0
    ou = cs.processes.OU(2, theta=theta, sigma=1.0, T=T)
    b = cs.exact.GaussianBridge(np.zeros(2), s0 * np.eye(2), np.ones(2), s1 * np.eye(2), reference=ou)
    with mpmath.workdps(50):
        th = mpmath.mpf(theta)
        phi = mpmath.exp(-th * T)
        q = (1 - mpmath.exp(-2 * th * T)) / (2 * th)
        a, bb = phi ** 2 * s0 / q, s1 / q
        c = q * (2 * a * bb / (mpmath.sqrt(4 * a * bb + 1) + 1)) / phi  # (sqrt(4ab + 1) - 1) / 2, no cancellation
    _, cov = b.coupling()
    np.testing.assert_allclose(np.diag(cov[:2, 2:].numpy()), float(c), rtol=1e-9)
    np.testing.assert_allclose(cov[:2, 2:].numpy() - np.diag(np.diag(cov[:2, 2:].numpy())), 0.0, atol=1e-300)
    mean_half, cov_half = b.marginal(0.5)
    assert torch.isfinite(cov_half).all() and torch.isfinite(b.drift(0.5, torch.zeros(3, 2))).all()


def test_an_underflowing_intermediate_is_an_internal_error_not_the_users_cov0():
    ou = cs.processes.OU(1, theta=400.0, sigma=1.0, T=1.0)  # e^{-2 theta T} underflows float64
    with pytest.raises(FloatingPointError, match="internal: the whitened initial covariance") as err:
        cs.exact.GaussianBridge(np.zeros(1), np.eye(1), np.zeros(1), np.eye(1), reference=ou)
    assert "cov0 must" not in str(err.value)
