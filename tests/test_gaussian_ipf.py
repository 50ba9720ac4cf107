"""cs.bridges.GaussianIPF against the closed form, an independent grid IPF and the theory of IPF.

* hypothesis (d = 1..10, well-conditioned SPD ends, sigma, T): the exact (moment) IPF reaches the
  coupling of cs.exact.GaussianBridge to 1e-6 relative, and the free end's KL decreases monotonically;
* an OU reference converges to GaussianBridge(..., reference=OU);
* every iterate is the Schrödinger bridge between its own marginals (its cross-precision block is the
  reference's -Phi' Q^-1, and GaussianBridge between its marginals has its coupling); P^0 is the reference;
* 1-d: each IPF iterate equals that of a log-domain IPF (Sinkhorn) on a fine grid, written here;
* the contraction factor per iteration is rho_max^4 (rho_max the bridge's largest canonical correlation);
* method="regression": errors within bands derived from n_samples, and the O(h) bias of DSB's noise;
* bad input raises ValueError naming the argument.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.special import logsumexp

import controlsamp as cs
from controlsamp._linalg import sym_inv_sqrt
from strategies import log_uniform

GaussianIPF = cs.bridges.GaussianIPF


def spd_band(rng, d, lo=0.2, hi=5.0):
    """Haar rotation times eigenvalues log-uniform in [lo, hi]."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    q = q * np.sign(np.diag(r))
    eig = np.exp(rng.uniform(math.log(lo), math.log(hi), size=d))
    m = (q * eig) @ q.T
    return 0.5 * (m + m.T)


@st.composite
def ipf_problem(draw, max_d=10):
    d = draw(st.integers(1, max_d))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return dict(mean0=rng.uniform(-2, 2, d), cov0=spd_band(rng, d), mean1=rng.uniform(-2, 2, d),
                cov1=spd_band(rng, d), sigma=draw(log_uniform(0.3, 2.0)), T=draw(log_uniform(0.5, 2.0)))


def canonical_correlations(bridge):
    """Singular values of S0^{-1/2} C S1^{-1/2} for the bridge's coupling."""
    d = bridge.dim
    _, cov = bridge.coupling()
    w0, w1 = sym_inv_sqrt(cov[:d, :d]), sym_inv_sqrt(cov[d:, d:])
    return torch.linalg.svdvals(w0 @ cov[:d, d:] @ w1)


def fit_until(ipf, tol, key="relative_coupling_error", max_iters=6000, chunk=25):
    while ipf.history[-1][key] > tol and ipf.iterations < max_iters:
        ipf.fit(chunk)
    return ipf


def cross_precision(joint, d):
    return torch.linalg.inv(joint)[:d, d:]


# ------------------------------------------------------------------ exact (moment) half-bridges
@settings(max_examples=20, deadline=None)
@given(ipf_problem())
def test_converges_to_gaussian_bridge_and_free_end_kl_decreases(p):
    """Tolerance: |C_n - C*|_F <= 1e-6 |C*|_F (relative). The even iterates have law mu_0 at 0 and
    KL(P^{2n}_T | mu_1) is non-increasing (Sinkhorn is mirror descent on it, Léger 2021); likewise
    KL(P^{2n+1}_0 | mu_0) for the odd iterates. Allowed increase: float round-off, 1e-12 max(1, KL)."""
    ipf = fit_until(GaussianIPF(**p), 1e-6)
    last = ipf.history[-1]
    assert last["relative_coupling_error"] <= 1e-6, last
    d = ipf.dim
    # the means contract only by rho_max^2 per iteration (the covariances by rho_max^4): run on until the free
    # end's KL, which holds |m_T - m_1|^2 / 2, is below 1e-12; then the whole joint law is the bridge's
    fit_until(ipf, 1e-12, key="klT")
    mean, cov = ipf.coupling()
    mean_star, cov_star = ipf.target.coupling()
    scale = float(cov_star.abs().max())
    assert float((cov - cov_star).abs().max()) <= 1e-6 * scale
    assert float((mean - mean_star).abs().max()) <= 1e-5 * (1 + math.sqrt(scale))
    last = ipf.history[-1]
    for key in ("klT", "half_kl0"):
        seq = [h[key] for h in ipf.history if not math.isnan(h[key])]
        for a, b in zip(seq, seq[1:]):
            assert b <= a + 1e-12 * max(1.0, a), (key, a, b)
    # the pinned ends are exact (round-off only)
    assert max(h["kl0"] for h in ipf.history) < 1e-12 * d
    assert max(h["half_klT"] for h in ipf.history[1:]) < 1e-12 * d
    assert last["klT"] <= 1e-12 and last["w2_T"] < 1e-5 * (1 + math.sqrt(scale))


@settings(max_examples=10, deadline=None)
@given(p=ipf_problem(max_d=4), theta=log_uniform(0.2, 3.0))
def test_ou_reference_converges_to_the_ou_bridge(p, theta):
    """Tolerance 1e-6 relative on C, as above; the OU bridge is GaussianBridge(reference=OU)."""
    d, T = len(p["mean0"]), p["T"]
    ou = cs.processes.OU(d, theta=theta, sigma=p["sigma"], T=T)
    ipf = GaussianIPF(p["mean0"], p["cov0"], p["mean1"], p["cov1"], T=T, reference=ou)
    fit_until(ipf, 1e-6)
    exact = cs.exact.GaussianBridge(p["mean0"], p["cov0"], p["mean1"], p["cov1"], T=T, reference=ou)
    C, C_star = ipf.coupling()[1][:d, d:], exact.coupling()[1][:d, d:]
    assert float(torch.linalg.matrix_norm(C - C_star)) <= 1e-6 * float(torch.linalg.matrix_norm(C_star))
    # the reference matters: the Brownian bridge's coupling is further from C* than the tolerance above
    # (a check on the first iterate's error instead failed for weakly coupled draws: 5e-4 < 1e-3)
    bm = cs.exact.GaussianBridge(p["mean0"], p["cov0"], p["mean1"], p["cov1"], T=T, sigma=p["sigma"])
    assert float(torch.linalg.matrix_norm(bm.coupling()[1][:d, d:] - C_star)) > 1e-5 * float(
        torch.linalg.matrix_norm(C_star))


@pytest.mark.parametrize("kind", ["brownian", "ou"])
def test_every_iterate_is_the_bridge_between_its_own_marginals(kind):
    """For n = 0, 1, 2, 5: (a) the joint precision's cross block is -Phi' Q^-1 (pi^n = f(x) g(y) p_R(y|x),
    the reciprocal class in Gaussian form); (b) GaussianBridge between the iterate's marginals has the
    iterate's coupling (to 1e-10, round-off of the closed form). P^0 is the reference from mu_0."""
    rng = np.random.default_rng(3)
    d, T = 3, 1.3
    m0, m1 = rng.normal(size=d), rng.normal(size=d)
    S0, S1 = spd_band(rng, d), spd_band(rng, d)
    if kind == "brownian":
        ipf = GaussianIPF(m0, S0, m1, S1, sigma=0.9, T=T)
        ref = cs.processes.Brownian(d, sigma=0.9, T=T)
    else:
        ref = cs.processes.OU(d, theta=0.8, sigma=1.1, T=T)
        ipf = GaussianIPF(m0, S0, m1, S1, T=T, reference=ref)
    Phi, _, Q = ref.transition(0.0, T)
    J_ref = -Phi.T @ torch.linalg.inv(Q)
    seen = []
    for n in (0, 1, 2, 5):
        if n:
            ipf.fit(n - ipf.iterations)
        mean, joint = ipf.coupling()
        assert torch.allclose(cross_precision(joint, d), J_ref, atol=1e-9 * float(J_ref.abs().max()))
        br = ipf.bridge()
        b_mean, b_joint = br.coupling()
        assert float((b_joint - joint).abs().max()) <= 1e-10 * float(joint.abs().max())
        assert torch.allclose(b_mean, mean, atol=1e-12)
        # drift and marginal delegate to that bridge; its end laws are the iterate's
        x = torch.as_tensor(rng.normal(size=(4, d)))
        assert torch.equal(ipf.drift(0.4, x), br.drift(0.4, x))
        mT, ST = ipf.marginal(T)
        assert torch.allclose(ST, joint[d:, d:], atol=1e-10) and torch.allclose(mT, mean[d:], atol=1e-10)
        seen.append(float(joint[d:, d:].sub(torch.as_tensor(S1)).abs().max()))
        if n == 0:
            # P^0 = R started from mu_0: the bridge's marginals are the reference's, its drift the reference's
            for t in (0.3, 0.9):
                ref_mean, ref_cov = ref.marginal(t, m0, S0)
                b_mean_t, b_cov_t = ipf.marginal(t)
                assert torch.allclose(b_cov_t, ref_cov, atol=1e-10) and torch.allclose(b_mean_t, ref_mean, atol=1e-10)
            assert torch.allclose(ipf.drift(0.5, x), ref.drift(0.5, x), atol=1e-9)
    assert seen[-1] < seen[0]  # the iterates move: the test is not about a frozen state


def _grid_ipf_1d(m0, v0, m1, v1, s2, iters, n=801, width=9.0):
    """IPF on grids with numpy, independent of the Gaussian moment equations: pi^0 = mu_0 x p_R(y | x) with
    p_R = N(x, s2); then alternately rescale rows/columns to the prescribed marginals (log domain).
    Returns the cross-covariance and the T-marginal mean and variance of pi^{2n}, n = 0..iters."""
    sd_T = math.sqrt(max(v1, v0 + s2))
    x = np.linspace(m0 - width * math.sqrt(v0), m0 + width * math.sqrt(v0), n)
    lo, hi = min(m1, m0) - width * sd_T, max(m1, m0) + width * sd_T
    y = np.linspace(lo, hi, int(n * (hi - lo) / (x[-1] - x[0])) + 1)
    loga = -0.5 * (x - m0) ** 2 / v0
    loga -= logsumexp(loga)
    logb = -0.5 * (y - m1) ** 2 / v1
    logb -= logsumexp(logb)
    logP = loga[:, None] - 0.5 * (y[None, :] - x[:, None]) ** 2 / s2
    logP -= logsumexp(logP, axis=1, keepdims=True) - loga[:, None]

    def moments(lp):
        P = np.exp(lp)
        px, py = P.sum(1), P.sum(0)
        ex, ey = px @ x, py @ y
        return float((P * (x[:, None] - ex) * (y[None, :] - ey)).sum()), ey, float(py @ (y - ey) ** 2)

    out = [moments(logP)]
    for _ in range(iters):
        logP += (logb - logsumexp(logP, axis=0))[None, :]  # backward half-bridge: T-marginal := mu_1
        logP += (loga - logsumexp(logP, axis=1))[:, None]  # forward half-bridge: 0-marginal := mu_0
        out.append(moments(logP))
    return out


@pytest.mark.parametrize("m0, v0, m1, v1, sigma, T", [(0.0, 1.0, 1.5, 0.4, 0.8, 1.0), (-1.0, 3.0, 2.0, 0.5, 1.5, 0.6)])
def test_iterates_match_grid_ipf_1d(m0, v0, m1, v1, sigma, T):
    """Iterate by iterate, C_n and the free end's mean and variance agree with grid IPF. The grid
    (spacing ~ 0.02 sd, +-9 sd) integrates Gaussians to round-off (~1e-15 seen); tolerance 1e-10 relative."""
    n_iter = 6
    grid = _grid_ipf_1d(m0, v0, m1, v1, sigma ** 2 * T, n_iter)
    ipf = GaussianIPF([m0], [[v0]], [m1], [[v1]], sigma=sigma, T=T)
    states = [ipf.coupling()]
    for _ in range(n_iter):
        states.append(ipf.fit(1).coupling())
    for (c_grid, mean_grid, var_grid), (mean, cov) in zip(grid, states):
        scale = math.sqrt(v0 * max(v1, v0 + sigma ** 2 * T))
        assert abs(c_grid - float(cov[0, 1])) <= 1e-10 * scale
        assert abs(mean_grid - float(mean[1])) <= 1e-10 * (1 + scale)
        assert abs(var_grid - float(cov[1, 1])) <= 1e-10 * scale
    # and the fixed point is the closed form (already 6 iterations in: loose here, tight in the hypothesis test)
    assert ipf.history[-1]["relative_coupling_error"] < ipf.history[0]["relative_coupling_error"] * 1e-2


@pytest.mark.parametrize("d, seed, sigma, T", [(1, 0, 0.8, 1.0), (3, 1, 0.6, 1.5), (6, 2, 0.4, 0.7), (10, 4, 0.4, 1.0)])
def test_convergence_rate_is_rho_max_to_the_fourth(d, seed, sigma, T, capsys):
    """The fitted contraction factor r is < 1, predicts the observed decay (e_N / e_M = r^(N - M) within
    5%), and equals rho_max^4 (linearised IPF on quadratic potentials; see the class docstring) to 1e-3:
    the fit runs over the last iterations before round-off (error ~1e-10 of the start), where modes
    decaying like (rho_1 rho_2)^2 weigh little (in 1-d there is one mode)."""
    rng = np.random.default_rng(seed)
    ipf = GaussianIPF(rng.normal(size=d), spd_band(rng, d), rng.normal(size=d), spd_band(rng, d), sigma=sigma, T=T)
    rho = canonical_correlations(ipf.target)
    predicted = float(rho.max()) ** 4
    ipf.fit(int(math.log(1e-10) / math.log(predicted)))
    rate = ipf.convergence_rate()
    errs = [h["coupling_error"] for h in ipf.history]
    with capsys.disabled():
        print(f"\n[GaussianIPF d={d}] convergence rate {rate:.6f}, rho_max^4 {predicted:.6f}, "
              f"error {errs[0]:.3g} -> {errs[-1]:.3g} in {ipf.iterations} iterations")
    assert 0.0 < rate < 1.0
    assert abs(rate - predicted) <= 1e-3
    N, M = len(errs) - 1, len(errs) - 6
    assert abs(errs[N] / errs[M] / rate ** (N - M) - 1.0) < 0.05


# ------------------------------------------------------------------------ regression half-bridges
def _mc_tolerance(ipf, n_iters, z=4.0):
    """Band for the regression's coupling error after n_iters iterations.

    With noise="fitted" the population limit of a fitted half-bridge is the exact one (the moment IPF),
    so the error is Monte Carlo. The backward half-bridge gives C' = K S_1 with K the least-squares gain
    of X_0 on X_T, whose error has covariance (S_T^{-1} (x) V_0) / n, V_0 = Var(X_0 | X_T) (OLS on n iid
    Gaussian pairs; the per-step gains of the chain compose to it, their errors being uncorrelated by the
    reverse Markov property). So E|dC'|_F^2 = tr(S_1 S_T^{-1} S_1) tr(V_0) / n = tr(S_1) tr(V_0) / n at
    the bridge, and tr(S_0) tr(V_1) / n for the forward half. IPF contracts errors in the marginals but
    never corrects the cross block of the joint precision (its invariant), so the independent errors of
    successive iterations add up at most as a random walk: rms <= sqrt(n_iters (eps_b^2 + eps_f^2)).
    The band is z = 4 times that, plus the moment IPF's own (deterministic) error after n_iters."""
    d, n = ipf.dim, ipf.n_samples
    C = ipf.target.coupling()[1][:d, d:]
    S0, S1 = ipf.cov0, ipf.cov1
    V0 = S0 - C @ torch.linalg.solve(S1, C.T)
    V1 = S1 - C.T @ torch.linalg.solve(S0, C)
    eps2 = float(torch.trace(S1) * torch.trace(V0) + torch.trace(S0) * torch.trace(V1)) / n
    exact = GaussianIPF(ipf.mean0, ipf.cov0, ipf.mean1, ipf.cov1, sigma=ipf._sigma or 1.0, T=ipf.T,
                        reference=ipf._user_reference).fit(n_iters)
    return exact.history[-1]["coupling_error"] + z * math.sqrt(n_iters * eps2)


REG_CASE = dict(mean0=[0.0, 0.5], cov0=[[1.0, 0.3], [0.3, 0.6]], mean1=[1.0, -1.0], cov1=[[0.8, -0.2], [-0.2, 1.5]])


def test_regression_reaches_the_monte_carlo_floor():
    """d = 2, n = 1e5 paths, 5 steps, 4 iterations: error within the band above (about 0.056 here) and
    below a tenth of P^0's. The regression is also checked on an OU reference (general linear kernels)."""
    ipf = GaussianIPF(**REG_CASE, method="regression", n_samples=100_000, steps=5, seed=0).fit(4)
    tol = _mc_tolerance(ipf, 4)
    errs = [h["coupling_error"] for h in ipf.history]
    print(f"\n[GaussianIPF regression] coupling error by iteration {np.round(errs, 4)}, band {tol:.3f}")
    assert errs[-1] <= tol
    assert tol < 0.1 * errs[0] and errs[-1] < 0.1 * errs[0]
    assert ipf.history[-1]["kl0"] < 1e-12  # the pinned end is exact
    assert torch.allclose(ipf.coupling()[1][:2, :2], torch.as_tensor(REG_CASE["cov0"], dtype=torch.float64))
    ou = cs.processes.OU(2, theta=1.0, sigma=1.0, T=1.0)
    ipf_ou = GaussianIPF(**REG_CASE, reference=ou, method="regression", n_samples=50_000, steps=4, seed=1).fit(3)
    assert ipf_ou.history[-1]["coupling_error"] <= _mc_tolerance(ipf_ou, 3)
    assert ipf_ou.history[-1]["coupling_error"] < 0.2 * ipf_ou.history[0]["coupling_error"]


def test_regression_with_reference_noise_has_first_order_bias():
    """noise="reference" (DSB: step noise sigma^2 h) misses the O(h^2) part of each backward step's
    covariance, so e_K = beta h + O(h^2) + xi_K with Monte Carlo part |xi_K| <= b, the band of
    _mc_tolerance for noise="fitted" (n = 4e5, 2 iterations: b ~ 0.03). The bias at 2 steps (~0.24) is well
    above b, and halving h halves it: |e_2 - 2 e_4| <= 3 b + 0.1 e_2 (3 b from xi_2 - 2 xi_4, 0.1 e_2 room
    for an O(h^2) term of up to 10% at the coarsest grid)."""
    errs = {}
    for steps in (2, 4):
        ipf = GaussianIPF(**REG_CASE, method="regression", noise="reference", n_samples=400_000, steps=steps,
                          seed=steps).fit(2)
        errs[steps] = ipf.history[-1]["coupling_error"]
    fitted = GaussianIPF(**REG_CASE, method="regression", n_samples=400_000, steps=2, seed=5).fit(2)
    b = _mc_tolerance(fitted, 2)
    print(f"\n[GaussianIPF reference noise] error at 2 steps {errs[2]:.4f}, 4 steps {errs[4]:.4f}, "
          f"fitted noise {fitted.history[-1]['coupling_error']:.4f} (band {b:.4f})")
    assert fitted.history[-1]["coupling_error"] <= b
    assert errs[2] > 3 * b
    assert abs(errs[2] - 2 * errs[4]) <= 3 * b + 0.1 * errs[2]


# ------------------------------------------------------------------------------------- bad input
BASE = dict(mean0=[0.0, 0.0], cov0=np.eye(2), mean1=[1.0, 1.0], cov1=np.eye(2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(cov0=[[1.0, 2.0], [2.0, 1.0]]), "cov0.*positive definite"),
    (dict(cov1=[[1.0, 0.5], [0.0, 1.0]]), "cov1.*symmetric"),
    (dict(mean1=[0.0, 0.0, 0.0]), "mean1"),
    (dict(cov1=np.eye(3)), "cov1"),
    (dict(sigma=-1.0), "sigma"),
    (dict(T=0.0), "T"),
    (dict(method="sinkhorn"), "method"),
    (dict(noise="none"), "noise"),
    (dict(steps=0), "steps"),
    (dict(n_samples=2.5), "n_samples"),
    (dict(method="regression", n_samples=3), "n_samples"),
    (dict(reference=cs.processes.OU(3)), "reference"),
    (dict(reference=cs.processes.OU(2, T=2.0)), "reference.T"),
])
def test_bad_input_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianIPF(**{**BASE, **kwargs})


@pytest.mark.parametrize("iters", [0, -3, 1.5, True])
def test_bad_iters(iters):
    with pytest.raises(ValueError, match="iters"):
        GaussianIPF(**BASE).fit(iters)


def test_convergence_rate_needs_iterations_and_inputs_may_be_torch():
    ipf = GaussianIPF(*(torch.as_tensor(v) for v in BASE.values()))
    with pytest.raises(ValueError, match="convergence_rate needs"):
        ipf.convergence_rate()
    assert ipf.coupling()[1].dtype == torch.float64
    with pytest.raises(ValueError, match="window"):
        ipf.fit(3).convergence_rate(window=0)
    with pytest.raises(ValueError, match="t must lie in"):
        ipf.marginal(1.5)
