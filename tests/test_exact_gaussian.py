"""KL, W2 and entropic OT between Gaussians against independent implementations (torch.distributions, POT)."""
import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.distributions import MultivariateNormal, kl_divergence

import controlsamp as cs
from strategies import spd, vector

PAIR = st.integers(1, 6).flatmap(lambda d: st.tuples(vector(d), spd(d), vector(d), spd(d)))


@settings(max_examples=50, deadline=None)
@given(PAIR)
def test_kl_matches_torch_distributions(pair):
    m0, S0, m1, S1 = pair
    ref = kl_divergence(MultivariateNormal(torch.as_tensor(m0), torch.as_tensor(S0)),
                        MultivariateNormal(torch.as_tensor(m1), torch.as_tensor(S1)))
    assert abs(cs.exact.gaussian_kl(m0, S0, m1, S1) - float(ref)) < 1e-7 * (1 + float(ref))


@settings(max_examples=50, deadline=None)
@given(PAIR)
def test_w2_matches_pot_and_the_map(pair):
    m0, S0, m1, S1 = pair
    ref = float(ot.gaussian.bures_wasserstein_distance(m0, m1, S0, S1))  # POT returns W2, not W2^2
    # compare squares: W2^2 = |dm|^2 + tr(S0 + S1 - 2 cross) carries round-off ~ 1e-12 tr(S0 + S1), which the
    # square root amplifies near W2 = 0
    scale = 1 + np.trace(S0) + np.trace(S1) + ((m0 - m1) ** 2).sum()
    assert abs(cs.exact.bures_wasserstein(m0, S0, m1, S1) ** 2 - ref ** 2) < 1e-9 * scale
    A = cs.exact.bures_map(S0, S1).numpy()
    np.testing.assert_allclose(A @ S0 @ A, S1, rtol=1e-6, atol=1e-6 * np.abs(S1).max())  # the map pushes S0 to S1


def test_w2_against_exact_ot_on_samples():
    """W2 between two 1-d Gaussians equals the empirical quantile coupling's cost (sorted samples) within 5 se."""
    rng = np.random.default_rng(0)
    n = 200000
    x = np.sort(rng.normal(1.0, 2.0, n))
    y = np.sort(rng.normal(-1.0, 0.5, n))
    d2 = (x - y) ** 2
    w2sq = cs.exact.bures_wasserstein([1.0], [[4.0]], [-1.0], [[0.25]]) ** 2
    assert abs(d2.mean() - w2sq) < 5 * d2.std() / np.sqrt(n) + 1e-3


def test_entropic_cost_tends_to_w2_as_eps_vanishes():
    m0, S0, m1, S1 = [0.0, 1.0], [[2.0, 0.3], [0.3, 1.0]], [1.0, -1.0], [[0.5, 0.0], [0.0, 3.0]]
    w2sq = cs.exact.bures_wasserstein(m0, S0, m1, S1) ** 2
    # the eps KL term costs O(eps log eps)
    for eps in (1e-3, 1e-5):
        gap = cs.exact.entropic_ot_gaussian(m0, S0, m1, S1, eps) - w2sq
        assert abs(gap) < 10 * eps * abs(np.log(eps)) * 2


def test_bad_input():
    with pytest.raises(ValueError, match="cov1"):
        cs.exact.gaussian_kl([0.0], [[1.0]], [0.0], [[-1.0]])
    with pytest.raises(ValueError, match="mean1"):
        cs.exact.bures_wasserstein([0.0], [[1.0]], [0.0, 1.0], [[1.0]])
    with pytest.raises(ValueError, match="eps"):
        cs.exact.entropic_ot_gaussian([0.0], [[1.0]], [0.0], [[1.0]], 0.0)


def test_inputs_with_negative_strides_are_accepted():
    """numpy views with negative strides (a[::-1]) convert like any array; scalars stay scalars."""
    import numpy as np

    from controlsamp._validate import as_tensor
    a = np.arange(4.0)
    assert as_tensor(a[::-1], "a").tolist() == [3.0, 2.0, 1.0, 0.0]
    assert as_tensor(2.5, "s").ndim == 0


# ------------------------------------------------------------------------------------ issue 14 regressions
def _rotation(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


@pytest.mark.parametrize("eigs", [[1.0, 1e-13], [1.0, 1e-14, 0.5], [1e-13, 1e-13], [1e-13, 2e-13, 5e-13],
                                  [1e13, 1.0, 1e-1]])
def test_spd_check_accepts_valid_ill_conditioned_and_tiny_covariances(eigs):
    """Covariances of condition 1e13-1e14 or of scale 1e-13 are valid (they used to be refused): the check is
    relative to the matrix's own scale. KL against itself is 0 (an independent use of the matrix)."""
    from controlsamp._validate import check_spd
    U = _rotation(len(eigs))
    S = U @ np.diag(eigs) @ U.T
    S = 0.5 * (S + S.T)
    np.testing.assert_allclose(check_spd(S, "cov").numpy(), S, rtol=0, atol=0)
    np.testing.assert_allclose(check_spd(np.diag(eigs), "cov").numpy(), np.diag(eigs))
    cs.targets.Gaussian(np.zeros(len(eigs)), np.diag(eigs))


@pytest.mark.parametrize("eigs, smallest", [([1.0, -1e-3], -1e-3), ([2.0, -0.5, 1.0], -0.5), ([1e-13, -1e-13], -1e-13),
                                            ([1.0, 0.0], 0.0)])
def test_spd_check_reports_the_true_smallest_eigenvalue(eigs, smallest):
    from controlsamp._validate import check_spd
    U = _rotation(len(eigs), 1)
    S = U @ np.diag(eigs) @ U.T
    with pytest.raises(ValueError) as err:
        check_spd(0.5 * (S + S.T), "cov")
    msg = str(err.value)
    assert "cov" in msg
    got = float(msg.split("smallest eigenvalue ")[1].split()[0])
    assert abs(got - smallest) <= 1e-12 * max(abs(e) for e in eigs) + 1e-3 * abs(smallest)
