"""The Schrödinger–Föllmer process (the PIS optimum) for Gaussian and Gaussian-mixture targets."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .._validate import check_dim, check_points, check_positive, check_time, on_cpu
from ..processes import Brownian
from ..targets import Gaussian, GaussianMixture
from .gaussian import gaussian_kl
from .reference_bridge import sample_reference_bridge

Tensor = torch.Tensor


class SchrodingerFollmer:
    r"""The Schrödinger–Föllmer process: X_0 = 0, reference sigma dW on [0, T], terminal law pi.

    It is the Schrödinger bridge from a point to pi (Föllmer 1985; Huang et al. 2021), the optimum of the
    path integral sampler's control problem (Zhang & Chen 2022), and a mixture of Brownian bridges
    from 0 to X_T ~ pi. With p_T = N(0, sigma^2 T I) the reference's terminal law,

    .. math::
        h(t, x) = \mathbb{E}_{ref}\Big[\frac{\pi(X_T)}{p_T(X_T)} \Big| X_t = x\Big],\qquad
        b(t, x) = \sigma^2 \nabla_x \log h(t, x),\qquad V(t, x) = -\log h(t, x).

    For a Gaussian component N(m, S), with r = t / T,

    .. math::
        b(t, x) = \frac{m}{T} + \Big(\frac{S}{T} - \sigma^2 I\Big)\big(rS + \sigma^2 (T-t) I\big)^{-1}(x - r m),
        \qquad X_t \sim N\big(r m,\ r^2 S + \sigma^2 t (T-t)/T\, I\big).

    For a mixture sum_k w_k N(m_k, S_k) the drift is the posterior-weighted mixture of component drifts,
    with posterior weights proportional to w_k h_k(t, x): w_k N(x; r m_k, Sigma_t^k) for t > 0, and
    w_k exp(x.m_k / (sigma^2 T) + x'S_k x / (2 sigma^4 T^2)) at t = 0 (where the drift at x = 0 is E[X_T] / T).
    """

    def __init__(self, target, sigma: float = 1.0, T: float = 1.0):
        if isinstance(target, Gaussian):
            self._w = torch.ones(1, dtype=torch.float64)
            self._m, self._S = target.mean.unsqueeze(0), target.cov.unsqueeze(0)
        elif isinstance(target, GaussianMixture):
            self._w, self._m, self._S = target.weights, target.means, target.covs
        else:
            raise ValueError("target must be a controlsamp.targets.Gaussian or GaussianMixture; "
                             f"got {type(target).__name__}")
        self.target = target
        self.dim = target.dim
        self.sigma = check_positive(sigma, "sigma")
        self.T = check_positive(T, "T")
        self.reference = Brownian(self.dim, sigma=self.sigma, T=self.T)

    def _marginal_components(self, t: float) -> Tuple[Tensor, Tensor]:
        r = t / self.T
        eye = torch.eye(self.dim, dtype=torch.float64)
        return r * self._m, r * r * self._S + (self.sigma ** 2 * t * (1 - r)) * eye

    def _log_h_components(self, t: float, x: Tensor) -> Tuple[Tensor, Tensor]:
        """log w_k + log h_k(t, x) up to a k-independent term, (n, K); and that term, (n,).

        Two exact forms, each used where it is well conditioned. For t <= T/2, with a = sigma^2 (T - t),
        c = sigma^2 T, lam = 1/a - 1/c and b = x / a, the Gaussian integral
        h_k = (c/a)^{d/2} e^{-|x|^2/2a} E_k[exp(-lam |Y|^2/2 + b.Y)] gives
        log h_k = const - logdet(I + lam S_k)/2 + b.m_k - lam |m_k|^2/2 + u'S_k (I + lam S_k)^{-1} u / 2,
        u = b - lam m_k. For t > T/2, h_k = N(x; r m_k, Sigma_t^k) / N(x; 0, sigma^2 t I).
        """
        s2, T, d = self.sigma ** 2, self.T, self.dim
        eye = torch.eye(d, dtype=torch.float64)
        if t <= 0.5 * T:
            a, c = s2 * (T - t), s2 * T
            lam = t / (s2 * (T - t) * T)
            b = x / a
            A = eye + lam * self._S                                    # (K, d, d)
            u = b.unsqueeze(0) - lam * self._m.unsqueeze(1)             # (K, n, d)
            Gu = u @ torch.linalg.solve(A, self._S)  # u S (I + lam S)^{-1}; S and A commute
            per_k = (-0.5 * torch.linalg.slogdet(A)[1].unsqueeze(1) + (b @ self._m.T).T
                     - 0.5 * lam * (self._m * self._m).sum(1).unsqueeze(1) + 0.5 * (u * Gu).sum(2))  # (K, n)
            common = 0.5 * d * math.log(c / a) - (x * x).sum(1) / (2 * a)
            return torch.log(self._w) + per_k.T, common
        means, covs = self._marginal_components(t)
        L = torch.linalg.cholesky(covs)
        diff = (x.unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)  # (K, d, n)
        z = torch.linalg.solve_triangular(L, diff, upper=False)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1)
        lp = (-0.5 * (z * z).sum(1) - 0.5 * (logdet + d * math.log(2 * math.pi)).unsqueeze(1)).T
        # minus the reference marginal log N(x; 0, sigma^2 t I)
        common = (x * x).sum(1) / (2 * s2 * t) + 0.5 * d * math.log(2 * math.pi * s2 * t)
        return torch.log(self._w) + lp, common

    @on_cpu
    def drift(self, t, x) -> Tensor:
        """b(t, x) = sigma^2 grad log h(t, x), (n, d), for t in [0, T]."""
        t = check_time(t, self.T)
        x = check_points(x, "x", self.dim)
        r, s2, T = t / self.T, self.sigma ** 2, self.T
        eye = torch.eye(self.dim, dtype=torch.float64)
        M = r * self._S + s2 * (T - t) * eye                       # (K, d, d)
        G = self._S / T - s2 * eye                                  # (K, d, d)
        W = G @ torch.linalg.inv(M)                                 # (K, d, d), small
        diff = (x.unsqueeze(0) - r * self._m.unsqueeze(1))          # (K, n, d)
        comp = self._m.unsqueeze(1) / T + diff @ W.transpose(1, 2)  # (K, n, d)
        if comp.shape[0] == 1:
            return comp[0]
        logits, _ = self._log_h_components(t, x)
        post = torch.softmax(logits, dim=1)
        return torch.einsum("nk,knd->nd", post, comp)

    @on_cpu
    def value(self, t, x) -> Tensor:
        """The cost-to-go V(t, x) = -log h(t, x), (n,); drift = -sigma^2 grad V."""
        t = check_time(t, self.T)
        x = check_points(x, "x", self.dim)
        logits, common = self._log_h_components(t, x)
        return -(torch.logsumexp(logits, dim=1) + common)

    def marginal(self, t) -> Tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of X_t, for a Gaussian target."""
        t = check_time(t, self.T)
        if self._w.shape[0] != 1:
            raise ValueError("marginal(t) is Gaussian only for a Gaussian target; use marginal_components(t)")
        means, covs = self._marginal_components(t)
        return means[0], covs[0]

    def marginal_components(self, t) -> Tuple[Tensor, Tensor, Tensor]:
        """The law of X_t as a mixture: weights (K,), means (K, d), covariances (K, d, d)."""
        t = check_time(t, self.T)
        means, covs = self._marginal_components(t)
        return self._w, means, covs

    def sample_path(self, ts, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Exact paths (n, len(ts), d): X_T from the target, then Brownian bridges from 0."""
        xT = self.target.sample(check_dim(n, "n"), generator=generator)
        x0 = torch.zeros_like(xT)
        return sample_reference_bridge(self.reference, ts, x0, xT, generator)

    def kl(self, n_samples: Optional[int] = None, generator: Optional[torch.Generator] = None) -> float:
        r"""The optimal control cost E int_0^T |u*|^2/2 dt = KL(P* | P_ref) = KL(pi | N(0, sigma^2 T I)).

        Closed form for a Gaussian target. A mixture's entropy has no closed form: pass ``n_samples``
        for the Monte-Carlo estimate mean_i [log pi(X_i) - log p_T(X_i)], X_i ~ pi exactly."""
        var = self.sigma ** 2 * self.T
        eye = torch.eye(self.dim, dtype=torch.float64)
        if self._w.shape[0] == 1:
            return gaussian_kl(self._m[0], self._S[0], torch.zeros(self.dim), var * eye)
        if n_samples is None:
            raise ValueError("n_samples is required: KL of a mixture target is estimated by Monte Carlo")
        xs = self.target.sample(check_dim(n_samples, "n_samples"), generator=generator)
        log_pT = -(xs * xs).sum(1) / (2 * var) - 0.5 * self.dim * math.log(2 * math.pi * var)
        return float((self.target.log_prob(xs) - log_pT).mean())
