r"""Mode metrics for Gaussian-mixture targets: nearest-mean assignment, mode coverage, EMC.

``mixture`` is a :class:`controlsamp.targets.GaussianMixture` (or any object with a ``.means`` (K, d)
attribute), or a (K, d) array of component means.
"""
from __future__ import annotations

import math

import torch

from .._validate import DTYPE, check_dim
from .transport import _float64, _samples, _sq_dists

__all__ = ["assign_modes", "mode_coverage", "emc"]


def _means(mixture) -> torch.Tensor:
    src = getattr(mixture, "means", mixture)
    try:
        m = _float64(src, "mixture")
    except ValueError as exc:
        raise ValueError(f"mixture must be a GaussianMixture or a (K, d) array of component means; "
                         f"got {type(mixture).__name__}") from exc
    if m.ndim != 2 or m.shape[0] < 1:
        raise ValueError(f"mixture means must have shape (K, d); got {tuple(m.shape)}")
    return m


def assign_modes(x, mixture) -> torch.Tensor:
    r"""Index of the nearest component mean (Euclidean) for each sample,
    :math:`k(x_i) = \arg\min_k |x_i - m_k|`, a LongTensor of shape (n,) (ties go to the lower index).
    For equal weights and equal isotropic covariances this is the maximum-posterior component."""
    means = _means(mixture)
    xt = _samples(x, "x", means.shape[1], other="the mixture means")
    return torch.argmin(_sq_dists(xt, means.to(xt.device)), dim=1).cpu()


def _counts(x, mixture) -> torch.Tensor:
    K = _means(mixture).shape[0]
    return torch.bincount(assign_modes(x, mixture), minlength=K)


def mode_coverage(x, mixture, min_count: int = 1) -> float:
    r"""Fraction of the K components with at least ``min_count`` samples assigned to them by
    :func:`assign_modes`: :math:`\frac1K \#\{k : n_k \ge \text{min\_count}\}`."""
    min_count = check_dim(min_count, "min_count")
    counts = _counts(x, mixture)
    return float((counts >= min_count).to(DTYPE).mean())


def emc(x, mixture) -> float:
    r"""Entropic mode coverage (Blessing et al. 2024, "Beyond ELBOs: a large-scale evaluation of variational
    methods for sampling"):

    .. math:: \mathrm{EMC} = -\sum_{k=1}^K \hat p_k \log_K \hat p_k
       = \frac{H(\hat p)}{\log K}, \qquad \hat p_k = n_k / n,

    with n_k the samples assigned to component k by :func:`assign_modes` and 0 log 0 = 0. It is 1 when
    the samples are spread evenly over all K components, 0 when they all sit in one. For exact samples
    of an equal-weight mixture, 2 n log K (1 - EMC) is the G-statistic of the counts (about chi^2_{K-1}),
    so 1 - EMC is about (K - 1) / (2 n log K). Needs K >= 2.

    Assignment here is to the nearest mean (docs/references.md); Blessing et al. assign to the component of
    highest responsibility, which is the same for equal weights and equal isotropic covariances (gmm25,
    gmm40) but not in general.
    """
    K = _means(mixture).shape[0]
    if K < 2:
        raise ValueError(f"emc needs a mixture with at least 2 components; got K = {K}")
    counts = _counts(x, mixture).to(DTYPE)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * torch.log(p)).sum() / math.log(K))
