r"""Layer 0: importance-weight arithmetic shared by the metrics, the samplers, SMC and the training jobs.

Everything here acts on log weights :math:`\ell_i = \log w_i` (a tensor; :math:`-\infty` is a zero
weight) and works in log space, so any scale of :math:`\ell` is exact:

* :func:`logmeanexp`: :math:`\log\frac1n\sum_i e^{\ell_i}`, the importance estimate of :math:`\log Z`
  when :math:`\ell` are the log weights of a sampler's paths.
* :func:`ess`: the normalised importance effective sample size :math:`(\sum_i w_i)^2 / (n\sum_i w_i^2)`
  (Kong 1992; Liu 2001).
* :func:`conditional_ess`: the conditional ESS of incremental weights given the current weights, which
  adaptive tempering keeps fixed (Zhou, Johansen & Aston 2016).
* :func:`systematic_resample`: ancestor indices by systematic resampling (Carpenter, Clifford &
  Fearnhead 1999).

This module imports only ``math`` and ``torch``; input checking belongs to the callers
(:mod:`controlsamp.metrics` checks its arguments before calling these).
"""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

__all__ = ["logmeanexp", "ess", "conditional_ess", "systematic_resample"]


def logmeanexp(log_w: Tensor, dim: int = -1) -> Tensor:
    r""":math:`\log \frac1n \sum_{i=1}^n e^{\ell_i}` along ``dim`` (:math:`n` its length), computed stably.

    ``torch.logsumexp`` shifts by the maximum before exponentiating, so the result is exact for any
    scale of ``log_w``; :math:`-\infty` entries contribute zero, and all :math:`-\infty` gives
    :math:`-\infty`.
    """
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def ess(log_w: Tensor) -> float:
    r"""Normalised importance effective sample size of the weights :math:`w_i = e^{\ell_i}`, shape (n,):

    .. math:: \mathrm{ESS} = \frac{(\sum_i w_i)^2}{n \sum_i w_i^2} \in [1/n, 1]

    (Kong 1992, "A note on importance sampling using standardized weights", Tech. Rep. 348, U. Chicago;
    Liu 2001, "Monte Carlo Strategies in Scientific Computing", Springer). Computed in log space as
    :math:`\exp(2\,\mathrm{lse}(\ell) - \mathrm{lse}(2\ell) - \log n)` and clipped to
    :math:`[1/n, 1]` (the bounds it has in exact arithmetic), so it is invariant to adding a constant to
    ``log_w``: 1 for equal weights, :math:`1/n` when one weight carries all the mass. At least one entry
    must be finite (an all-zero weight vector has no ESS).
    """
    n = log_w.shape[0]
    log_ess = 2.0 * torch.logsumexp(log_w, 0) - torch.logsumexp(2.0 * log_w, 0) - math.log(n)
    return float(min(max(math.exp(float(log_ess)), 1.0 / n), 1.0))


def conditional_ess(log_w: Tensor, log_inc: Tensor) -> float:
    r"""Normalised conditional ESS of incremental weights :math:`w^{\mathrm{inc}}_i = e^{\lambda_i}` given
    the current weights :math:`e^{\ell_i}` (Zhou, Johansen & Aston 2016, "Towards automatic model comparison:
    an adaptive sequential Monte Carlo approach", JCGS 25):

    .. math:: \mathrm{CESS} = \frac{(\sum_i W_i w^{\mathrm{inc}}_i)^2}{\sum_i W_i (w^{\mathrm{inc}}_i)^2}
              \in (0, 1], \qquad W_i = \frac{e^{\ell_i}}{\sum_j e^{\ell_j}} .

    With equal current weights it is the normalised ESS of the increments (:func:`ess`). Computed in
    float64 log space. ``log_w`` and ``log_inc`` have shape (n,).
    """
    lW = torch.log_softmax(log_w.double(), 0)
    li = log_inc.double()
    return float(torch.exp(2 * torch.logsumexp(lW + li, 0) - torch.logsumexp(lW + 2 * li, 0)))


def systematic_resample(log_w: Tensor, generator=None) -> Tensor:
    r"""Ancestor indices (n,) drawn by systematic resampling (Carpenter, Clifford & Fearnhead 1999,
    "Improved particle filter for nonlinear problems", IEE Proc. Radar Sonar Navig. 146).

    With normalised weights :math:`W = \mathrm{softmax}(\ell)` and their cumulative sums
    :math:`C_j = \sum_{i \le j} W_i`, one uniform :math:`u \sim U[0, 1)` gives the :math:`n` points
    :math:`p_k = (u + k)/n`, :math:`k = 0, \dots, n-1`, and offspring :math:`k` descends from the first
    :math:`j` with :math:`C_j \ge p_k`. Particle :math:`i` then has :math:`\lfloor nW_i\rfloor` or
    :math:`\lceil nW_i\rceil` offspring, :math:`nW_i` in expectation. It draws exactly one float64
    uniform from ``generator`` (on ``log_w``'s device); the last cumulative sum is set to 1 so rounding
    cannot leave a point beyond it. NaN or +inf log weights, or all -inf (no particle has weight), are a
    ValueError: no ancestors are returned for weights that are not a distribution.
    """
    if not isinstance(log_w, torch.Tensor) or log_w.ndim != 1 or log_w.shape[0] == 0:
        raise ValueError(f"log_w must be a non-empty tensor of shape (n,); got "
                         f"{tuple(log_w.shape) if isinstance(log_w, torch.Tensor) else type(log_w).__name__}")
    n = log_w.shape[0]
    lw = log_w.double()
    total = float(torch.logsumexp(lw, 0))  # one reduction: NaN, +inf and all -inf all show in it
    if not math.isfinite(total):
        n_nan, n_pinf = int(torch.isnan(lw).sum()), int((lw == math.inf).sum())
        if n_nan or n_pinf:
            raise ValueError(f"log_w has {n_nan} NaN and {n_pinf} +inf entries of {n}; resampling needs finite log "
                             "weights (-inf, a zero weight, is allowed)")
        raise ValueError(f"log_w: all {n} log weights are -inf (every weight is zero); there is nothing to resample")
    W = torch.softmax(lw, 0)
    cdf = torch.cumsum(W, 0)
    cdf[-1] = 1.0
    u = torch.rand((), generator=generator, device=log_w.device, dtype=torch.float64)
    points = (u + torch.arange(n, device=log_w.device, dtype=torch.float64)) / n
    return torch.searchsorted(cdf, points).clamp(max=n - 1)
