"""TargetEvaluator (controlsamp.targets.evaluation): counting, one-pass value and score, NaN / inf
reporting with the offending point, and a differentiable score (second derivatives against the
Gaussian's closed-form Hessian -S^{-1})."""
import math

import pytest
import torch

import controlsamp as cs
from controlsamp.langevin import mala
from controlsamp.targets import Target, TargetEvaluator

MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
COV = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]], dtype=torch.float64)


def _gaussian():
    """Closed-form log_prob and score."""
    return cs.targets.Gaussian(MEAN, COV)


def _gaussian_autograd():
    """The same density through a user log_prob only: its score is autograd."""
    g = _gaussian()
    return Target.from_log_prob(g.log_prob, 3, log_Z=0.0, name="gaussian_autograd")


def _quartic():
    """A non-Gaussian autograd target, log pi~(x) = -|x|^4 / 4 + x_1 x_2."""
    return Target.from_log_prob(lambda x: -0.25 * (x * x).sum(-1) ** 2 + x[:, 0] * x[:, 1], 3, name="quartic")


def _points(n=7, seed=0):
    return 1.5 * torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class _Energy(Target):
    """A target with a chosen log_prob (autograd score) and no checks of its own."""

    def __init__(self, log_prob, name="broken_energy"):
        self.dim, self.name, self._lp = 3, name, log_prob

    def log_prob(self, x):
        return self._lp(x)


class _AnalyticEnergy(_Energy):
    """As _Energy, with the score as a method of the class (a closed-form score)."""

    def __init__(self, log_prob, score, name="broken_energy"):
        super().__init__(log_prob, name=name)
        self._sc = score

    def score(self, x):
        return self._sc(x)


@pytest.mark.parametrize("make", [_gaussian, _gaussian_autograd], ids=["analytic", "autograd"])
def test_counting(make):
    ev = TargetEvaluator(make())
    x = _points(5)
    assert ev.evals == 0 and ev.analytic_score == (make is _gaussian)
    ev.log_prob(x)
    assert ev.evals == 5
    ev.score(x)
    assert ev.evals == 10
    ev.score(x.requires_grad_(True), create_graph=True)
    assert ev.evals == 15
    ev.value_and_score(x[:2])  # both at once: one evaluation per point
    assert ev.evals == 17
    ev(x[:1])  # calling it is value_and_score
    assert ev.evals == 18


@pytest.mark.parametrize("make", [_gaussian, _gaussian_autograd, _quartic], ids=["analytic", "autograd", "quartic"])
def test_value_and_score_equals_separate_evaluations(make):
    target = make()
    x = _points(11, seed=1)
    lp, sc = TargetEvaluator(target).value_and_score(x)
    assert lp.dtype == torch.float64 and sc.dtype == torch.float64 and not lp.requires_grad and not sc.requires_grad
    assert torch.allclose(lp, target.log_prob(x), rtol=0, atol=1e-12)
    assert torch.allclose(sc, target.score(x), rtol=0, atol=1e-12)
    ev = TargetEvaluator(target)
    assert torch.allclose(ev.log_prob(x), lp, rtol=0, atol=1e-12)
    assert torch.allclose(ev.score(x), sc, rtol=0, atol=1e-12)


def test_autograd_score_equals_the_closed_form():
    """The one autograd pass of value_and_score gives the Gaussian's closed-form score -S^{-1}(x - m)."""
    x = _points(9, seed=2)
    lp, sc = TargetEvaluator(_gaussian_autograd()).value_and_score(x)
    exact = -torch.linalg.solve(COV, (x - MEAN).T).T
    assert torch.allclose(sc, exact, rtol=0, atol=1e-12)
    quad = ((x - MEAN) * (-exact)).sum(-1)
    assert torch.allclose(lp, -0.5 * quad - 0.5 * torch.logdet(2 * math.pi * COV), rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [_gaussian, _gaussian_autograd], ids=["analytic", "autograd"])
def test_create_graph_gives_the_hessian(make):
    """d score_i / d x_j = (-S^{-1})_{ij} at every point: the score built with create_graph is differentiable."""
    ev = TargetEvaluator(make())
    x = _points(4, seed=3).requires_grad_(True)
    sc = ev.score(x, create_graph=True)
    assert sc.requires_grad
    hess = torch.stack([torch.autograd.grad(sc[:, i].sum(), x, retain_graph=True)[0] for i in range(3)], 1)
    expected = -torch.linalg.inv(COV)
    assert torch.allclose(hess, expected.expand(4, 3, 3), rtol=0, atol=1e-12)
    # without create_graph the score is detached from x
    assert not ev.score(x).requires_grad


def test_create_graph_on_a_non_gaussian():
    """Second derivative of the quartic: d/dx_j of score_j = -|x|^2 - 2 x_j^2 (closed form)."""
    ev = TargetEvaluator(_quartic())
    x = _points(5, seed=4)  # a leaf that does not require grad: the evaluator makes one
    xg = x.clone().requires_grad_(True)
    sc = ev.score(xg, create_graph=True)
    diag = torch.stack([torch.autograd.grad(sc[:, j].sum(), xg, retain_graph=True)[0][:, j] for j in range(3)], 1)
    r2 = (x * x).sum(-1, keepdim=True)
    assert torch.allclose(diag, -r2 - 2 * x * x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad_value,label", [(float("nan"), "NaN"), (float("inf"), "inf")])
@pytest.mark.parametrize("method", ["log_prob", "value_and_score"])
def test_nan_and_plus_inf_log_prob_name_the_target_and_point(bad_value, label, method):
    """Rows 2 and 5 have x_0 > 3: the error names the target and row 2 (the first)."""
    target = _Energy(lambda x: torch.where(x[:, 0] > 3.0, bad_value, -0.5 * (x * x).sum(-1)), name="my_energy")
    x = torch.zeros(6, 3, dtype=torch.float64)
    x[2] = torch.tensor([3.5, 0.25, -1.0], dtype=torch.float64)
    x[5] = torch.tensor([4.0, 0.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=label) as info:
        getattr(TargetEvaluator(target), method)(x)
    msg = str(info.value)
    assert "'my_energy'" in msg and "2 of 6 points" in msg and "[3.5, 0.25, -1.0]" in msg


def test_minus_inf_log_prob_is_zero_density():
    """-inf (outside the support) passes; its score is not checked by value_and_score."""
    target = _Energy(lambda x: torch.where(x[:, 0] > 0, -0.5 * (x * x).sum(-1), -math.inf))
    x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 2.0, 0.0]], dtype=torch.float64)
    ev = TargetEvaluator(target)
    lp = ev.log_prob(x)
    assert lp[0] == -0.5 and lp[1] == -math.inf
    lp, sc = ev.value_and_score(x)
    assert lp[1] == -math.inf and torch.equal(sc[0], -x[0])


@pytest.mark.parametrize("method", ["score", "value_and_score"])
def test_non_finite_score_names_the_point(method):
    """A closed-form score with a NaN at row 1 (where log_prob is finite)."""
    def score(x):
        s = -x.clone()
        s[x[:, 1] > 1.0] = float("nan")
        return s
    target = _AnalyticEnergy(lambda x: -0.5 * (x * x).sum(-1), score, name="bad_score")
    x = torch.tensor([[0.0, 0.0, 0.0], [0.5, 2.0, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    ev = TargetEvaluator(target)
    assert ev.analytic_score
    with pytest.raises(ValueError, match="non-finite score") as info:
        getattr(ev, method)(x)
    assert "'bad_score'" in str(info.value) and "2 of 3 points" in str(info.value)
    assert "[0.5, 2.0, 0.0]" in str(info.value)


def test_bad_target_and_name_fallback():
    with pytest.raises(ValueError, match="target must be"):
        TargetEvaluator(lambda x: x)
    ev = TargetEvaluator(_gaussian())
    assert ev.name == "gaussian" and "gaussian" in repr(ev)


def test_it_is_the_log_density_of_the_langevin_kernels():
    """mala.init / mala.step take it as log_density and it counts their evaluations: one per chain for
    the start and one per chain and step for the proposals."""
    ev = TargetEvaluator(_gaussian())
    state = mala.init(_points(6, seed=5), ev)
    gen = torch.Generator().manual_seed(6)
    for _ in range(4):
        state, info = mala.step(state, ev, 0.3, gen)
    assert ev.evals == 6 * (1 + 4)
    assert info.acceptance_rate.shape == (6,) and info.is_accepted.dtype == torch.bool
    lp, sc = ev.value_and_score(state.x)
    assert torch.allclose(state.log_prob, lp, rtol=0, atol=1e-12)
    assert torch.allclose(state.score, sc, rtol=0, atol=1e-12)
