"""Finite-horizon linear–quadratic regulator with additive noise, in closed form."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .._linalg import symmetrize
from .._validate import as_tensor, check_points, check_positive, check_spd, check_square, check_symmetric, check_time

Tensor = torch.Tensor

# Gauss–Legendre nodes and weights on [0, 1] for the noise term int tr(sigma sigma' P) dt
_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_GL_X = torch.tensor((_GL_X + 1) / 2, dtype=torch.float64)
_GL_W = torch.tensor(_GL_W / 2, dtype=torch.float64)


class LQR:
    r"""dX = (A X + B u) dt + sigma dW on [0, T], cost J = E[int_0^T (X'QX + u'Ru) dt + X_T' F X_T].

    The value is V(t, x) = x' P(t) x + r(t), where P solves the Riccati equation

    .. math:: -\dot P = A^\top P + P A - P B R^{-1} B^\top P + Q,\quad P(T) = F,
       \qquad r(t) = \int_t^T \operatorname{tr}(\sigma\sigma^\top P(s))\,ds,

    and the optimal feedback is u*(t, x) = -R^{-1} B' P(t) x (e.g. Fleming & Rishel 1975, ch. VI).
    P is computed exactly through the Hamiltonian flow: with H = [[A, -B R^{-1} B'], [-Q, -A']],
    [X; Y](t) = exp(H (t - s)) [I; P(s)] gives P(t) = Y X^{-1}; the flow is applied in steps no longer than
    ``1 / ||H||`` (so that no step is ill-conditioned) nor than ``1 / (2 ||B R^{-1} B'|| ||P||)`` (the time scale
    of the Riccati nonlinearity). r(t) uses 12-point Gauss–Legendre quadrature on each step.

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
        self._h = 1.0 / max(1.0, float(torch.linalg.matrix_norm(self.H, ord=2)))

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

    def _flow(self, P: Tensor, dt: float) -> Tensor:
        """P(s - dt) from P(s): backward Riccati flow over a step dt >= 0."""
        d = self.dim
        E = torch.linalg.matrix_exp(-self.H * dt)
        X = E[:d, :d] + E[:d, d:] @ P
        Y = E[d:, :d] + E[d:, d:] @ P
        return symmetrize(torch.linalg.solve(X.T, Y.T).T)

    def _sweep(self, t: float, with_noise_term: bool = True):
        """P(t) and r(t) = int_t^T tr(sigma sigma' P) (0.0 unless ``with_noise_term``), stepping back from T."""
        SS = self.sigma @ self.sigma.T
        P, s, r = self.F, self.T, 0.0
        BRB = self.B @ self._Rinv_Bt
        while s > t + 1e-15:
            # steps no longer than 1/||H|| (conditioning of the flow) nor than the time scale of the
            # Riccati nonlinearity 1/(||B R^-1 B'|| ||P||) (accuracy of the quadrature near a sharp layer)
            rate = float(torch.linalg.matrix_norm(BRB, ord=2) * torch.linalg.matrix_norm(P, ord=2))
            dt = min(self._h, 0.5 / max(rate, 1e-300), s - t)
            if with_noise_term:
                for x, w in zip(_GL_X.tolist(), _GL_W.tolist()):
                    r += w * dt * float(torch.trace(SS @ self._flow(P, x * dt)))
            P, s = self._flow(P, dt), s - dt
        return P, r

    def riccati(self, t) -> Tensor:
        """P(t), (d, d)."""
        return self._sweep(check_time(t, self.T), with_noise_term=False)[0]

    def gain(self, t) -> Tensor:
        """K(t) = -R^{-1} B' P(t), (m, d): u* = K(t) x."""
        return -self._Rinv_Bt @ self.riccati(t)

    def policy(self, t, x) -> Tensor:
        """u*(t, x) = -R^{-1} B' P(t) x, (n, m)."""
        x = check_points(x, "x", self.dim)
        return x @ self.gain(t).T

    def value(self, t, x) -> Tensor:
        """V(t, x) = x' P(t) x + int_t^T tr(sigma sigma' P), (n,)."""
        x = check_points(x, "x", self.dim)
        P, r = self._sweep(check_time(t, self.T))
        return (x @ P * x).sum(1) + r

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

    def euler_cost(self, x0, cov0=None, steps: int = 100) -> float:
        """The optimal cost of the Euler-discretised problem from X_0 = x0 (or N(x0, cov0))."""
        x = check_points(x0, "x0", self.dim)
        _, P0, noise = self._euler(steps)
        extra = 0.0 if cov0 is None else float(torch.trace(P0 @ check_symmetric(cov0, "cov0", self.dim, psd=True)))
        return float((x @ P0 * x).sum()) + noise + extra

    def _euler(self, steps: int):
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer; got {steps!r}")
        steps = int(steps)
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
