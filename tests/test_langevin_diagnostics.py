"""controlsamp.langevin.diagnostics against closed forms.

* iid N(0, 1) chains: split-R-hat has an exact law, R = sqrt((n - 1)/n + F/n) with
  F ~ F(m - 1, m(n - 1)) for m (half-)chains of n draws (chain means and within-chain variances of
  Gaussian draws are independent chi-square variables), so the band is two F quantiles; ESS ~ N.
* AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho^2) eps_t started at stationarity: the integrated
  autocorrelation time is (1 + rho)/(1 - rho), so ESS / N -> (1 - rho)/(1 + rho).
  Tolerances from the Madras-Sokal variance of the truncated estimator,
  var(tau_hat) / tau^2 ~ 2 (2W + 1) / N for a truncation lag W: measured over 200-400 seeds
  (not in the test), the relative sd of ESS / N is 2.2% (iid, 8 x 2000), 1.5% (rho = 0.5) and 3.2%
  (rho = 0.9, 8 x 20000), so the 10% and 15% tolerances are >= 4 sd.
* a shifted chain and a within-chain trend raise R-hat; bad input raises ValueError.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.signal import lfilter

from controlsamp.langevin import diagnostics as dg


def ar1(rng, m, n, rho):
    """m stationary AR(1) chains of length n with unit marginal variance."""
    eps = rng.standard_normal((m, n)) * math.sqrt(1.0 - rho ** 2)
    x_prev = rng.standard_normal(m)  # x_{-1} ~ N(0, 1)
    return lfilter([1.0], [1.0, -rho], eps, axis=1, zi=(rho * x_prev)[:, None])[0]


def rhat_band(m, n, p=1e-6):
    """Exact two-sided (1 - 2p) range of split-R-hat for iid normal draws, m half-chains of n draws."""
    lo, hi = stats.f.ppf([p, 1 - p], m - 1, m * (n - 1))
    return math.sqrt((n - 1 + lo) / n), math.sqrt((n - 1 + hi) / n)


# -------------------------------------------------------------------------------------------- iid
def test_iid_chains_rhat_and_ess():
    x = np.random.default_rng(0).standard_normal((8, 2000))
    lo, hi = rhat_band(16, 1000)  # split: 16 half-chains of 1000 -> [0.99954, 1.00138]
    for r in (dg.rhat(x), dg.rhat(torch.as_tensor(x))):
        assert isinstance(r, float)
        assert lo <= r <= hi < 1.01
    lo8, hi8 = rhat_band(8, 2000)  # whole chains -> [0.99975, 1.00120]
    assert lo8 <= dg.rhat(x, split=False) <= hi8
    assert dg.rhat(x, rank=True) < 1.01  # rank-normal scores of iid draws are close to iid normal
    for e in (dg.ess(x), dg.ess(x, rank=True)):
        assert abs(e / x.size - 1.0) < 0.10


# ----------------------------------------------------------------------------------------- AR(1)
@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ar1_ess_matches_closed_form(rho):
    x = ar1(np.random.default_rng(int(rho * 10)), 8, 20000, rho)
    expected = x.size * (1 - rho) / (1 + rho)  # 53,333 and 8,421
    assert abs(dg.ess(x) / expected - 1.0) < 0.15
    assert abs(dg.ess(x, rank=True) / expected - 1.0) < 0.15
    assert dg.rhat(x) < 1.01


def test_per_dimension_output_and_torch_input():
    rng = np.random.default_rng(3)
    rhos = [0.0, 0.5, 0.9]
    x = np.stack([ar1(rng, 8, 20000, r) for r in rhos], axis=-1)  # (8, 20000, 3)
    e = dg.ess(x)
    assert isinstance(e, torch.Tensor) and e.shape == (3,) and e.dtype == torch.float64
    expected = torch.tensor([x.shape[0] * x.shape[1] * (1 - r) / (1 + r) for r in rhos], dtype=torch.float64)
    assert ((e / expected - 1).abs() < 0.15).all()
    assert torch.allclose(dg.ess(torch.as_tensor(x, dtype=torch.float32)), e, rtol=1e-4)
    r = dg.rhat(torch.as_tensor(x))
    assert r.shape == (3,) and (r < 1.01).all()
    assert dg.ess(x[:, :, 1]) == pytest.approx(float(e[1]), rel=1e-12)


# --------------------------------------------------------------------------- failures to converge
def test_shifted_chain_raises_rhat():
    x = np.random.default_rng(1).standard_normal((8, 2000))
    x[0] += 2.0  # one chain 2 sd away
    # split: 2 of 16 half-chain means at 2, B/n = var([2, 2, 0 x 14], ddof=1) = 7/15 (+ 1/n noise),
    # W = 1: R = sqrt(1 - 1/1000 + 7/15 + 1/1000) = 1.211; sd from the offset chains' means ~0.005
    r = dg.rhat(x)
    assert r > 1.1
    assert abs(r - math.sqrt(1 + 7 / 15)) < 0.02
    assert dg.rhat(x, rank=True) > 1.1
    assert dg.rhat(x, split=False) > 1.1


def test_split_rhat_detects_a_within_chain_trend():
    m, n, a = 8, 2000, 3.0
    x = np.random.default_rng(2).standard_normal((m, n)) + a * (np.arange(n) / n - 0.5)
    # every chain has the same trend, so whole-chain means agree; the half-chains' means differ by a/2:
    # B/n = (a/4)^2 16/15 = 0.6, W = 1 + (a/2)^2 / 12 = 1.19 -> split R = sqrt(1 + 0.6/1.19) = 1.23
    assert dg.rhat(x, split=False) < 1.01
    assert dg.rhat(x) > 1.15


def test_odd_draws_drop_the_middle_draw():
    x = np.random.default_rng(4).standard_normal((4, 101))
    x[:, 50] = 1e3  # the dropped middle draw
    trimmed = np.delete(x, 50, axis=1)
    assert dg.rhat(x) == pytest.approx(dg.rhat(trimmed), rel=1e-12)
    assert dg.ess(x) == pytest.approx(dg.ess(trimmed), rel=1e-12)


def test_constant_chains_give_nan():
    assert math.isnan(dg.rhat(np.ones((4, 10))))
    assert math.isnan(dg.ess(np.ones((4, 10))))


# -------------------------------------------------------------------------------------- acceptance
def test_acceptance_rate():
    a = np.array([[0.2, 1.0, 0.6], [0.0, 0.4, 0.8]])
    assert dg.acceptance_rate(a) == pytest.approx(0.5, abs=1e-15)
    assert dg.acceptance_rate(torch.as_tensor(a)) == pytest.approx(0.5, abs=1e-15)
    with pytest.raises(ValueError, match=r"accept_probs must lie in \[0, 1\]"):
        dg.acceptance_rate([0.5, 1.2])
    with pytest.raises(ValueError, match="accept_probs must not be empty"):
        dg.acceptance_rate([])
    with pytest.raises(ValueError, match="accept_probs contains NaN"):
        dg.acceptance_rate([0.5, float("nan")])


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("fn", [dg.rhat, dg.ess])
@pytest.mark.parametrize("bad, match", [
    (np.zeros(10), "shape"), (np.zeros((2, 10, 1, 1)), "shape"), (np.zeros((2, 3)), "at least 4 draws"),
    (np.full((2, 10), np.nan), "NaN"), ("abc", "numeric"), (np.zeros((2, 10, 0)), "at least one coordinate"),
])
def test_chain_errors(fn, bad, match):
    with pytest.raises(ValueError, match=match):
        fn(bad)


def test_rhat_needs_two_chains_ess_one():
    x = np.random.default_rng(5).standard_normal((1, 4000))
    with pytest.raises(ValueError, match="at least 2 chain"):
        dg.rhat(x)
    assert abs(dg.ess(x) / 4000 - 1) < 0.2  # one chain is fine for ESS (split into two halves); rel. sd ~5%


# ------------------------------------------------------------------------------- optional: ArviZ
def test_matches_arviz_if_installed():
    az = pytest.importorskip("arviz")
    x = ar1(np.random.default_rng(6), 4, 1000, 0.7)
    assert dg.rhat(x) == pytest.approx(float(az.rhat(x, method="split")), rel=1e-10)
    assert dg.rhat(x, rank=True) == pytest.approx(float(az.rhat(x, method="rank")), rel=1e-10)
    # Stan / ArviZ add one more autocorrelation term after the truncation point: equal within a few %
    assert dg.ess(x, rank=True) == pytest.approx(float(az.ess(x, method="bulk")), rel=0.05)
