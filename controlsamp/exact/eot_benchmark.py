r"""The continuous entropic OT benchmark pairs of Gushchin et al. (2023), built in code.

Gushchin, Kolesov, Mokrov, Karpikova, Spiridonov, Burnaev, Korotin, "Building the bridge of Schrödinger:
a continuous entropic optimal transport benchmark", NeurIPS 2023 Datasets & Benchmarks
(arXiv:2306.10161; code github.com/ngushchin/EntropicOTBenchmark, ``benchmark/
gaussian_mixture_benchmark.py`` and ``benchmark/metrics.py``).

**Construction.** Pick an input law p0 and a positive function f* (the exponentiated target
potential). The plan

.. math:: \pi^*(x, y) = p_0(x)\, \frac{\exp(-|x - y|^2 / (2\varepsilon))\, f^*(y)}{Z(x)},\qquad
   Z(x) = \int \exp(-|x - y|^2 / (2\varepsilon))\, f^*(y)\, dy,

has first marginal p0 and second marginal p1 := its y-marginal by construction, and it has the
Schrödinger form p0(x) e^{phi(x)} exp(-|x-y|^2 / 2 eps) e^{psi(y)} (phi = -log Z, psi = log f*), so it
is *the* entropic OT plan between p0 and p1 for the cost |x - y|^2 / 2 and regularisation
eps KL(pi | p0 x p1) (a coupling of this form with the right marginals is the unique EOT solution; this is
the construction of Gushchin et al. 2023). The benchmark takes f* a Gaussian mixture,

.. math:: f^*(y) = \sum_{k=1}^K a_k\, \mathcal N(y; r_k, S_k),

and then, with N(y; x, eps I) N(y; r_k, S_k) = N(x; r_k, S_k + eps I) N(y; mu_k(x), Sigma_k),

.. math::
    \pi^*(y \mid x) = \sum_k w_k(x)\, \mathcal N(y; \mu_k(x), \Sigma_k),\qquad
    w_k(x) \propto a_k\, \mathcal N(x; r_k, S_k + \varepsilon I),

    \Sigma_k = (I/\varepsilon + S_k^{-1})^{-1} = \varepsilon (S_k + \varepsilon I)^{-1} S_k,\qquad
    \mu_k(x) = \Sigma_k (x/\varepsilon + S_k^{-1} r_k) = (S_k + \varepsilon I)^{-1}(S_k x + \varepsilon r_k),

and Z(x) = (2 pi eps)^{D/2} sum_k a_k N(x; r_k, S_k + eps I). This is exactly the reference code's
``ConditionalPlan`` (plan covariances inv(I/eps + inv(S_k)), means plan_cov inv(S_k) r_k + plan_cov x / eps,
component log-weights log a_k + log N(x; r_k, S_k + eps I)). The forms used here avoid S_k^{-1}.

**Epsilon convention.** The paper's eps multiplies KL for the cost |x - y|^2 / 2 (pi* has the kernel
exp(-|x - y|^2 / (2 eps))); its reference code simulates the Schrödinger bridge as
dX = drift dt + sqrt(eps) dW on [0, 1] (``GroundTruthSDE``) and its Brownian bridges with standard
deviation sqrt(eps t (1 - t)). Under this package's convention (docs/architecture.md: a Brownian reference
sigma dW on [0, T] is entropic OT for the cost |x - y|^2 with regularisation 2 sigma^2 T) the pair is
therefore the Schrödinger bridge with **sigma^2 T = eps**, i.e. ``sigma = sqrt(eps)`` for T = 1
(:attr:`EOTBenchmarkPair.sigma`), and POT / :func:`controlsamp.metrics.sinkhorn` on the cost
|x - y|^2 need the regularisation **2 eps** (:attr:`EOTBenchmarkPair.sinkhorn_eps`).

**Input law and parameters.** The reference code loads p0 as a Gaussian mixture (files
``input_probs/mus/sigmas_dim_D.torch``) and f* per (D, eps) from files it downloads; the numbers are
data, not code, and the draws that produced them are not in the repository. Pooladian & Niles-Weed's
reproduction (github.com/APooladian/SinkhornBridges, ``examples/Gushchin_benchmark.ipynb``) describes the
source as the standard Gaussian. Hence: the default ``source`` is N(0, I_D) and any
:class:`~controlsamp.targets.Gaussian` or :class:`~controlsamp.targets.GaussianMixture` may be passed
instead; ``potential`` takes f* explicitly (a GaussianMixture or (a, r, S)), so the published pairs can
be rebuilt from the authors' files. Without it, f* is drawn from ``seed`` by this module's own recipe
(documented in :class:`EOTBenchmarkPair`), following the authors' draft notebook
(``notebooks/GaussianMixtureDraft.ipynb``: centres whose every coordinate is a random permutation of an
even grid): it is *not* the published parameter set, so numbers obtained with it are not comparable to
the paper's tables. The paper's grid is D in {2, 16, 64, 128}, eps in {0.1, 1, 10}
(:attr:`EOTBenchmarkPair.PAPER_DIMS`, :attr:`EOTBenchmarkPair.PAPER_EPS`).

Metrics (cB-W2^2-UVP, BW2^2-UVP) are in :mod:`controlsamp.metrics.eot`.
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Tuple

import torch

from .._linalg import symmetrize
from .._validate import DTYPE, check_dim, check_points, check_positive, on_cpu
from ..targets import Gaussian, GaussianMixture

Tensor = torch.Tensor

__all__ = ["EOTBenchmarkPair"]

_CHUNK = 1 << 21  # elements of an (rows, K, D) block


def _check_seed(seed) -> int:
    """An integer seed (numpy integers accepted; bools and floats rejected)."""
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    try:
        return operator.index(seed)
    except TypeError as exc:
        raise ValueError(f"seed must be an integer; got {seed!r}") from exc


def _random_rotation(d: int, gen: torch.Generator) -> Tensor:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the signs of diag(R) fixed
    (Mezzadri 2007)."""
    g = torch.randn(d, d, dtype=DTYPE, generator=gen)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


class EOTBenchmarkPair:
    r"""An analytic entropic OT / Schrödinger bridge pair (p0, p1) with known plan pi*(x, y)
    (Gushchin et al. 2023; see the module docstring for the derivation and the conventions).

    Parameters
    ----------
    dim : int
        D, the dimension of x and y.
    eps : float
        The paper's regularisation: pi*(y | x) ∝ exp(-|x - y|^2 / (2 eps)) f*(y). Equals sigma^2 T of the
        Brownian reference sigma dW on [0, T]; :attr:`sigma` = sqrt(eps) for T = 1.
    n_components : int
        K, the number of Gaussian components of f* (used when ``potential`` is None).
    seed : int
        Seed of the ``torch.Generator`` that draws f* (used when ``potential`` is None).
    source : Gaussian or GaussianMixture, optional
        p0; default N(0, I_D).
    potential : GaussianMixture or tuple (a (K,), r (K, D), S (K, D, D)), optional
        f* = sum_k a_k N(r_k, S_k) given explicitly (a is normalised to sum to one, which changes
        neither pi* nor p1).
    spread : float
        Default recipe: the j-th coordinates of r_1..r_K are a uniformly random permutation of
        K evenly spaced values on [-spread, spread] (0 when K = 1), independently for each j.
    cov_range : (float, float)
        Default recipe: S_k = Q_k diag(l_k) Q_k^T with Q_k Haar-random orthogonal and the entries of l_k
        i.i.d. uniform on ``cov_range``; a_k ∝ 1 + u_k with u_k ~ U[0, 1].

    All outputs are float64 tensors; inputs x may be numpy arrays or tensors of shape (n, D) (a single
    point (D,) is treated as n = 1).
    """

    PAPER_DIMS = (2, 16, 64, 128)
    PAPER_EPS = (0.1, 1.0, 10.0)

    def __init__(self, dim: int, eps: float, n_components: int = 5, seed: int = 0, *,
                 source=None, potential=None, spread: float = 2.0, cov_range=(0.1, 0.5)):
        self.dim = check_dim(dim, "dim")
        self.eps = check_positive(eps, "eps")
        self.seed = _check_seed(seed)
        self.source = self._make_source(source)
        if potential is None:
            self.potential = self._draw_potential(check_dim(n_components, "n_components"),
                                                  check_positive(spread, "spread"), cov_range)
        else:
            self.potential = self._make_potential(potential)
        self.n_components = self.potential.n_components
        a, r, S = self.potential.weights, self.potential.means, self.potential.covs
        eye = torch.eye(self.dim, dtype=DTYPE)
        S_eps = S + self.eps * eye
        # w_k(x) ∝ a_k N(x; r_k, S_k + eps I): a mixture whose component_log_prob gives the log-weights
        self._weight_mixture = GaussianMixture(a, r, S_eps, name="eot_weights")
        chol = torch.linalg.cholesky(S_eps)
        self._gain = torch.cholesky_solve(S, chol)                                    # (S+eps I)^{-1} S
        self._offset = self.eps * torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)  # eps (S+eps I)^{-1} r
        self.cond_covs = symmetrize(self.eps * self._gain)                            # Sigma_k, (K, D, D)
        self._cond_chols = torch.linalg.cholesky(self.cond_covs)
        self._moment_cache = {}

    # ----------------------------------------------------------------- construction
    def _make_source(self, source):
        if source is None:
            return Gaussian(torch.zeros(self.dim, dtype=DTYPE), torch.eye(self.dim, dtype=DTYPE), name="p0")
        if not isinstance(source, (Gaussian, GaussianMixture)):
            raise ValueError("source must be None (N(0, I)), a controlsamp.targets.Gaussian or GaussianMixture; "
                             f"got {type(source).__name__}")
        if source.dim != self.dim:
            raise ValueError(f"source has dimension {source.dim}, but dim = {self.dim}")
        return source

    def _make_potential(self, potential) -> GaussianMixture:
        if isinstance(potential, GaussianMixture):
            gm = potential
        elif isinstance(potential, (tuple, list)) and len(potential) == 3:
            gm = GaussianMixture(*potential, name="potential")
        else:
            raise ValueError("potential must be a controlsamp.targets.GaussianMixture or a tuple "
                             f"(weights (K,), means (K, D), covs (K, D, D)); got {type(potential).__name__}")
        if gm.dim != self.dim:
            raise ValueError(f"potential has dimension {gm.dim}, but dim = {self.dim}")
        return gm

    def _draw_potential(self, K: int, spread: float, cov_range) -> GaussianMixture:
        try:
            lo, hi = (float(v) for v in cov_range)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cov_range must be a pair (low, high) with 0 < low <= high; got {cov_range!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"cov_range must be a pair (low, high) with 0 < low <= high; got {cov_range!r}")
        gen = torch.Generator().manual_seed(self.seed)
        D = self.dim
        grid = torch.linspace(-spread, spread, K, dtype=DTYPE) if K > 1 else torch.zeros(1, dtype=DTYPE)
        means = torch.stack([grid[torch.randperm(K, generator=gen)] for _ in range(D)], dim=1)  # (K, D)
        covs = []
        for _ in range(K):
            lam = lo + (hi - lo) * torch.rand(D, dtype=DTYPE, generator=gen)
            Q = _random_rotation(D, gen)
            covs.append(symmetrize((Q * lam.unsqueeze(0)) @ Q.T))
        weights = 1.0 + torch.rand(K, dtype=DTYPE, generator=gen)
        return GaussianMixture(weights, means, torch.stack(covs), name="potential")

    # ----------------------------------------------------------------- conventions
    @property
    def sigma(self) -> float:
        """Noise level of the equivalent Brownian reference sigma dW on [0, 1]: sigma = sqrt(eps)."""
        return math.sqrt(self.eps)

    @property
    def sinkhorn_eps(self) -> float:
        """Regularisation for entropic OT on the cost |x - y|^2 (POT, :func:`controlsamp.metrics.sinkhorn`):
        2 eps = 2 sigma^2 T with T = 1."""
        return 2.0 * self.eps

    def __repr__(self) -> str:
        return (f"EOTBenchmarkPair(dim={self.dim}, eps={self.eps}, n_components={self.n_components}, "
                f"seed={self.seed}, source={type(self.source).__name__})")

    # ----------------------------------------------------------------- conditional law pi*(y | x)
    def _x(self, x) -> Tensor:
        return check_points(x, "x", self.dim)

    def _component_means(self, x: Tensor) -> Tensor:
        """mu_k(x) = (S_k + eps I)^{-1}(S_k x + eps r_k), shape (n, K, D)."""
        return torch.einsum("kij,nj->nki", self._gain, x) + self._offset.unsqueeze(0)

    @on_cpu
    def conditional(self, x) -> Tuple[Tensor, Tensor, Tensor]:
        r"""Parameters of pi*(y | x) = sum_k w_k(x) N(mu_k(x), Sigma_k): weights (n, K), means (n, K, D),
        covariances (K, D, D) (independent of x)."""
        xt = self._x(x)
        weights = torch.softmax(self._weight_mixture.component_log_prob(xt), dim=1)
        return weights, self._component_means(xt), self.cond_covs

    @on_cpu
    def log_normalizer(self, x) -> Tensor:
        r"""log Z(x) = log \int exp(-|x - y|^2 / (2 eps)) f*(y) dy
        = (D/2) log(2 pi eps) + log sum_k a_k N(x; r_k, S_k + eps I), shape (n,); -log Z is the
        Schrödinger potential phi(x) of the module docstring."""
        xt = self._x(x)
        return (0.5 * self.dim * math.log(2 * math.pi * self.eps)
                + torch.logsumexp(self._weight_mixture.component_log_prob(xt), dim=1))

    @on_cpu
    def conditional_log_prob(self, x, y) -> Tensor:
        """log pi*(y_i | x_i) for paired rows x (n, D), y (n, D); shape (n,)."""
        xt, yt = self._x(x), check_points(y, "y", self.dim)
        if xt.shape[0] != yt.shape[0]:
            raise ValueError(f"x and y must have the same number of rows; got {xt.shape[0]} and {yt.shape[0]}")
        logw = torch.log_softmax(self._weight_mixture.component_log_prob(xt), dim=1)       # (n, K)
        diff = (yt.unsqueeze(1) - self._component_means(xt)).permute(1, 2, 0)             # (K, D, n)
        z = torch.linalg.solve_triangular(self._cond_chols, diff, upper=False)
        logdet = 2.0 * torch.log(torch.diagonal(self._cond_chols, dim1=1, dim2=2)).sum(-1)   # (K,)
        lp = -0.5 * (z * z).sum(1) - 0.5 * (self.dim * math.log(2 * math.pi) + logdet).unsqueeze(1)
        return torch.logsumexp(logw + lp.T, dim=1)

    @on_cpu
    def log_density(self, x, y) -> Tensor:
        """log pi*(x_i, y_i) = log p0(x_i) + log pi*(y_i | x_i) for paired rows, shape (n,)."""
        xt = self._x(x)
        return self.source.log_prob(xt) + self.conditional_log_prob(xt, y)

    @on_cpu
    def conditional_mean_cov(self, x) -> Tuple[Tensor, Tensor]:
        r"""Exact mean (n, D) and covariance (n, D, D) of pi*(y | x):
        m(x) = sum_k w_k mu_k,  C(x) = sum_k w_k [Sigma_k + (mu_k - m)(mu_k - m)^T]."""
        w, mu, covs = self.conditional(x)
        mean = torch.einsum("nk,nkd->nd", w, mu)
        dm = mu - mean.unsqueeze(1)                                                       # (n, K, D)
        within = (w @ covs.reshape(covs.shape[0], -1)).reshape(-1, self.dim, self.dim)
        between = torch.bmm((dm * w.unsqueeze(-1)).transpose(1, 2), dm)  # no (n, K, D, D) intermediate
        return mean, symmetrize(within + between)

    @on_cpu
    def sample_conditional(self, x, m: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """m independent draws of pi*(y | x) for each row of x: shape (n, m, D)."""
        m = check_dim(m, "m")
        w, mu, _ = self.conditional(x)
        n = w.shape[0]
        k = torch.multinomial(w, m, replacement=True, generator=generator)               # (n, m)
        z = torch.randn(n, m, self.dim, dtype=DTYPE, generator=generator)
        y = torch.gather(mu, 1, k.unsqueeze(-1).expand(n, m, self.dim))                 # mu_k(x) per draw
        for j in range(self.n_components):  # one matmul per component: no (n, m, D, D) gather
            sel = k == j
            if sel.any():
                y[sel] += z[sel] @ self._cond_chols[j].T
        return y

    # ----------------------------------------------------------------- marginals
    def sample_source(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n draws of p0, shape (n, D)."""
        return self.source.sample(check_dim(n, "n"), generator=generator)

    def sample_plan(self, n: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """n draws (x, y) of pi*: x ~ p0, then y ~ pi*(y | x); two tensors of shape (n, D)."""
        x = self.sample_source(n, generator=generator)
        return x, self.sample_conditional(x, 1, generator=generator)[:, 0]

    def sample_target(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n draws of p1 (x ~ p0, then y ~ pi*(y | x)), shape (n, D)."""
        return self.sample_plan(n, generator=generator)[1]

    def target_moments(self, n_samples: int = 100_000, generator: Optional[torch.Generator] = None
                       ) -> Tuple[Tensor, Tensor]:
        r"""Mean (D,) and covariance (D, D) of p1 by Rao–Blackwellised Monte Carlo over x ~ p0:

        .. math:: \mathbb E[Y] = \mathbb E_x[m(x)],\qquad
           \mathrm{Cov}(Y) = \mathbb E_x[C(x)] + \mathrm{Cov}_x(m(x)),

        with m, C the exact conditional moments. p1 has no closed form (Z(x) normalises pi*(y | x) per x),
        so this is an estimate; its error is that of a Monte Carlo average of m(x) and C(x) over
        ``n_samples`` draws, which is smaller than that of raw samples of p1 (the conditional variance is
        integrated out). ``generator=None`` uses a ``torch.Generator`` seeded with 0, so the default is
        reproducible (and cached); pass a generator for independent estimates.
        """
        n_samples = check_dim(n_samples, "n_samples")
        if generator is None:
            mean, cov = self._seeded_moments(n_samples, 0)
            return mean.clone(), cov.clone()
        return self._rb_moments(n_samples, generator)

    def _seeded_moments(self, n_samples: int, seed: int) -> Tuple[Tensor, Tensor]:
        key = (n_samples, seed)
        if key not in self._moment_cache:
            self._moment_cache[key] = self._rb_moments(n_samples, torch.Generator().manual_seed(seed))
        return self._moment_cache[key]

    def _rb_moments(self, n_samples: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        D, K = self.dim, self.n_components
        rows = max(1, _CHUNK // (K * D))
        w_sum = torch.zeros(K, dtype=DTYPE)        # sum_n w_nk
        s_m = torch.zeros(D, dtype=DTYPE)          # sum_n (m(x_n) - c)
        s_2 = torch.zeros(D, D, dtype=DTYPE)       # sum_n sum_k w_nk (mu_nk - c)(mu_nk - c)^T
        c = None
        done = 0
        while done < n_samples:
            b = min(rows, n_samples - done)
            w, mu, _ = self.conditional(self.sample_source(b, generator=generator))
            if c is None:
                c = torch.einsum("nk,nkd->d", w, mu) / b  # a shift, against cancellation in the second moment
            d = mu - c
            w_sum += w.sum(0)
            s_m += torch.einsum("nk,nkd->d", w, d)
            dw = (d * w.unsqueeze(-1)).reshape(-1, D)
            s_2 += dw.T @ d.reshape(-1, D)
            done += b
        mean_c = s_m / n_samples
        second = torch.einsum("k,kij->ij", w_sum / n_samples, self.cond_covs) + s_2 / n_samples
        return c + mean_c, symmetrize(second - torch.outer(mean_c, mean_c))

    def target_variance(self, n_samples: int = 100_000, seed: int = 0) -> float:
        """Var(p1) = tr Cov(Y), the normaliser of the UVP metrics, from :meth:`target_moments` with a
        ``torch.Generator`` seeded by ``seed``; cached per (n_samples, seed). For D = 128 and the default
        10^5 draws this takes a few seconds once."""
        return float(torch.trace(self._seeded_moments(check_dim(n_samples, "n_samples"), _check_seed(seed))[1]))
