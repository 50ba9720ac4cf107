r"""Distances between sample sets x (n, d) and y (m, d): exact W2, entropic (Sinkhorn) OT cost, MMD,
and 1-d W2 between energies.

All computations are in float64; inputs may be numpy arrays or torch tensors (on any device, with or
without gradients: the metrics are detached), outputs are Python floats. W2 and Sinkhorn need POT
(``pip install pot``), imported when first called.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import numpy as np
import torch

from .._validate import DTYPE, as_tensor, check_dim, check_positive, check_seed
__all__ = ["w2", "sinkhorn", "mmd", "median_bandwidth", "energy_w2", "wasserstein_1d"]

_CHUNK = 1 << 22  # elements of a (rows, m, d) difference block


def _ot():
    try:
        import ot  # noqa: WPS433 - optional dependency, imported on use
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("controlsamp.metrics.w2 / sinkhorn need POT (Python Optimal Transport): "
                          "pip install pot") from exc
    return ot


def _float64(v, name: str) -> torch.Tensor:
    """A detached, finite float64 tensor (numpy views with negative strides are copied first)."""
    if isinstance(v, torch.Tensor):
        return as_tensor(v.detach(), name, DTYPE)
    if isinstance(v, np.ndarray):
        v = np.ascontiguousarray(v)
    return as_tensor(v, name, DTYPE)


def _samples(x, name: str, dim: Optional[int] = None, other: str = "x", min_rows: int = 1) -> torch.Tensor:
    """A finite float64 tensor of shape (n, d), detached; ``dim`` is the column count of ``other``."""
    xt = _float64(x, name)
    if xt.ndim != 2:
        hint = f" (for 1-d samples pass {name}[:, None])" if xt.ndim == 1 else ""
        raise ValueError(f"{name} must have shape (n, d){hint}; got shape {tuple(xt.shape)}")
    if dim is not None and xt.shape[1] != dim:
        raise ValueError(f"{name} must have d = {dim} columns to match {other}; got shape {tuple(xt.shape)}")
    if xt.shape[0] < min_rows:
        raise ValueError(f"{name} must hold at least {min_rows} sample(s); got shape {tuple(xt.shape)}")
    return xt


def _pair(x, y, min_rows: int = 1):
    xt = _samples(x, "x", min_rows=min_rows)
    yt = _samples(y, "y", xt.shape[1], min_rows=min_rows)
    return xt, yt.to(xt.device)


#: Coordinates beyond this magnitude (or nonzero data below its inverse) are rescaled before squared distances
#: are formed, which would otherwise overflow to inf (or underflow to 0) in float64.
_SAFE_SCALE = 1e100


def _rescaled(x: torch.Tensor, y: torch.Tensor):
    """(x / s, y / s, s) with s the largest |coordinate| when it is outside [1e-100, 1e100], else (x, y, 1.0):
    W2, the MMD and the median distance are homogeneous in the scale, so no result changes except by the exact
    factor s, and points at 1e200 no longer give inf or 0 squared distances."""
    s = max(float(x.abs().max()) if x.numel() else 0.0, float(y.abs().max()) if y.numel() else 0.0)
    if s == 0.0 or 1.0 / _SAFE_SCALE <= s <= _SAFE_SCALE:
        return x, y, 1.0
    return x / s, y / s, s


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j|^2, shape (n, m), from explicit differences (exactly 0 for equal rows; no a^2 + b^2 - 2ab
    cancellation), in row blocks of bounded memory."""
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    rows = max(1, _CHUNK // max(1, m * d))
    return torch.cat([((x[i:i + rows, None, :] - y[None, :, :]) ** 2).sum(-1) for i in range(0, n, rows)])


def _subsample(x: torch.Tensor, k: Optional[int], gen: torch.Generator) -> torch.Tensor:
    if k is None or x.shape[0] <= k:
        return x
    return x[torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)]


def w2(x, y, max_samples: Optional[int] = None, seed: int = 0, numItermax: int = 10_000_000) -> float:
    r"""Exact 2-Wasserstein distance between the empirical measures of x (n, d) and y (m, d):

    .. math:: W_2(\hat\mu, \hat\nu) = \Big(\min_{P \in U(a, b)} \sum_{ij} P_{ij} |x_i - y_j|^2\Big)^{1/2},
       \quad a = \mathbf 1_n / n,\ b = \mathbf 1_m / m,

    solved by network simplex (POT ``ot.emd2``, Bonneel et al. 2011) in float64; the square root is taken.
    The cost is O(n^3): ``max_samples`` subsamples each set without replacement to at most that many
    rows (a ``torch.Generator`` seeded with ``seed``); None uses every sample. A warning is raised if the
    solver stops at ``numItermax`` before optimality.

    Empirical W2 is biased upward: even for two samples of one law it is of order n^{-1/d} (d >= 3).
    """
    xt, yt = _pair(x, y)
    numItermax = check_dim(numItermax, "numItermax")
    if max_samples is not None:
        max_samples = check_dim(max_samples, "max_samples")
        gen = torch.Generator().manual_seed(check_seed(seed))
        xt, yt = _subsample(xt, max_samples, gen), _subsample(yt, max_samples, gen)
    xt, yt, scale = _rescaled(xt, yt)
    return scale * _w2_of_costs(_sq_dists(xt, yt).cpu().numpy(), numItermax, "w2")


def _w2_of_costs(M: np.ndarray, numItermax: int, caller: str) -> float:
    """sqrt of the exact OT cost between uniform weights for the squared-distance matrix M (n, m)."""
    a = np.full(M.shape[0], 1.0 / M.shape[0])
    b = np.full(M.shape[1], 1.0 / M.shape[1])
    with warnings.catch_warnings():  # POT warns twice on non-convergence; one warning below instead
        warnings.filterwarnings("ignore", message="numItermax reached", category=UserWarning)
        cost, log = _ot().emd2(a, b, M, numItermax=numItermax, log=True)
    if log.get("warning") is not None:
        warnings.warn(f"{caller}: exact OT solver did not reach optimality ({log['warning']}); "
                      f"increase numItermax (now {numItermax}) or use max_samples", RuntimeWarning, stacklevel=3)
    return math.sqrt(max(float(cost), 0.0))


def sinkhorn(x, y, eps: float, numItermax: int = 10_000, stopThr: float = 1e-9) -> float:
    r"""Transport cost of the entropic OT plan between the empirical measures of x (n, d) and y (m, d)
    (Cuturi 2013, "Sinkhorn distances"):

    .. math:: P_\varepsilon = \arg\min_{P \in U(a, b)} \langle P, C\rangle + \varepsilon \sum_{ij} P_{ij}\log P_{ij},
       \qquad \text{returns } \langle P_\varepsilon, C\rangle = \sum_{ij} (P_\varepsilon)_{ij} |x_i - y_j|^2,

    with C_ij = |x_i - y_j|^2 (squared Euclidean, not normalised), uniform weights a = 1/n, b = 1/m, and
    ``eps`` > 0 the regularisation in the units of C (no default: every reported number must state it).
    This is POT's ``ot.sinkhorn2(..., method="sinkhorn_log")``: the plan's cost WITHOUT the entropy term
    (not the regularised objective, not the debiased Sinkhorn divergence). Since P_eps is a feasible
    coupling, the value is >= W2^2 of the empirical measures, decreases to it as eps -> 0, and exceeds it by
    at most eps log min(n, m). A Brownian reference sigma dW on [0, T] corresponds to eps = 2 sigma^2 T.

    Log-domain iterations (stable for small eps); ``numItermax`` and ``stopThr`` (the marginal violation
    at which it stops) are passed to POT, which warns if it did not converge. The number of iterations
    grows with max(C) / eps: on widely spread samples state a larger eps or subsample.
    """
    eps = check_positive(eps, "eps")
    numItermax = check_dim(numItermax, "numItermax")
    stopThr = check_positive(stopThr, "stopThr")
    xt, yt = _pair(x, y)
    ot = _ot()
    xt, yt, scale = _rescaled(xt, yt)
    eps_user, eps = eps, eps / scale / scale
    if eps == 0.0 or not math.isfinite(eps):
        raise ValueError(f"eps = {eps_user:g} is out of float64 range against the squared distances "
                         f"(points up to {scale:.3g}): rescale the samples or choose eps on their scale")
    M = _sq_dists(xt, yt).double()
    a = M.new_full((M.shape[0],), 1.0 / M.shape[0])
    b = M.new_full((M.shape[1],), 1.0 / M.shape[1])
    # torch tensors select POT's torch backend: the same iterations, ~3x faster than its numpy backend here
    cost = float(ot.sinkhorn2(a, b, M, eps, method="sinkhorn_log", numItermax=numItermax, stopThr=stopThr,
                              warn=True)) * scale * scale
    if not math.isfinite(cost):
        raise ValueError(f"sinkhorn: the transport cost is not finite in float64 (points up to {scale:.3g}, "
                         f"eps = {eps_user:g}); rescale the samples")
    return cost


def median_bandwidth(x, y, max_samples: Optional[int] = None, seed: int = 0) -> float:
    r"""Median heuristic (as in Gretton et al. 2012): the median of the Euclidean distances |z_i - z_j|,
    i < j, over the pooled sample z = (x, y) (the numpy median, i.e. the mean of the two middle values
    when the number of pairs is even). ``max_samples`` caps the pooled sample (a seeded random subset)
    since there are (n + m)^2 / 2 pairs; None uses all.
    """
    xt, yt = _pair(x, y)
    xt, yt, scale = _rescaled(xt, yt)
    z = torch.cat([xt, yt])
    if max_samples is not None:
        z = _subsample(z, check_dim(max_samples, "max_samples"), torch.Generator().manual_seed(check_seed(seed)))
    if z.shape[0] < 2:
        raise ValueError("x and y together must hold at least 2 samples for the median heuristic")
    iu = torch.triu_indices(z.shape[0], z.shape[0], 1, device=z.device)
    d = _sq_dists(z, z)[iu[0], iu[1]].sqrt()
    return scale * float(np.median(d.cpu().numpy()))


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, h: float) -> float:
    """sum_ij exp(-|x_i - y_j|^2 / (2 h^2)) in row blocks."""
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    rows = max(1, _CHUNK // max(1, m * d))
    total = 0.0
    for i in range(0, n, rows):
        sq = ((x[i:i + rows, None, :] - y[None, :, :]) ** 2).sum(-1)
        total += float(torch.exp(-sq / (2.0 * h * h)).sum())
    return total


def mmd(x, y, bandwidth: Optional[float] = None) -> float:
    r"""Unbiased estimate of the squared maximum mean discrepancy (Gretton et al. 2012, "A kernel
    two-sample test", Lemma 6) with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 h^2)):

    .. math:: \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)}\sum_{i\ne j} k(x_i, x_j)
       + \frac{1}{m(m-1)}\sum_{i\ne j} k(y_i, y_j) - \frac{2}{nm}\sum_{i,j} k(x_i, y_j).

    The U-statistic is unbiased for MMD^2 and can be slightly negative when the laws agree. The bandwidth
    h is ``bandwidth`` if given, else the median heuristic ``median_bandwidth(x, y)`` (median pairwise
    distance of the pooled sample, computed on the data passed): report that h with the value, since MMD
    values with different h are not comparable. Needs n, m >= 2.
    """
    xt, yt = _pair(x, y, min_rows=2)
    h = median_bandwidth(xt, yt) if bandwidth is None else check_positive(bandwidth, "bandwidth")
    xt, yt, scale = _rescaled(xt, yt)
    h = h / scale  # the kernel depends on |a - b| / h only
    if h <= 0:
        raise ValueError("median heuristic bandwidth is 0 (over half the pooled pairs coincide); pass bandwidth")
    n, m = xt.shape[0], yt.shape[0]
    kxx = (_kernel_sum(xt, xt, h) - n) / (n * (n - 1))  # the diagonal is exactly exp(0) = 1
    kyy = (_kernel_sum(yt, yt, h) - m) / (m * (m - 1))
    kxy = _kernel_sum(xt, yt, h) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def _values_1d(v, name: str) -> np.ndarray:
    vt = _float64(v, name)
    if vt.ndim == 2 and vt.shape[1] == 1:
        vt = vt[:, 0]
    if vt.ndim != 1 or vt.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array of shape (n,); got shape {tuple(vt.shape)}")
    return vt.cpu().numpy()


def wasserstein_1d(u, v, names=("u", "v")) -> float:
    r"""Exact W2 between two 1-d empirical measures with uniform weights (sizes may differ):

    .. math:: W_2^2 = \int_0^1 |F_u^{-1}(t) - F_v^{-1}(t)|^2\, dt,

    the quantile (monotone) coupling, which is optimal in 1-d (POT ``ot.emd2_1d``, sqeuclidean metric);
    for equal sizes it is the mean of (u_(i) - v_(i))^2 over the sorted samples. Returns W2 (square root).
    """
    a, b = _values_1d(u, names[0]), _values_1d(v, names[1])
    cost = _ot().emd2_1d(a, b, metric="sqeuclidean")
    return math.sqrt(max(float(cost), 0.0))


def energy_w2(e_x, e_y) -> float:
    r"""W2 between the empirical distributions of two 1-d samples of energies, e.g. E(x_i) for model
    samples and E(y_j) for ground-truth samples (the "energy W2" of Akhound-Sadegh et al. 2024 and
    Liu et al. 2025): the exact 1-d quantile coupling ``wasserstein_1d``, square root taken. Sizes may
    differ. Shapes (n,) or (n, 1).
    """
    return wasserstein_1d(e_x, e_y, names=("e_x", "e_y"))


def histogram_range(values, range=None) -> Tuple[float, float]:
    """A histogram's (low, high): ``range`` checked, or the values' min and max (numpy's widening by 0.5 on each
    side when they are equal)."""
    if range is None:
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        return lo, hi
    try:
        lo, hi = (float(v) for v in range)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"range must be a pair (low, high); got {range!r}") from exc
    if not lo < hi:
        raise ValueError(f"range must satisfy low < high; got {range!r}")
    return lo, hi


def histogram_tv(u, reference, bins: int = 200, range: Optional[Tuple[float, float]] = None,
                 outside: str = "drop") -> float:
    r"""Total variation between the histograms of two 1-d samples (e.g. energies or interatomic distances),

    .. math:: \mathrm{TV} = \tfrac12\sum_{k=1}^{K} |\hat p_k - \hat q_k|,

    over ``bins`` = K equal bins spanning ``range`` (default: the reference's min to max), as iDEM
    (Akhound-Sadegh et al. 2024) and DiKL (He et al. 2024) compute their energy and distance TV. ``outside``:
    ``"drop"`` (their convention) normalises each histogram by its own count inside the range, so values
    outside it are ignored; ``"count"`` normalises by the sample size, so mass outside the range counts fully
    toward the distance (the value is then the TV of the two laws pushed onto the K bins plus one bin for
    "outside"). Returns a float in [0, 1]; a sample with nothing inside the range gives 1.
    """
    bins = check_dim(bins, "bins")
    a, b = _values_1d(u, "u"), _values_1d(reference, "reference")
    if outside not in ("drop", "count"):
        raise ValueError(f"outside must be 'drop' or 'count'; got {outside!r}")
    lo, hi = histogram_range(b, range)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("u and reference must be finite (a non-finite energy is a failed sample: report it)")
    ha, _ = np.histogram(a, bins=bins, range=(lo, hi))
    hb, _ = np.histogram(b, bins=bins, range=(lo, hi))
    if outside == "drop":
        if ha.sum() == 0 or hb.sum() == 0:
            return 1.0
        return float(0.5 * np.abs(ha / ha.sum() - hb / hb.sum()).sum())
    pa, pb = ha / len(a), hb / len(b)
    return float(0.5 * (np.abs(pa - pb).sum() + abs((1.0 - pa.sum()) - (1.0 - pb.sum()))))
