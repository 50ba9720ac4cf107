"""Diffusion samplers: Girsanov bookkeeping, integrators, backward paths, every loss, off-policy, API."""
from __future__ import annotations

import math

import pytest
import torch

import controlsamp as cs
from controlsamp.control.objectives import Batch
from controlsamp.sde import GridBrownian, path_costs
from controlsamp.training import Streams


def torchsde_costs(s, x0, xi, adjoint=False, stl=False):
    """Per-path c_T + g(X_T) of torchsde's Euler on the sampler's problem, driven by the increments sqrt(h) xi."""
    bm = GridBrownian(math.sqrt(s.reference.h) * xi.transpose(0, 1), s.T)
    pr = s.problem
    return path_costs(pr, pr.control_fn(s.policy), x0, 0, list(s.policy.parameters()), "euler", adjoint,
                      pr.control_fn(s.policy, frozen=True) if stl else None, bm=bm)
from sampler_helpers import FollmerControl, ess, gaussian_target, interrupt_on_call, two_mode_mixture


def test_same_noise_same_path_grid_and_torchsde():
    """Our Euler step and torchsde's Euler scheme, driven by the same increments, give the same path (PIS
    and DDS with scheme='euler'): the terminal costs -(c_T + g) are the per-path log-weights of sample() with
    the sticking-the-landing Itô term."""
    tgt = gaussian_target(3)
    for sampler in (cs.samplers.PIS(tgt, steps=20, sigma=1.3, dtype=torch.float64),
                    cs.samplers.DDS(tgt, steps=20, scheme="euler", dtype=torch.float64)):
        xi = torch.randn(16, 20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        paths = sampler.simulate(16, torch.Generator().manual_seed(1), noise=xi)
        with torch.no_grad():
            cost = torchsde_costs(sampler, paths.xs[:, 0], xi, stl=True)
            lw = sampler.log_weights(paths)
        assert torch.allclose(-cost, lw, atol=1e-9, rtol=0)


def test_sticking_the_landing_cost_is_the_path_log_weight():
    """With stl, torchsde's cost c_T = sum |u|^2 h / 2 + u . dW (the parameters held fixed in the Itô term) is
    the discrete Girsanov log-ratio, so -(c_T + log p_ref(X_T) - log pi~(X_T)) equals the grid's per-path log
    w for the same noise (PIS, float64), with or without the adjoint; without stl the Itô term is missing."""
    tgt = gaussian_target(2)
    s = cs.samplers.PIS(tgt, steps=10, sigma=0.7, dtype=torch.float64, seed=3)
    with torch.no_grad():
        for p in s.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    xi = torch.randn(64, 10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    paths = s.simulate(64, torch.Generator().manual_seed(1), noise=xi)
    with torch.no_grad():
        lw = s.log_weights(paths)
    for adjoint in (False, True):
        cost = torchsde_costs(s, paths.xs[:, 0], xi, adjoint=adjoint, stl=True)
        assert torch.allclose(-cost.detach(), lw, atol=1e-9, rtol=0)
        cost.sum().backward()  # the general-noise adjoint runs through
        assert all(torch.isfinite(p.grad).all() for p in s.policy.parameters())
        s.policy.zero_grad()
    with torch.no_grad():
        cost = torchsde_costs(s, paths.xs[:, 0], xi)
    assert (cost + lw).abs().max() > 1e-2


def test_sticking_the_landing_gradient_vanishes_at_the_optimum():
    """At the optimal control log w is constant along every path, so the stl gradient of the kl loss is
    zero path by path, while the plain pathwise gradient is not. The exact Föllmer control for a Gaussian
    target is affine, u*(t, x) = a(t) x (PIS, sigma = 1): a policy a(t) x + theta . x with a trainable theta
    (0 at the optimum) on a fine grid; the stl gradient in theta is O(h)-small, the plain one is a mean-zero
    noise of size O(1 / sqrt(batch))."""
    tgt = gaussian_target(2)
    fol = cs.exact.SchrodingerFollmer(tgt)

    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
            self.base = FollmerControl(fol)

        def forward(self, t, x):
            return self.base(t, x) + self.theta * x

    grads = {}
    for stl in (False, True):
        s = cs.samplers.PIS(tgt, steps=200, policy=Shifted(), dtype=torch.float64)
        kl = cs.control.get_objective("kl", stl=stl, adjoint=False)
        value, _ = kl(s.problem, s.policy, Batch(256, Streams(5), 5, dtype=torch.float64))
        value.backward()
        grads[stl] = s.policy.theta.grad.norm().item()
    # measured: plain 7.1e-3 (a mean-zero noise term, ~ 1/sqrt(batch)), stl 1.2e-4 (the O(h) gap between
    # the continuous optimum and the discrete one)
    assert grads[True] < 0.1 * grads[False], grads


def test_pis_log_weight_is_discrete_girsanov():
    """For the Brownian reference, log w = log pi~(x_K) - log N(x_K; 0, s^2 T) - sum u.dW - h/2 sum |u|^2."""
    tgt = gaussian_target(2)
    s = cs.samplers.PIS(tgt, steps=10, sigma=0.7, dtype=torch.float64, seed=3)
    with torch.no_grad():
        for p in s.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    paths = s.simulate(50, torch.Generator().manual_seed(0))
    xs, xi, feats = paths.xs, paths.noise, paths.features
    with torch.no_grad():
        lw = s.log_weights(paths)
        h, gir = s.reference.h, 0.0
        for i in range(10):
            u = s.policy(i * h, xs[:, i], feats[:, i])
            gir = gir - (u * math.sqrt(h) * xi[:, i]).sum(1) - 0.5 * h * (u * u).sum(1)
        ref = torch.distributions.Normal(0.0, 0.7).log_prob(xs[:, -1]).sum(1)
    assert torch.allclose(lw, tgt.log_prob(xs[:, -1]) - ref + gir, atol=1e-9)


@pytest.mark.parametrize("target", ["gaussian", "mixture"])
def test_exact_follmer_control_gives_ess_near_one(target):
    """The exact Schrödinger–Föllmer control in the sampler: ESS -> 1 as the step shrinks (the weights are
    those of the discrete sampler, the drift the continuous optimum: the gap is the O(h) discretisation)."""
    tgt = gaussian_target(2) if target == "gaussian" else cs.targets.get("gmm25")
    fol = cs.exact.SchrodingerFollmer(tgt)
    out = {}
    for steps in (100, 400):
        s = cs.samplers.PIS(tgt, steps=steps, policy=FollmerControl(fol), dtype=torch.float64)
        x, lw = s.sample(4000, seed=0)
        out[steps] = ess(lw)
        # log Z = 0: the importance estimate within 5 delta-method standard errors
        w = torch.exp(lw)
        se = float(w.std() / (w.mean() * math.sqrt(len(w))))
        assert abs(float(torch.logsumexp(lw, 0)) - math.log(len(lw))) < 5 * se + 1e-3
    if target == "gaussian":
        assert out[100] > 0.99
    assert 1 - out[400] < 0.4 * (1 - out[100])  # first order in h: (1 - ESS) falls about 4x


@pytest.mark.parametrize("kind", ["pis", "dds"])
def test_backward_paths_follow_the_reference_reversal(kind):
    """Backward paths from terminal samples have the reference's conditional moments: for PIS the Brownian
    bridge to 0 (mean t/T x_T, variance s^2 t (T - t)/T); for DDS from stationary samples, variance s^2."""
    tgt = gaussian_target(2)
    n, sigma = 20000, 1.4
    s = (cs.samplers.PIS(tgt, steps=10, sigma=sigma) if kind == "pis" else
         cs.samplers.DDS(tgt, steps=10, sigma=sigma))
    gen = torch.Generator().manual_seed(0)
    xK = torch.full((n, 2), 2.0) if kind == "pis" else sigma * torch.randn(n, 2, generator=gen)
    xs = s.problem.backward_paths(xK, torch.zeros(n), gen).xs
    for i in (0, 3, 7):
        t = i * s.reference.h
        mean = (t / s.T) * 2.0 if kind == "pis" else 0.0
        var = sigma ** 2 * t * (s.T - t) / s.T if kind == "pis" else sigma ** 2
        m, v = xs[:, i].mean(0), xs[:, i].var(0)
        if var == 0:
            assert torch.all(xs[:, i] == 0)
            continue
        assert torch.all((m - mean).abs() < 5 * math.sqrt(var / n))
        assert torch.all((v - var).abs() < 5 * var * math.sqrt(2 / n))


@pytest.mark.parametrize("loss", ["kl", "lv", "tb", "vargrad"])
def test_every_loss_decreases_and_improves_log_Z(loss):
    """A short run on a 2-d Gaussian: the loss falls and the ELBO gap |ELBO - log Z| shrinks."""
    tgt = gaussian_target(2)
    s = cs.samplers.PIS(tgt, steps=20, sigma=1.0)
    _, lw0 = s.sample(2000, seed=5)
    s.fit(120 if loss == "kl" else 200, batch=128, loss=loss, lr=3e-3, progress=False, seed=1)
    _, lw1 = s.sample(2000, seed=5)
    h = s.history["loss"]
    assert sum(h[-20:]) / 20 < 0.5 * sum(h[:5]) / 5 if loss != "kl" else sum(h[-20:]) / 20 < sum(h[:5]) / 5
    gap0, gap1 = -float(lw0.mean()), -float(lw1.mean())  # log Z = 0: -ELBO = KL(P^u | P*)
    assert gap1 < 0.3 * gap0
    assert ess(lw1) > ess(lw0)
    if loss == "tb":  # the learned log Z approaches the true one
        assert abs(s.history["log_Z_param"][-1]) < 0.1


def test_dds_and_dis_train_on_a_gaussian():
    tgt = gaussian_target(2)
    for cls in (cs.samplers.DDS, cs.samplers.DIS):
        s = cls(tgt, steps=20)
        _, lw0 = s.sample(2000, seed=5)
        s.fit(200, batch=128, loss="tb", lr=3e-3, progress=False)
        _, lw1 = s.sample(2000, seed=5)
        assert -float(lw1.mean()) < 0.3 * -float(lw0.mean())


def test_untrained_dis_is_the_reference():
    """DIS's network is the score's residual from the reference's marginal score -x / sigma^2, so a zero network
    is the zero control: the untrained DIS draws DDS's untrained paths (the reference, u = 0) to float32 round-off,
    where a zero score would expand the prior (the reversed VP drift +beta x / 2)."""
    tgt = gaussian_target(3)
    dis, dds = cs.samplers.DIS(tgt, steps=25, sigma=1.7), cs.samplers.DDS(tgt, steps=25, sigma=1.7)
    x = 5.0 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    for t in (0.0, 0.3, 0.96):
        assert float(dis.policy(t, x).detach().abs().max()) < 1e-5
    xs, lw = dis.sample(4000, seed=3)
    xd, lwd = dds.sample(4000, seed=3)
    torch.testing.assert_close(xs, xd, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lw, lwd, rtol=1e-5, atol=1e-4)
    # the reference's terminal law N(0, sigma^2 I): sample variance within 5 standard errors (sd sqrt(2 / n) s^2)
    n = xs.shape[0]
    assert float((xs.var(0) - 1.7 ** 2).abs().max()) < 5 * math.sqrt(2.0 / n) * 1.7 ** 2


def test_off_policy_training_with_buffer_and_local_search():
    """Exploration, a replay buffer (backward paths every other step) and MALA local search: it trains,
    counts every energy evaluation, and the buffer holds MALA samples."""
    tgt = two_mode_mixture()
    s = cs.samplers.PIS(tgt, steps=20)
    _, lw0 = s.sample(2000, seed=5)
    s.target_evals = 0
    s.fit(200, batch=64, loss="tb", lr=3e-3, explore=0.5, buffer=1000, local_search_every=20,
          local_search_steps=5, progress=False)
    evals = s.target_evals
    _, lw1 = s.sample(2000, seed=5)
    assert -float(lw1.mean()) < 0.5 * -float(lw0.mean())
    assert sum(s.history["backward"]) == 100  # every odd iteration once the buffer holds a batch
    # energy evaluations: forward iterations 64 * (20 scores + 1 reward); backward 64 * 20 scores;
    # local search 10 rounds of 64 * (1 + 5) evaluations of the log-density with its score (one pass each)
    expected = 100 * 64 * 21 + 100 * 64 * 20 + 10 * 64 * 6
    assert evals == expected


def test_local_search_buffer_is_the_only_start_of_backward_paths(tmp_path, monkeypatch):
    """With ``local_search_buffer`` (Sendera et al.'s buffer_ls) the local searches keep every MALA state after
    the burn-in in a second buffer, the backward paths start from it alone, and the first buffer holds the model's
    samples only. The energy evaluations are counted as before."""
    from controlsamp.training import read_checkpoint
    tgt = two_mode_mixture()
    s = cs.samplers.PIS(tgt, steps=20)
    starts = []
    real = s.problem.backward_paths

    def recording(xK, *args, **kwargs):
        starts.append(xK.detach().clone())
        return real(xK, *args, **kwargs)
    monkeypatch.setattr(s.problem, "backward_paths", recording)
    _, lw0 = s.sample(2000, seed=5)
    s.target_evals = 0
    ck = str(tmp_path / "ck.pt")
    s.fit(200, batch=64, loss="vargrad", lr=3e-3, explore=0.5, buffer=100_000, local_search_every=20,
          local_search_steps=5, local_search_burn_in=2, local_search_buffer=100_000, checkpoint=ck, progress=False)
    evals = s.target_evals
    _, lw1 = s.sample(2000, seed=5)
    assert -float(lw1.mean()) < 0.5 * -float(lw0.mean())
    # the first search ends iteration 19; backward paths on the odd iterations 21, ..., 199 once it holds a batch
    assert sum(s.history["backward"]) == 90 and len(starts) == 90
    modules = read_checkpoint(ck)["modules"]
    found, model = modules["local_search_buffer"]["x"], modules["buffer"]["x"]
    assert found.shape == (10 * 64 * (5 - 2), 2) and model.shape == (110 * 64, 2)
    found_rows = {tuple(r) for r in found.tolist()}
    assert all(tuple(r) in found_rows for x in starts for r in x.tolist())
    # (a chain that rejects every move after the burn-in keeps its start, a row of the first buffer)
    assert len(found_rows - {tuple(r) for r in model.tolist()}) > 0.5 * len(found_rows)
    # forward iterations 64 * (20 scores + 1 reward), backward 64 * 20 scores, 10 searches 64 * (1 + 5)
    assert evals == 110 * 64 * 21 + 90 * 64 * 20 + 10 * 64 * 6
    for bad, match in ((dict(local_search_burn_in=5), "local_search_burn_in"),
                       (dict(local_search_burn_in=-1), "local_search_burn_in"),
                       (dict(local_search_buffer=-3), "local_search_buffer")):
        with pytest.raises(ValueError, match=match):
            s.fit(2, batch=8, loss="tb", buffer=16, local_search_every=1, local_search_steps=5, progress=False,
                  **bad)
    with pytest.raises(ValueError, match="local_search_every"):
        s.fit(2, batch=8, loss="tb", buffer=16, local_search_buffer=16, progress=False)


def test_resume_reproduces_a_straight_run(tmp_path):
    """Interrupt a run (Ctrl-C at iteration 14), resume it from the checkpoint: the parameters, the learned
    log Z and the energy-evaluation count equal those of an uninterrupted run."""
    tgt = gaussian_target(2)
    kw = dict(batch=32, loss="tb", lr=3e-3, progress=False, buffer=200, explore=0.2, local_search_every=5,
              local_search_steps=2, lr_schedule="cosine")
    a = cs.samplers.PIS(tgt, steps=10).fit(20, **kw)
    ck = str(tmp_path / "ck.pt")
    b = cs.samplers.PIS(tgt, steps=10)
    interrupt_on_call(b, "simulate", 8)  # forward steps are the even iterations: the 8th call is iteration 14
    with pytest.raises(KeyboardInterrupt):
        b.fit(20, checkpoint=ck, checkpoint_every=5, **kw)
    assert torch.load(ck, weights_only=False)["iteration"] == 14
    c = cs.samplers.PIS(tgt, steps=10).fit(20, checkpoint=ck, resume=True, **kw)
    for p, q in zip(a.policy.parameters(), c.policy.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(a.objective.log_Z, c.objective.log_Z)
    assert a.target_evals == c.target_evals
    assert a.history["loss"] == c.history["loss"]


def test_save_load_and_drift(tmp_path):
    tgt = gaussian_target(2)
    s = cs.samplers.PIS(tgt, steps=10).fit(5, batch=16, progress=False)
    path = str(tmp_path / "pis.pt")
    s.save(path)
    r = cs.samplers.PIS(tgt, steps=10).load(path)
    x = torch.randn(7, 2)
    assert torch.equal(s.drift(0.3, x), r.drift(0.3, x))
    assert r.history == s.history
    with pytest.raises(ValueError, match="config"):
        cs.samplers.PIS(tgt, steps=11).load(path)
    with pytest.raises(ValueError, match="t must lie"):
        s.drift(1.5, x)


def test_errors_name_the_argument():
    tgt = gaussian_target(2)
    s = cs.samplers.PIS(tgt, steps=10)
    with pytest.raises(ValueError, match="loss"):
        s.fit(1, loss="nope")
    with pytest.raises(ValueError, match="on-policy"):
        s.fit(1, loss="kl", buffer=10)
    with pytest.raises(ValueError, match="sigma"):
        cs.samplers.PIS(tgt, sigma=-1.0)
    with pytest.raises(ValueError, match="target"):
        cs.samplers.PIS(lambda x: x)
    bad = cs.targets.Target.from_log_prob(lambda x: torch.where(x[:, 0] > 0, float("nan"), 0.0) * x[:, 0], 2)
    with pytest.raises(ValueError, match="NaN"):
        cs.samplers.PIS(bad, steps=5, langevin=False).sample(100)


# ------------------------------------------------------------------------------------ issue 14 regressions
def test_default_dtype_follows_torch_and_explicit_dtype_wins():
    tgt = gaussian_target(2)
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        for cls in (cs.samplers.PIS, cs.samplers.DDS, cs.samplers.ASBS):
            x, _ = cls(tgt, steps=4, hidden=8).sample(3)
            assert x.dtype == torch.float64, cls.__name__
        x, _ = cs.samplers.PIS(tgt, steps=4, hidden=8, dtype=torch.float32).sample(3)
        assert x.dtype == torch.float32
    finally:
        torch.set_default_dtype(old)
    assert cs.samplers.PIS(tgt, steps=4, hidden=8).sample(3)[0].dtype == old


@pytest.mark.parametrize("cls", [cs.samplers.PIS, cs.samplers.DDS])
def test_constant_energy_trains_and_samples(cls):
    """pi~ = e^0 (x-independent): its score is 0, so the off-policy, kl and am objectives run (they used to
    fail with "element 0 of tensors does not require grad"); with the Gaussian reference the optimal control
    the importance weights stay finite."""
    flat = cs.targets.Target.from_log_prob(lambda x: torch.zeros(x.shape[0], dtype=x.dtype), 2)
    s = cls(flat, steps=4, hidden=8)
    for loss in ("tb", "kl", "am"):
        s.fit(iters=2, batch=8, loss=loss, progress=False)
    x, lw = s.sample(16)
    assert torch.isfinite(x).all() and torch.isfinite(lw).all()


def test_numpy_energy_is_refused_when_the_objective_differentiates_it():
    """kl backpropagates through log pi~(X_K): an energy computed through numpy would train silently with a
    wrong (zero) gradient; it is refused with a message that says to write it in torch."""
    numpy_energy = cs.targets.Target.from_log_prob(
        lambda x: torch.as_tensor(-0.5 * (x.detach().numpy() ** 2).sum(1), dtype=x.dtype), 2)
    s = cs.samplers.PIS(numpy_energy, steps=4, hidden=8, langevin=False)
    s.fit(iters=2, batch=8, loss="tb", progress=False)  # log w needs values only: fine
    with pytest.raises(ValueError, match="torch"):
        s.fit(iters=2, batch=8, loss="kl", progress=False)


@pytest.mark.parametrize("kwargs, name", [(dict(hidden=0), "hidden"), (dict(depth=-1), "depth"),
                                          (dict(steps=2.5), "steps"), (dict(seed=1.5), "seed"),
                                          (dict(device="gpu"), "device"), (dict(dtype=torch.int64), "dtype")])
def test_bad_constructor_counts_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        cs.samplers.PIS(gaussian_target(2), **kwargs)


@pytest.mark.parametrize("kwargs, name", [(dict(grad_clip=0), "grad_clip"), (dict(grad_clip=-1.0), "grad_clip"),
                                          (dict(buffer=-5), "buffer"), (dict(local_search_steps=-1),
                                                                          "local_search_steps"),
                                          (dict(iters=2.5), "iters"), (dict(batch=8.0), "batch"),
                                          (dict(checkpoint_every=0), "checkpoint_every")])
def test_bad_fit_arguments_name_the_argument(kwargs, name):
    s = cs.samplers.PIS(gaussian_target(2), steps=4, hidden=8)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        s.fit(**{"iters": 1, "batch": 4, "progress": False, **kwargs})
    assert s.history == {}  # refused before any step


def test_none_grad_clip_means_no_clipping_and_a_positive_one_clips():
    s = cs.samplers.PIS(gaussian_target(2), steps=4, hidden=8)
    s.fit(iters=2, batch=8, grad_clip=None, progress=False)
    s.fit(iters=2, batch=8, grad_clip=1e-3, progress=False)
