"""The replay buffer of the off-policy samplers (controlsamp.samplers.offpolicy.ReplayBuffer) against a plain
reference: a list kept in arrival order, the last ``capacity`` samples kept, ranks by sorting it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from controlsamp.samplers.offpolicy import ReplayBuffer


def _reference_ranks(log_r: np.ndarray) -> np.ndarray:
    """rank of each entry (0: highest log-reward), ties broken by age (older first)."""
    order = np.argsort(-log_r, kind="stable")
    ranks = np.empty(len(log_r), dtype=np.int64)
    ranks[order] = np.arange(len(log_r))
    return ranks


@pytest.mark.parametrize("capacity, batches", [(50, [7, 7, 30, 1, 64, 13, 13, 13]), (1000, [300] * 3),
                                               (8, [3, 0, 5, 2, 9])])
def test_contents_are_the_last_capacity_samples_in_arrival_order(capacity, batches):
    """After each add, x and log_r are the last ``capacity`` finite samples, oldest first; the kept order by
    log-reward is the reference's ranking (ties included: integer log-rewards repeat)."""
    g = torch.Generator().manual_seed(0)
    buf, all_x, all_r = ReplayBuffer(capacity, 3), [], []
    for m in batches:
        x = torch.randn(m, 3, generator=g)
        r = torch.randint(-4, 4, (m,), generator=g).float()
        if m > 2:
            r[1] = float("nan")  # a non-finite sample is dropped
            x[2, 0] = float("inf")
        buf.add(x, r)
        keep = torch.isfinite(r) & torch.isfinite(x).all(1)
        all_x += list(x[keep])
        all_r += list(r[keep])
        want_x = torch.stack(all_x[-capacity:]) if all_x else torch.empty(0, 3)
        want_r = torch.stack(all_r[-capacity:]) if all_r else torch.empty(0)
        assert len(buf) == want_r.shape[0]
        assert torch.equal(buf.x, want_x) and torch.equal(buf.log_r, want_r)
        ranks = _reference_ranks(want_r.numpy())
        # the buffer's order lists the samples best first: their reference ranks are 0, 1, 2, ...
        assert torch.equal(buf._x[torch.as_tensor(buf._order)], want_x[torch.as_tensor(np.argsort(ranks))])


def test_draws_follow_the_rank_priority():
    """Draws pick rank r with probability proportional to 1 / (kN + r) (Tripp et al. 2020): a chi-square test of
    the drawn ranks, in 10 bins of equal probability, at the 1e-3 level, after the buffer has wrapped."""
    g = torch.Generator().manual_seed(1)
    capacity, k = 400, 0.05
    buf = ReplayBuffer(capacity, 2, rank_weight=k)
    for _ in range(5):
        buf.add(torch.randn(170, 2, generator=g), torch.randn(170, generator=g))
    log_r = buf.log_r.numpy()
    ranks = _reference_ranks(log_r)
    rank_of_value = {float(v): int(r) for v, r in zip(log_r, ranks)}  # continuous draws: values are distinct
    n = 20000
    _, drawn = buf.sample(n, generator=torch.Generator().manual_seed(2))
    r = np.array([rank_of_value[float(v)] for v in drawn])
    p = 1.0 / (k * capacity + np.arange(capacity))
    p /= p.sum()
    edges = np.searchsorted(np.cumsum(p), np.linspace(0.1, 0.9, 9))
    bins = np.concatenate([[0], edges + 1, [capacity]])
    expected = np.array([p[a:b].sum() for a, b in zip(bins[:-1], bins[1:])]) * n
    observed = np.array([((r >= a) & (r < b)).sum() for a, b in zip(bins[:-1], bins[1:])])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < stats.chi2.ppf(1 - 1e-3, len(expected) - 1), (observed, expected)
    # the best sample is drawn about (N k)^-1 / sum_r p(r) of the time: within 4 binomial sd
    top = float((r == 0).mean())
    assert abs(top - p[0]) < 4 * math.sqrt(p[0] * (1 - p[0]) / n)


def test_state_round_trip_and_empty_buffer():
    g = torch.Generator().manual_seed(3)
    buf = ReplayBuffer(20, 2)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1)
    for _ in range(4):
        buf.add(torch.randn(7, 2, generator=g), torch.randn(7, generator=g))
    other = ReplayBuffer(20, 2)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.x, buf.x) and torch.equal(other.log_r, buf.log_r)
    a = buf.sample(50, generator=torch.Generator().manual_seed(4))
    b = other.sample(50, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for _ in range(3):  # both go on identically after the round trip
        x, r = torch.randn(9, 2, generator=g), torch.randn(9, generator=g)
        buf.add(x, r)
        other.add(x, r)
    assert torch.equal(other.x, buf.x)
    a = buf.sample(50, generator=torch.Generator().manual_seed(5))
    b = other.sample(50, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0])


def test_boundary_state_is_the_state_at_the_mark():
    """fit_loop marks each step boundary; after adds that grow, wrap and overwrite the buffer, the mark's function
    returns exactly the state_dict of the mark, and an older mark's function refuses."""
    g = torch.Generator().manual_seed(6)
    buf = ReplayBuffer(40, 3)
    buf.add(torch.randn(25, 3, generator=g), torch.randn(25, generator=g))
    for adds in ([10], [10, 7], [40], [3, 50]):
        expected = buf.state_dict()
        state = buf.boundary()
        for m in adds:
            buf.add(torch.randn(m, 3, generator=g), torch.randn(m, generator=g))
        got = state()
        assert torch.equal(got["x"], expected["x"]) and torch.equal(got["log_r"], expected["log_r"])
        assert not torch.equal(buf.log_r[-3:], expected["log_r"][-3:])  # the buffer did change
    buf.boundary()
    with pytest.raises(RuntimeError, match="later"):
        state()
