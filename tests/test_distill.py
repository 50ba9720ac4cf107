"""Distillation (cs.generative.distill): a small student regressing an exact mixture teacher's noise estimate
converges to the exact score (relative L2 error on the exact marginals), its objective is zero at the teacher and
has no DSM floor, and a mismatched teacher is refused."""
import math

import pytest
import torch

import controlsamp as cs
from controlsamp.generative import DiffusionModel, distill, parameter_count
from controlsamp.generative.score_matching import TimeSampler, score_matching_loss

D64 = torch.float64
W = [0.3, 0.5, 0.2]
MEANS = [[2.0, 0.0], [-1.0, 1.0], [0.0, -2.0]]
COVS = [0.3 * torch.eye(2), 0.5 * torch.eye(2), 0.2 * torch.eye(2)]
TS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def rel_score_error(model, mix, n=4000, seed=5):
    g = torch.Generator().manual_seed(seed)
    num = den = 0.0
    for t in TS:
        x = mix.sample(t, n, generator=g)
        s = mix.score(t, x)
        with torch.no_grad():
            sh = model.score(t, x.to(model.dtype)).double()
        num += float(((sh - s) ** 2).sum(1).mean())
        den += float((s ** 2).sum(1).mean())
    return math.sqrt(num / den)


def test_objective_is_zero_at_the_teacher_and_positive_elsewhere():
    """With the teacher as its own student the distillation loss is exactly 0 (DSM's is the positive irreducible
    constant); an untrained student's is positive."""
    ref = cs.processes.VP(2)
    mix = cs.exact.NoisedMixture(ref, W, MEANS, COVS)
    teacher = cs.generative.ExactScore(mix, t_min=1e-3)

    class Wrap:  # the exact score seen as a model with eps_hat, so the loss can be evaluated at the teacher itself
        kernel = cs.generative.make_kernel(ref)

        def eps_hat(self, t, x, use_ema=False, return_scale=False):
            a, s = self.kernel.coefficients(t, x.shape[0], x)
            e = -s * teacher.score(t, x)
            return (e, s) if return_scale else e

    x0 = mix.sample(0.0, 512, generator=torch.Generator().manual_seed(0))
    times = TimeSampler(Wrap.kernel, 1e-3, 1.0)
    zero, _ = score_matching_loss(Wrap(), x0, torch.Generator().manual_seed(1), "simple", times, teacher=teacher)
    dsm, _ = score_matching_loss(Wrap(), x0, torch.Generator().manual_seed(1), "simple", times)
    assert float(zero) == 0.0 and float(dsm) > 0.1
    student = DiffusionModel(ref, hidden=8, depth=1, dtype=D64)
    pos, _ = score_matching_loss(student, x0, torch.Generator().manual_seed(1), "simple", times, teacher=teacher)
    assert float(pos) > 0.1


def test_student_converges_to_the_exact_teacher_and_beats_dsm_at_equal_budget():
    """A student MLP of width 32 (1762 parameters) distilled from the exact mixture score, 1500 steps of 256: relative
    L2 error of its score on the exact marginals (t in [0.05, 1]) below 0.45 (an untrained model is at 1; measured
    0.387), and below that of the same network trained by DSM on the same data and budget (measured 0.484): the
    teacher's target has no irreducible noise. Most of the remaining error sits at t <= 0.1, where the eps
    parametrisation scales a noise error by 1 / sigma_t (a width-64 student at 2000 x 512 steps: 0.20 overall,
    0.34 at t = 0.05, below 0.05 on [0.3, 0.9])."""
    ref = cs.processes.VP(2)
    mix = cs.exact.NoisedMixture(ref, W, MEANS, COVS)
    teacher = cs.generative.ExactScore(mix, t_min=1e-3)
    data = mix.sample(0.0, 20000, generator=torch.Generator().manual_seed(0))
    opts = dict(iters=1500, batch=256, lr=3e-3, lr_schedule="cosine", progress=False)
    student = distill(teacher, data, hidden=32, depth=2, ema=0.99, **opts)
    dsm = DiffusionModel(ref, hidden=32, depth=2, ema=0.99, t_min=1e-3).fit(data, **opts)
    err, err_dsm = rel_score_error(student, mix), rel_score_error(dsm, mix)
    print("student parameters", parameter_count(student), "relative error", err, "DSM", err_dsm)
    assert parameter_count(student) == parameter_count(dsm) == 1762
    assert err < 0.45 and err < err_dsm


def test_mismatched_teacher_is_refused():
    ref = cs.processes.VP(2)
    teacher = cs.generative.ExactScore(cs.exact.NoisedMixture(cs.processes.VE(2), W, MEANS, COVS))
    with pytest.raises(ValueError, match="teacher must be on the student's reference"):
        distill(teacher, torch.zeros(10, 2), student=DiffusionModel(ref, hidden=8, depth=1), iters=1, progress=False)
    with pytest.raises(ValueError, match="teacher must be a score source"):
        distill("model", torch.zeros(10, 2))
    late = cs.generative.ExactScore(cs.exact.NoisedMixture(ref, W, MEANS, COVS), t_min=0.1)
    with pytest.raises(ValueError, match="t_min"):
        distill(late, torch.zeros(10, 2), t_min=1e-3, iters=1, progress=False)
