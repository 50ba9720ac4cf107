"""LQR closed form against scipy's ODE solver on the Riccati equation and against closed-loop Monte Carlo."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.integrate import solve_ivp

import controlsamp as cs
from strategies import log_uniform, spd


@st.composite
def lqr_problem(draw):
    d = draw(st.integers(1, 5))
    m = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / math.sqrt(d) - draw(st.floats(0.0, 2.0)) * np.eye(d)
    B = rng.normal(size=(d, m))
    Q = draw(spd(d, max_log10_cond=2.0, min_scale=0.01, max_scale=3.0))
    R = draw(spd(m, max_log10_cond=2.0, min_scale=0.1, max_scale=3.0))
    F = draw(spd(d, max_log10_cond=2.0, min_scale=0.01, max_scale=3.0))
    sigma = rng.normal(size=(d, d)) * draw(log_uniform(0.1, 2.0))
    T = draw(log_uniform(0.1, 5.0))
    return dict(A=A, B=B, Q=Q, R=R, F=F, sigma=sigma, T=T), rng.normal(size=d)


def _riccati_ivp(p):
    A, B, Q, R, F, sig, T = (p[k] for k in ("A", "B", "Q", "R", "F", "sigma", "T"))
    d = A.shape[0]
    BRB = B @ np.linalg.solve(R, B.T)
    SS = sig @ sig.T

    def rhs(t, y):
        P = y[:-1].reshape(d, d)
        dP = -(A.T @ P + P @ A - P @ BRB @ P + Q)
        return np.concatenate([dP.ravel(), [-np.trace(SS @ P)]])

    return solve_ivp(rhs, (T, 0.0), np.concatenate([F.ravel(), [0.0]]), rtol=1e-11, atol=1e-12,
                     method="DOP853", dense_output=True)


@settings(max_examples=25, deadline=None)
@given(lqr_problem())
def test_riccati_and_cost_match_solve_ivp(problem):
    p, x0 = problem
    lqr = cs.exact.LQR(**p)
    sol = _riccati_ivp(p)
    d = lqr.dim
    for t in (0.0, 0.4 * p["T"], p["T"]):
        y = sol.sol(t)
        P = y[:-1].reshape(d, d)
        np.testing.assert_allclose(lqr.riccati(t).numpy(), P, rtol=1e-7, atol=1e-7 * (1 + np.abs(P).max()))
        val = x0 @ P @ x0 + y[-1]  # r(t) = int_t^T tr(sigma sigma' P)
        assert abs(float(lqr.value(t, x0)[0]) - val) < 1e-7 * (1 + abs(val))
    assert abs(lqr.cost(x0) - float(lqr.value(0.0, x0)[0])) < 1e-12 * (1 + abs(lqr.cost(x0)))


@pytest.mark.parametrize("d, m, seed", [(1, 1, 0), (2, 1, 1), (3, 2, 2)])
def test_closed_loop_monte_carlo_cost(d, m, seed):
    """Simulating the optimal feedback (Euler–Maruyama, 1000 steps) costs cost(x0) within 5 standard errors.

    The O(h) discretisation bias of the simulated cost is ~1e-3 relative, a tenth of the band."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) - 0.5 * np.eye(d)
    B = rng.normal(size=(d, m))
    Q, R, F = np.eye(d), 0.5 * np.eye(m), 2 * np.eye(d)
    sigma, T, steps, n = 0.5, 1.0, 1000, 20000
    lqr = cs.exact.LQR(A, B, Q, R, F, sigma, T)
    x0 = rng.normal(size=d)
    h = T / steps
    gains = [lqr.gain(k * h) for k in range(steps)]
    gen = torch.Generator().manual_seed(seed)
    At, Bt, Qt, Rt, Ft = (torch.as_tensor(v, dtype=torch.float64) for v in (A, B, Q, R, F))
    x = torch.as_tensor(x0, dtype=torch.float64).expand(n, d).clone()
    cost = torch.zeros(n, dtype=torch.float64)
    for k in range(steps):
        u = x @ gains[k].T
        cost += h * ((x @ Qt * x).sum(1) + (u @ Rt * u).sum(1))
        x = x + h * (x @ At.T + u @ Bt.T) + sigma * math.sqrt(h) * torch.randn(n, d, dtype=torch.float64, generator=gen)
    cost += (x @ Ft * x).sum(1)
    se = float(cost.std()) / math.sqrt(n)
    assert abs(float(cost.mean()) - lqr.cost(x0)) < 5 * se


def test_gaussian_initial_law_and_policy_shape():
    lqr = cs.exact.LQR([[0.0, 1.0], [0.0, 0.0]], [[0.0], [1.0]], np.eye(2), [[1.0]], np.eye(2), 0.3, T=2.0)
    x = torch.randn(7, 2, dtype=torch.float64)
    assert lqr.policy(0.5, x).shape == (7, 1)
    S = np.array([[0.5, 0.1], [0.1, 0.3]])
    P0 = lqr.riccati(0.0).numpy()
    assert abs(lqr.cost([1.0, 0.0], cov0=S) - (lqr.cost([1.0, 0.0]) + np.trace(P0 @ S))) < 1e-12


@pytest.mark.parametrize("kwargs, match", [
    (dict(R=[[0.0]]), "R"),
    (dict(Q=[[1.0, 2.0], [0.0, 1.0]]), "Q.*symmetric"),
    (dict(B=[[1.0, 0.0]]), "B"),
    (dict(sigma=-1.0), "sigma"),
    (dict(T=0.0), "T"),
])
def test_bad_input(kwargs, match):
    base = dict(A=np.eye(2), B=[[1.0], [0.0]], Q=np.eye(2), R=[[1.0]], F=np.eye(2), sigma=1.0, T=1.0)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cs.exact.LQR(**base)


def test_time_outside_horizon():
    lqr = cs.exact.LQR(np.eye(2), [[1.0], [0.0]], np.eye(2), [[1.0]], np.eye(2), 1.0, T=1.0)
    with pytest.raises(ValueError, match="t must lie"):
        lqr.riccati(2.0)
    with pytest.raises(ValueError, match="x must have shape"):
        lqr.policy(0.5, np.zeros((3, 3)))


# ------------------------------------------------------------------------------------ issue 14 regressions
def _riccati_radau(A, B, Q, R, F, sig, T, taus):
    """P and r in backward time tau = T - t by scipy's stiff Radau IIA solver with the analytic Jacobian (the
    independent reference for stiff problems; tau, not t, so that a layer of width 1e-12 at t = T is
    representable near tau = 0)."""
    d = A.shape[0]
    S = B @ np.linalg.solve(R, B.T)
    SS = sig @ sig.T
    eye = np.eye(d)

    def rhs(_, y):
        P = y[:-1].reshape(d, d)
        return np.concatenate([(A.T @ P + P @ A - P @ S @ P + Q).ravel(), [np.trace(SS @ P)]])

    def jac(_, y):
        P = y[:-1].reshape(d, d)
        J = np.zeros((d * d + 1, d * d + 1))
        J[:-1, :-1] = np.kron(A.T, eye) + np.kron(eye, A.T) - np.kron(P @ S, eye) - np.kron(eye, (S @ P).T)
        J[-1, :-1] = SS.T.ravel()
        return J

    sol = solve_ivp(rhs, (0.0, T), np.concatenate([F.ravel(), [0.0]]), method="Radau", jac=jac, rtol=1e-10,
                    atol=1e-12, first_step=1e-14, t_eval=taus)
    assert sol.status == 0, sol.message
    return [(sol.y[:-1, i].reshape(d, d), sol.y[-1, i]) for i in range(len(taus))]


STIFF = {
    "fast stable drift, A = -1e3 I, T = 10": (-1e3 * np.eye(2), np.eye(2), np.eye(2), np.eye(2), np.eye(2),
                                              np.eye(2), 10.0),
    "stiff and slow modes coupled": (np.array([[-1e3, 1.0], [0.0, -0.5]]), np.array([[1.0], [0.5]]), np.eye(2),
                                     np.array([[0.1]]), np.eye(2), np.array([[1.0, 0.0], [0.3, 0.7]]), 5.0),
    "cheap control, R = 1e-8, F = 1e4": (np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[0.0], [1.0]]), np.eye(2),
                                         np.array([[1e-8]]), 1e4 * np.eye(2), np.eye(2), 1.0),
}


@pytest.mark.parametrize("name", list(STIFF))
def test_stiff_riccati_matches_radau_at_bounded_cost(name):
    """Stiff problems (the fastest time scale 1e-3 to 1e-12 of the horizon) against scipy's Radau on the
    Riccati ODE; the quadrature of r takes tens of intervals (the former step bound 1 / ||H|| took minutes)."""
    A, B, Q, R, F, sig, T = STIFF[name]
    lqr = cs.exact.LQR(A, B, Q, R, F, sig, T)
    (P_mid, r_mid), (P0, r0) = _riccati_radau(A, B, Q, R, F, sig, T, [0.5 * T, T])
    for t, P_ref, r_ref in ((0.5 * T, P_mid, r_mid), (0.0, P0, r0)):
        np.testing.assert_allclose(lqr.riccati(t).numpy(), P_ref, rtol=1e-8, atol=1e-9 * np.abs(P_ref).max())
        x = np.array([0.3, -1.2])
        val = x @ P_ref @ x + r_ref
        assert float(lqr.value(t, x)[0]) == pytest.approx(val, rel=1e-8)
        assert lqr.last_sweep_intervals < 200
    assert lqr.cost(x) == pytest.approx(x @ P0 @ x + r0, rel=1e-8)


@pytest.mark.parametrize("R, F, T", [(1e-12, 1e6, 1.0), (1e-12, 1e6, 10.0), (1.0, 1.0, 1e4), (1e-6, 0.0, 3.0)])
def test_scalar_cheap_control_matches_its_closed_form(R, F, T):
    """a = q = 0, b = 1: P(t) = F / (1 + S F (T - t)) and r(t) = sigma^2 log(1 + S F (T - t)) / S, S = 1 / R
    (exact). With R = 1e-12, F = 1e6 the layer at t = T is 1e-18 wide; it used to run past 120 s."""
    sigma = 0.7
    lqr = cs.exact.LQR([[0.0]], [[1.0]], [[0.0]], [[R]], [[F]], sigma, T)
    S = 1.0 / R
    for t in (0.0, 0.5 * T, T - 1e-9 * T):
        tau = T - t
        P = F / (1 + S * F * tau)
        r = sigma ** 2 * math.log1p(S * F * tau) / S
        assert float(lqr.riccati(t)) == pytest.approx(P, rel=1e-9, abs=1e-300)
        assert float(lqr.value(t, [0.0])[0]) == pytest.approx(r, rel=1e-9, abs=1e-300)
        assert lqr.last_sweep_intervals < 400
