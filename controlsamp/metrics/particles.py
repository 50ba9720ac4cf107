r"""Metrics for particle systems (DW-4, LJ-13, LJ-55): interatomic distances, their histogram, and the W2
between two samples' distance distributions (Midgley et al. 2023, "Flow annealed importance sampling
bootstrap"; Akhound-Sadegh et al. 2024, "Iterated denoising energy matching").

Positions are flattened particle-major: a configuration of N particles in s dimensions is a row of
length N * s, (x_1^1, ..., x_1^s, x_2^1, ..., x_N^s); a batch is (n, N * s). Distances are invariant to
the permutations, rotations and translations these targets are invariant to.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._validate import check_dim, check_points
from .transport import _float64, histogram_range, wasserstein_1d

__all__ = ["interatomic_distances", "distance_histogram", "distance_histogram_w2"]


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
