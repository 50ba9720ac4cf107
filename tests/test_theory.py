"""theory/ (pure sympy) against itself and against controlsamp's numerical implementations.

1. Every identity of every theory module holds (one test per identity name).
2. The checkers themselves reject wrong identities (negative controls), and theory/ imports neither
   controlsamp nor torch.
3. The symbolic closed forms, evaluated with mpmath at 40 digits (so the reference carries no
   cancellation error of its own), agree with controlsamp's float64 implementations on random
   problems drawn by hypothesis: OU and CLD kernels, the 1-d Gaussian Schrödinger bridge, the
   Schrödinger–Föllmer drift/value/marginal for a Gaussian target, and the scalar LQR.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

import theory
from theory import cld_kernel, follmer, gaussian_bridge, lqr, ou_kernel, ula
from theory._check import Check, is_zero, zero_at, zero_modulo

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-8
MODULES = theory.modules()
IDENTITIES = [(mod, name) for mod in theory.MODULE_NAMES for name in MODULES[mod].identity.names()]


# --------------------------------------------------------------------------------------------------
# 1. every identity holds
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module_name, identity_name", IDENTITIES,
                         ids=[f"{m}:{n[:60]}" for m, n in IDENTITIES])
def test_identity_holds(module_name, identity_name):
    check = MODULES[module_name].identity.run(identity_name)
    assert isinstance(check, Check)
    assert check.holds, f"theory.{module_name}: identity failed: {identity_name} ({check.method})"


def test_every_module_has_the_interface():
    for name, mod in MODULES.items():
        assert callable(mod.derive) and callable(mod.checks) and callable(mod.formulas), name
        assert mod.derive() is mod.derive(), f"{name}.derive() is not cached"
        assert len(mod.identity.names()) >= 3, name
        assert mod.__doc__ and len(mod.__doc__) > 200, f"{name} needs a docstring with the math and a source"


def test_checks_returns_named_pairs():
    checks = ula.checks()
    assert [c.name for c in checks] == ula.identity.names()
    for name, holds in checks:  # a Check unpacks as (name, holds)
        assert isinstance(name, str) and holds is True


def test_command_line_exit_status():
    out = subprocess.run([sys.executable, "-m", "theory", "ula", "ou_kernel"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[FAIL" not in out.stdout and "[OK  ]" in out.stdout and "0 FAIL" in out.stdout
    assert "v* = 2*s**2/(-h + 2*s)" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "theory", "no_such_module"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0


# --------------------------------------------------------------------------------------------------
# 2. the checkers are not vacuous; theory/ is pure sympy
# --------------------------------------------------------------------------------------------------
def test_checkers_reject_wrong_identities():
    x, y = sp.symbols("x y", real=True)
    assert is_zero(sp.cosh(x) ** 2 - sp.sinh(x) ** 2 - 1)
    assert not is_zero(sp.cosh(x) ** 2 + sp.sinh(x) ** 2 - 1)
    assert not is_zero(sp.Matrix([0, x - y]))
    # the OU Fokker–Planck residual with the wrong sign of the diffusion term does not vanish at a rational point
    # (is_zero's full chain on it, about 40 s of simplify, adds nothing to the two rejections above and below)
    k = ou_kernel.derive()
    p, yy = k.density, ou_kernel.y
    wrong = p.diff(ou_kernel.t) - (ou_kernel.theta * yy * p).diff(yy) + ou_kernel.sigma ** 2 / 2 * p.diff(yy, 2)
    point = {s: v for s, v in zip(sorted(wrong.free_symbols, key=str), ["1/3", "2/5", "3/7", "5/4", "1/2", "7/3"])}
    assert not zero_at(wrong / p, [point]).holds
    right = p.diff(ou_kernel.t) - (ou_kernel.theta * yy * p).diff(yy) - ou_kernel.sigma ** 2 / 2 * p.diff(yy, 2)
    assert zero_at(right / p, [point]).holds
    # exact reduction modulo cosh^2 - sinh^2 = 1, and rational points
    C, S = sp.symbols("C S")
    assert zero_modulo(C ** 4 - 2 * C ** 2 * S ** 2 + S ** 4 - 1, [C ** 2 - S ** 2 - 1], [C, S]).holds
    assert not zero_modulo(C ** 2 + S ** 2 - 1, [C ** 2 - S ** 2 - 1], [C, S]).holds
    assert zero_at(sp.cosh(x) ** 2 - sp.sinh(x) ** 2 - 1, [{x: "3/7"}]).holds
    assert not zero_at(sp.cosh(x) - sp.sinh(x) - 1, [{x: "3/7"}]).holds
    # the Gaussian bridge: the Fokker–Planck identity holds for any coupling, the harmonic-potential
    # identity only for the Schrödinger one
    gb = gaussian_bridge
    b = sp.expand(gb._marginal_and_drift(gb.s0)[3])  # c = s0: not the SB coupling
    slope = sp.cancel(b.diff(gb.x))
    assert not is_zero(slope.diff(gb.t) + slope ** 2)


def test_theory_is_pure_sympy():
    code = ("import sys, theory; theory.modules(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('controlsamp', 'torch')]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_exported_expressions_have_documented_symbols():
    gb, sf, lq = gaussian_bridge, follmer, lqr
    assert gb.drift().free_symbols <= {gb.t, gb.x, gb.m0, gb.s0, gb.m1, gb.s1, gb.sigma, gb.T}
    assert gb.coupling_covariance().free_symbols <= {gb.s0, gb.s1, gb.sigma, gb.T}
    assert sf.value().free_symbols <= {sf.t, sf.x, sf.m, sf.S, sf.sigma, sf.T}
    assert lq.value().free_symbols <= {lq.t, lq.x, lq.a, lq.b, lq.q, lq.r, lq.f, lq.sigma, lq.T}
    assert cld_kernel.covariance().free_symbols <= {cld_kernel.t, cld_kernel.beta, cld_kernel.M}
    assert cld_kernel.mean_map().free_symbols <= {cld_kernel.t, cld_kernel.beta, cld_kernel.M}


# --------------------------------------------------------------------------------------------------
# 3. symbolic closed forms vs controlsamp
# --------------------------------------------------------------------------------------------------
def _mp(args, expr):
    """Lambdify ``expr`` (expression or matrix) with mpmath; evaluate at 40 digits, return float64."""
    matrix = isinstance(expr, sp.MatrixBase)
    shape = expr.shape if matrix else ()
    entries = list(expr) if matrix else [expr]
    fns = [sp.lambdify(args, e, modules="mpmath") for e in entries]

    def f(*vals):
        with mpmath.workdps(40):
            mv = [mpmath.mpf(float(v)) for v in vals]
            out = [float(fn(*mv)) for fn in fns]
        return np.array(out, dtype=np.float64).reshape(shape) if matrix else out[0]

    return f


@functools.lru_cache(maxsize=None)
def _ou():
    k = ou_kernel
    return _mp((k.s, k.t, k.theta), k.kernel_mean() / k.x), _mp((k.s, k.t, k.theta, k.sigma), k.kernel_variance())


@functools.lru_cache(maxsize=None)
def _cld():
    k = cld_kernel
    return _mp((k.t, k.beta, k.M), k.mean_map()), _mp((k.t, k.beta, k.M), k.covariance())


@functools.lru_cache(maxsize=None)
def _bridge():
    g = gaussian_bridge
    return dict(
        c=_mp((g.s0, g.s1, g.sigma, g.T), g.coupling_covariance()),
        mean=_mp((g.t, g.m0, g.m1, g.T), g.marginal_mean()),
        var=_mp((g.t, g.s0, g.s1, g.sigma, g.T), g.marginal_variance()),
        drift=_mp((g.t, g.x, g.m0, g.s0, g.m1, g.s1, g.sigma, g.T), g.drift()),
    )


@functools.lru_cache(maxsize=None)
def _follmer():
    f = follmer
    args = (f.t, f.x, f.m, f.S, f.sigma, f.T)
    return dict(
        drift=_mp(args, f.drift()),
        value=_mp(args, f.value()),
        h=_mp(args, f.h()),
        mean=_mp(args, f.marginal_mean()),
        var=_mp(args, f.marginal_variance()),
    )


@functools.lru_cache(maxsize=None)
def _lqr():
    q = lqr
    args = (q.t, q.a, q.b, q.q, q.r, q.f, q.sigma, q.T)
    return dict(
        P=_mp(args, q.riccati()),
        r0=_mp(args, q.r0()),
        V=_mp((q.x,) + args, q.value()),
        u=_mp((q.x,) + args, q.policy()),
    )


def _close(actual, expected, rtol=RTOL, atol=0.0, what=""):
    actual = np.asarray(actual.detach().numpy() if hasattr(actual, "detach") else actual, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


pos = functools.partial(st.floats, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 3), theta=pos(0.05, 5.0), sigma=pos(0.05, 5.0), s=pos(0.0, 3.0),
       dt=pos(1e-3, 3.0), extra=pos(0.0, 1.0))
def test_ou_transition_matches_theory(dim, theta, sigma, s, dt, extra):
    import controlsamp as cs

    t, T = s + dt, s + dt + extra
    Phi, c, Q = cs.processes.OU(dim, theta=theta, sigma=sigma, T=T).transition(s, t)
    phi, var = _ou()
    eye = np.eye(dim)
    _close(Phi, phi(s, t, theta) * eye, atol=1e-300, what="Phi")
    _close(c, np.zeros(dim), atol=1e-14, what="c")
    _close(Q, var(s, t, theta, sigma) * eye, atol=1e-300, what="Q")


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 3), beta=pos(0.5, 8.0), M=pos(0.05, 2.0), s=pos(0.0, 2.0), dt=pos(1e-2, 2.0),
       extra=pos(0.0, 1.0))
def test_cld_transition_matches_theory(dim, beta, M, s, dt, extra):
    import controlsamp as cs

    t, T = s + dt, s + dt + extra
    Phi, c, Q = cs.processes.CLD(dim, beta=beta, M=M, T=T).transition(s, t)  # Gamma=None: critical
    phi2, cov2 = _cld()
    eye = np.eye(dim)
    P2, S2 = phi2(t - s, beta, M), cov2(t - s, beta, M)
    scale = max(1.0, M)
    _close(Phi, np.kron(P2, eye), atol=1e-13, what="Phi (layout: x block then v block)")
    _close(c, np.zeros(2 * dim), atol=1e-14, what="c")
    _close(Q, np.kron(S2, eye), atol=1e-13 * scale, what="Q")


@settings(max_examples=40, deadline=None)
@given(m0=pos(-3.0, 3.0), m1=pos(-3.0, 3.0), s0=pos(0.05, 5.0), s1=pos(0.05, 5.0), sigma=pos(0.1, 3.0),
       T=pos(0.1, 3.0), u=pos(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_gaussian_bridge_matches_theory(m0, m1, s0, s1, sigma, T, u, seed):
    import controlsamp as cs

    br = cs.exact.GaussianBridge(np.array([m0]), np.array([[s0]]), np.array([m1]), np.array([[s1]]),
                                 sigma=sigma, T=T)
    f = _bridge()
    c = f["c"](s0, s1, sigma, T)
    mean, cov = br.coupling()
    _close(mean, np.array([m0, m1]), atol=1e-14, what="coupling mean")
    _close(cov, np.array([[s0, c], [c, s1]]), what="coupling covariance")

    t = u * T
    mt, vt = br.marginal(t)
    _close(mt, np.array([f["mean"](t, m0, m1, T)]), atol=1e-12, what="marginal mean")
    _close(vt, np.array([[f["var"](t, s0, s1, sigma, T)]]), what="marginal variance")

    td = min(t, 0.99 * T)  # the drift is singular at t = T
    xs = np.random.default_rng(seed).normal(f["mean"](td, m0, m1, T), 2.0, size=5)
    b = br.drift(td, xs[:, None])
    assert tuple(b.shape) == (5, 1)
    expected = np.array([f["drift"](td, x, m0, s0, m1, s1, sigma, T) for x in xs])
    scale = 1.0 + np.abs(xs - m1).max() / (T - td)
    _close(b[:, 0], expected, atol=1e-10 * scale, what="drift")


@settings(max_examples=40, deadline=None)
@given(m=pos(-3.0, 3.0), S=pos(0.05, 5.0), sigma=pos(0.2, 3.0), T=pos(0.1, 3.0), u=pos(0.0, 1.0),
       seed=st.integers(0, 2**31 - 1))
def test_schrodinger_follmer_matches_theory(m, S, sigma, T, u, seed):
    import controlsamp as cs

    sf = cs.exact.SchrodingerFollmer(cs.targets.Gaussian(np.array([m]), np.array([[S]])), sigma=sigma, T=T)
    f = _follmer()
    t = u * T
    mt, vt = sf.marginal(t)
    _close(mt, np.array([f["mean"](t, 0.0, m, S, sigma, T)]), atol=1e-12, what="marginal mean")
    _close(vt, np.array([[f["var"](t, 0.0, m, S, sigma, T)]]), atol=1e-14, what="marginal variance")

    xs = np.random.default_rng(seed).normal(f["mean"](t, 0, m, S, sigma, T), 1.0 + np.sqrt(S), size=5)
    b = sf.drift(t, xs[:, None])
    assert tuple(b.shape) == (5, 1)
    exp_b = np.array([f["drift"](t, x, m, S, sigma, T) for x in xs])
    _close(b[:, 0], exp_b, atol=1e-12 * (1 + np.abs(exp_b).max()), what="drift")

    V = sf.value(t, xs[:, None])
    assert tuple(V.shape) == (5,)
    exp_V = np.array([f["value"](t, x, m, S, sigma, T) for x in xs])
    _close(V, exp_V, atol=1e-10 * (1 + np.abs(exp_V).max()), what="value = -log h")


@st.composite
def scalar_lqr(draw):
    return dict(
        a=draw(pos(-2.0, 2.0)),
        b=draw(pos(0.2, 3.0)) * draw(st.sampled_from([-1.0, 1.0])),
        q=draw(pos(0.05, 5.0)),
        r=draw(pos(0.1, 5.0)),
        f=draw(st.one_of(st.just(0.0), pos(0.0, 5.0))),
        sigma=draw(pos(0.05, 2.0)),
        T=draw(pos(0.1, 3.0)),
    )


@settings(max_examples=40, deadline=None)
@given(p=scalar_lqr(), u=pos(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_lqr_matches_theory(p, u, seed):
    import controlsamp as cs

    a, b, q, r, f, sigma, T = (p[k] for k in ("a", "b", "q", "r", "f", "sigma", "T"))
    ctl = cs.exact.LQR(np.array([[a]]), np.array([[b]]), np.array([[q]]), np.array([[r]]), np.array([[f]]),
                       np.array([[sigma]]), T)
    fn = _lqr()
    t = u * T
    args = (t, a, b, q, r, f, sigma, T)
    P = fn["P"](*args)
    _close(ctl.riccati(t), np.array([[P]]), atol=1e-14, what="riccati P(t)")

    xs = np.random.default_rng(seed).normal(0.0, 2.0, size=5)
    pol = ctl.policy(t, xs[:, None])
    assert tuple(pol.shape) == (5, 1)
    _close(pol[:, 0], np.array([fn["u"](x, *args) for x in xs]), atol=1e-14, what="policy u*")

    V = ctl.value(t, xs[:, None])
    assert tuple(V.shape) == (5,)
    _close(V, np.array([fn["V"](x, *args) for x in xs]), atol=1e-14, what="value V = P x^2 + r0")

    x0 = float(xs[0])
    cost = ctl.cost(np.array([x0]))
    assert isinstance(cost, float)
    np.testing.assert_allclose(cost, fn["V"](x0, 0.0, a, b, q, r, f, sigma, T), rtol=RTOL, atol=1e-14)


def test_lqr_r0_closed_form_is_the_integral_of_sigma2_P():
    """r0(t) = int_t^T sigma^2 P(s) ds: the closed form against mpmath quadrature of the closed-form P."""
    fn = _lqr()
    for (a, b, q, r, f, sigma, T, t) in [(0.5, 1.5, 2.0, 1 / 3, 1.25, 0.7, 2.0, 0.3), (-2.0, -0.5, 0.2, 3.0, 0.0, 2.0, 1.0, 0.0),
                                         (1.7, 0.3, 4.0, 0.2, 3.0, 1.1, 2.5, 1.0)]:
        with mpmath.workdps(30):
            integral = mpmath.quad(lambda s: sigma**2 * fn["P"](float(s), a, b, q, r, f, sigma, T), [t, T])
        np.testing.assert_allclose(fn["r0"](t, a, b, q, r, f, sigma, T), float(integral), rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(s=pos(0.05, 5.0), u=pos(0.01, 1.99), v0=pos(0.0, 10.0))
def test_ula_variance_recursion_converges_to_theory(s, u, v0):
    """Iterating v <- (1 - h/s)^2 v + 2h in float64 reaches the symbolic stationary variance (0 < h < 2s)."""
    h = u * s
    vstar = float(ula.stationary_variance().subs({ula.h: h, ula.s: s}))
    rho2 = (1 - h / s) ** 2
    n = int(np.ceil(np.log(1e-14) / np.log(rho2))) + 10
    v = v0
    for _ in range(min(n, 200000)):
        v = rho2 * v + 2 * h
    np.testing.assert_allclose(v, vstar, rtol=1e-10)
