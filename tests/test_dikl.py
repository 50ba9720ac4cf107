"""DiKL (cs.samplers.DiKL, reverse diffusive KL): the posterior estimate of the noised target score against its
closed form for Gaussian targets, the surrogate's gradient against autograd of the closed-form diffusive KL of a
linear generator, training a linear generator to the target, errors, save / load."""
import math

import pytest
import torch

import controlsamp as cs
from controlsamp.samplers.dikl import posterior_score
from controlsamp.samplers.protocol import Sampler

D64 = torch.float64
M = torch.tensor([1.0, -0.5], dtype=D64)
S = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=D64)
I2 = torch.eye(2, dtype=D64)


def coefficients(t, beta_min=0.1, beta_max=20.0):
    """VP's kernel from its linear rate: log a^2 = -(beta_min t + (beta_max - beta_min) t^2 / 2), s2 = 1 - a^2."""
    log_a2 = -(beta_min * t + 0.5 * (beta_max - beta_min) * t * t)
    return math.exp(0.5 * log_a2), -math.expm1(log_a2)


def exact_noised_score(t, x, mean, cov, betas=(0.1, 20.0)):
    """The score of N(a mean, a^2 cov + s2 I) at rows x."""
    a, s2 = coefficients(t, *betas)
    return -torch.linalg.solve(a * a * cov + s2 * I2, (x - a * mean).T).T


class Linear(torch.nn.Module):
    def __init__(self, A, b):
        super().__init__()
        self.A = torch.nn.Parameter(torch.as_tensor(A, dtype=D64).clone())
        self.b = torch.nn.Parameter(torch.as_tensor(b, dtype=D64).clone())

    def forward(self, z):
        return z @ self.A.T + self.b


def diffusive_kl(model, A, b):
    """(1/L) sum_k w_k KL(q_k || p_k) in closed form, differentiable in (A, b); w_k = s2, 1 or 1 / a by the
    model's weighting."""
    total = 0.0
    betas = (model.reference.beta_min, model.reference.beta_max)
    for t in model.times.tolist():
        a, s2 = coefficients(t, *betas)
        w = {"sigma2": s2, "uniform": 1.0, "1/alpha": 1.0 / a}[model.weighting]
        Cq, Cp = a * a * A @ A.T + s2 * I2, a * a * S + s2 * I2
        dm = a * (M - b)
        kl = 0.5 * (torch.trace(torch.linalg.solve(Cp, Cq)) + dm @ torch.linalg.solve(Cp, dm) - 2
                    + torch.logdet(Cp) - torch.logdet(Cq))
        total = total + w * kl
    return total / model.levels


# ---------------------------------------------------------------------------------------------- 1. s_p estimate
@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 1.0])
def test_posterior_score_matches_gaussian_closed_form(t):
    """400 independent estimates at one (t, x_t) (16 particles, 20 MALA steps each): their mean matches
    -(a^2 S + s2 I)^{-1}(x_t - a m) within 4 standard errors plus a 2e-3 allowance for the estimator's bias
    (finite particles, short chains); measured deviations (seed 1) were <= 1.53 standard errors, <= 1.8e-3 absolute."""
    a, s2 = coefficients(t)
    x = torch.tensor([0.8, -0.2], dtype=D64)
    xt = x.repeat(400, 1)
    ev = cs.targets.TargetEvaluator(cs.targets.Gaussian(M, S))
    est, info = posterior_score(ev, xt, a, s2, particles=16, mala_steps=20, generator=torch.Generator().manual_seed(1))
    exact = exact_noised_score(t, x[None], M, S)[0]
    se = est.std(0) / math.sqrt(len(est))
    assert torch.all((est.mean(0) - exact).abs() < 4 * se + 2e-3), (est.mean(0), exact, se)
    assert 0.35 < info["accept"] < 0.8
    assert ev.evals == 400 * 16 * 21  # IS draws + one evaluation per MALA proposal


def test_posterior_score_exact_for_standard_normal():
    ev = cs.targets.TargetEvaluator(cs.targets.Gaussian(torch.zeros(3, dtype=D64), torch.eye(3, dtype=D64)))
    g = torch.Generator().manual_seed(0)
    xt = 3 * torch.randn(50, 3, dtype=D64, generator=g)
    for t in (0.01, 0.4, 1.0):
        a, s2 = cs.processes.VP(3).marginal_coefficients(torch.tensor(t, dtype=D64))
        est, _ = posterior_score(ev, xt, float(a), float(s2), particles=4, mala_steps=3, generator=g)
        assert torch.allclose(est, -xt, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- 2. the gradient
def _surrogate_grads(model, n, reps, seed, **scores):
    grads = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(reps):
        model.generator.zero_grad()
        loss, _ = model.surrogate_loss(n, g, **scores)
        loss.backward()
        grads.append(torch.cat([model.generator.A.grad.reshape(-1), model.generator.b.grad]).clone())
    return torch.stack(grads)


def _gradient_setup(levels=6, **options):
    A0 = torch.tensor([[0.7, 0.2], [-0.1, 1.3]], dtype=D64)
    b0 = torch.tensor([0.3, 0.4], dtype=D64)
    model = cs.samplers.DiKL(cs.targets.Gaussian(M, S), generator=Linear(A0, b0), levels=levels, t_min=0.05,
                             score_hidden=8, score_depth=1, posterior_particles=16, mala_steps=20, dtype=D64, **options)
    A, b = A0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    exact = torch.autograd.grad(diffusive_kl(model, A, b), [A, b])
    return model, torch.cat([exact[0].reshape(-1), exact[1]])


@pytest.mark.parametrize("options", [{}, dict(level_sampling="random", weighting="uniform"),
                                     dict(level_sampling="random", weighting="1/alpha", beta_min=0.003, beta_max=3.0)])
def test_surrogate_gradient_with_exact_scores_matches_diffusive_kl(options):
    """Autograd of the closed-form diffusive KL of x = A z + b vs the surrogate's gradient with the exact q_t and
    p_t scores: 20 replicates of 4000 draws, within 4 standard errors of their mean, for every level at each latent
    with weights s2 (measured: <= 1.85), and for one random level per latent with weights 1 and 1 / a (the latter
    on a VP of rate 0.003 -> 3, the DiKL code's kind of schedule; measured <= 0.62 and <= 1.06)."""
    model, exact = _gradient_setup(**options)
    A, b = model.generator.A.detach(), model.generator.b.detach()
    betas = (model.reference.beta_min, model.reference.beta_max)
    sq = lambda t, x: exact_noised_score(t, x, b, A @ A.T, betas)  # noqa: E731
    sp = lambda t, x: exact_noised_score(t, x, M, S, betas)  # noqa: E731
    grads = _surrogate_grads(model, 4000, 20, 0, score_q=sq, score_p=sp)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    assert torch.all((mean - exact).abs() < 4 * se), ((mean - exact) / se, exact)
    assert exact.abs().max() > 10 * se.max()  # the check has power: the gradient is far from 0 on this scale
    assert model.target_evals == 0


def test_surrogate_gradient_with_estimated_target_score():
    """The same with s_p estimated (posterior sampling): 10 replicates of 300 draws, within 4 standard errors plus
    3% of the gradient's scale for the estimator's bias (measured: <= 1.52 standard errors, 3.3e-3 absolute, on a
    gradient of scale 0.097)."""
    model, exact = _gradient_setup()
    A, b = model.generator.A.detach(), model.generator.b.detach()
    sq = lambda t, x: exact_noised_score(t, x, b, A @ A.T)  # noqa: E731
    grads = _surrogate_grads(model, 300, 10, 1, score_q=sq)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    assert torch.all((mean - exact).abs() < 4 * se + 0.03 * exact.abs().max()), ((mean - exact) / se, exact)
    assert model.target_evals == 10 * 6 * 300 * 16 * 21


def test_random_levels_cost_one_level_per_latent():
    """With one random level per latent a step evaluates the target batch x M x (1 + MALA steps) times, and the
    estimated-s_p gradient still matches the closed form (10 replicates of 1800 draws, 4 standard errors plus 3% of
    the gradient's scale, as above; measured <= 2.43 standard errors, 2.3e-3 absolute on a scale of 0.097)."""
    model, exact = _gradient_setup(level_sampling="random")
    A, b = model.generator.A.detach(), model.generator.b.detach()
    sq = lambda t, x: exact_noised_score(t, x, b, A @ A.T)  # noqa: E731
    grads = _surrogate_grads(model, 1800, 10, 2, score_q=sq)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    assert torch.all((mean - exact).abs() < 4 * se + 0.03 * exact.abs().max()), ((mean - exact) / se, exact)
    assert model.target_evals == 10 * 1800 * 16 * 21


# ---------------------------------------------------------------------------------------------- 3. training
def test_training_reduces_the_closed_form_diffusive_kl():
    """80 steps of the full algorithm (learned s_q, estimated s_p) from A = I, b = 0 cut the closed-form diffusive
    KL 0.104 to below 15% of it (measured over seeds 0, 1, 2: 6.0%, 7.5%, 0.8%; about 6 s)."""
    model = cs.samplers.DiKL(cs.targets.Gaussian(M, S), generator=Linear(I2, torch.zeros(2)), levels=6, t_min=0.02,
                             t_max=0.6, inner_steps=3, score_hidden=32, score_depth=2, posterior_particles=8,
                             mala_steps=10, dtype=D64)
    kl0 = float(diffusive_kl(model, I2, torch.zeros(2, dtype=D64)))
    model.fit(iters=80, batch=64, lr=3e-2, lr_score=3e-3, score_warmup=150, progress=False)
    kl = float(diffusive_kl(model, model.generator.A.detach(), model.generator.b.detach()))
    assert kl < 0.15 * kl0, (kl, kl0)


@pytest.mark.slow
def test_training_linear_generator_reaches_gaussian_target():
    """The full algorithm (learned s_q, estimated s_p) from A = I, b = 0: A A^T -> S, b -> m within 0.1 in every
    entry (about 40 s). The tolerance covers the noise of the last Adam steps at lr 1e-2 and the bias of the
    learned s_q; the measured errors are printed."""
    target = cs.targets.Gaussian(M, S)
    model = cs.samplers.DiKL(target, generator=Linear(I2, torch.zeros(2)), levels=10, t_min=0.02, t_max=0.6,
                             inner_steps=5, score_hidden=64, score_depth=2, posterior_particles=8, mala_steps=10,
                             dtype=D64)
    model.fit(iters=300, batch=128, lr=1e-2, lr_score=3e-3, score_warmup=200, progress=False)
    A, b = model.generator.A.detach(), model.generator.b.detach()
    cov_err = (A @ A.T - S).abs().max().item()
    mean_err = (b - M).abs().max().item()
    print(f"|AA^T - S|_max = {cov_err:.3f}, |b - m|_max = {mean_err:.3f}")
    assert cov_err < 0.1 and mean_err < 0.1
    x, log_w = model.sample(1000)
    assert x.shape == (1000, 2) and log_w.dtype == D64 and torch.isnan(log_w).all()
    assert set(model.history) >= {"loss", "fisher", "score_loss", "accept", "target_evals"}


@pytest.mark.slow
def test_two_mode_mixture_both_modes_covered():
    """A 1-d mixture of N(-2, 0.25) and N(2, 0.25), equal weights, default residual generator (300 steps, about
    30 s): both modes are covered. Measured: weight of x > 0 0.511, mode means 1.94 / -1.92, within-mode std
    0.73 / 0.68 (0.5 exact: not converged in 300 steps, so only the weights and means are checked)."""
    tg = cs.targets.GaussianMixture(torch.ones(2), torch.tensor([[-2.0], [2.0]]), 0.25 * torch.ones(2, 1, 1))
    model = cs.samplers.DiKL(tg, hidden=64, depth=2, levels=10, t_min=0.02, t_max=0.8, inner_steps=5,
                             score_hidden=64, score_depth=2, posterior_particles=8, mala_steps=10)
    model.fit(iters=300, batch=128, lr=3e-3, lr_score=3e-3, progress=False)
    x, _ = model.sample(4000)
    w = (x > 0).double().mean().item()
    assert 0.35 < w < 0.65
    assert abs(x[x > 0].mean().item() - 2) < 0.3 and abs(x[x < 0].mean().item() + 2) < 0.3


# ---------------------------------------------------------------------------------------------- 4. errors, I/O
@pytest.mark.parametrize("kwargs, name", [(dict(levels=0), "levels"), (dict(t_min=0.0), "t_min"),
                                          (dict(t_min=1.5), "t_min"), (dict(t_max=0.001, t_min=0.01), "t_max"),
                                          (dict(inner_steps=0), "inner_steps"),
                                          (dict(posterior_particles=0), "posterior_particles"),
                                          (dict(mala_steps=-1), "mala_steps"), (dict(levels=2.5), "levels"),
                                          (dict(weighting="sigma"), "weighting"),
                                          (dict(level_sampling="one"), "level_sampling"),
                                          (dict(beta_max=0.0), "beta_max")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        cs.samplers.DiKL(cs.targets.Gaussian(M, S), **kwargs)


def test_generator_of_another_dimension_is_refused():
    with pytest.raises(ValueError, match="dimension"):
        cs.samplers.DiKL(cs.targets.Gaussian(torch.zeros(3), torch.eye(3)), generator=Linear(I2, torch.zeros(2)))
    with pytest.raises(ValueError, match="generator"):
        cs.samplers.DiKL(cs.targets.Gaussian(M, S), generator=lambda z: z)
    with pytest.raises(ValueError, match="target"):
        cs.samplers.DiKL(lambda x: x)


def test_nan_energy_is_reported():
    bad = cs.targets.Target.from_log_prob(lambda x: torch.where(x[:, 0] > 0.0, torch.nan, -0.5 * (x * x).sum(1)), 2)
    model = cs.samplers.DiKL(bad, levels=3, inner_steps=1, score_hidden=8, score_depth=1, hidden=8, depth=1,
                             posterior_particles=4, mala_steps=2)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(iters=2, batch=8, score_warmup=0, progress=False)


def test_nan_generator_is_reported_with_the_iteration():
    class Breaks(torch.nn.Module):  # finite until Adam moves its weight by 2e-3 (a few steps at lr 1e-3)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, z):
            return z * self.w + torch.where((self.w[:1] - 1.0).abs() < 2e-3, 0.0, torch.nan)
    model = cs.samplers.DiKL(cs.targets.Gaussian(M + 3.0, S), generator=Breaks(), levels=3, inner_steps=1,
                             score_hidden=8, score_depth=1, posterior_particles=2, mala_steps=1)
    with pytest.raises(ValueError, match=r"the generator returned 64 non-finite samples of 64 \(at iteration [1-9]"):
        model.fit(iters=20, batch=64, score_warmup=0, progress=False)


def test_save_load_and_resume(tmp_path):
    def make():
        return cs.samplers.DiKL(cs.targets.Gaussian(M, S), levels=3, inner_steps=2, hidden=16, depth=1,
                                score_hidden=16, score_depth=1, posterior_particles=4, mala_steps=4)
    a = make().fit(iters=4, batch=16, score_warmup=2, progress=False)
    a.save(tmp_path / "m.pt")
    b = make().load(tmp_path / "m.pt")
    assert torch.equal(a.sample(10, seed=3)[0], b.sample(10, seed=3)[0])
    assert b.target_evals == a.target_evals > 0
    ck = tmp_path / "ck.pt"
    full = make().fit(iters=4, batch=16, score_warmup=2, progress=False)
    part = make().fit(iters=2, batch=16, score_warmup=2, progress=False, checkpoint=ck)
    resumed = make().fit(iters=4, batch=16, score_warmup=2, progress=False, checkpoint=ck, resume=True)
    assert torch.equal(full.sample(10)[0], resumed.sample(10)[0])
    assert full.history["loss"] == resumed.history["loss"] and part is not resumed
    with pytest.raises(ValueError, match="log Z"):
        a.log_Z()
    assert isinstance(a, Sampler) and not a.weighted and a.eubo_log_weights(None) is None


def test_evaluate_gives_the_sample_metrics_only():
    """train.evaluate on DiKL: W2 against exact samples equals metrics.w2 of the same sets; no log Z, ELBO, ESS or
    EUBO keys (the generator has no importance weights)."""
    from controlsamp import metrics, train
    tg = cs.targets.Gaussian(M, S)
    model = cs.samplers.DiKL(tg, levels=3, inner_steps=1, hidden=8, depth=1, score_hidden=8, score_depth=1,
                             posterior_particles=2, mala_steps=1)
    out, x = train.evaluate(model, n=300, seed=5)
    assert not {"log_Z", "elbo", "ess", "eubo", "delta_log_Z"} & set(out)
    truth = tg.sample(300, generator=torch.Generator().manual_seed(6))
    assert abs(out["w2"] - metrics.w2(x.double(), truth.double())) < 1e-6  # float32 sample sets
    assert torch.equal(x, model.sample(300, seed=5)[0])


@pytest.mark.slow
def test_far_mode_reached_from_a_start_on_the_other_mode():
    """A 1-d mixture of N(0, 0.25) and N(5, 0.25), equal weights: the generator starts as the identity, its law
    N(0, 1) on the mode at 0 (0.6% of it beyond the midpoint 2.5). DiKL (10 levels on [0.02, 0.8], 300 steps, about
    20 s) moves half the mass to the far mode. Measured (seeds 0, 1): weight beyond 2.5 0.510 / 0.504, mode means
    4.88 / 4.97 and 0.15 / 0.24.

    The issue's comparison ("DiKL covers both modes where plain reverse KL of the same generator collapses") was
    measured with the same machinery at one small level (levels=1, t_min=t_max=0.01: the t -> 0 term alone),
    same generator, seeds and budget, and did NOT show a collapse, so nothing is asserted about it: on this
    mixture the single-level weight beyond 2.5 was 0.431 / 0.638 (seeds 0, 1); on N(-2.5, 0.25) + N(2.5, 0.25)
    the smaller mode weight was 0.457 / 0.486 for one level and 0.494 / 0.490 for DiKL. The one-level runs are not
    a clean reverse KL either: after 30 / 100 steps (seed 0) 40% / 88% of the mass lay beyond 2.5 with mean 6.11 /
    7.06 (overshooting the mode at 5), so their spread comes from the noise of the learned s_q at t = 0.01 under
    Adam, not from mode covering."""
    tg = cs.targets.GaussianMixture(torch.ones(2), torch.tensor([[0.0], [5.0]]), 0.25 * torch.ones(2, 1, 1))
    model = cs.samplers.DiKL(tg, hidden=64, depth=2, levels=10, t_min=0.02, t_max=0.8, inner_steps=5,
                             score_hidden=64, score_depth=2, posterior_particles=8, mala_steps=10)
    model.fit(iters=300, batch=128, lr=3e-3, lr_score=3e-3, progress=False)
    x, _ = model.sample(4000)
    w = (x > 2.5).double().mean().item()
    print(f"weight beyond 2.5 {w:.3f}, means {x[x > 2.5].mean().item():.2f} / {x[x < 2.5].mean().item():.2f}")
    assert 0.3 < w < 0.7
    assert abs(x[x > 2.5].mean().item() - 5) < 0.4 and abs(x[x < 2.5].mean().item()) < 0.4
