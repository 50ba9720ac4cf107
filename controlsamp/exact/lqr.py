"""Finite-horizon linear–quadratic regulator with additive noise, in closed form."""
from __future__ import annotations

import math

import numpy as np
import torch

from .._linalg import symmetrize
from .._validate import (as_tensor, check_dim, check_points, check_positive, check_spd, check_square, check_symmetric,
                         check_time, on_cpu)

Tensor = torch.Tensor

# Gauss–Legendre nodes and weights on [0, 1] for the noise term int tr(sigma sigma' P) dt
_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_GL_X = torch.tensor((_GL_X + 1) / 2, dtype=torch.float64)
_GL_W = torch.tensor(_GL_W / 2, dtype=torch.float64)

# The base step of the doubling keeps ||M delta|| below this (a well-conditioned exponential, E11 close to I).
_BASE_NORM = 0.5
# The quadrature of r: the relative accuracy asked of each interval, and a guard on the number of intervals.
_QUAD_RTOL = 1e-13
_QUAD_MAX_INTERVALS = 200_000


def _sym(m: Tensor) -> Tensor:
    return 0.5 * (m + m.transpose(-1, -2))


def _identity_maps(n: int, d: int):
    eye = torch.eye(d, dtype=torch.float64).expand(n, d, d).clone()
    zero = torch.zeros(n, d, d, dtype=torch.float64)
    return zero, eye, zero.clone()


def _compose(m1, m2):
    """The Riccati flow map "m1, then m2", each m = (alpha, beta, gamma) acting as
    G -> alpha + beta G (I + gamma G)^{-1} beta' (batched over the leading axis)."""
    a1, b1, g1 = m1
    a2, b2, g2 = m2
    d = a1.shape[-1]
    W = torch.eye(d, dtype=a1.dtype) + a1 @ g2
    sol = torch.linalg.solve(W, torch.cat([a1, b1], -1))
    Wa1, Wb1 = sol[..., :d], sol[..., d:]
    alpha = a2 + b2 @ Wa1 @ b2.transpose(-1, -2)
    beta = b2 @ Wb1
    gamma = g1 + b1.transpose(-1, -2) @ g2 @ Wb1
    return _sym(alpha), beta, _sym(gamma)


def _apply(m, G: Tensor) -> Tensor:
    """alpha + beta G (I + gamma G)^{-1} beta' for symmetric positive semi-definite G (batched)."""
    alpha, beta, gamma = m
    d = alpha.shape[-1]
    K = torch.linalg.solve(torch.eye(d, dtype=alpha.dtype) + G @ gamma, G.expand_as(gamma))  # G (I + gamma G)^{-1}
    return _sym(alpha + beta @ _sym(K) @ beta.transpose(-1, -2))


class LQR:
    r"""dX = (A X + B u) dt + sigma dW on [0, T], cost J = E[int_0^T (X'QX + u'Ru) dt + X_T' F X_T].

    The value is V(t, x) = x' P(t) x + r(t), where P solves the Riccati equation

    .. math:: -\dot P = A^\top P + P A - P B R^{-1} B^\top P + Q,\quad P(T) = F,
       \qquad r(t) = \int_t^T \operatorname{tr}(\sigma\sigma^\top P(s))\,ds,

    and the optimal feedback is u*(t, x) = -R^{-1} B' P(t) x (e.g. Fleming & Rishel 1975, ch. VI).

    **P in closed form, at a cost that does not grow with the stiffness.** In backward time tau = T - t,
    P = Y X^{-1} with d/dtau [X; Y] = M [X; Y], M = [[-A, S], [Q, A']], S = B R^{-1} B', [X; Y](0) = [I; F]. The
    flow over tau is the linear-fractional map G -> alpha + beta G (I + gamma G)^{-1} beta' with alpha, gamma
    symmetric positive semi-definite; two such maps compose in closed form (the "doubling" of the structure-
    preserving doubling algorithm: Anderson 1978; Chu, Fan & Lin 2005), with bounded intermediate quantities
    (no growing exponential is ever formed). The map over tau is computed from the map over tau / 2^k, taken
    from the exponential of M with ||M tau / 2^k|| <= 1/2 (alpha = E21 E11^{-1}, beta = E11^{-T},
    gamma = E11^{-1} E12), doubled k times: O(log(tau ||M||)) small matrix operations, whatever the time
    scales (A = -1e3 I, or cheap control R = 1e-12, take tens of doublings). Before that the problem is
    balanced, P = c P~ with S~ = c S and Q~ = Q / c, c = sqrt(||Q|| / ||S||), so that ||M|| measures the actual
    time scales and not the units of Q and R.

    r(t) is integrated by adaptive Gauss–Legendre quadrature (12 nodes; an interval is accepted when it
    agrees with its two halves to 1e-13 relative), marching from T with the exact flow maps of each interval
    (cached per step length, which halves and doubles): the intervals start at the fastest time scale and
    double, so a boundary layer costs O(log) intervals and the smooth part O(T / its time scale).

    sigma may be a scalar (sigma I), a vector (diagonal) or a (d, k) matrix; sigma = 0 gives the
    deterministic regulator.
    """

    def __init__(self, A, B, Q, R, F, sigma=1.0, T: float = 1.0):
        self.A = check_square(A, "A")
        d = self.dim = self.A.shape[0]
        self.B = as_tensor(B, "B")
        if self.B.ndim == 1 and d == 1:
            self.B = self.B.reshape(1, -1)
        if self.B.ndim != 2 or self.B.shape[0] != d:
            raise ValueError(f"B must have shape ({d}, m); got {tuple(self.B.shape)}")
        m = self.control_dim = self.B.shape[1]
        self.Q = check_symmetric(Q, "Q", d, psd=True)
        self.R = check_spd(R, "R", m)
        self.F = check_symmetric(F, "F", d, psd=True)
        self.T = check_positive(T, "T")
        self.sigma = self._sigma_matrix(sigma, d)
        self._Rinv_Bt = torch.linalg.solve(self.R, self.B.T)  # R^{-1} B'
        self.H = torch.cat([torch.cat([self.A, -self.B @ self._Rinv_Bt], 1),
                            torch.cat([-self.Q, -self.A.T], 1)], 0)
        S = _sym(self.B @ self._Rinv_Bt)
        if not bool(torch.isfinite(S).all()):
            raise ValueError("B R^{-1} B' overflows float64: R is too close to singular for this B")
        nA, nS, nQ = (float(torch.linalg.matrix_norm(X, ord=2)) for X in (self.A, S, self.Q))
        floor = max(nA, 1.0 / self.T)
        if nS > 0 and nQ > 0:
            c = math.sqrt(nQ / nS)
        elif nS > 0:
            c = floor / nS
        elif nQ > 0:
            c = nQ / floor
        else:
            c = 1.0
        self._c = c
        self._M = torch.cat([torch.cat([-self.A, c * S], 1), torch.cat([self.Q / c, self.A.T], 1)], 0)
        self._M_norm = float(torch.linalg.matrix_norm(self._M, ord=1))
        self._F_scaled = self.F / c
        self._SS = self.sigma @ self.sigma.T
        # the fastest time scale: the exponential's, or the Riccati nonlinearity's at the terminal value
        rate = max(self._M_norm, c * nS * float(torch.linalg.matrix_norm(self._F_scaled, ord=2)), 1e-300)
        self._h0 = 0.1 / rate
        self._map_cache = {}
        self.last_sweep_intervals = 0  # quadrature intervals (accepted or not) of the last computation of r

    @staticmethod
    def _sigma_matrix(sigma, d: int) -> Tensor:
        s = as_tensor(sigma, "sigma")
        if s.ndim == 0:
            if float(s) < 0:
                raise ValueError(f"sigma must be >= 0; got {float(s)}")
            return float(s) * torch.eye(d, dtype=torch.float64)
        if s.ndim == 1:
            if s.shape[0] != d:
                raise ValueError(f"sigma as a vector must have length {d}; got {s.shape[0]}")
            return torch.diag(s)
        if s.ndim != 2 or s.shape[0] != d:
            raise ValueError(f"sigma must be a scalar, a ({d},) vector or a ({d}, k) matrix; got {tuple(s.shape)}")
        return s

    # ------------------------------------------------------------------ the flow maps
    def _maps(self, taus: Tensor):
        """The flow maps of the balanced Riccati equation over the backward times ``taus`` (b,) >= 0, batched:
        each from the exponential over taus / 2^k (||M taus / 2^k|| <= 1/2), doubled k times."""
        d, n = self.dim, taus.shape[0]
        ks = [max(0, math.ceil(math.log2(max(float(tau) * self._M_norm / _BASE_NORM, 1.0)))) for tau in taus.tolist()]
        k_max = max(ks)
        deltas = torch.tensor([float(tau) / 2.0 ** k for tau, k in zip(taus.tolist(), ks)], dtype=torch.float64)
        E = torch.linalg.matrix_exp(self._M.unsqueeze(0) * deltas.reshape(-1, 1, 1))
        E11, E12, E21 = E[:, :d, :d], E[:, :d, d:], E[:, d:, :d]
        sol = torch.linalg.solve(E11, torch.cat([E12, torch.eye(d, dtype=torch.float64).expand(n, d, d)], -1))
        gamma, E11_inv = sol[..., :d], sol[..., d:]
        base = (_sym(E21 @ E11_inv), E11_inv.transpose(-1, -2).contiguous(), _sym(gamma))
        start = torch.tensor([k_max - k for k in ks])
        maps = _identity_maps(n, d)
        for level in range(k_max + 1):
            now = (start == level).reshape(-1, 1, 1)
            if bool(now.any()):
                maps = tuple(torch.where(now, b, m) for b, m in zip(base, maps))
            if level < k_max:
                maps = _compose(maps, maps)
        return maps

    def _riccati_scaled(self, tau: float) -> Tensor:
        """P~(T - tau) = P(T - tau) / c."""
        if tau <= 0.0:
            return self._F_scaled
        return _apply(self._maps(torch.tensor([tau], dtype=torch.float64)), self._F_scaled.unsqueeze(0))[0]

    def _interval_maps(self, h: float):
        """The flow maps over h x (the 12 Gauss nodes on [0, 1], on [0, 1/2] and on [1/2, 1]) and over h, for one
        quadrature interval of length h (cached: the interval lengths are halved and doubled)."""
        key = float(h)
        if key not in self._map_cache:
            if len(self._map_cache) > 256:
                self._map_cache.clear()
            fr = torch.cat([_GL_X, 0.5 * _GL_X, 0.5 + 0.5 * _GL_X, torch.ones(1, dtype=torch.float64)])
            self._map_cache[key] = self._maps(h * fr)
        return self._map_cache[key]

    def _sweep(self, t: float, with_noise_term: bool = True):
        """P(t) and r(t) = int_t^T tr(sigma sigma' P) (0.0 unless ``with_noise_term``)."""
        tau_end = self.T - t
        if not with_noise_term or tau_end <= 0.0 or not bool((self._SS != 0).any()):
            return self._c * self._riccati_scaled(tau_end), 0.0
        SS = self._SS
        G, a, h, r, n_int = self._F_scaled, 0.0, min(self._h0, tau_end), 0.0, 0
        while a < tau_end:
            last = h >= tau_end - a
            if last:
                h = tau_end - a
            maps = self._interval_maps(h)
            Ps = _apply(maps, G.unsqueeze(0))  # (37, d, d): the nodes, then the interval's end
            f = self._c * torch.einsum("ij,nji->n", SS, Ps[:36])
            whole = h * float((_GL_W * f[:12]).sum())
            halves = 0.5 * h * float((_GL_W * f[12:24]).sum() + (_GL_W * f[24:36]).sum())
            n_int += 1
            if n_int > _QUAD_MAX_INTERVALS:
                raise RuntimeError(f"LQR: the noise-term quadrature needed more than {_QUAD_MAX_INTERVALS} intervals "
                                   "(a Riccati solution oscillating over very many periods)")
            self.last_sweep_intervals = n_int
            if abs(whole - halves) <= _QUAD_RTOL * (abs(r) + abs(halves)) or h <= 1e-300:
                r += halves
                G = Ps[36]
                a = tau_end if last else a + h
                h = 2.0 * h
            else:
                h = 0.5 * h
        return self._c * G, r

    def riccati(self, t) -> Tensor:
        """P(t), (d, d)."""
        return self._sweep(check_time(t, self.T), with_noise_term=False)[0]

    def gain(self, t) -> Tensor:
        """K(t) = -R^{-1} B' P(t), (m, d): u* = K(t) x."""
        return -self._Rinv_Bt @ self.riccati(t)

    @on_cpu
    def policy(self, t, x) -> Tensor:
        """u*(t, x) = -R^{-1} B' P(t) x, (n, m)."""
        x = check_points(x, "x", self.dim)
        return x @ self.gain(t).T

    @on_cpu
    def value(self, t, x) -> Tensor:
        """V(t, x) = x' P(t) x + int_t^T tr(sigma sigma' P), (n,)."""
        x = check_points(x, "x", self.dim)
        P, r = self._sweep(check_time(t, self.T))
        return (x @ P * x).sum(1) + r

    @on_cpu
    def cost(self, x0, cov0=None) -> float:
        """The optimal expected cost from X_0 = x0, or from X_0 ~ N(x0, cov0): m'P(0)m + tr(P(0) S) + r(0)."""
        x = check_points(x0, "x0", self.dim)
        if x.shape[0] != 1:
            raise ValueError(f"x0 must be a single point of shape ({self.dim},); got {tuple(x.shape)}")
        P, r = self._sweep(0.0)
        extra = 0.0 if cov0 is None else float(torch.trace(P @ check_symmetric(cov0, "cov0", self.dim, psd=True)))
        return float((x @ P * x).sum()) + r + extra

    def euler_gains(self, steps: int) -> Tensor:
        r"""The optimal gains K_i (u_i = K_i x_i), (steps, m, d), of the Euler-discretised problem

        .. math:: X_{i+1} = (I + hA) X_i + h B u_i + \sigma \Delta W_i,\quad
           J = \mathbb{E}\Big[\sum_i h (X_i^\top Q X_i + u_i^\top R u_i) + X_K^\top F X_K\Big],

        by dynamic programming: with Phi = I + hA and P_K = F,
        K_i = -(R + h B' P_{i+1} B)^{-1} B' P_{i+1} Phi and
        P_i = h (Q + K_i' R K_i) + (Phi + h B K_i)' P_{i+1} (Phi + h B K_i).
        This is the exact optimum that a solver trained on a ``steps``-step Euler grid converges to; it
        tends to :meth:`gain` at first order in h = T / steps."""
        return self._euler(steps)[0]

    @on_cpu
    def euler_cost(self, x0, cov0=None, steps: int = 100) -> float:
        """The optimal cost of the Euler-discretised problem from X_0 = x0 (or N(x0, cov0))."""
        x = check_points(x0, "x0", self.dim)
        _, P0, noise = self._euler(steps)
        extra = 0.0 if cov0 is None else float(torch.trace(P0 @ check_symmetric(cov0, "cov0", self.dim, psd=True)))
        return float((x @ P0 * x).sum()) + noise + extra

    def _euler(self, steps: int):
        steps = check_dim(steps, "steps")
        h = self.T / steps
        Phi = torch.eye(self.dim, dtype=torch.float64) + h * self.A
        SS = self.sigma @ self.sigma.T
        P, noise, gains = self.F, 0.0, []
        for _ in range(steps):
            noise += h * float(torch.trace(SS @ P))
            K = -torch.linalg.solve(self.R + h * self.B.T @ P @ self.B, self.B.T @ P @ Phi)
            Acl = Phi + h * self.B @ K
            P = symmetrize(h * (self.Q + K.T @ self.R @ K) + Acl.T @ P @ Acl)
            gains.append(K)
        return torch.stack(gains[::-1]), P, noise
