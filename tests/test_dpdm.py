"""DPDM (cs.generative.dpdm, Dockhorn, Cao, Vahdat & Kreis 2022): per-example gradients against one-example
autograd, clipped norms <= C, noise multiplicity dividing the diffusion-noise variance of a per-example gradient by
K (measured), the reported epsilon against opacus's accountant run step by step, the target-epsilon calibration,
training on 2-d data, resume, and errors before training."""
import math

import pytest
import torch

import controlsamp as cs
from controlsamp.generative import DiffusionModel, dpdm

D64 = torch.float64


def small_model(seed=0):
    return DiffusionModel(cs.processes.VP(2), hidden=16, depth=2, dtype=D64, seed=seed)


def one_example_grad(model, x0, t, eps):
    """Autograd of one example's loss (1/K) sum_k |eps_hat - eps_k|^2, alone."""
    model.network.zero_grad()
    K = t.shape[0]
    a, s = model.kernel.coefficients(t, K, x0[None])
    xt = a * x0[None] + s * eps
    e_hat = model.eps_hat(t, xt, use_ema=False)
    (((e_hat - eps) ** 2).sum(1).mean()).backward()
    return {k: p.grad.clone() for k, p in model.network.named_parameters()}


def test_per_example_grads_equal_one_example_autograd_and_clipping_bounds_them():
    model = small_model()
    g = torch.Generator().manual_seed(0)
    B, K = 6, 4
    x0 = torch.randn(B, 2, dtype=D64, generator=g)
    t = 1e-3 + 0.999 * torch.rand(B, K, dtype=D64, generator=g)
    eps = torch.randn(B, K, 2, dtype=D64, generator=g)
    per = dpdm.per_example_grads(model, x0, t, eps)
    for i in range(B):
        ref = one_example_grad(model, x0[i], t[i], eps[i])
        for k in ref:
            assert torch.allclose(per[k][i], ref[k], atol=1e-12, rtol=1e-10), k
    C = 0.5
    clipped, norms = dpdm.clip_per_example(per, C)
    after = torch.sqrt(sum((v.reshape(B, -1) ** 2).sum(1) for v in clipped.values()))
    assert bool((after <= C * (1 + 1e-9)).all()) and bool((norms > C).any())
    small = norms <= C
    assert torch.allclose(after[small], norms[small])  # gradients within the bound are left alone


def test_noise_multiplicity_divides_the_noise_variance_by_K():
    """For fixed examples, the variance of a per-example gradient over the diffusion noise (t, eps) with K = 8 is that
    with K = 1 divided by 8: over 300 replicates, the ratio of the summed variances lies within 8 / 1.4 .. 8 x 1.4
    (each variance estimate has relative standard error about sqrt(2 / 299) = 8% per coordinate, less summed);
    measured 7.25."""
    model = small_model()
    x0 = torch.tensor([[0.5, -1.0], [1.5, 0.2]], dtype=D64)
    g = torch.Generator().manual_seed(1)
    R = 300

    def draws(K):
        out = []
        for _ in range(R):
            t = 1e-3 + 0.999 * torch.rand(2, K, dtype=D64, generator=g)
            eps = torch.randn(2, K, 2, dtype=D64, generator=g)
            per = dpdm.per_example_grads(model, x0, t, eps)
            out.append(torch.cat([v.reshape(2, -1) for v in per.values()], 1))
        return torch.stack(out)  # (R, 2, P)

    v1, v8 = draws(1).var(0).sum(), draws(8).var(0).sum()
    ratio = float(v1 / v8)
    print("variance ratio K=1 / K=8:", ratio)
    assert 8 / 1.4 < ratio < 8 * 1.4


def test_reported_epsilon_is_the_accountants():
    """fit_private's epsilon after 30 steps equals opacus's RDPAccountant stepped 30 times by hand with the same
    sampling rate and noise multiplier (1e-9), and grows with the steps."""
    from opacus.accountants import RDPAccountant
    data = torch.randn(200, 2, dtype=D64, generator=torch.Generator().manual_seed(2))
    model = small_model()
    dpdm.fit_private(model, data, iters=30, batch=20, noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-5,
                     progress=False)
    acc = RDPAccountant()
    for _ in range(30):
        acc.step(noise_multiplier=1.1, sample_rate=0.1)
    assert abs(model.privacy["epsilon"] - acc.get_epsilon(delta=1e-5)) < 1e-9
    eps = model.history["epsilon"]
    assert len(eps) == 30 and all(b > a for a, b in zip(eps, eps[1:])) and abs(eps[-1] - model.privacy["epsilon"]) < 1e-12


def test_target_epsilon_sets_the_noise_multiplier():
    """The calibrated noise multiplier spends at most the target and (to the 0.01 step of opacus's search) not much
    less; an unreachable target is refused before training."""
    sigma = dpdm.noise_multiplier_for(1.0, 0.01, 500, 1e-5)
    spent = dpdm.epsilon_spent(sigma, 0.01, 500, 1e-5)
    assert spent <= 1.0 + 1e-9 and dpdm.epsilon_spent(sigma - 0.02, 0.01, 500, 1e-5) > spent
    model = small_model()
    data = torch.randn(100, 2, dtype=D64)
    before = [p.detach().clone() for p in model.network.parameters()]
    with pytest.raises(ValueError, match="cannot reach epsilon"):
        dpdm.fit_private(model, data, iters=10, batch=100, target_epsilon=1e-6, delta=1e-5, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.network.parameters()))


def test_dp_training_learns_a_gaussian_and_resumes(tmp_path):
    """DP-SGD at epsilon 10 on 5000 points of N(m, 0.25 I) (expected batch 100, 200 steps, K = 2, C = 1): the model's
    probability-flow samples have mean within 0.3 of m (an untrained model's samples sit near 0, |m| = 1.8);
    an interrupted run resumed from its checkpoint gives the same weights as the uninterrupted one."""
    m = torch.tensor([1.5, -1.0], dtype=D64)
    data = m + 0.5 * torch.randn(5000, 2, dtype=D64, generator=torch.Generator().manual_seed(3))
    model = DiffusionModel(cs.processes.VP(2), hidden=32, depth=2, dtype=D64, ema=0.99)
    dpdm.fit_private(model, data, iters=200, batch=100, target_epsilon=10.0, delta=1e-5, noise_multiplicity=2,
                     lr=3e-3, progress=False)
    assert model.privacy["epsilon"] <= 10.0 + 1e-9
    x, _ = cs.generative.pf_ode_sample(model, n=2000, method="heun", steps=50, generator=torch.Generator().manual_seed(4))
    print("DP mean", x.mean(0), "epsilon", model.privacy["epsilon"], "sigma", model.privacy["noise_multiplier"])
    assert float((x.mean(0) - m).abs().max()) < 0.3
    opts = dict(batch=50, noise_multiplier=1.0, progress=False)
    full = dpdm.fit_private(small_model(), data[:500], iters=6, **opts)
    ck = str(tmp_path / "ck.pt")
    dpdm.fit_private(small_model(), data[:500], iters=3, checkpoint=ck, **opts)
    resumed = dpdm.fit_private(small_model(), data[:500], iters=6, checkpoint=ck, resume=True, **opts)
    for a, b in zip(full.network.parameters(), resumed.network.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=10, noise_multiplier=1.0, delta=0.0), "delta"),
    (dict(sample_rate=1.5, noise_multiplier=1.0), "sample_rate"),
    (dict(batch=10, sample_rate=0.1, noise_multiplier=1.0), "exactly one of sample_rate"),
    (dict(batch=10), "exactly one of noise_multiplier and target_epsilon"),
    (dict(batch=10, noise_multiplier=-1.0), "noise_multiplier"),
    (dict(batch=10, noise_multiplier=1.0, max_grad_norm=0.0), "max_grad_norm"),
    (dict(batch=10, noise_multiplier=1.0, accountant="gdp"), "accountant"),
    (dict(batch=10, noise_multiplier=1.0, noise_multiplicity=0), "noise_multiplicity"),
    (dict(batch=10, target_epsilon=-1.0), "target_epsilon"),
])
def test_bad_privacy_parameters_are_refused_before_training(kwargs, match):
    model = small_model()
    with pytest.raises(ValueError, match=match):
        dpdm.fit_private(model, torch.randn(100, 2, dtype=D64), iters=5, progress=False, **kwargs)
    assert not model.history
