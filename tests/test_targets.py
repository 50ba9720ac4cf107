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


# ------------------------------------------------------------------------------------ issue 14 regressions
def test_repr_names_the_target_its_dimension_and_log_Z():
    assert repr(cs.targets.get("gmm25")) == "GaussianMixture(name='gmm25', dim=2, log_Z=0)"
    assert repr(cs.targets.Funnel(5, name="f5")) == "Funnel(name='f5', dim=5, log_Z=0)"
    custom = Target.from_log_prob(lambda x: -x.pow(2).sum(1), dim=3, name="mine")
    assert repr(custom) == "Target(name='mine', dim=3, log_Z=unknown)"
    assert len(repr(cs.targets.get("manywell32"))) < 80


@pytest.mark.parametrize("make", [lambda: cs.targets.Gaussian([0.5, -1.0], [[2.0, 0.3], [0.3, 1.0]]),
                                  lambda: cs.targets.GaussianMixture([0.3, 0.7], [[0.0, 0.0], [2.0, 1.0]],
                                                                     [np.eye(2), [[1.0, 0.2], [0.2, 0.5]]]),
                                  lambda: cs.targets.Funnel(2, 1.5)])
def test_numpy_and_integer_inputs_are_accepted_and_promoted(make):
    """numpy arrays and integer points give the float64 values of scipy's densities (not integers, not a
    crash); the score of numpy input equals the score of the same tensor."""
    from scipy.stats import multivariate_normal, norm
    t = make()
    xi = np.array([[0, 1], [-2, 3], [1, -1]])
    if isinstance(t, cs.targets.Gaussian):
        ref = multivariate_normal(t.mean.numpy(), t.cov.numpy()).logpdf(xi)
    elif isinstance(t, cs.targets.GaussianMixture):
        ref = np.log(sum(w * multivariate_normal(m, c).pdf(xi) for w, m, c in
                         zip(t.weights.numpy(), t.means.numpy(), t.covs.numpy())))
    else:
        ref = norm(0, 1.5).logpdf(xi[:, 0]) + norm(0, np.exp(xi[:, 0] / 2)).logpdf(xi[:, 1])
    for x in (xi, xi.astype(np.float64), torch.as_tensor(xi), torch.as_tensor(xi, dtype=torch.float64)):
        lp = t.log_prob(x)
        assert lp.is_floating_point()
        np.testing.assert_allclose(lp.double().numpy(), ref, rtol=1e-6 if lp.dtype == torch.float32 else 1e-12)
    np.testing.assert_allclose(t.score(xi.astype(np.float64)).numpy(),
                               t.score(torch.as_tensor(xi, dtype=torch.float64)).numpy(), rtol=1e-14)
    assert cs.targets.Gaussian([0.0, 0.0], np.eye(2)).log_prob(torch.zeros(1, 2, dtype=torch.int64)).item() == \
        pytest.approx(-math.log(2 * math.pi))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_points_are_refused_by_name(bad):
    x = torch.tensor([[0.0, 1.0], [bad, 0.0]])
    for t in (cs.targets.get("gmm25"), cs.targets.Gaussian([0.0, 0.0], np.eye(2)),
              Target.from_log_prob(lambda z: -z.pow(2).sum(1), 2)):
        with pytest.raises(ValueError, match=r"\bx\b.*NaN or inf"):
            t.log_prob(x)
        with pytest.raises(ValueError, match=r"\bx\b.*NaN or inf"):
            t.score(x)


def test_numpy_energy_is_reported_where_a_gradient_is_needed():
    """A log-density computed through numpy has values but no gradient: its value works, its score is a
    ValueError that says to write it in torch (not torch's "Can't call numpy()" nor a wrong zero gradient)."""
    through_numpy = Target.from_log_prob(lambda x: torch.as_tensor(-0.5 * (x.numpy() ** 2).sum(1)), 2, name="np")
    detached = Target.from_log_prob(lambda x: torch.as_tensor(-0.5 * (x.detach().numpy() ** 2).sum(1)), 2, name="dt")
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    for t in (through_numpy, detached):
        assert torch.allclose(t.log_prob(x), torch.tensor([-2.5, -0.625], dtype=torch.float64))
        with pytest.raises(ValueError, match="torch"):
            t.score(x)
        with pytest.raises(ValueError, match="torch"):
            cs.targets.TargetEvaluator(t).value_and_score(x)


def test_constant_energy_has_zero_score():
    """A log-density that does not depend on x (e.g. a flat prior) is valid: its score is exactly 0."""
    for fn in (lambda x: torch.zeros(x.shape[0]), lambda x: torch.full((x.shape[0],), 3.0, dtype=x.dtype)):
        t = Target.from_log_prob(fn, 3)
        x = torch.randn(5, 3)
        assert torch.equal(t.score(x), torch.zeros(5, 3))
        lp, sc = cs.targets.TargetEvaluator(t).value_and_score(x)
        assert torch.equal(sc, torch.zeros(5, 3)) and torch.equal(lp, fn(x).to(lp.dtype))


def test_float_sample_counts_are_refused_not_truncated():
    for t in (cs.targets.Gaussian([0.0], [[1.0]]), cs.targets.get("gmm25"), cs.targets.Funnel(3)):
        with pytest.raises(ValueError, match=r"\bn\b"):
            t.sample(2.5)
