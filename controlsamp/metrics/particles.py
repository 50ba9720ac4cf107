r"""Metrics for particle systems (DW-4, LJ-13, LJ-55): interatomic distances, their histogram, the W2
between two samples' distance distributions (Midgley et al. 2023, "Flow annealed importance sampling
bootstrap"; Akhound-Sadegh et al. 2024, "Iterated denoising energy matching"), and the W2 between
configurations aligned by permutation and orthogonal maps (the "W2" of DEM's and ASBS's particle tables).

Positions are flattened particle-major: a configuration of N particles in s dimensions is a row of
length N * s, (x_1^1, ..., x_1^s, x_2^1, ..., x_N^s); a batch is (n, N * s). Distances are invariant to
the permutations, rotations and translations these targets are invariant to.
"""
from __future__ import annotations

import itertools
import math
from typing import Optional, Tuple

import torch

from .._validate import check_dim, check_points, check_seed
from .transport import _float64, _subsample, _w2_of_costs, histogram_range, wasserstein_1d

__all__ = ["interatomic_distances", "distance_histogram", "distance_histogram_w2", "aligned_distances",
           "aligned_w2"]

# Up to this many particles the assignment is found by trying every permutation (N! of them) in a batch;
# beyond it by scipy's Hungarian solver, one pair of configurations at a time.
_MAX_BRUTE_FORCE_PARTICLES = 6


def _configs(x, name: str, n_particles: int, spatial_dim: int) -> torch.Tensor:
    N = check_dim(n_particles, "n_particles")
    s = check_dim(spatial_dim, "spatial_dim")
    if N < 2:
        raise ValueError(f"n_particles must be at least 2 to have a pair; got {N}")
    xt = x if isinstance(x, torch.Tensor) else _float64(x, name)
    if xt.ndim == 2 and xt.shape[1] != N * s:
        raise ValueError(f"{name} must have shape (n, n_particles * spatial_dim) = (n, {N * s}); "
                         f"got {tuple(xt.shape)}")
    xt = check_points(xt, name, N * s)
    if not torch.isfinite(xt).all():
        raise ValueError(f"{name} contains NaN or inf")
    return xt.reshape(xt.shape[0], N, s)


def interatomic_distances(x, n_particles: int, spatial_dim: int) -> torch.Tensor:
    r"""All interatomic distances d_ij = |x_i - x_j|, i < j, of each configuration: shape
    (n, N (N - 1) / 2), float64, pairs in the order (0,1), (0,2), ..., (0,N-1), (1,2), ... (that of
    ``scipy.spatial.distance.pdist``). Differentiable when ``x`` is a tensor that requires grad
    (the distances are then exact differences, never a^2 + b^2 - 2ab)."""
    return _distances(x, "x", n_particles, spatial_dim)


def _distances(x, name: str, n_particles: int, spatial_dim: int) -> torch.Tensor:
    xt = _configs(x, name, n_particles, spatial_dim)
    i, j = torch.triu_indices(xt.shape[1], xt.shape[1], 1, device=xt.device)
    return torch.linalg.vector_norm(xt[:, i, :] - xt[:, j, :], dim=-1)


def distance_histogram(x, n_particles: int, spatial_dim: int, bins: int = 100,
                       range: Optional[Tuple[float, float]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Histogram of all interatomic distances of all configurations in x (n, N * s), normalised as a
    density (numpy's ``density=True``): counts_normalised_k = c_k / (sum_k c_k * width_k), so that
    sum_k counts_normalised_k * width_k = 1. ``range`` = (low, high) defaults to (min, max) of the
    distances; distances outside it are left out. Returns ``(counts_normalised (bins,), edges (bins + 1,))``.
    """
    bins = check_dim(bins, "bins")
    d = interatomic_distances(x.detach() if isinstance(x, torch.Tensor) else x, n_particles, spatial_dim)
    d = d.reshape(-1).cpu()
    lo, hi = histogram_range(d, range)
    counts, edges = torch.histogram(d, bins=bins, range=(lo, hi), density=True)
    return counts, edges


def distance_histogram_w2(x, y, n_particles: int, spatial_dim: int) -> float:
    r"""W2 between the empirical distributions of interatomic distances of two sets of configurations,
    x (n, N * s) and y (m, N * s): all n N (N-1)/2 distances of x pooled against all m N (N-1)/2 of y,

    .. math:: W_2\Big(\frac{1}{n P}\sum_{a, i<j} \delta_{d_{ij}(x_a)},\
       \frac{1}{m P}\sum_{b, i<j} \delta_{d_{ij}(y_b)}\Big),
       \quad P = N(N-1)/2,

    computed exactly by the 1-d quantile coupling (:func:`controlsamp.metrics.wasserstein_1d`); the
    distances themselves need no alignment of the configurations.
    """
    dx = _distances(x.detach() if isinstance(x, torch.Tensor) else x, "x", n_particles, spatial_dim)
    dy = _distances(y.detach() if isinstance(y, torch.Tensor) else y, "y", n_particles, spatial_dim)
    return wasserstein_1d(dx.reshape(-1), dy.reshape(-1), names=("x", "y"))


def _assignment(D: torch.Tensor, brute_force: bool) -> torch.Tensor:
    """For D (c, m, N, N), D[.., i, j] = |x_i - y_j|: the permutation p (c, m, N) minimising sum_i D[i, p(i)]."""
    N = D.shape[-1]
    if brute_force:
        perms = torch.tensor(list(itertools.permutations(range(N))), device=D.device)  # (N!, N)
        cost = D[..., torch.arange(N, device=D.device), perms].sum(-1)  # (c, m, N!)
        return perms[cost.argmin(-1)]
    from scipy.optimize import linear_sum_assignment
    flat = D.reshape(-1, N, N).cpu().numpy()
    out = torch.empty(flat.shape[0], N, dtype=torch.long)
    for k, d in enumerate(flat):
        out[k] = torch.from_numpy(linear_sum_assignment(d)[1])
    return out.reshape(D.shape[:-1]).to(D.device)


def aligned_distances(x, y, n_particles: int, spatial_dim: int, chunk: int = 32,
                      brute_force: Optional[bool] = None) -> torch.Tensor:
    r"""The distance between each configuration of x (n, N s) and each of y (m, N s), up to translation,
    permutation of the particles and an orthogonal map, computed as DEM and ASBS evaluate it
    (Akhound-Sadegh et al. 2024; Liu et al. 2025, their ``dist_point_clouds``): both configurations centred,

    .. math:: \pi = \arg\min_\pi \sum_i |x_i - y_{\pi(i)}|, \qquad
       d(x, y) = \min_{Q \in O(s)} \| x - y_\pi Q \|_F
       = \big(\|x\|_F^2 + \|y\|_F^2 - 2 \|x^\top y_\pi\|_*\big)^{1/2},

    the assignment on the unaligned positions (Hungarian; by trying all N! permutations when N <= 6, else
    scipy's ``linear_sum_assignment`` pair by pair) and then the best rotation or reflection (Kabsch; the
    nuclear norm is the sum of singular values). The assignment is made before the alignment, as in their
    code, so d is invariant to translations and permutations, and to orthogonal maps only where these do
    not change the assignment (e.g. small rotations of separated particles). ``brute_force``: force one of
    the two assignment methods (default: by N). Returns float64 (n, m).
    """
    xs = _configs(x.detach() if isinstance(x, torch.Tensor) else x, "x", n_particles, spatial_dim).double()
    ys = _configs(y.detach() if isinstance(y, torch.Tensor) else y, "y", n_particles, spatial_dim).double()
    chunk = check_dim(chunk, "chunk")
    brute_force = n_particles <= _MAX_BRUTE_FORCE_PARTICLES if brute_force is None else bool(brute_force)
    xs = xs - xs.mean(1, keepdim=True)
    ys = (ys - ys.mean(1, keepdim=True)).to(xs.device)
    if brute_force:  # at most about 4e6 elements in the (c, m, N!, N) tensor of permuted distances
        per_row = len(ys) * math.factorial(n_particles) * n_particles
        chunk = max(1, min(chunk, 4_000_000 // per_row))
    rows = []
    for xa in xs.split(chunk):
        D = torch.linalg.vector_norm(xa[:, None, :, None, :] - ys[None, :, None, :, :], dim=-1)  # (c, m, N, N)
        p = _assignment(D, brute_force)
        yp = torch.gather(ys[None].expand(len(xa), -1, -1, -1), 2,
                          p[..., None].expand(-1, -1, -1, ys.shape[-1]))  # y_pi: (c, m, N, s)
        U, _, Vh = torch.linalg.svd(torch.einsum("cni,cmnj->cmij", xa, yp))  # x' y_pi = U S V'
        Q = Vh.transpose(-1, -2) @ U.transpose(-1, -2)  # maximises tr(x' y_pi Q)
        # the residual itself, not |x|^2 + |y|^2 - 2 |x' y_pi|_*, which loses half the digits near 0
        rows.append(torch.linalg.vector_norm(xa[:, None] - yp @ Q, dim=(-2, -1)))
    return torch.cat(rows)


def aligned_w2(x, y, n_particles: int, spatial_dim: int, max_samples: Optional[int] = None, seed: int = 0,
               numItermax: int = 10_000_000) -> float:
    r"""Exact W2 between the empirical measures of x (n, N s) and y (m, N s) with the ground distance
    :func:`aligned_distances` (configurations compared up to translation, permutation and an orthogonal map):

    .. math:: W_2 = \Big(\min_{P \in U(1_n/n,\, 1_m/m)} \sum_{ab} P_{ab}\, d(x_a, y_b)^2\Big)^{1/2},

    by network simplex (POT ``ot.emd2``). This is the particle "W2" of DEM's and ASBS's tables (DW-4: ASBS
    0.43 on 1000 samples against 1000 reference samples). ``max_samples``: subsample each set without
    replacement (a generator seeded with ``seed``); the cost matrix takes n m assignments.
    """
    xs = _configs(x.detach() if isinstance(x, torch.Tensor) else x, "x", n_particles, spatial_dim)
    ys = _configs(y.detach() if isinstance(y, torch.Tensor) else y, "y", n_particles, spatial_dim)
    xs, ys = xs.reshape(len(xs), -1), ys.reshape(len(ys), -1)
    if max_samples is not None:
        max_samples = check_dim(max_samples, "max_samples")
        gen = torch.Generator().manual_seed(check_seed(seed))
        xs, ys = _subsample(xs, max_samples, gen), _subsample(ys, max_samples, gen)
    M = aligned_distances(xs, ys, n_particles, spatial_dim).square().cpu().numpy()
    return _w2_of_costs(M, check_dim(numItermax, "numItermax"), "aligned_w2")
