"""The Schrödinger bridge between two Gaussian laws, in closed form, for a linear reference SDE."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._linalg import logdet, solve_spd, sym_inv_sqrt, sym_sqrt, symmetrize
from .._validate import (check_dim, check_internal_spd, check_points, check_positive, check_spd, check_time,
                          check_vector, on_cpu)
from ..processes import Brownian
from .gaussian import _entropic_ot_cross_cov, entropic_ot_cross_cov, entropic_ot_gaussian
from .reference_bridge import sample_reference_bridge

Tensor = torch.Tensor


class GaussianBridge:
    r"""Schrödinger bridge from N(m_0, S_0) at t = 0 to N(m_1, S_1) at t = T.

    The bridge P* minimises KL(P | R) over path measures with the two marginals, where R is the
    reference: Brownian motion dX = sigma dW by default, or any linear SDE of
    :mod:`controlsamp.processes` (``reference=``, e.g. an OU process). P* is a mixture of reference
    bridges over the static coupling of (X_0, X_T), which is Gaussian.

    Brownian reference, s_2 = sigma^2 T (Janati et al. 2020; Mallasto et al. 2021; Bunne et al. 2023):

    .. math::
        D = (4 S_0^{1/2} S_1 S_0^{1/2} + s_2^2 I)^{1/2},\qquad
        C = \mathrm{Cov}(X_0, X_T) = \tfrac12 (S_0^{1/2} D S_0^{-1/2} - s_2 I),

        \mu_t = (1-r) m_0 + r m_1,\quad
        \Sigma_t = (1-r)^2 S_0 + r^2 S_1 + r(1-r)(C + C^\top) + \sigma^2 t (T-t)/T\, I,\quad r = t/T,

        b(t, x) = \frac{\mathbb{E}[X_T | X_t = x] - x}{T - t} = P_t \Sigma_t^{-1}(x - \mu_t) + \frac{m_1 - m_0}{T},
        \quad P_t = \frac{r S_1 - (1-r) S_0 + (1-r) C^\top - r C - \sigma^2 t I}{T},

    the last form being regular at t = T. For a linear reference with X_T | X_0 ~ N(Phi x + c, Q), the
    endpoints are whitened by Q^{-1/2} (u = Q^{-1/2} Phi X_0, v = Q^{-1/2}(X_T - c)), the Brownian
    formula with s_2 = 1 gives Cov(u, v), and C = Phi^{-1} Q^{1/2} Cov(u, v) Q^{1/2}. The marginals
    follow from X_t = A_t X_0 + B_t X_T + b_t + xi (the reference bridge) and the drift is
    f(t, x) + G G^T grad_x E[log p_ref(X_T | X_t = x)], evaluated for t < T.
    """

    def __init__(self, mean0, cov0, mean1, cov1, sigma: float = 1.0, T: float = 1.0, reference=None):
        self.mean0 = check_vector(mean0, "mean0")
        d = self.dim = self.mean0.shape[0]
        self.cov0 = check_spd(cov0, "cov0", d)
        self.mean1 = check_vector(mean1, "mean1", d)
        self.cov1 = check_spd(cov1, "cov1", d)
        self.T = check_positive(T, "T")
        if reference is None:
            self.sigma = check_positive(sigma, "sigma")
            reference = Brownian(d, sigma=self.sigma, T=self.T)
            self._brownian = True
        else:
            if getattr(reference, "dim", None) != d:
                raise ValueError(f"reference must be a linear process of dimension {d}; got {getattr(reference, 'dim', None)}")
            if abs(float(reference.T) - self.T) > 1e-12:
                raise ValueError(f"reference.T = {reference.T} must equal T = {self.T}")
            self.sigma = None
            self._brownian = False
        self.reference = reference
        self._C = self._cross_cov()

    # static coupling -------------------------------------------------------------------------
    def _cross_cov(self) -> Tensor:
        if self._brownian:
            return entropic_ot_cross_cov(self.cov0, self.cov1, self.sigma ** 2 * self.T)
        Phi, c, Q = self.reference.transition(0.0, self.T)
        check_internal_spd(Q, "the reference's transition covariance Q(0, T)")
        Qh, Qih = sym_sqrt(Q), sym_inv_sqrt(Q)
        # the whitened ends are intermediates, not the user's cov0 / cov1: they are checked under their own
        # names (a strongly contracting reference makes Su tiny, e.g. e^{-2 theta T} I, which is still valid)
        Su = check_internal_spd(symmetrize(Qih @ Phi @ self.cov0 @ Phi.T @ Qih),
                                "the whitened initial covariance Q^-1/2 Phi cov0 Phi' Q^-1/2")
        Sv = check_internal_spd(symmetrize(Qih @ self.cov1 @ Qih), "the whitened final covariance Q^-1/2 cov1 Q^-1/2")
        Cuv = _entropic_ot_cross_cov(Su, Sv, 1.0)
        return torch.linalg.solve(Phi, Qh @ Cuv @ Qh)

    def coupling(self) -> Tuple[Tensor, Tensor]:
        """Joint law of (X_0, X_T): mean (2d,) and covariance (2d, 2d)."""
        C = self._C
        cov = torch.cat([torch.cat([self.cov0, C], 1), torch.cat([C.T, self.cov1], 1)], 0)
        return torch.cat([self.mean0, self.mean1]), symmetrize(cov)

    def sample_coupling(self, n: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """n exact draws of (X_0, X_T), each (n, d)."""
        mean, cov = self.coupling()
        z = torch.randn(check_dim(n, "n"), 2 * self.dim, dtype=torch.float64, generator=generator)
        xy = mean + z @ sym_sqrt(cov).T
        return xy[:, : self.dim], xy[:, self.dim:]

    # time marginals ---------------------------------------------------------------------------
    def _bridge_weights(self, t: float):
        """X_t = A_t X_0 + B_t X_T + b_t + xi, xi ~ N(0, V_t), under the reference bridge."""
        ref, T = self.reference, self.T
        d = self.dim
        eye = torch.eye(d, dtype=torch.float64)
        if t <= 0.0:
            return eye, torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), 0 * eye
        Pt0, ct0, Qt0 = ref.transition(0.0, t)
        PTt, _, _ = ref.transition(t, T)
        PT0, cT0, QT0 = ref.transition(0.0, T)
        K = solve_spd(QT0, PTt @ Qt0).T  # Q_t0 Phi_Tt' Q_T0^{-1}
        A = Pt0 - K @ PT0
        V = symmetrize(Qt0 - K @ PTt @ Qt0)
        return A, K, ct0 - K @ cT0, V

    def marginal(self, t) -> Tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of X_t."""
        t = check_time(t, self.T)
        A, B, b, V = self._bridge_weights(t)
        L = torch.cat([A, B], 1)
        mean, cov = self.coupling()
        return L @ mean + b, symmetrize(L @ cov @ L.T + V)

    def cross_cov_T(self, t) -> Tensor:
        """Cov(X_t, X_T), (d, d)."""
        t = check_time(t, self.T)
        A, B, _, _ = self._bridge_weights(t)
        return A @ self._C + B @ self.cov1

    # drift -----------------------------------------------------------------------------------
    @on_cpu
    def drift(self, t, x) -> Tensor:
        """The bridge's drift b(t, x), (n, d); x is (n, d)."""
        t = check_time(t, self.T)
        xt = check_points(x, "x", self.dim)
        mean_t, cov_t = self.marginal(t)
        if self._brownian:
            r, T, C = t / self.T, self.T, self._C
            eye = torch.eye(self.dim, dtype=torch.float64)
            P = (r * self.cov1 - (1 - r) * self.cov0 + (1 - r) * C.T - r * C - self.sigma ** 2 * t * eye) / T
            M = torch.linalg.solve(cov_t, P.T).T  # P Sigma_t^{-1}
            return (xt - mean_t) @ M.T + (self.mean1 - self.mean0) / T
        if t >= self.T:
            raise ValueError("t must be < T for a bridge with a non-Brownian reference (the drift at T is a limit)")
        ref = self.reference
        PTt, cTt, QTt = ref.transition(t, self.T)
        gain = torch.linalg.solve(cov_t, self.cross_cov_T(t)).T  # Cov(X_T, X_t) Sigma_t^{-1}
        eXT = self.mean1 + (xt - mean_t) @ gain.T
        resid = eXT - xt @ PTt.T - cTt
        corr = solve_spd(QTt, resid.T).T @ PTt @ ref.diffusion_cov(t).T
        return ref.drift(t, xt) + corr

    # paths and values -----------------------------------------------------------------------
    def sample_path(self, ts, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Exact paths at the times ``ts``: (n, len(ts), d); X_0 and X_T drawn from the coupling."""
        x0, xT = self.sample_coupling(n, generator)
        return sample_reference_bridge(self.reference, ts, x0, xT, generator)

    def kl(self) -> float:
        r"""KL(P* \| R_{mu_0}) with R_{mu_0} the reference started from mu_0; equal to the static
        KL(pi \| mu_0 \otimes p_ref(x_T | x_0)) =
        \tfrac12[\log\det S_0 - \log\det \Sigma_{0T} + \log\det Q + \operatorname{tr}(Q^{-1}V) + e^\top Q^{-1} e - d],
        with V = Cov(X_T - Phi X_0) and e = m_1 - Phi m_0 - c."""
        Phi, c, Q = self.reference.transition(0.0, self.T)
        _, joint = self.coupling()
        C = self._C
        V = symmetrize(self.cov1 - Phi @ C - C.T @ Phi.T + Phi @ self.cov0 @ Phi.T)
        e = (self.mean1 - Phi @ self.mean0 - c).unsqueeze(1)
        val = (logdet(self.cov0) - logdet(joint) + logdet(Q) + torch.trace(solve_spd(Q, V))
               + (e * solve_spd(Q, e)).sum() - self.dim)
        return float(0.5 * val)

    def entropic_ot_cost(self) -> float:
        r"""min_pi E|X_0 - X_T|^2 + 2 sigma^2 T KL(pi | mu_0 x mu_T), the static problem of the Brownian
        reference (see :func:`controlsamp.exact.entropic_ot_gaussian`)."""
        if not self._brownian:
            raise ValueError("entropic_ot_cost is defined for the Brownian reference (reference=None)")
        return entropic_ot_gaussian(self.mean0, self.cov0, self.mean1, self.cov1, 2 * self.sigma ** 2 * self.T)
