"""One engine: every objective of a sampler sees the log-weights that ``sample()`` reports, path by path, and
the relative entropy differentiates exactly that discrete path law (issue 13).

Independent sources: the same noise through two code paths (the scheme's rollout and torchsde's Euler), the
discrete Girsanov formula written out by hand, finite differences of E[-log w], and the closed form of the
Euler chain's terminal variance."""
from __future__ import annotations

import math

import pytest
import torch

import controlsamp as cs
from controlsamp.control.objectives import Batch
from controlsamp.sde import GridBrownian, path_costs
from controlsamp.training import Streams
from sampler_helpers import gaussian_target

F64 = torch.float64


def _perturbed(sampler, scale=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sampler.policy.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return sampler


def _samplers(tgt):
    kw = dict(steps=12, dtype=F64, seed=1)
    return {"pis": cs.samplers.PIS(tgt, sigma=1.2, **kw),
            "dds-exponential": cs.samplers.DDS(tgt, scheme="exponential", **kw),
            "dds-euler": cs.samplers.DDS(tgt, scheme="euler", **kw),
            "dis": cs.samplers.DIS(tgt, **kw),
            "asbs": cs.samplers.ASBS(tgt, prior_std=0.7, **kw)}


@pytest.mark.parametrize("name", ["pis", "dds-exponential", "dds-euler", "dis", "asbs"])
def test_every_objective_sees_the_weights_of_sample(name):
    """sample()'s log w (paths as drawn) = the log w that lv/tb/vargrad/known_log_Z recompute from the paths
    (differentiable in the control) = the reparametrised log w of the relative entropy by backprop (same
    seed, so the same noise) = (Euler schemes) -(c_T + g) of torchsde's Euler with the stl term, driven by the
    same increments. float64, 1e-9."""
    tgt = gaussian_target(2)
    s = _perturbed(_samplers(tgt)[name])
    pr = s.problem
    paths = s.simulate(64, torch.Generator().manual_seed(3))
    x, lw_sample = s.sample(64, seed=3)
    assert torch.equal(x, paths.xs[:, -1])
    recomputed = pr.log_weights(s.policy, paths.detached_from_model())
    assert recomputed.requires_grad
    assert torch.allclose(recomputed.detach(), lw_sample, atol=1e-9, rtol=0)
    for loss in ("lv", "tb", "vargrad", "known_log_Z"):
        _, info = cs.control.get_objective(loss)(pr, s.policy, Batch(64, Streams(0), 0, dtype=F64, paths=paths))
        assert torch.allclose(info["log_w"], lw_sample, atol=1e-9, rtol=0), loss
    rep = pr.reparametrised_log_weights(s.policy, 64, torch.Generator().manual_seed(3), dtype=F64)
    assert torch.allclose(rep.detach(), lw_sample, atol=1e-9, rtol=0)
    if s.reference.scheme.name == "euler":
        bm = GridBrownian(math.sqrt(s.reference.h) * paths.noise.transpose(0, 1), s.T)
        with torch.no_grad():
            cost = path_costs(pr, pr.control_fn(s.policy), paths.xs[:, 0], 0, [], "euler", False,
                              pr.control_fn(s.policy, frozen=True), bm=bm)
        assert torch.allclose(-cost, lw_sample, atol=1e-9, rtol=0)


def test_zero_control_on_the_euler_chain_has_zero_path_log_ratio():
    """The bug of issue 13: DDS with the Euler scheme weighted its paths against the exact OU kernel (log-ratio
    mean -0.63 at zero control, measured) while the kl loss saw 0. Now the discrete reference is the Euler chain
    itself: at u = 0 the path log-ratio is exactly 0, and the terminal law it is compared with is the chain's
    own, N(0, w_K) with w_{i+1} = a_i^2 w_i + g_i^2 h (checked against the recursion written out)."""
    tgt = cs.targets.Gaussian(torch.zeros(3), torch.eye(3))
    s = cs.samplers.DDS(tgt, steps=20, scheme="euler", langevin=False, dtype=F64)
    with torch.no_grad():
        for p in s.policy.parameters():
            p.zero_()
    paths = s.simulate(500, torch.Generator().manual_seed(0))
    lw = s.log_weights(paths)
    ratio = lw - tgt.log_prob(paths.xs[:, -1]).double() + s.reference.terminal_log_prob(paths.xs[:, -1])
    assert ratio.abs().max() < 1e-12
    ref, w = s.reference, 1.0
    for i in range(20):
        t = i * ref.h
        k, g = ref.law.k(t), ref.law.g(t)
        w = (1 + k * ref.h) ** 2 * w + g * g * ref.h
    assert abs(float(ref.w[-1]) - w) < 1e-12
    # and the chain is a proper sampler of its own terminal law: the variance of x_K within a CLT band
    v = float(paths.xs[:, -1].var(0).mean())
    assert abs(v - w) < 5 * w * math.sqrt(2 / (3 * 500))


@pytest.mark.parametrize("scheme", ["exponential", "euler"])
@pytest.mark.parametrize("stl", [False, True])
def test_relative_entropy_gradient_is_the_gradient_of_minus_elbo(scheme, stl):
    """The relative entropy by backpropagation is -mean log w of the scheme's reparametrised paths: its
    gradient equals central finite differences of that same function of the parameters (a fixed seed, so the
    noise is common), along a random direction. With stl the value is unchanged and the gradient differs by a
    term of mean zero, so it is checked for its value only."""
    tgt = gaussian_target(2)
    s = _perturbed(cs.samplers.DDS(tgt, steps=8, scheme=scheme, dtype=F64, seed=2, hidden=16))
    kl = cs.control.get_objective("kl", adjoint=False, stl=stl)
    params = list(s.policy.parameters())

    def value():
        loss, _ = kl(s.problem, s.policy, Batch(32, Streams(9), 0, dtype=F64))
        return loss

    loss = value()
    grads = torch.autograd.grad(loss, params)
    gen = torch.Generator().manual_seed(4)
    direction = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
    eps = 1e-6
    vals = []
    with torch.no_grad():
        for sign in (1, -1):
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
            vals.append(float(value()))
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    fd = (vals[0] - vals[1]) / (2 * eps)
    lw = s.problem.reparametrised_log_weights(s.policy, 32, Streams(9).device, dtype=F64)
    assert abs(float(loss.detach()) + float(lw.detach().mean())) < 1e-10
    if not stl:
        ad = sum(float((g * d).sum()) for g, d in zip(grads, direction))
        assert abs(ad - fd) < 1e-6 * (1 + abs(fd)), (ad, fd)


def test_adjoint_is_refused_for_the_exponential_scheme_and_the_default_backpropagates():
    """adjoint=True on DDS's exponential scheme is refused (torchsde cannot take its steps); the default picks
    backpropagation through the scheme's rollout there and the adjoint for Euler schemes."""
    tgt = gaussian_target(2)
    s = cs.samplers.DDS(tgt, steps=8)
    with pytest.raises(ValueError, match="exponential"):
        s.fit(1, loss="kl", adjoint=True, progress=False)
    kl = cs.control.get_objective("kl")
    assert not kl._use_adjoint(s.problem)
    assert kl._use_adjoint(cs.samplers.PIS(tgt, steps=8).problem)
    s.fit(2, batch=16, loss="kl", progress=False)
    assert len(s.history["loss"]) == 2


def test_history_records_the_gradient_norm_before_clipping(monkeypatch):
    """history["grad_norm"] is the norm of the gradient each iteration (before clipping), as the control
    solver's: measured independently inside Adam's step as sqrt(sum |grad|^2) over its parameters, without a
    clip (equal to float32 rounding) and with a clip below every norm (the step then sees exactly the clip)."""
    seen = []
    step = torch.optim.Adam.step

    def measured(self, *args, **kwargs):
        seen.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for g in self.param_groups
                                  for p in g["params"] if p.grad is not None)))
        return step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", measured)
    s = cs.samplers.PIS(gaussian_target(2), steps=8, seed=1)
    s.fit(5, batch=16, loss="lv", progress=False)
    assert len(s.history["grad_norm"]) == 5 and len(seen) == 5
    for a, b in zip(s.history["grad_norm"], seen):
        assert abs(a - b) < 1e-5 * b, (a, b)
    seen.clear()
    c = cs.samplers.PIS(gaussian_target(2), steps=8, seed=1)
    c.fit(3, batch=16, loss="lv", progress=False, grad_clip=1e-3)
    assert min(c.history["grad_norm"]) > 1e-3 and max(abs(v - 1e-3) for v in seen) < 1e-8


def test_adjoint_matching_trains_pis_toward_the_follmer_drift():
    """Samplers accept every control objective: adjoint matching (regression onto the lean adjoint of the
    scheme's chain) lowers PIS's KL on a Gaussian target (log Z = 0, so -ELBO is the KL)."""
    tgt = gaussian_target(2)
    s = cs.samplers.PIS(tgt, steps=20, langevin=False)
    _, lw0 = s.sample(2000, seed=5)
    s.fit(150, batch=128, loss="am", lr=3e-3, progress=False)
    _, lw1 = s.sample(2000, seed=5)
    assert -float(lw1.mean()) < 0.3 * -float(lw0.mean())


def test_a_new_objective_is_one_class():
    """A function of log w registered by subclassing: it trains a sampler with no other change."""

    class MeanAbsoluteDeviation(cs.control.LogWeightObjective):
        name = "test_mean_absolute_deviation"

        def of_log_weights(self, log_w):
            return (log_w - log_w.mean().detach()).abs().mean()

    assert cs.control.objectives.REGISTRY["test_mean_absolute_deviation"] is MeanAbsoluteDeviation
    tgt = gaussian_target(2)
    s = cs.samplers.PIS(tgt, steps=10)
    _, lw0 = s.sample(2000, seed=5)
    s.fit(100, batch=64, loss="test_mean_absolute_deviation", lr=3e-3, progress=False)
    _, lw1 = s.sample(2000, seed=5)
    assert -float(lw1.mean()) < 0.5 * -float(lw0.mean())


@pytest.mark.parametrize("name", ["pis", "dds-exponential", "dis"])
def test_one_pass_training_paths_give_the_recomputed_weights_and_gradient(name):
    """Training paths drawn with differentiable means (one pass) carry the same log w, and the same gradient
    of the log-variance, as evaluating the policy along the detached paths again (float64, 1e-9); with
    exploration the means are still the model's (the wider noise is the behaviour law's only)."""
    tgt = gaussian_target(2)
    s = _perturbed(_samplers(tgt)[name])
    for explore in (0.0, 0.7):
        one = s.simulate(48, torch.Generator().manual_seed(7), explore=explore, differentiable=True)
        again = s.simulate(48, torch.Generator().manual_seed(7), explore=explore)
        # the same paths up to float64 round-off (the recorder computes SiLU as z * sigmoid(z), which rounds
        # differently from aten's silu)
        assert torch.allclose(one.xs, again.xs, rtol=1e-12, atol=1e-12) and not one.xs.requires_grad
        grads = []
        for paths in (one, again.detached_from_model()):
            lw = s.log_weights(paths)
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(lw.var(), list(s.policy.parameters()))]))
            if paths is one:
                lw_one = lw.detach()
            else:
                assert torch.allclose(lw.detach(), lw_one, atol=1e-9, rtol=0)
        assert torch.allclose(grads[0], grads[1], atol=1e-9, rtol=1e-9)


def test_objectives_that_need_supplied_data_are_refused_with_a_reason():
    tgt = gaussian_target(2)
    with pytest.raises(ValueError, match="ASBS"):
        cs.samplers.PIS(tgt, steps=5).fit(1, loss="corrector_matching", progress=False)
    problem = cs.control.SamplingProblem(tgt, cs.samplers.PIS(tgt, steps=5).reference)
    with pytest.raises(ValueError, match="endpoint"):
        cs.solve(problem, method="reciprocal_adjoint_matching", iters=1, progress=False)
