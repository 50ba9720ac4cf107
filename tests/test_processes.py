"""controlsamp.processes against independent numerics.

* transition kernels vs scipy: Van Loan's block matrix exponential (scipy.linalg.expm) for constant
  coefficients, the moment ODEs dPhi/dt = A Phi, dQ/dt = A Q + Q A' + G G' (scipy solve_ivp, rtol 1e-10)
  for time-varying schedules; the SDE coefficients A(t), G G'(t) are written out here from the papers'
  definitions, not taken from the package;
* Chapman–Kolmogorov; the critical-damping CLD closed form vs the general-Gamma matrix exponential;
* torchsde Euler–Maruyama Monte Carlo vs ``marginal`` and exact ``sample_path`` vs its kernel, within
  CLT bands computed from the sample size (the Euler bias is computed exactly and checked to be below
  one standard error first);
* bad input raises ValueError naming the argument.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torchsde
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy.integrate import solve_ivp

from controlsamp.processes import CLD, OU, VE, VP, Brownian, LinearSDE, Reversed, SubVP

from strategies import log_uniform

Z = 5.0  # CLT band half-width in standard errors
HYP = settings(max_examples=25, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])

KINDS = ["brownian", "brownian_fn", "ou", "vp_linear", "vp_cosine", "subvp_linear", "reversed_vp", "reversed_ve",
         "ve", "cld_critical", "cld_gamma", "cld_schedule"]


# --------------------------------------------------------------------------- reference SDEs
def _iso(dim, k, g2):
    """A(t) = k(t) I, GG'(t) = g2(t) I."""
    eye = np.eye(dim)
    return (lambda t: k(t) * eye), (lambda t: g2(t) * eye)


def _cld_coeffs(d, beta, M, Gamma):
    """Dockhorn et al. (2022) eq. 5 written blockwise: y = (x, v), dx = beta/M v, dv = -beta x - beta Gamma/M v."""
    eye, zero = np.eye(d), np.zeros((d, d))

    def A(t):
        b = beta(t)
        return np.block([[zero, b / M * eye], [-b * eye, -b * Gamma / M * eye]])

    def D(t):
        b = beta(t)
        return np.block([[zero, zero], [zero, 2.0 * Gamma * b * eye]])
    return A, D


def build(kind: str, draw):
    """A process, the reference A(t) and GG'(t), and whether they are constant in time."""
    dim = draw(st.integers(1, 4))
    T = draw(log_uniform(0.1, 10.0))
    if kind == "brownian":
        sig = draw(log_uniform(1e-2, 10.0))
        return Brownian(dim, sigma=sig, T=T), *_iso(dim, lambda t: 0.0, lambda t: sig ** 2), True
    if kind == "brownian_fn":
        c, a = draw(log_uniform(1e-2, 10.0)), draw(st.floats(0.0, 0.9))
        w = draw(log_uniform(0.1, 10.0)) / T

        def sig(t):
            return c * (1.0 + a * math.sin(w * t))
        return Brownian(dim, sigma=sig, T=T), *_iso(dim, lambda t: 0.0, lambda t: sig(t) ** 2), False
    if kind == "ou":
        th, sig = draw(log_uniform(1e-2, 10.0)), draw(log_uniform(1e-2, 10.0))
        return OU(dim, theta=th, sigma=sig, T=T), *_iso(dim, lambda t: -th, lambda t: sig ** 2), True
    if kind == "vp_linear":
        T = draw(log_uniform(0.1, 2.0))
        bmin, bmax = draw(log_uniform(1e-2, 1.0)), draw(log_uniform(1.0, 30.0))

        def beta(t):
            return bmin + t / T * (bmax - bmin)
        return VP(dim, "linear", bmin, bmax, T=T), *_iso(dim, lambda t: -0.5 * beta(t), beta), False
    if kind == "subvp_linear":  # Song et al. 2021 eq. 34: g^2 = beta (1 - exp(-2 int_0^t beta))
        T = draw(log_uniform(0.1, 2.0))
        bmin, bmax = draw(log_uniform(1e-2, 1.0)), draw(log_uniform(1.0, 30.0))

        def beta(t):
            return bmin + t / T * (bmax - bmin)

        def g2(t):
            return beta(t) * (1.0 - math.exp(-2.0 * (bmin * t + (bmax - bmin) * t * t / (2.0 * T))))
        return SubVP(dim, "linear", bmin, bmax, T=T), *_iso(dim, lambda t: -0.5 * beta(t), g2), False
    if kind in ("reversed_vp", "reversed_ve"):  # dY = -k(T - s) Y ds + g(T - s) dW on [0, T - t_min]
        T = draw(log_uniform(0.1, 2.0))
        t_min = draw(st.floats(0.0, 0.5)) * T
        if kind == "reversed_vp":
            bmin, bmax = draw(log_uniform(1e-2, 1.0)), draw(log_uniform(1.0, 20.0))
            base = VP(dim, "linear", bmin, bmax, T=T)

            def beta(t):
                return bmin + t / T * (bmax - bmin)
            k, g2 = (lambda s: 0.5 * beta(T - s)), (lambda s: beta(T - s))
        else:
            smin, smax = draw(log_uniform(1e-3, 0.5)), draw(log_uniform(1.0, 20.0))
            base = VE(dim, smin, smax, T=T)
            k = (lambda s: 0.0)
            g2 = (lambda s: 2.0 * math.log(smax / smin) / T * (smin * (smax / smin) ** ((T - s) / T)) ** 2)
        return Reversed(base, t_min=t_min), *_iso(dim, k, g2), False
    if kind == "vp_cosine":
        T = draw(log_uniform(0.1, 2.0))
        cap, s = draw(log_uniform(1.0, 300.0)), draw(st.floats(0.0, 0.05))

        def beta(t):  # Nichol & Dhariwal: alpha_bar = cos^2(((t/T)+s)/(1+s) pi/2) / ..., beta = -d log alpha_bar/dt
            u = (t / T + s) / (1 + s) * math.pi / 2
            return min(math.pi / (T * (1 + s)) * math.tan(u), cap)
        return VP(dim, "cosine", beta_max=cap, T=T, s=s), *_iso(dim, lambda t: -0.5 * beta(t), beta), False
    if kind == "ve":
        smin, smax = draw(log_uniform(1e-3, 0.5)), draw(log_uniform(1.0, 100.0))

        def d_sig2(t):
            return 2.0 * math.log(smax / smin) / T * (smin * (smax / smin) ** (t / T)) ** 2
        return VE(dim, smin, smax, T=T), *_iso(dim, lambda t: 0.0, d_sig2), False
    M = draw(log_uniform(0.1, 10.0))
    if kind == "cld_schedule":
        T = draw(log_uniform(0.1, 1.0))
        bmin, bmax = draw(log_uniform(0.1, 1.0)), draw(log_uniform(1.0, 10.0))

        def beta(t):
            return bmin + t / T * (bmax - bmin)
        return CLD(dim, beta=(bmin, bmax), M=M, T=T), *_cld_coeffs(dim, beta, M, 2 * math.sqrt(M)), False
    b = draw(log_uniform(0.1, 10.0))
    Gamma = None if kind == "cld_critical" else draw(log_uniform(0.2, 5.0)) * 2 * math.sqrt(M)
    G = 2 * math.sqrt(M) if Gamma is None else Gamma
    return CLD(dim, beta=b, M=M, Gamma=Gamma, T=T), *_cld_coeffs(dim, lambda t: b, M, G), True


def times(draw, T, k=2):
    return sorted(T * draw(st.floats(0.0, 1.0)) for _ in range(k))


def van_loan_ref(A, D, h):
    """Van Loan (1978): expm(h [[-A, D], [0, A']]) = [[., F12], [0, F22]], Phi = F22', Q = F22' F12,
    on n equal sub-steps with h |A| / n <= 1/2, composed step by step (Phi Q Phi' + Q)."""
    n = A.shape[0]
    steps = max(1, math.ceil(2.0 * np.abs(A).sum(0).max() * h))
    hk = h / steps
    F = scipy.linalg.expm(hk * np.block([[-A, D], [np.zeros_like(A), A.T]]))
    P, Qk = F[n:, n:].T, F[n:, n:].T @ F[:n, n:]
    Phi, Q = np.eye(n), np.zeros((n, n))
    for _ in range(steps):
        Phi, Q = P @ Phi, P @ Q @ P.T + Qk
    return Phi, 0.5 * (Q + Q.T)


def ode_ref(A, D, s, t, n):
    """Moment ODEs on [s, t]: dPhi/dt = A Phi, dQ/dt = A Q + Q A' + D, Phi(s) = I, Q(s) = 0."""
    if t == s:
        return np.eye(n), np.zeros((n, n))

    def rhs(u, y):
        Phi, Q = y[: n * n].reshape(n, n), y[n * n:].reshape(n, n)
        a = A(u)
        return np.concatenate([(a @ Phi).ravel(), (a @ Q + Q @ a.T + D(u)).ravel()])
    sol = solve_ivp(rhs, (s, t), np.concatenate([np.eye(n).ravel(), np.zeros(n * n)]), method="DOP853",
                    rtol=1e-10, atol=1e-14)
    assert sol.success, sol.message
    y = sol.y[:, -1]
    Q = y[n * n:].reshape(n, n)
    return y[: n * n].reshape(n, n), 0.5 * (Q + Q.T)


def reference_transition(A, D, const, s, t, n):
    if const:
        return van_loan_ref(A(0.0), D(0.0), t - s)
    return ode_ref(A, D, s, t, n)


def assert_close(actual, expected, rtol=1e-7, what=""):
    """Entrywise relative error rtol, with an absolute floor rtol * 1e-4 * max(1, max|expected|) for
    entries that are ~0 (off-diagonal zeros, e^{-100}-small Phi entries)."""
    actual = actual.numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    atol = rtol * 1e-4 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# --------------------------------------------------------------------------- kernels vs scipy
@pytest.mark.parametrize("kind", KINDS)
@HYP
@given(data=st.data())
def test_transition_matches_independent_solver(kind, data):
    proc, A, D, const = build(kind, data.draw)
    s, t = times(data.draw, proc.T)
    Phi, c, Q = proc.transition(s, t)
    assert Phi.dtype == Q.dtype == c.dtype == torch.float64
    assert Phi.shape == Q.shape == (proc.dim, proc.dim) and c.shape == (proc.dim,)
    Phi_ref, Q_ref = reference_transition(A, D, const, s, t, proc.dim)
    assert_close(Phi, Phi_ref, what=f"Phi {proc} s={s} t={t}")
    assert_close(Q, Q_ref, what=f"Q {proc} s={s} t={t}")
    assert_close(c, np.zeros(proc.dim), what="c")
    # the package's coefficients are the SDE written in the papers
    u = data.draw(st.floats(0.0, 1.0)) * proc.T
    assert_close(proc.drift_matrix(u), A(u), rtol=1e-12, what="A(t)")
    assert_close(proc.diffusion_cov(u), D(u), rtol=1e-12, what="GG'(t)")
    G = proc.diffusion(u)
    assert G.shape == (proc.dim, proc.noise_dim)
    assert_close(G @ G.T, D(u), rtol=1e-12, what="G G'")


@pytest.mark.parametrize("kind", KINDS)
@HYP
@given(data=st.data())
def test_chapman_kolmogorov(kind, data):
    proc, _, _, _ = build(kind, data.draw)
    s, u, t = times(data.draw, proc.T, 3)
    P1, c1, Q1 = proc.transition(s, u)
    P2, c2, Q2 = proc.transition(u, t)
    P, c, Q = proc.transition(s, t)
    assert_close(P2 @ P1, P.numpy(), rtol=1e-9, what="Phi")
    assert_close(P2 @ c1 + c2, c.numpy(), rtol=1e-9, what="c")
    assert_close(P2 @ Q1 @ P2.T + Q2, Q.numpy(), rtol=1e-9, what="Q")


@HYP
@given(dim=st.integers(1, 4), M=log_uniform(1e-2, 1e2), beta=log_uniform(1e-2, 1e2), T=log_uniform(0.1, 10.0),
       a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_cld_critical_closed_form_equals_matrix_exponential(dim, M, beta, T, a, b):
    proc = CLD(dim, beta=beta, M=M, T=T)
    assert proc.critical
    s, t = sorted((a * T, b * T))
    P1, _, Q1 = proc.transition(s, t, method="closed")
    P2, _, Q2 = proc.transition(s, t, method="expm")
    assert_close(P1, P2.numpy(), rtol=1e-9, what="Phi")
    assert_close(Q1, Q2.numpy(), rtol=1e-9, what="Q")
    # Gamma passed explicitly as 2 sqrt(M) is recognised as critical
    assert CLD(dim, beta=beta, M=M, Gamma=2 * math.sqrt(M), T=T).critical


def test_cld_mean_matches_authors_formula():
    """docs/references.md (Dockhorn et al. code): mean_x = e^{-2Bg}(x + 2Bg x + 4Bg^2 v), mean_v = e^{-2Bg}(v - Bx - 2Bg v)."""
    proc = CLD(2, beta=(0.3, 5.0), M=0.7, T=2.0)
    s, t = 0.4, 1.7
    B = 0.3 * (t - s) + (5.0 - 0.3) * (t * t - s * s) / (2 * 2.0)
    g = 1.0 / (2.0 * math.sqrt(0.7))
    y = torch.tensor([[0.3, -1.2, 0.8, 2.0]], dtype=torch.float64)  # x = (0.3, -1.2), v = (0.8, 2.0)
    x, v = y[:, :2], y[:, 2:]
    mx = math.exp(-2 * B * g) * (x + 2 * B * g * x + 4 * B * g * g * v)
    mv = math.exp(-2 * B * g) * (v - B * x - 2 * B * g * v)
    Phi, c, _ = proc.transition(s, t)
    assert torch.allclose(y @ Phi.T + c, torch.cat([mx, mv], 1), rtol=1e-12, atol=1e-14)
    # and the kernel converges to the stationary law diag(I, M I)
    _, cov = CLD(2, beta=50.0, M=0.7).marginal(1.0, torch.zeros(4))
    assert torch.allclose(cov, torch.diag(torch.tensor([1, 1, 0.7, 0.7], dtype=torch.float64)), atol=1e-12)


def test_vp_alpha_bar_and_cosine_clip():
    lin = VP(3, beta_min=0.1, beta_max=20.0)
    ts = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(lin.alpha_bar(ts), torch.exp(-(0.1 * ts + 9.95 * ts ** 2)), rtol=1e-14)
    cos = VP(2, "cosine", beta_max=20.0, s=0.008)
    f = lambda t: np.cos(((t + 0.008) / 1.008) * np.pi / 2) ** 2  # noqa: E731
    tt = np.linspace(0.0, cos.t_clip, 7)
    np.testing.assert_allclose(cos.alpha_bar(tt).numpy(), f(tt) / f(0.0), rtol=1e-13)
    np.testing.assert_allclose(cos.beta(np.array([cos.t_clip, 0.95, 1.0])).numpy(), 20.0, rtol=1e-12)
    for proc in (lin, cos):
        for t in (0.0, 0.3, cos.t_clip, 0.97, 1.0):
            Phi, _, Q = proc.transition(0.0, t)
            ab = float(proc.alpha_bar(t))
            assert math.isclose(float(Phi[0, 0]) ** 2, ab, rel_tol=1e-12)
            assert math.isclose(float(Q[0, 0]), 1 - ab, rel_tol=1e-12, abs_tol=1e-300)
    assert float(cos.alpha_bar(1.0)) > 0.0  # the clip keeps the kernel proper at t = T


def test_brownian_quadrature_and_user_integral():
    T = 2.0
    sig = lambda t: math.exp(0.7 * t)  # noqa: E731
    exact = lambda s, t: (math.exp(1.4 * t) - math.exp(1.4 * s)) / 1.4  # noqa: E731
    quad = Brownian(2, sigma=sig, T=T)
    user = Brownian(2, sigma=sig, T=T, sigma_sq_integral=exact)
    for s, t in [(0.0, 2.0), (0.3, 0.31), (1.0, 1.9)]:
        assert math.isclose(quad.variance(s, t), exact(s, t), rel_tol=1e-13)
        assert float(user.transition(s, t)[2][1, 1]) == exact(s, t)
    const = Brownian(3, sigma=0.5, T=4.0)
    assert torch.equal(const.transition(1.0, 3.0)[2], 0.5 ** 2 * 2.0 * torch.eye(3, dtype=torch.float64))


# --------------------------------------------------------------------------- drift, dtypes, wrapper
@pytest.mark.parametrize("proc", [Brownian(3, 0.5), Brownian(2, sigma=lambda t: 1 + t), OU(3, 2.0, 0.5),
                                  VP(2), VP(2, "cosine"), VE(3), CLD(2), CLD(1, Gamma=0.3, beta=(0.5, 4.0))],
                         ids=repr)
def test_drift_dtypes_autograd_and_wrapper(proc):
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(5, proc.dim, dtype=torch.float64, generator=gen)
    t = 0.37 * proc.T
    A, a = proc.drift_matrix(t), proc.drift_offset(t)
    assert torch.allclose(proc.drift(t, x64), x64 @ A.T + a, rtol=1e-12, atol=1e-12)
    x32 = x64.float().requires_grad_(True)
    f32 = proc.drift(torch.tensor(t), x32)
    assert f32.dtype == torch.float32 and f32.shape == (5, proc.dim)
    (grad,) = torch.autograd.grad(f32.sum(), x32)
    assert torch.allclose(grad, A.sum(0).float().expand(5, -1), rtol=1e-5, atol=1e-6)
    assert torch.allclose(proc.drift(t, x64.numpy()), x64 @ A.T + a)  # numpy input
    sde = proc.sde()
    assert sde.sde_type == "ito"
    assert sde.noise_type == ("general" if isinstance(proc, CLD) else "diagonal")
    for y in (x64, x64.float()):
        g = sde.g(torch.tensor(t, dtype=y.dtype), y)
        assert g.dtype == y.dtype and sde.f(t, y).dtype == y.dtype
        G = proc.diffusion(t).to(y.dtype)
        if sde.noise_type == "diagonal":
            assert g.shape == y.shape and torch.allclose(torch.diag_embed(g[0]), G)
        else:
            assert g.shape == (5, proc.dim, proc.noise_dim) and torch.allclose(g[0], G)
    # a float32 time grid whose last point rounds above T is accepted by the wrapper (times are clamped),
    # while the process itself is strict
    t_up = proc.T * (1 + 1e-7)
    assert torch.equal(sde.f(torch.tensor(t_up, dtype=torch.float32), x64), proc.drift(proc.T, x64))
    with pytest.raises(ValueError, match="t must lie"):
        proc.drift(t_up, x64)


# --------------------------------------------------------------------------- Monte Carlo
SIM = [OU(2, theta=1.5, sigma=0.8), Brownian(2, sigma=lambda t: 0.5 + t, T=1.5), VP(2, beta_min=0.1, beta_max=8.0),
       VP(1, "cosine", beta_max=10.0), VE(2, 0.05, 3.0), CLD(1, beta=2.0, M=0.25), CLD(1, beta=(0.5, 3.0), M=0.5, Gamma=0.6)]


def euler_moments(proc: LinearSDE, x0: torch.Tensor, h: float, steps: int):
    """Exact mean and covariance of the Euler–Maruyama chain X' = X + (A X + a) h + G dW (its bias)."""
    m, P = x0.clone(), torch.zeros(proc.dim, proc.dim, dtype=torch.float64)
    eye = torch.eye(proc.dim, dtype=torch.float64)
    for k in range(steps):
        t = k * h
        F = eye + h * proc.drift_matrix(t)
        m = F @ m + h * proc.drift_offset(t)
        P = F @ P @ F.T + h * proc.diffusion_cov(t)
    return m, P


def band_check(sample: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, what: str, bias=None):
    """|sample mean - mean| <= Z SE and |sample cov - cov| <= Z SE entrywise, SE from the CLT for Gaussians:
    Var(mean_i) = C_ii / n, Var(C^_ij) = (C_ii C_jj + C_ij^2) / n. With ``bias = (m_b, C_b)`` (a known
    systematic error of the sampler) the test first checks the bias is below one SE, so it cannot mask
    or cause a failure."""
    n = sample.shape[0]
    var = torch.diagonal(cov)
    se_m = torch.sqrt(var / n)
    se_c = torch.sqrt((var[:, None] * var[None, :] + cov ** 2) / n)
    if bias is not None:
        assert ((bias[0] - mean).abs() <= se_m + 1e-12).all(), f"{what}: Euler bias of the mean above 1 SE"
        assert ((bias[1] - cov).abs() <= se_c + 1e-12).all(), f"{what}: Euler bias of the covariance above 1 SE"
    m_hat = sample.mean(0)
    c_hat = torch.cov(sample.T).reshape(cov.shape)
    assert ((m_hat - mean).abs() <= Z * se_m + 1e-12).all(), f"{what}: mean {m_hat} vs {mean} (SE {se_m})"
    assert ((c_hat - cov).abs() <= Z * se_c + 1e-12).all(), f"{what}: cov {c_hat} vs {cov} (SE {se_c})"


@pytest.mark.parametrize("proc", SIM, ids=repr)
def test_torchsde_euler_matches_marginal(proc):
    n, steps = 4000, 400
    h = proc.T / steps
    x0 = torch.linspace(-1.0, 1.0, proc.dim, dtype=torch.float64)
    bm = torchsde.BrownianInterval(0.0, proc.T, size=(n, proc.noise_dim), dtype=torch.float64, entropy=1234, dt=h)
    ts = torch.tensor([0.0, proc.T], dtype=torch.float64)
    with torch.no_grad():
        ys = torchsde.sdeint(proc.sde(), x0.expand(n, -1).clone(), ts, bm=bm, dt=h, method="euler")
    mean, cov = proc.marginal(proc.T, x0)
    band_check(ys[-1], mean, cov, repr(proc), bias=euler_moments(proc, x0, h, steps))


@pytest.mark.parametrize("proc", SIM, ids=repr)
def test_sample_path_increments(proc):
    """Exact path sampling: each residual X_{t_k} - Phi_k X_{t_{k-1}} - c_k is N(0, Q_k) and uncorrelated with
    X_{t_{k-1}} (Markov with the right kernel); for Brownian motion these are the increments."""
    n = 20000
    gen = torch.Generator().manual_seed(7)
    x0 = torch.randn(n, proc.dim, dtype=torch.float64, generator=gen)
    ts = torch.tensor([0.1, 0.35, 0.7, 1.0]) * proc.T
    path = proc.sample_path(ts.numpy(), x0, generator=gen)
    assert path.shape == (n, 4, proc.dim) and path.dtype == torch.float64
    prev, t_prev = x0, 0.0
    for k, tk in enumerate(ts.tolist()):
        Phi, c, Q = proc.transition(t_prev, tk)
        r = path[:, k] - prev @ Phi.T - c
        band_check(r, torch.zeros(proc.dim, dtype=torch.float64), Q, f"{proc} step {k}")
        cross = ((r - r.mean(0)).T @ (prev - prev.mean(0))) / (n - 1)
        se = torch.sqrt(torch.diagonal(Q)[:, None] * prev.var(0)[None, :] / n)
        assert (cross.abs() <= Z * se + 1e-12).all(), f"{proc} step {k}: residual correlated with the past"
        prev, t_prev = path[:, k], tk
    # the end point from a fixed start has the law of marginal()
    xs = torch.full((n, proc.dim), 0.5, dtype=torch.float64)
    end = proc.sample_path([proc.T], xs, generator=gen)[:, -1]
    band_check(end, *proc.marginal(proc.T, torch.full((proc.dim,), 0.5)), f"{proc} end point")


def test_sample_marginal_and_marginal_with_cov0():
    proc = CLD(2, beta=1.5, M=0.4, Gamma=0.9)
    m0 = np.array([1.0, -1.0, 0.5, 0.0])
    S0 = np.diag([0.5, 0.2, 0.1, 0.3]) + 0.05
    mean, cov = proc.marginal(0.6, m0, S0)
    Phi, c, Q = proc.transition(0.0, 0.6)
    S0t = torch.as_tensor(S0)
    assert torch.allclose(cov, Phi @ S0t @ Phi.T + Q) and torch.allclose(mean, Phi @ torch.as_tensor(m0) + c)
    x = proc.sample_marginal(0.6, 20000, m0, S0, generator=torch.Generator().manual_seed(3))
    assert x.shape == (20000, 4)
    band_check(x, mean, cov, "sample_marginal")
    # a grid starting at 0 returns the start point first
    x0 = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    path = proc.sample_path(torch.tensor([0.0, 0.5]), x0)
    assert torch.equal(path[:, 0], x0)
    m_t0, c_t0 = proc.marginal(0.0, m0)
    assert torch.equal(m_t0, torch.as_tensor(m0)) and torch.equal(c_t0, torch.zeros(4, 4, dtype=torch.float64))


# --------------------------------------------------------------------------- bad input
BAD = [
    (lambda: Brownian(2, sigma=0.0), "sigma"),
    (lambda: Brownian(2, sigma=-1.0), "sigma"),
    (lambda: Brownian(0), "dim"),
    (lambda: Brownian(2.5), "dim"),
    (lambda: OU(2, theta=-1.0), "theta"),
    (lambda: OU(2, sigma=0.0), "sigma"),
    (lambda: OU(2, T=0.0), "T"),
    (lambda: VP(2, schedule="quadratic"), "schedule"),
    (lambda: VP(2, beta_min=0.0), "beta_min"),
    (lambda: VP(2, schedule="cosine", s=-0.1), "s "),
    (lambda: VE(2, sigma_min=1.0, sigma_max=0.5), "sigma_max"),
    (lambda: VE(2, sigma_min=-1.0), "sigma_min"),
    (lambda: CLD(2, M=0.0), "M"),
    (lambda: CLD(2, Gamma=-1.0), "Gamma"),
    (lambda: CLD(2, beta=(1.0, 0.0)), "beta"),
    (lambda: CLD(2, Gamma=0.3).transition(0.0, 0.5, method="closed"), "Gamma"),
    (lambda: OU(2).transition(0.5, 0.2), "s"),
    (lambda: OU(2).transition(-0.1, 0.2), "s"),
    (lambda: OU(2, T=2.0).transition(0.1, 2.5), "t"),
    (lambda: VP(2).drift(1.5, torch.zeros(3, 2)), "t"),
    (lambda: VE(2).marginal(-0.5, torch.zeros(2)), "t"),
    (lambda: OU(2).drift(0.5, torch.zeros(3, 3)), "x"),
    (lambda: CLD(2).drift(0.5, torch.zeros(3, 2)), "x"),
    (lambda: OU(2).sample_path([0.5, 1.0], torch.zeros(3, 3)), "x0"),
    (lambda: OU(2).sample_path([0.5, 0.2], torch.zeros(3, 2)), "ts"),
    (lambda: OU(2).sample_path([0.5, 1.5], torch.zeros(3, 2)), "ts"),
    (lambda: OU(2).marginal(0.5, torch.zeros(3)), "mean0"),
    (lambda: OU(2).marginal(0.5, torch.zeros(2), -torch.eye(2)), "cov0"),
    (lambda: OU(2).sample_marginal(0.5, 0, torch.zeros(2)), "n"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_raises_value_error_naming_argument(case):
    fn, name = BAD[case]
    with pytest.raises(ValueError, match=name):
        fn()


def test_lti_transition_accepts_numpy_and_matches_the_ou_closed_form():
    """A = -theta I, D = s^2 I: Phi = e^{-theta h} I, Q = s^2 (1 - e^{-2 theta h}) / (2 theta) I; numpy and
    list arguments as the README promises."""
    theta, s2, h = 1.7, 0.8, 0.45
    from controlsamp.processes import lti_transition
    Phi, Q = lti_transition(-theta * np.eye(2), (s2 * np.eye(2)).tolist(), h)
    np.testing.assert_allclose(Phi.numpy(), np.exp(-theta * h) * np.eye(2), rtol=1e-14)
    np.testing.assert_allclose(Q.numpy(), s2 * (1 - np.exp(-2 * theta * h)) / (2 * theta) * np.eye(2), rtol=1e-13)
    for bad, name in [((np.ones((2, 3)), np.eye(2), h), "A"), ((-np.eye(2), np.eye(3), h), "D"),
                      ((-np.eye(2), np.eye(2), -1.0), "h"), ((np.full((2, 2), np.nan), np.eye(2), h), "A")]:
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            lti_transition(*bad)


def test_process_drift_refuses_non_finite_points():
    with pytest.raises(ValueError, match=r"\bx\b.*NaN"):
        OU(2).drift(0.5, torch.tensor([[0.0, float("nan")]]))


@pytest.mark.parametrize("proc", [VP(2), VP(2, "cosine"), SubVP(2), SubVP(1, "cosine", beta_max=50.0), VE(3, 0.02, 30.0),
                                  OU(2, theta=1.5, sigma=0.7), Brownian(2, sigma=0.5, T=2.0),
                                  Reversed(VP(2), t_min=1e-3)])
def test_vectorised_marginal_coefficients_equal_the_scalar_kernel(proc):
    """marginal_coefficients(t) (vectorised, used per training point by score matching) is kernel(0, t) at every t,
    including t = 0 and t = T."""
    ts = torch.cat([torch.tensor([0.0, proc.T], dtype=torch.float64), proc.T * torch.rand(20, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))])
    a, q = proc.marginal_coefficients(ts)
    ref = [proc.kernel(0.0, float(t)) for t in ts]
    np.testing.assert_allclose(a.numpy(), [r[0] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(q.numpy(), [r[1] for r in ref], rtol=1e-10, atol=1e-300)
    with pytest.raises(ValueError, match="t must lie in"):
        proc.marginal_coefficients(torch.tensor([proc.T * 1.5]))


def test_subvp_and_reversed_kernels_equal_the_symbolic_derivation():
    """theory/reverse_kernels.py derives the sub-VP kernel and the reversed linear part's kernel for a general
    schedule; substituted with the linear VP schedule and evaluated with sympy at 30 digits, they equal
    SubVP.kernel and Reversed(VP).kernel."""
    import sympy as sp
    from theory import reverse_kernels as rk
    bmin, bmax, T = 0.1, 20.0, 1.0
    sub, rev = SubVP(1, beta_min=bmin, beta_max=bmax, T=T), Reversed(VP(1, beta_min=bmin, beta_max=bmax, T=T))
    k = rk.derive()

    def lam(v):  # int_0^v beta
        return bmin * v + (bmax - bmin) * v ** 2 / (2 * T)
    for a, b in [(0.0, 0.3), (0.05, 0.07), (0.4, 1.0), (0.0, 1.0)]:
        subs = {rk.A(rk.s): lam(sp.Float(a, 30)), rk.A(rk.t): lam(sp.Float(b, 30))}
        phi, q = sub.kernel(a, b)
        assert phi == pytest.approx(float(k.subvp_phi.subs(subs).evalf(30)), rel=1e-13)
        assert q == pytest.approx(float(k.subvp_q.subs(subs).evalf(30)), rel=1e-11)
        # VP: k = -beta/2 so K = -lam/2; g^2 = beta = e^{2K} H' so H = e^{lam}
        ends = {rk.T: T, rk.s: sp.Float(a, 30), rk.t: sp.Float(b, 30)}
        r_phi = k.rev_phi.subs(ends).replace(rk.K, lambda v: -lam(v) / 2).replace(rk.H, lambda v: sp.exp(lam(v)))
        r_q = k.rev_q.subs(ends).replace(rk.K, lambda v: -lam(v) / 2).replace(rk.H, lambda v: sp.exp(lam(v)))
        phi, q = rev.kernel(a, b)
        assert phi == pytest.approx(float(r_phi.evalf(30)), rel=1e-12)
        assert q == pytest.approx(float(r_q.evalf(30)), rel=1e-10)
