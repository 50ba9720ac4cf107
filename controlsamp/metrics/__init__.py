"""Layer 5: sample-quality metrics.

- importance weights: ``log_Z`` (estimate, bootstrap standard error), ``elbo``, ``eubo``, their CLT
  standard error ``mean_se``, ``ess``;
- transport between sample sets: ``w2`` (exact OT), ``sinkhorn`` (entropic plan cost, explicit eps),
  ``mmd`` (unbiased, Gaussian kernel, median heuristic ``median_bandwidth``), ``energy_w2`` and
  ``wasserstein_1d`` (exact 1-d W2), ``histogram_tv`` (total variation of 1-d histograms);
- Gaussian mixtures: ``assign_modes``, ``mode_coverage``, ``emc``;
- particle systems: ``interatomic_distances``, ``distance_histogram``, ``distance_histogram_w2``, and
  ``aligned_distances`` / ``aligned_w2`` (configurations compared up to permutation, translation and an
  orthogonal map: the particle W2 of DEM's and ASBS's tables).
- entropic OT benchmark (Gushchin et al. 2023): ``cbw2_uvp``, ``bw2_uvp``, with ``gaussian_fit`` and the
  batched ``bures_wasserstein_squared``.

Inputs are numpy arrays or torch tensors, batch-first (n, d); scalar metrics are Python floats.
W2 and Sinkhorn need POT (``pip install pot``).
"""
from .eot import bures_wasserstein_squared, bw2_uvp, cbw2_uvp, gaussian_fit
from .importance import elbo, ess, eubo, log_Z, logmeanexp, mean_se
from .modes import assign_modes, emc, mode_coverage
from .particles import aligned_distances, aligned_w2, distance_histogram, distance_histogram_w2, interatomic_distances
from .transport import energy_w2, histogram_tv, median_bandwidth, mmd, sinkhorn, w2, wasserstein_1d

__all__ = ["log_Z", "elbo", "eubo", "mean_se", "ess", "logmeanexp",
           "w2", "sinkhorn", "mmd", "median_bandwidth", "energy_w2", "wasserstein_1d", "histogram_tv",
           "assign_modes", "mode_coverage", "emc",
           "interatomic_distances", "distance_histogram", "distance_histogram_w2", "aligned_distances", "aligned_w2",
           "cbw2_uvp", "bw2_uvp", "bures_wasserstein_squared", "gaussian_fit"]
