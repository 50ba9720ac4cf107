r"""Convergence diagnostics for MCMC output: acceptance rate, split-:math:`\hat R`, effective sample size.

Layout. ``chains`` is ``(n_chains, n_draws)`` for a scalar quantity or ``(n_chains, n_draws, d)`` for
``d`` quantities (e.g. a trace of ``state.x`` from :mod:`~controlsamp.langevin.mala` or
:mod:`~controlsamp.langevin.underdamped`, stacked over steps and transposed so that the chain axis
comes first: ``torch.stack(xs, 1)`` of a list of ``(n_chains, d)`` positions). Inputs may be numpy
arrays or tensors (detached, computed in float64 numpy); a 2-d input gives a float, a 3-d input a
float64 tensor of shape ``(d,)``, one value per coordinate.

With :math:`m` chains of :math:`n` draws, chain means :math:`\bar\theta_j`, within-chain variances
:math:`s_j^2` (divisor :math:`n - 1`), :math:`W = \frac1m\sum_j s_j^2`,
:math:`B/n = \frac{1}{m-1}\sum_j(\bar\theta_j - \bar\theta)^2`, the pooled variance estimate is

.. math::  \widehat{\mathrm{var}}^+ = \frac{n-1}{n} W + \frac Bn, \qquad \hat R = \sqrt{\widehat{\mathrm{var}}^+ / W}

(Gelman & Rubin 1992; Gelman et al. 2013, *Bayesian Data Analysis*, 3rd ed., Sec. 11.4). *Split*
:math:`\hat R` first cuts every chain into its two halves (dropping the middle draw when ``n_draws`` is
odd), so that a trend within a chain shows up as a difference between half-chains. With ``rank=True``
it is the rank-normalised version of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021),
"Rank-normalization, folding, and localization: an improved :math:`\hat R` for assessing convergence of
MCMC", Bayesian Analysis 16(2): the maximum of split-:math:`\hat R` on the normal scores of the pooled
ranks (bulk) and on those of :math:`|\theta - \mathrm{median}|` (tail).

The effective sample size is :math:`mn / \hat\tau` with :math:`\hat\tau = -1 + 2\sum_{k\ge 0}\hat P_k`,
:math:`\hat P_k = \hat\rho_{2k} + \hat\rho_{2k+1}`, the multi-chain autocorrelation (Vehtari et al.
2021; as in Stan)

.. math::  \hat\rho_t = 1 - \frac{W - \frac1m\sum_j \hat c_{j,t}}{\widehat{\mathrm{var}}^+}, \qquad \hat\rho_0 = 1,

where :math:`\hat c_{j,t}` is chain :math:`j`'s autocovariance at lag :math:`t` (divisor :math:`n`, by
FFT), truncated by Geyer's (1992, "Practical Markov chain Monte Carlo", Statist. Sci. 7(4)) initial
positive sequence (stop before the first :math:`k \ge 1` with :math:`\hat P_k \le 0`) made monotone
(:math:`\hat P_k \leftarrow \min_{i \le k}\hat P_i`). As in Stan, :math:`\hat\tau` is floored at
:math:`1/\log_{10}(mn)`, which caps the ESS of antithetic chains at :math:`mn\log_{10}(mn)`.
A coordinate with zero variance gives NaN.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
from scipy import special, stats

__all__ = ["acceptance_rate", "rhat", "ess"]

Result = Union[float, torch.Tensor]


def _to_numpy(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric (an array or tensor); got {type(value).__name__}") from exc
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    return out


def _as_chains(chains, min_chains: int, min_draws: int = 4):
    """(m, n, d) float64 array and whether the input was 2-d."""
    x = _to_numpy(chains, "chains")
    if x.ndim not in (2, 3):
        raise ValueError(f"chains must have shape (n_chains, n_draws) or (n_chains, n_draws, d); "
                         f"got shape {x.shape}")
    scalar = x.ndim == 2
    if scalar:
        x = x[:, :, None]
    m, n, d = x.shape
    if m < min_chains:
        raise ValueError(f"chains must hold at least {min_chains} chain(s); got {m}")
    if n < min_draws:
        raise ValueError(f"chains must hold at least {min_draws} draws per chain; got {n}")
    if d < 1:
        raise ValueError("chains must have at least one coordinate (d >= 1)")
    return x, scalar


def _split(x: np.ndarray) -> np.ndarray:
    """(m, n, d) -> (2m, n // 2, d): first and second halves, the middle draw dropped when n is odd."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _rank_normal(x: np.ndarray) -> np.ndarray:
    """Normal scores of the ranks pooled over chains, per coordinate: Phi^{-1}((r - 3/8) / (S + 1/4))."""
    m, n, d = x.shape
    flat = x.reshape(m * n, d)
    r = stats.rankdata(flat, method="average", axis=0)
    return special.ndtri((r - 0.375) / (m * n + 0.25)).reshape(m, n, d)


def _result(values: np.ndarray, scalar: bool) -> Result:
    return float(values[0]) if scalar else torch.as_tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------------ acceptance
def acceptance_rate(accept_probs) -> float:
    r"""Mean acceptance probability over everything recorded, e.g. a ``(n_steps, n_chains)`` stack of the
    probabilities :math:`\min\{1, \pi(y)q(x|y)/(\pi(x)q(y|x))\}` that ``mala.step`` reports as
    ``info.acceptance_rate``.

    Averaging the probabilities rather than the accept/reject indicators is the Rao–Blackwellised estimate
    of the same expected acceptance rate (lower variance). Values must lie in [0, 1].
    """
    a = _to_numpy(accept_probs, "accept_probs")
    if a.size == 0:
        raise ValueError("accept_probs must not be empty")
    if (a < 0).any() or (a > 1).any():
        raise ValueError(f"accept_probs must lie in [0, 1]; got values in [{a.min():.3g}, {a.max():.3g}]")
    return float(a.mean())


# ------------------------------------------------------------------------------------------ R-hat
def _rhat_classic(x: np.ndarray) -> np.ndarray:
    """sqrt(var+ / W) per coordinate of (m, n, d) chains."""
    n = x.shape[1]
    W = x.var(axis=1, ddof=1).mean(axis=0)
    B_over_n = x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(((n - 1) / n * W + B_over_n) / W)
    return np.where(W > 0, r, np.nan)


def rhat(chains, split: bool = True, rank: bool = False) -> Result:
    r"""Potential scale reduction :math:`\hat R` (split by default; rank-normalised with ``rank=True``).

    Needs at least 2 chains of at least 4 draws. Values near 1 indicate that the chains agree;
    Vehtari et al. (2021) recommend :math:`\hat R < 1.01`.
    """
    x, scalar = _as_chains(chains, min_chains=2)
    if split:
        x = _split(x)
    if rank:
        bulk = _rhat_classic(_rank_normal(x))
        folded = np.abs(x - np.median(x.reshape(-1, x.shape[2]), axis=0))
        tail = _rhat_classic(_rank_normal(folded))
        values = np.maximum(bulk, tail)
    else:
        values = _rhat_classic(x)
    return _result(values, scalar)


# -------------------------------------------------------------------------------------------- ESS
def _autocov(x: np.ndarray) -> np.ndarray:
    """Per-chain autocovariance (divisor n) at lags 0..n-1 of (m, n) chains, by zero-padded FFT."""
    n = x.shape[1]
    xc = x - x.mean(axis=1, keepdims=True)
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(xc, n=nfft, axis=1)
    return np.fft.irfft(f * np.conj(f), n=nfft, axis=1)[:, :n] / n


def _ess_1d(x: np.ndarray) -> float:
    m, n = x.shape
    acov = _autocov(x)
    W = acov[:, 0].mean() * n / (n - 1)
    var_plus = W * (n - 1) / n + (x.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    if not var_plus > 0:
        return float("nan")
    rho = 1.0 - (W - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    n_pairs = n // 2
    pairs = rho[0:2 * n_pairs:2] + rho[1:2 * n_pairs:2]
    nonpos = np.flatnonzero(pairs[1:] <= 0.0)
    if nonpos.size:
        pairs = pairs[:nonpos[0] + 1]  # initial positive sequence
    pairs = np.minimum.accumulate(pairs)  # initial monotone sequence
    total = m * n
    tau = max(-1.0 + 2.0 * pairs.sum(), 1.0 / np.log10(total))
    return total / tau


def ess(chains, split: bool = True, rank: bool = False) -> Result:
    r"""Effective sample size over all chains (Geyer's initial monotone sequence on the multi-chain
    autocorrelation; Vehtari et al. 2021 / Stan). ``split`` halves the chains first (as Stan does);
    ``rank=True`` computes it on rank-normalised draws (bulk-ESS).

    Needs at least 1 chain of at least 4 draws. For independent draws it is close to ``n_chains * n_draws``;
    for an AR(1) chain with coefficient :math:`\rho` it is close to :math:`N(1-\rho)/(1+\rho)`.
    """
    x, scalar = _as_chains(chains, min_chains=1)
    if split:
        x = _split(x)
    if rank:
        x = _rank_normal(x)
    values = np.array([_ess_1d(x[:, :, k]) for k in range(x.shape[2])])
    return _result(values, scalar)
