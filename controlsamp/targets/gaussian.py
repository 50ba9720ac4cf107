"""Gaussian and Gaussian-mixture targets: normalised (log Z = 0), exact samples, closed-form scores."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._linalg import symmetrize
from .._validate import DTYPE, as_tensor, check_dim, check_spd, check_vector
from .base import Target


def _on(target, device: torch.device, *names: str):
    """The target's parameter tensors ``names`` on ``device`` (copied once per device and cached), so
    log_prob and score run where x lives (a GPU) while the parameters are kept on the CPU."""
    if device.type == "cpu":
        return tuple(getattr(target, n) for n in names)
    cache = target.__dict__.setdefault("_device_cache", {})
    key = str(device)
    if key not in cache:
        cache[key] = {}
    got = cache[key]
    for n in names:
        if n not in got:
            got[n] = getattr(target, n).to(device)
    return tuple(got[n] for n in names)


class Gaussian(Target):
    r"""N(mean, cov): :math:`\log \pi(x) = -\tfrac12 (x-m)^\top S^{-1}(x-m) - \tfrac12\log\det(2\pi S)`."""

    def __init__(self, mean, cov, name: str = "gaussian"):
        self.mean = check_vector(mean, "mean")
        self.dim = self.mean.shape[0]
        self.cov = check_spd(cov, "cov", self.dim)
        self._chol = torch.linalg.cholesky(self.cov)
        self.log_Z = 0.0
        self.name = name

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_x(x)
        mean, chol = _on(self, x.device, "mean", "_chol")
        diff = (x.to(DTYPE) - mean).T
        z = torch.linalg.solve_triangular(chol, diff, upper=False)
        logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
        return (-0.5 * (z * z).sum(0) - 0.5 * (self.dim * math.log(2 * math.pi) + logdet)).to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_x(x)
        mean, chol = _on(self, x.device, "mean", "_chol")
        diff = (x.to(DTYPE) - mean).T
        return (-torch.cholesky_solve(diff, chol)).T.to(x.dtype)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        z = torch.randn(check_dim(n, "n"), self.dim, dtype=DTYPE, generator=generator)
        return self.mean + z @ self._chol.T


class GaussianMixture(Target):
    r"""sum_k w_k N(m_k, S_k), normalised: log Z = 0. ``weights`` (K,) are normalised to sum to one."""

    def __init__(self, weights, means, covs, name: str = "gmm"):
        w = check_vector(weights, "weights")
        if (w <= 0).any():
            raise ValueError("weights must be positive")
        self.weights = w / w.sum()
        self.means = as_tensor(means, "means")
        K = self.weights.shape[0]
        if self.means.ndim != 2 or self.means.shape[0] != K:
            raise ValueError(f"means must have shape ({K}, d) to match weights; got {tuple(self.means.shape)}")
        self.dim = self.means.shape[1]
        covs = as_tensor(covs, "covs")
        if covs.shape != (K, self.dim, self.dim):
            raise ValueError(f"covs must have shape ({K}, {self.dim}, {self.dim}); got {tuple(covs.shape)}")
        self.covs = torch.stack([check_spd(c, f"covs[{k}]") for k, c in enumerate(covs)])
        self._chols = torch.linalg.cholesky(self.covs)
        # isotropic components (S_k = s_k I, e.g. gmm25, gmm40): a closed form without triangular solves
        s_k = torch.diagonal(self.covs, dim1=1, dim2=2).mean(1)
        self._iso_var = s_k if torch.equal(self.covs, s_k[:, None, None] * torch.eye(self.dim, dtype=DTYPE)) else None
        if self._iso_var is not None:
            self._iso_const = torch.log(self.weights) - 0.5 * self.dim * torch.log(2 * math.pi * s_k)
        self._score_tables = {}
        self.log_Z = 0.0
        self.name = name

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; m_k, S_k), shape (n, K), float64."""
        x = self._check_x(x)
        if self._iso_var is not None:
            return self._iso_logits(x.to(DTYPE))
        means, chols, weights = _on(self, x.device, "means", "_chols", "weights")
        diff = (x.to(DTYPE).unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)  # (K, d, n)
        z = torch.linalg.solve_triangular(chols, diff, upper=False)
        logdet = 2.0 * torch.log(torch.diagonal(chols, dim1=1, dim2=2)).sum(-1)
        lp = -0.5 * (z * z).sum(1) - 0.5 * (self.dim * math.log(2 * math.pi) + logdet).unsqueeze(1)
        return (lp + torch.log(weights).unsqueeze(1)).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_x(x)
        return torch.logsumexp(self.component_log_prob(x), dim=1).to(x.dtype)

    def _iso_logits(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k - |x - m_k|^2 / (2 s_k) - d/2 log(2 pi s_k) in the dtype of x, (n, K)."""
        means, var, const = _on(self, x.device, "means", "_iso_var", "_iso_const")
        means, var, const = means.to(x.dtype), var.to(x.dtype), const.to(x.dtype)
        d2 = ((x.unsqueeze(1) - means.unsqueeze(0)) ** 2).sum(-1)
        return const - 0.5 * d2 / var

    def _iso_score_tables(self, dtype: torch.dtype, device: torch.device):
        """Cached per (dtype, device): means (K, d), (means / s)^T (d, K), the logits' offsets
        log w_k - d/2 log(2 pi s_k) - |m_k|^2 / (2 s_k) (K,), -1 / (2 s_k) (K,) or None when every s_k is equal
        (then the |x|^2 term is the same for every component and cancels in the softmax), 1 / s_k (K,)."""
        key = (dtype, str(device))
        if key not in self._score_tables:
            means, var, const = _on(self, device, "means", "_iso_var", "_iso_const")
            offset = const - 0.5 * (means * means).sum(1) / var
            quad = None if bool((var == var[0]).all()) else -0.5 / var
            self._score_tables[key] = tuple(None if t is None else t.to(dtype).contiguous() for t in
                                            (means, (means / var[:, None]).T, offset, quad, 1.0 / var))
        return self._score_tables[key]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_x(x)
        if self._iso_var is not None:  # sum_k r_k(x) (m_k - x) / s_k, in the dtype of x
            # responsibilities r_k from logits up to a per-row constant: offset_k + x.m_k / s_k - |x|^2 / (2 s_k),
            # one (n, d) x (d, K) product instead of an (n, K, d) array of differences
            means, m_over_s, offset, quad, inv_var = self._iso_score_tables(x.dtype, x.device)
            logits = torch.addmm(offset, x, m_over_s)
            if quad is not None:
                logits = torch.addcmul(logits, (x * x).sum(1, keepdim=True), quad)
            r = torch.softmax(logits, dim=1) * inv_var  # (n, K)
            return r @ means - r.sum(1, keepdim=True) * x
        post = torch.softmax(self.component_log_prob(x), dim=1)  # (n, K)
        means, chols = _on(self, x.device, "means", "_chols")
        diff = (x.to(DTYPE).unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)
        comp = -torch.cholesky_solve(diff, chols).transpose(1, 2)  # (K, n, d)
        return torch.einsum("nk,knd->nd", post, comp).to(x.dtype)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        n = check_dim(n, "n")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=DTYPE, generator=generator)
        return self.means[k] + torch.einsum("nij,nj->ni", self._chols[k], z)

    def moments(self):
        """Mean and covariance of the mixture."""
        mean = self.weights @ self.means
        dm = self.means - mean
        cov = torch.einsum("k,kij->ij", self.weights, self.covs) + torch.einsum("k,ki,kj->ij", self.weights, dm, dm)
        return mean, symmetrize(cov)
