r"""Closed-form noised marginals and scores of Gaussian and Gaussian-mixture data under a linear reference.

For a linear reference SDE :math:`dX = (A(t) X + a(t))\,dt + G(t)\,dW` (every process in
:mod:`controlsamp.processes`: Brownian, OU, VP, VE, CLD) the kernel from time 0 is Gaussian,
:math:`X_t \mid X_0 = x_0 \sim \mathcal N(\Phi_t x_0 + c_t, Q_t)` (``reference.transition(0, t)``). If the
state starts from a Gaussian mixture :math:`X_0 \sim \sum_k w_k\,\mathcal N(m_k, S_k)`, the noised marginal is
the mixture

.. math:: p_t(x) = \sum_k w_k\,\mathcal N\big(x;\ \Phi_t m_k + c_t,\ C_{k,t}\big), \qquad
          C_{k,t} = \Phi_t S_k \Phi_t^\top + Q_t,

and its score is the responsibility-weighted sum of the component scores,

.. math:: \nabla_x \log p_t(x) = -\sum_k r_k(x)\, C_{k,t}^{-1}\big(x - \Phi_t m_k - c_t\big), \qquad
          r_k(x) = \frac{w_k \mathcal N(x; \Phi_t m_k + c_t, C_{k,t})}{p_t(x)}.

These are the regression targets of denoising score matching for Gaussian and mixture data (Vincent
2011; Song et al. 2021), exact for every t. For CLD the state is (x, v): the law of :math:`X_0` is over both
(data on x, the initial velocity :math:`v_0 \sim \mathcal N(0, \gamma M I)` on v; Dockhorn et al. 2022), which
:meth:`NoisedMixture.with_velocity` builds. Derivation and the Fokker–Planck check in
``theory/noised_score.py``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .._validate import as_tensor, check_points, check_spd

Tensor = torch.Tensor

__all__ = ["NoisedMixture"]


class NoisedMixture:
    r"""The law of :math:`X_t` when :math:`X_0 \sim \sum_k w_k \mathcal N(m_k, S_k)` and X follows the linear
    ``reference`` (see the module docstring). One component gives Gaussian data.

    Args:
        reference: a linear process of :mod:`controlsamp.processes` (``transition(s, t)`` and ``dim``).
        weights: (K,) positive mixture weights (normalised here).
        means: (K, D) component means, D = ``reference.dim``.
        covs: (K, D, D) symmetric positive definite component covariances.
    """

    def __init__(self, reference, weights, means, covs):
        self.reference = reference
        D = int(reference.dim)
        w = as_tensor(weights, "weights").reshape(-1)
        if w.numel() == 0 or bool((w <= 0).any()):
            raise ValueError("weights must be a non-empty vector of positive numbers")
        self.weights = w / w.sum()
        K = w.numel()
        self.means = as_tensor(means, "means")
        if tuple(self.means.shape) != (K, D):
            raise ValueError(f"means must have shape ({K}, {D}) (one mean per weight, in the reference's "
                             f"dimension); got {tuple(self.means.shape)}")
        covs = as_tensor(covs, "covs")
        if tuple(covs.shape) != (K, D, D):
            raise ValueError(f"covs must have shape ({K}, {D}, {D}); got {tuple(covs.shape)}")
        self.covs = torch.stack([check_spd(covs[k], f"covs[{k}]", D) for k in range(K)])

    @classmethod
    def with_velocity(cls, reference, weights, means, covs, velocity_var: float) -> "NoisedMixture":
        r"""For a reference whose state is (x, v) (CLD, ``dim`` = 2d): data :math:`\sum_k w_k \mathcal N(m_k,
        S_k)` on x (``means`` (K, d), ``covs`` (K, d, d)) and an independent initial velocity
        :math:`\mathcal N(0, \text{velocity\_var}\,I_d)` (Dockhorn et al. 2022 use :math:`\gamma M` with
        :math:`\gamma = 0.04`)."""
        m, S = as_tensor(means, "means"), as_tensor(covs, "covs")
        if m.ndim != 2 or S.ndim != 3 or 2 * m.shape[1] != int(reference.dim):
            raise ValueError(f"means (K, d) and covs (K, d, d) with 2 d = reference.dim = {reference.dim}; got "
                             f"{tuple(m.shape)} and {tuple(S.shape)}")
        if not float(velocity_var) > 0:
            raise ValueError(f"velocity_var must be positive; got {velocity_var}")
        K, d = m.shape
        full_m = torch.cat([m, torch.zeros_like(m)], 1)
        full_S = torch.zeros(K, 2 * d, 2 * d, dtype=S.dtype)
        full_S[:, :d, :d] = S
        full_S[:, d:, d:] = float(velocity_var) * torch.eye(d, dtype=S.dtype)
        return cls(reference, weights, full_m, full_S)

    # ------------------------------------------------------------------ the marginal
    def marginal(self, t) -> Tuple[Tensor, Tensor, Tensor]:
        """(weights (K,), means (K, D), covariances (K, D, D)) of the mixture :math:`p_t`, float64."""
        Phi, c, Q = self.reference.transition(0.0, t)
        means = self.means @ Phi.T + c
        covs = Phi @ self.covs @ Phi.T + Q
        return self.weights, means, 0.5 * (covs + covs.transpose(-1, -2))

    def _factors(self, t, device=None) -> Tuple[Tensor, Tensor, Tensor]:
        """(means (K, D), precisions (K, D, D), log w_k - log det(2 pi C_k)/2 (K,)) of p_t on ``device`` (computed on the
        CPU), kept for the last 256 distinct (time, device) pairs (a sampler on a grid asks for the same few times
        again and again)."""
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (float(t), str(device))
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            w, mu, C = self.marginal(key[0])
            L = torch.linalg.cholesky(C)  # (K, D, D)
            half_logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
            const = torch.log(w) - half_logdet - 0.5 * C.shape[-1] * math.log(2 * math.pi)
            if len(cache) >= 256:
                cache.pop(next(iter(cache)))
            cache[key] = tuple(v.to(device) for v in (mu, torch.cholesky_inverse(L), const))
        return cache[key]

    def _components(self, t, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Per component: log w_k + log N(x; mean_k, C_k) (n, K) and C_k^{-1}(x - mean_k) (n, K, D)."""
        mu, P, const = self._factors(t, x.device)
        diff = x.unsqueeze(1) - mu  # (n, K, D)
        prec_diff = torch.einsum("kij,nkj->nki", P, diff)  # the K precisions, one batched product for all points
        return const - 0.5 * (diff * prec_diff).sum(-1), prec_diff

    def log_prob(self, t, x) -> Tensor:
        r""":math:`\log p_t(x)` for points (n, D), float64 (n,)."""
        x = check_points(x, "x", self.reference.dim)
        log_comp, _ = self._components(t, x)
        return torch.logsumexp(log_comp, 1)

    def score(self, t, x) -> Tensor:
        r""":math:`\nabla_x \log p_t(x)` for points (n, D), float64 (n, D)."""
        x = check_points(x, "x", self.reference.dim)
        log_comp, prec_diff = self._components(t, x)
        r = torch.softmax(log_comp, 1)  # responsibilities
        return -(r.unsqueeze(-1) * prec_diff).sum(1)

    def isotropic_score(self, x: Tensor, a: Tensor, q: Tensor) -> Tensor:
        r"""The score of the mixture noised by an isotropic kernel, :math:`\sum_k w_k\,\mathcal N(a\,m_k,\ a^2 S_k +
        q I)`, at points x (n, D) with one (a, q) per point (n, 1) each: the same as :meth:`score` at the time whose
        kernel coefficients are (a, q) for an isotropic reference, but vectorised over per-point times and
        differentiable in x, a and q (forward- or reverse-mode), in the dtype of x."""
        w, m, S = self.weights.to(x), self.means.to(x), self.covs.to(x)
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        C = (a * a)[:, :, None, None] * S + q[:, :, None, None] * eye  # (n, K, D, D)
        L = torch.linalg.cholesky(C)
        diff = (x.unsqueeze(1) - a.unsqueeze(1) * m).unsqueeze(-1)  # (n, K, D, 1)
        white = torch.linalg.solve_triangular(L, diff, upper=False)
        prec_diff = torch.linalg.solve_triangular(L.transpose(-1, -2), white, upper=True).squeeze(-1)  # (n, K, D)
        log_comp = (torch.log(w) - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
                    - 0.5 * (white.squeeze(-1) ** 2).sum(-1))
        r = torch.softmax(log_comp, 1)
        return -(r.unsqueeze(-1) * prec_diff).sum(1)

    def sample(self, t, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n exact samples of :math:`X_t` (n, D), float64: a component, then its Gaussian; drawn on the device of
        ``generator`` (the CPU without one)."""
        from .._validate import check_dim
        n = check_dim(n, "n")
        where = torch.device("cpu") if generator is None else generator.device
        w, mu, C = (v.to(where) for v in self.marginal(t))
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        z = torch.randn(n, mu.shape[1], generator=generator, dtype=mu.dtype, device=where)
        L = torch.linalg.cholesky(C)
        return mu[k] + (L[k] @ z.unsqueeze(-1)).squeeze(-1)
