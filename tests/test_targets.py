"""Targets: normalisation by numerical integration, scores by autograd, exact samples' moments, registry."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import dblquad

import controlsamp as cs
from controlsamp.targets.base import Target


def test_gaussian_and_mixture_are_normalised_2d():
    g = cs.targets.Gaussian([0.5, -0.5], [[1.0, 0.4], [0.4, 0.8]])
    mix = cs.targets.GaussianMixture([1.0, 2.0], [[-1.0, 0.0], [1.5, 1.0]], [np.eye(2) * 0.5, [[1.0, -0.3], [-0.3, 0.6]]])
    for t in (g, mix):
        f = lambda y, x: math.exp(float(t.log_prob(torch.tensor([[x, y]], dtype=torch.float64))))
        val, err = dblquad(f, -9, 9, -9, 9, epsabs=1e-9)
        assert abs(val - 1.0) < 1e-6 and t.log_Z == 0.0


@pytest.mark.parametrize("name", ["gmm25", "gmm40"])
def test_mixture_registry_normalised_on_a_grid(name):
    t = cs.targets.get(name)
    lo, hi = (-14, 14) if name == "gmm25" else (-48, 48)
    g = torch.linspace(lo, hi, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = torch.exp(t.log_prob(torch.stack([xx.ravel(), yy.ravel()], 1)))
    h = float(g[1] - g[0])
    assert abs(float(p.sum()) * h * h - 1.0) < 1e-6


def test_gmm_definitions_follow_references():
    g25 = cs.targets.get("gmm25")
    assert g25.n_components == 25 and torch.allclose(g25.covs[0], 0.3 * torch.eye(2, dtype=torch.float64))
    assert set(g25.means[:, 0].tolist()) == {-10.0, -5.0, 0.0, 5.0, 10.0}
    g40 = cs.targets.get("gmm40")
    torch.manual_seed(0)
    expected = (torch.rand((40, 2)) - 0.5) * 2 * 40
    assert torch.allclose(g40.means, expected.double())
    std = float(torch.nn.functional.softplus(torch.tensor(1.0, dtype=torch.float64)))
    assert torch.allclose(g40.covs, std ** 2 * torch.eye(2, dtype=torch.float64).expand(40, 2, 2))


@pytest.mark.parametrize("name", ["gaussian", "gmm25", "gmm40"])
def test_closed_form_score_equals_autograd(name):
    t = cs.targets.get(name)
    x = t.sample(50, generator=torch.Generator().manual_seed(0)) + 0.1
    np.testing.assert_allclose(t.score(x).numpy(), Target.score(t, x).numpy(), atol=1e-10)


@pytest.mark.parametrize("name", ["gaussian", "gmm25", "gmm40"])
def test_exact_samples_have_the_right_moments(name):
    t = cs.targets.get(name)
    n = 40000
    x = t.sample(n, generator=torch.Generator().manual_seed(1))
    mean, cov = (t.mean, t.cov) if name == "gaussian" else t.moments()
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert torch.all((x.mean(0) - mean).abs() < 5 * se)
    xc = x - mean
    prods = xc.unsqueeze(2) * xc.unsqueeze(1)
    assert torch.all((prods.mean(0) - cov).abs() < 5 * prods.std(0) / math.sqrt(n))


def test_user_energy_nan_is_reported():
    t = Target.from_log_prob(lambda x: torch.where(x[:, 0] > 0, torch.nan, -x.pow(2).sum(1)), dim=2, name="mine")
    assert torch.allclose(t.score(torch.tensor([[-1.0, 2.0]])), torch.tensor([[2.0, -4.0]]))
    with pytest.raises(ValueError, match="mine.*NaN"):
        t.log_prob(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        t.log_prob(torch.zeros(3))


def test_registry_errors_and_bad_parameters():
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        cs.targets.get("nope")
    with pytest.raises(ValueError, match="cov"):
        cs.targets.Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="weights"):
        cs.targets.GaussianMixture([1.0, -1.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(ValueError, match="means"):
        cs.targets.GaussianMixture([1.0, 1.0], [[0.0]], [[[1.0]], [[1.0]]])
