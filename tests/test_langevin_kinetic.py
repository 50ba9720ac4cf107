"""controlsamp.langevin.underdamped (BAOAB, OBABO, CLD splitting) against independent numbers.

* CLD kernel: on pi = N(0, I) the kick vanishes, so ``cld_step`` must be the exact CLD transition of
  ``controlsamp.processes.CLD`` over h: pathwise (the test redraws the same normals and applies the
  process's full (2d x 2d) float64 matrices, atol 1e-10) and in law (Monte Carlo mean / covariance of
  one-step draws vs the transition mean / covariance, CLT bands).
* Gaussian targets: every scheme is then a linear map (x, v) -> T (x, v) + noise per eigen-direction of
  the target covariance; its exact stationary covariance is the solution of the discrete Lyapunov
  equation C = T C T' + N, built here in numpy from the sub-steps' definitions (for CLD from the
  process's 2x2 kernel) and solved by scipy. The Monte Carlo variances of independent chains are
  compared with it (sd of a sample variance = v sqrt(2 / (n - 1)), z = 4).
* CLD on a non-Gaussian target (a two-component Gaussian mixture with closed-form moments): the
  O(h^2) bias is resolved at h and must shrink by ~4 at h/2.
* bad input raises ValueError naming the argument.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from controlsamp.langevin import underdamped as ud
from controlsamp.processes import CLD

Z = 4.0  # CLT band half-width in standard errors
DT = torch.float64


def std_normal(x):
    return -0.5 * (x * x).sum(-1), -x


def gaussian(mean, cov):
    """log N(mean, cov) up to a constant, and its score, for (n, d) batches."""
    m = torch.as_tensor(mean, dtype=DT)
    P = torch.linalg.inv(torch.as_tensor(cov, dtype=DT))

    def log_density(x):
        r = x - m
        Pr = r @ P
        return -0.5 * (r * Pr).sum(-1), -Pr
    return log_density


# --------------------------------------------------------------------------------- (a) CLD kernel
@pytest.mark.parametrize("Gamma", [None, 0.7])
@pytest.mark.parametrize("splitting", ["LKL", "KLK"])
def test_cld_step_is_the_exact_cld_kernel_pathwise(Gamma, splitting):
    d, n, h, beta, M = 3, 16, 0.1, 4.0, 0.25
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, d, generator=g, dtype=DT)
    v = 0.7 * torch.randn(n, d, generator=g, dtype=DT)
    state = ud.init(x, std_normal, v=v, M=M)
    out = ud.cld_step(state, std_normal, h, beta=beta, M=M, Gamma=Gamma,
                      generator=torch.Generator().manual_seed(5), splitting=splitting)

    proc = CLD(d, beta=beta, M=M, Gamma=Gamma)
    Phi, c, Q = proc.transition(0.0, h)
    y = torch.cat([x, v], 1)
    g = torch.Generator().manual_seed(5)  # the same normals, in the documented order
    if splitting == "KLK":  # one kernel step over h
        z = torch.randn(n, 2 * d, generator=g, dtype=DT)
        expected = y @ Phi.T + c + z @ torch.linalg.cholesky(Q).T
    else:  # two kernel steps over h/2: Phi_h y + Phi_{h/2} L_{h/2} z1 + L_{h/2} z2
        Ph, ch, Qh = proc.transition(0.0, h / 2)
        Lh = torch.linalg.cholesky(Qh)
        z1 = torch.randn(n, 2 * d, generator=g, dtype=DT)
        z2 = torch.randn(n, 2 * d, generator=g, dtype=DT)
        expected = y @ Phi.T + z1 @ (Ph @ Lh).T + z2 @ Lh.T
        # that is the h-kernel: Phi_{h/2}^2 = Phi_h and the noise covariance is Q_h (Chapman-Kolmogorov)
        assert torch.allclose(Ph @ Ph, Phi, atol=1e-12, rtol=0)
        assert torch.allclose(Ph @ Qh @ Ph.T + Qh, Q, atol=1e-12, rtol=0)
    assert torch.allclose(torch.cat([out.x, out.v], 1), expected, atol=1e-10, rtol=0)
    lp, sc = std_normal(out.x)  # the state's log-density and score are at the new position
    assert torch.allclose(out.log_prob, lp, atol=0, rtol=0) and torch.allclose(out.score, sc, atol=0, rtol=0)


@pytest.mark.parametrize("splitting", ["LKL", "KLK"])
def test_cld_step_one_step_law_matches_the_transition(splitting):
    d, n, h, beta, M = 2, 40000, 0.15, 4.0, 0.25
    x0 = torch.tensor([[1.5, -0.5]], dtype=DT)
    v0 = torch.tensor([[-0.4, 0.3]], dtype=DT)
    state = ud.init(x0.expand(n, d).clone(), std_normal, v=v0.expand(n, d).clone(), M=M)
    out = ud.cld_step(state, std_normal, h, beta=beta, M=M, generator=torch.Generator().manual_seed(3),
                      splitting=splitting)
    y = torch.cat([out.x, out.v], 1)
    Phi, c, Q = CLD(d, beta=beta, M=M).transition(0.0, h)
    mean = (torch.cat([x0, v0], 1) @ Phi.T + c)[0]
    q = torch.diagonal(Q)
    assert ((y.mean(0) - mean).abs() <= Z * torch.sqrt(q / n)).all()
    cov = torch.cov(y.T)
    # sd of a Gaussian sample covariance entry: sqrt((Q_ii Q_jj + Q_ij^2) / n)
    sd = torch.sqrt((torch.outer(q, q) + Q ** 2) / n)
    assert ((cov - Q).abs() <= Z * sd).all(), (cov - Q) / sd


# --------------------------------------------------------------------- (b) Gaussian targets, Lyapunov
def _stationary_cov(ops):
    """Stationary covariance of the composition of affine-Gaussian maps z -> A z + N^{1/2} xi (in order)."""
    T, N = np.eye(2), np.zeros((2, 2))
    for A, noise in ops:
        T, N = A @ T, A @ N @ A.T + noise
    rho = max(abs(np.linalg.eigvals(T)))
    return scipy.linalg.solve_discrete_lyapunov(T, N), rho


def _langevin_ops(scheme, h, s, gamma, M):
    """BAOAB / OBABO on U = x^2 / (2 s) in one eigen-direction, written from the sub-step definitions."""
    def B(t):
        return np.array([[1.0, 0.0], [-t / s, 1.0]]), np.zeros((2, 2))

    def A(t):
        return np.array([[1.0, t / M], [0.0, 1.0]]), np.zeros((2, 2))

    def O(t):
        c = math.exp(-gamma * t / M)
        return np.diag([1.0, c]), np.diag([0.0, M * (1.0 - c * c)])
    if scheme == "baoab":
        return [B(h / 2), A(h / 2), O(h), A(h / 2), B(h / 2)]
    return [O(h / 2), B(h / 2), A(h), B(h / 2), O(h / 2)]


def _cld_ops(splitting, h, s, beta, M):
    """The CLD splitting on U = x^2 / (2 s): kernel blocks from the process, kick beta (1 - 1/s) x."""
    def L(t):
        Phi, _, Q = CLD(1, beta=beta, M=M, T=t).transition(0.0, t)
        return Phi.numpy(), Q.numpy()

    def K(t):
        return np.array([[1.0, 0.0], [t * beta * (1.0 - 1.0 / s), 1.0]]), np.zeros((2, 2))
    if splitting == "LKL":
        return [L(h / 2), K(h), L(h / 2)]
    return [K(h / 2), L(h), K(h / 2)]


S_TARGET = np.array([[1.6, 0.6], [0.6, 0.7]])  # eigenvalues 0.4 and 1.9, correlation 0.57


def _check_gaussian_stationary(step, ops_for, mean, n_chains, n_steps, M, seed, offset_x=3.0):
    """Run independent chains on N(mean, S_TARGET) and compare the final snapshot with the Lyapunov law.

    Returns (exact position variances per eigen-direction, their Lyapunov values) for extra checks.
    """
    d = 2
    evals, evecs = np.linalg.eigh(S_TARGET)
    log_density = gaussian(mean, S_TARGET)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(mean, dtype=DT) + offset_x * torch.ones(n_chains, d, dtype=DT)
    state = ud.init(x0, log_density, M=M, generator=g)
    covs, rhos = [], []
    for s in evals:
        C, rho = _stationary_cov(ops_for(s))
        covs.append(C)
        rhos.append(rho)
    # burn-in: the mean and covariance contract by rho^n_steps (x0 is offset_x away, v0 stationary)
    assert max(rhos) ** n_steps * (offset_x ** 2 + 10.0) < 1e-8
    for _ in range(n_steps):
        state = step(state, log_density, g)
    U = torch.as_tensor(evecs, dtype=DT)
    yx = (state.x - torch.as_tensor(mean, dtype=DT)) @ U  # eigen-coordinates, independent per direction
    yv = state.v @ U
    n = n_chains
    for i in range(d):
        for y, k in ((yx, 0), (yv, 1)):
            var = covs[i][k, k]
            assert abs(float(y[:, i].mean())) <= Z * math.sqrt(var / n), (i, k, float(y[:, i].mean()))
            got = float(y[:, i].var())
            assert abs(got - var) <= Z * var * math.sqrt(2.0 / (n - 1)), (i, k, got, var)
    # the two eigen-directions are independent: sample correlation within Z / sqrt(n)
    assert abs(float(torch.corrcoef(yx.T)[0, 1])) <= Z / math.sqrt(n)
    return evals, np.array([C[0, 0] for C in covs])


N_CHAINS = 8000
BAND = Z * math.sqrt(2.0 / (N_CHAINS - 1))  # relative half-width of the variance band


@pytest.mark.parametrize("scheme", ["baoab", "obabo"])
def test_baoab_obabo_stationary_law_on_gaussian(scheme):
    h, gamma, M = 0.5, 1.0, 1.0  # h / sqrt(M s_min) = 0.83 < 2 (Verlet-stable)
    mean = [1.0, -2.0]
    fn = ud.baoab_step if scheme == "baoab" else ud.obabo_step

    def step(state, log_density, g):
        return fn(state, log_density, h, gamma, M=M, generator=g)
    s, var_x = _check_gaussian_stationary(step, lambda s: _langevin_ops(scheme, h, s, gamma, M), mean,
                                          N_CHAINS, n_steps=200, M=M, seed=1)
    if scheme == "baoab":
        # BAOAB's position marginal is exact for Gaussian targets (Leimkuhler & Matthews 2013)
        assert np.allclose(var_x, s, rtol=1e-10)
    else:
        # OBABO's is s / (1 - h^2 / (4 M s)): in the stiff direction 0.40 -> 0.474 (+18.5%), outside the MC
        # band (6.3%), so the check above tells the two schemes apart
        assert np.allclose(var_x, s / (1.0 - h * h / (4.0 * M * s)), rtol=1e-10)
        assert var_x[0] / s[0] - 1.0 > 2 * BAND


@pytest.mark.parametrize("splitting", ["LKL", "KLK"])
def test_cld_stationary_law_on_gaussian(splitting):
    h, beta, M = 0.1, 4.0, 0.25
    kw = dict(beta=beta, M=M, splitting=splitting)

    def step(state, log_density, g):
        return ud.cld_step(state, log_density, h, generator=g, **kw)
    s, var_x = _check_gaussian_stationary(step, lambda s: _cld_ops(splitting, h, s, beta, M), [0.0, 0.0],
                                          N_CHAINS, n_steps=200, M=M, seed=2)
    # at this h the stiff direction's stationary variance is ~13% off s (the O(h^2) splitting bias, from the
    # Lyapunov solution: LKL 0.40 -> 0.350, KLK 0.40 -> 0.455), outside the MC band (6.3%), so the chains are
    # shown to follow the splitting's law and not the target's
    assert abs(var_x[0] / s[0] - 1.0) > 1.2 * BAND


# ---------------------------------------------------------------- (c) CLD on a Gaussian mixture
W_MIX = torch.tensor([0.3, 0.7], dtype=DT)
MU_MIX = torch.tensor([-1.0, 1.0], dtype=DT)
SD_MIX = 0.8


def mixture(x):
    """log density and score of 0.3 N(-1, 0.8^2) + 0.7 N(1, 0.8^2) on (n, 1)."""
    lc = torch.log(W_MIX) - 0.5 * ((x - MU_MIX) / SD_MIX) ** 2
    resp = torch.softmax(lc, 1)
    return torch.logsumexp(lc, 1), (resp * (MU_MIX - x)).sum(1, keepdim=True) / SD_MIX ** 2


def _mixture_moments(h, splitting, n_chains=32000, horizon=30.0, burn=5.0, seed=0):
    """Errors of E[x], E[x^2] (time average over [burn, burn + horizon] of process time, per chain, then over
    chains) and their standard errors (the per-chain averages are independent, so sd / sqrt(n_chains))."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(W_MIX, n_chains, replacement=True, generator=g)
    x0 = (MU_MIX[comp] + SD_MIX * torch.randn(n_chains, generator=g, dtype=DT)).unsqueeze(1)  # exact draws
    state = ud.init(x0, mixture, M=0.25, generator=g)
    for _ in range(round(burn / h)):
        state = ud.cld_step(state, mixture, h, generator=g, splitting=splitting)
    n_avg = round(horizon / h)
    s1 = torch.zeros(n_chains, dtype=DT)
    s2 = torch.zeros(n_chains, dtype=DT)
    for _ in range(n_avg):
        state = ud.cld_step(state, mixture, h, generator=g, splitting=splitting)
        s1 += state.x[:, 0]
        s2 += state.x[:, 0] ** 2
    exact = [float((W_MIX * MU_MIX).sum()), float((W_MIX * (MU_MIX ** 2 + SD_MIX ** 2)).sum())]  # 0.4, 1.64
    out = []
    for s, m in zip((s1 / n_avg, s2 / n_avg), exact):
        out.append((float(s.mean()) - m, float(s.std()) / math.sqrt(n_chains)))
    return out


@pytest.mark.parametrize("splitting", ["LKL", "KLK"])
def test_cld_mixture_bias_is_second_order(splitting):
    """At h = 0.1 (beta h = 0.4 per step) the bias in E[x^2] is resolved (measured 0.044 for LKL, -0.053 for
    KLK, standard error ~0.001, i.e. 2.7-3.2% of E[x^2] = 1.64); at h/2 it must be a quarter of that.
    Allowance for the higher-order terms: 50% of the predicted quarter (on Gaussian targets N(0, s), s in {0.64, 1.5}, the exact Lyapunov bias
    ratio e(0.1) / e(0.05) is 2.98-4.14, i.e. within 34% of 4), plus Z combined standard errors. A first-order
    scheme (ratio 2) would miss E[x^2] by 100% of the quarter."""
    h = 0.1
    coarse = _mixture_moments(h, splitting)
    fine = _mixture_moments(h / 2, splitting, seed=1)
    (e1_m2, se1_m2) = coarse[1]
    assert abs(e1_m2) > 8 * se1_m2  # the bias is resolved at h, so the check below has teeth
    for (e1, se1), (e2, se2) in zip(coarse, fine):
        tol = Z * math.sqrt(se2 ** 2 + se1 ** 2 / 16) + 0.5 * abs(e1) / 4
        assert abs(e2 - e1 / 4) <= tol, (splitting, e1, e2, tol)


# ------------------------------------------------------------------------------ small properties
def test_init_draws_velocity_from_n0_m():
    n, d, M = 20000, 2, 0.3
    st = ud.init(torch.zeros(n, d, dtype=DT), std_normal, M=M, generator=torch.Generator().manual_seed(0))
    assert st.v.shape == (n, d) and st.log_prob.shape == (n,) and st.score.shape == (n, d)
    var = st.v.var(0)
    assert ((var - M).abs() <= Z * M * math.sqrt(2.0 / (n - 1))).all()
    assert (st.v.mean(0).abs() <= Z * math.sqrt(M / n)).all()


@pytest.mark.parametrize("name, calls", [("baoab", 1), ("obabo", 1), ("LKL", 2), ("KLK", 1)])
def test_gradient_calls_per_step_dtype_and_reproducibility(name, calls):
    count = [0]

    def counted(x):
        count[0] += 1
        return std_normal(x)

    def step(state, g):
        if name == "baoab":
            return ud.baoab_step(state, counted, 0.1, 1.0, generator=g)
        if name == "obabo":
            return ud.obabo_step(state, counted, 0.1, 1.0, generator=g)
        return ud.cld_step(state, counted, 0.1, generator=g, splitting=name)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))  # float32
    st = ud.init(x, counted, generator=torch.Generator().manual_seed(1))
    count[0] = 0
    a = step(st, torch.Generator().manual_seed(7))
    assert count[0] == calls
    b = step(st, torch.Generator().manual_seed(7))
    assert a.x.dtype == torch.float32 and a.v.dtype == torch.float32
    assert all(torch.equal(p, q) for p, q in zip(a, b))


# ------------------------------------------------------------------------------------- (d) errors
def _state(n=4, d=2):
    return ud.init(torch.zeros(n, d, dtype=DT), std_normal, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(step_size=0.0), "step_size"), (dict(step_size=-0.1), "step_size"),
    (dict(step_size=float("nan")), "step_size"), (dict(gamma=0.0), "gamma"), (dict(gamma=-1.0), "gamma"),
    (dict(M=0.0), "M"), (dict(M=-2.0), "M"),
])
@pytest.mark.parametrize("fn", [ud.baoab_step, ud.obabo_step])
def test_langevin_step_errors(fn, kwargs, match):
    args = dict(step_size=0.1, gamma=1.0, M=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fn(_state(), std_normal, **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(step_size=0.0), "step_size"), (dict(beta=0.0), "beta"), (dict(beta=(0.1, 20.0)), "beta"),
    (dict(M=-1.0), "M"), (dict(Gamma=0.0), "Gamma"), (dict(splitting="OBABO"), "splitting"),
])
def test_cld_step_errors(kwargs, match):
    args = dict(step_size=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ud.cld_step(_state(), std_normal, **args)


def test_shape_errors():
    with pytest.raises(ValueError, match="x must have shape"):
        ud.init(torch.zeros(3, dtype=DT), std_normal)
    with pytest.raises(ValueError, match="v must have the shape"):
        ud.init(torch.zeros(3, 2, dtype=DT), std_normal, v=torch.zeros(3, 1, dtype=DT))
    with pytest.raises(ValueError, match="M"):
        ud.init(torch.zeros(3, 2, dtype=DT), std_normal, M=0.0)
    with pytest.raises(ValueError, match="log_density must return log"):
        ud.init(torch.zeros(3, 2, dtype=DT), lambda x: (x, -x))
    with pytest.raises(ValueError, match="log_density must return a score"):
        ud.init(torch.zeros(3, 2, dtype=DT), lambda x: (x.sum(1), x[:, :1]))
    st = _state()
    with pytest.raises(ValueError, match="state.v"):
        ud.baoab_step(st._replace(v=torch.zeros(4, 3, dtype=DT)), std_normal, 0.1, 1.0)
    with pytest.raises(ValueError, match="state must be a KineticState"):
        ud.cld_step(tuple(st), std_normal, 0.1)
