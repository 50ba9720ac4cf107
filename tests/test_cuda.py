"""GPU readiness (issue 19): training, sampling, checkpoints and metrics on ``device="cuda"``.

The tests marked ``cuda`` run only where ``torch.cuda.is_available()`` (``benchmarks/gpu_check.sh`` runs them:
``pytest -p no:xdist -m cuda tests/test_cuda.py``). CUDA and CPU draw different random streams, so each one
checks a deterministic quantity against the CPU (the same weights applied to the same points or paths) or a
statistic against an exact value within a CLT band, never a bare "it ran". The unmarked tests run on a machine
without CUDA and check that asking for it is a ValueError that names ``device``.

Tolerances of the CPU/GPU comparisons: float32 networks evaluated in another summation order (cuBLAS against
MKL) agree to a few float32 roundings per layer, relative 1e-6 to 1e-5; a path log-weight sums K such terms of
size O(10) in float64, so 1e-3 absolute plus 1e-4 relative is a wide margin that a wrong coefficient, a
dropped step or a mismatched noise (errors of order 1) would still break. float64 closed forms agree to 1e-9.
TF32 is switched off for these tests (``torch.set_float32_matmul_precision("highest")``, torch's default), so
that float32 products are full float32 on the GPU too.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import controlsamp as cs
from controlsamp.control import Paths

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (run by benchmarks/gpu_check.sh)")
F64 = torch.float64


@pytest.fixture(autouse=True)
def _full_float32_matmul():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def gaussian_target(d: int = 3, seed: int = 0) -> cs.targets.Gaussian:
    g = torch.Generator().manual_seed(seed)
    A = 0.3 * torch.randn(d, d, generator=g, dtype=F64)
    return cs.targets.Gaussian(torch.linspace(-1.0, 1.0, d, dtype=F64) + 0.5, A @ A.T + 0.5 * torch.eye(d, dtype=F64))


def cuda_gen(seed: int) -> torch.Generator:
    return torch.Generator(device="cuda").manual_seed(seed)


def cpu_copy_of(sampler, make, tmp_path):
    """``make()`` (the same sampler on the CPU) loaded from a file that ``sampler`` (on the GPU) wrote."""
    path = str(tmp_path / "model.pt")
    sampler.save(path)
    return make().load(path)


def assert_close(gpu: torch.Tensor, cpu: torch.Tensor, atol: float, rtol: float) -> None:
    assert gpu.device.type == "cuda", gpu.device
    diff = (gpu.cpu() - cpu).abs()
    bound = atol + rtol * cpu.abs()
    assert bool((diff <= bound).all()), f"max |gpu - cpu| = {float(diff.max()):.3g} (bound {atol} + {rtol} |cpu|)"


SAMPLERS = {"PIS": cs.samplers.PIS, "DDS": cs.samplers.DDS}


# ------------------------------------------------------------------------------------------------ samplers
@cuda
@needs_cuda
@pytest.mark.parametrize("loss", ["tb", "lv", "kl"])
@pytest.mark.parametrize("name", ["PIS", "DDS"])
def test_sampler_trains_on_cuda_and_its_weights_match_the_cpu(name, loss, tmp_path):
    """A few iterations of each loss on the GPU; then the log-weights of given paths under the trained network
    agree between the GPU and a CPU copy of it, both for paths the CPU drew (the policy evaluated along them) and
    for paths the GPU drew (the log-ratio accumulated during the GPU rollout against the CPU's recomputation)."""
    target = gaussian_target(3)
    cls = SAMPLERS[name]
    s = cls(target, steps=20, hidden=32, seed=0, device="cuda")
    init = [p.detach().cpu().clone() for p in s.policy.parameters()]
    # the initialisation does not depend on the device (drawn on the CPU, then moved)
    fresh = cls(target, steps=20, hidden=32, seed=0).policy.parameters()
    assert all(torch.equal(a, b.detach()) for a, b in zip(init, fresh))
    s.fit(iters=5, batch=64, loss=loss, progress=False)
    assert all(p.device.type == "cuda" for p in s.policy.parameters())
    assert len(s.history["loss"]) == 5 and np.isfinite(s.history["loss"]).all()
    assert any(not torch.equal(a, p.detach().cpu()) for a, p in zip(init, s.policy.parameters()))
    c = cpu_copy_of(s, lambda: cls(target, steps=20, hidden=32, seed=0), tmp_path)
    for a, p in zip(c.policy.parameters(), s.policy.parameters()):
        assert torch.equal(a.detach(), p.detach().cpu())
    # paths drawn on the CPU, weighed on both devices
    pc = c.simulate(256, torch.Generator().manual_seed(1))
    with torch.no_grad():
        lw_cpu = c.log_weights(Paths(pc.xs, log_reward=pc.log_reward))
        lw_gpu = s.log_weights(Paths(pc.xs.cuda(), log_reward=pc.log_reward.cuda()))
    assert lw_gpu.dtype == F64
    assert_close(lw_gpu, lw_cpu, atol=1e-3, rtol=1e-4)
    # paths drawn on the GPU: the rollout's own log-ratio against the CPU's evaluation of the same paths
    pg = s.simulate(256, cuda_gen(2))
    assert pg.xs.device.type == "cuda"
    with torch.no_grad():
        lw_gpu = s.log_weights(pg)
        lw_cpu = c.log_weights(Paths(pg.xs.cpu(), log_reward=pg.log_reward.cpu()))
    assert_close(lw_gpu, lw_cpu, atol=1e-3, rtol=1e-4)


@cuda
@needs_cuda
@pytest.mark.parametrize("name, loss", [("PIS", "tb"), ("DDS", "lv")])
def test_replay_buffer_and_local_search_on_cuda(name, loss):
    """Exploration, a replay buffer with backward paths and MALA local search on the GPU: the run trains on
    backward paths every other iteration once the buffer is full enough, and it spends exactly the target
    evaluations of the same run on the CPU (the schedule of evaluations does not depend on the random streams)."""
    target = gaussian_target(2)
    kw = dict(steps=10, hidden=16, seed=0)
    fit = dict(iters=8, batch=32, loss=loss, explore=0.5, buffer=256, local_search_every=2, local_search_steps=3,
               backward_every=2, progress=False)
    g = SAMPLERS[name](target, device="cuda", **kw).fit(**fit)
    c = SAMPLERS[name](target, **kw).fit(**fit)
    assert np.isfinite(g.history["loss"]).all()
    assert sum(g.history["backward"]) >= 2, g.history["backward"]
    assert g.history["backward"] == c.history["backward"]
    assert g.target_evals == c.target_evals > 0


@cuda
@needs_cuda
@pytest.mark.parametrize("name", ["PIS", "DDS"])
def test_sample_on_cuda_is_exact_when_the_target_is_the_reference_law(name):
    """Untrained (zero control), PIS and DDS with sigma = 1 sample their reference, whose law at T is N(0, I): for
    the target N(0, I) every log-weight is 0 (float32 paths: |log w| < 1e-4) and the samples have mean 0 and
    variance 1 within 5 standard errors (1 / sqrt(n) and sqrt(2 / n))."""
    d, n = 2, 20_000
    target = cs.targets.Gaussian(torch.zeros(d), torch.eye(d))
    s = SAMPLERS[name](target, steps=10, hidden=16, device="cuda")
    x, lw = s.sample(n, seed=0)
    assert x.device.type == "cuda" and lw.device.type == "cuda" and lw.dtype == F64
    assert float(lw.abs().max()) < 1e-4
    x = x.double().cpu()
    assert float(x.mean(0).abs().max()) < 5 / math.sqrt(n)
    assert float((x.var(0) - 1).abs().max()) < 5 * math.sqrt(2 / n)
    assert abs(s.log_Z(n=4000, seed=1)) < 1e-4


@cuda
@needs_cuda
def test_save_on_cuda_load_on_cpu_and_back(tmp_path):
    """A trained GPU sampler saved and loaded on the CPU holds the same weights and learned log Z, and its drift at
    given points agrees with the GPU's; a CPU file loads onto the GPU the same way."""
    target = gaussian_target(2)
    kw = dict(steps=10, hidden=16, seed=0)
    g = cs.samplers.PIS(target, device="cuda", **kw).fit(iters=4, batch=32, loss="tb", progress=False)
    path = str(tmp_path / "gpu.pt")
    g.save(path)
    c = cs.samplers.PIS(target, **kw).load(path)
    assert c.objective.name == g.objective.name
    assert float(c.objective.log_Z.detach()) == float(g.objective.log_Z.detach())
    assert c.history == g.history
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    for t in (0.0, 0.35, 0.9):
        assert_close(g.drift(t, x.cuda()), c.drift(t, x), atol=1e-5, rtol=1e-5)
    path2 = str(tmp_path / "cpu.pt")
    c.save(path2)
    g2 = cs.samplers.PIS(target, device="cuda", **kw).load(path2)
    assert all(p.device.type == "cuda" for p in g2.policy.parameters())
    for a, b in zip(g2.policy.parameters(), c.policy.parameters()):
        assert torch.equal(a.detach().cpu(), b.detach())


# ------------------------------------------------------------------------------------ generative models
def _mixture():
    return cs.exact.NoisedMixture(cs.processes.VP(2), [0.3, 0.7], [[-1.5, 0.5], [1.0, -0.5]],
                                  [[[0.2, 0.0], [0.0, 0.2]], [[0.3, 0.1], [0.1, 0.2]]])


@cuda
@needs_cuda
def test_diffusion_model_fits_and_samples_on_cuda(tmp_path):
    """DiffusionModel on the GPU: a few denoising score-matching steps, then the learned score at given (t, x)
    and the deterministic Heun probability-flow samples from given x_T agree with a CPU copy of the weights;
    the stochastic Euler sampler and the ODE likelihood run on the GPU."""
    mix = _mixture()
    data = mix.sample(0.0, 4000, generator=torch.Generator().manual_seed(0))
    kw = dict(hidden=32, depth=2, seed=0)
    m = cs.generative.DiffusionModel(cs.processes.VP(2), device="cuda", **kw)
    m.fit(data, iters=20, batch=256, lr=3e-3, progress=False)
    assert np.isfinite(m.history["loss"]).all()
    c = cpu_copy_of(m, lambda: cs.generative.DiffusionModel(cs.processes.VP(2), **kw), tmp_path)
    x = data[:128].float()
    for t in (0.01, 0.5, 1.0):
        assert_close(m.score(t, x.cuda()), c.score(t, x), atol=1e-4, rtol=1e-4)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    xg, _ = cs.generative.sample(m, x_T=x_T.cuda(), sampler="heun", steps=20)
    xc, _ = cs.generative.sample(c, x_T=x_T, sampler="heun", steps=20)
    assert_close(xg, xc, atol=1e-3, rtol=1e-3)
    xs, info = cs.generative.sample(m, 1000, sampler="euler", steps=50, generator=cuda_gen(0))
    assert xs.device.type == "cuda" and xs.shape == (1000, 2) and bool(torch.isfinite(xs).all())
    # the likelihood (adaptive Dormand-Prince, rtol = atol = 1e-5) returns float64 on the CPU for either device
    ll = cs.generative.log_likelihood(m, data[:64].cuda())
    ll_c = cs.generative.log_likelihood(c, data[:64])
    torch.testing.assert_close(ll.cpu(), ll_c, atol=1e-3, rtol=1e-3)


@cuda
@needs_cuda
def test_exact_score_samples_on_cuda_as_on_the_cpu():
    """The closed-form score of a noised mixture on the GPU: deterministic Heun samples from the same x_T agree
    with the CPU's in float64 (1e-9), and the GPU's stochastic Euler samples have the data mean within 5 standard
    errors plus Euler's O(h) bias (0.05 at 200 steps)."""
    mix = _mixture()
    g, c = cs.generative.ExactScore(mix, device="cuda"), cs.generative.ExactScore(mix)
    x_T = c.prior_sample(500, torch.Generator().manual_seed(0))
    xg, _ = cs.generative.sample(g, x_T=x_T.cuda(), sampler="heun", steps=30)
    xc, _ = cs.generative.sample(c, x_T=x_T, sampler="heun", steps=30)
    assert xg.dtype == F64
    assert_close(xg, xc, atol=1e-9, rtol=1e-9)
    n = 20_000
    xs, _ = cs.generative.sample(g, n, sampler="euler", steps=200, generator=cuda_gen(1))
    w, mu, C = mix.marginal(0.0)
    mean = w @ mu
    cov = (w[:, None, None] * (C + mu[:, :, None] * mu[:, None, :])).sum(0) - mean[:, None] * mean[None, :]
    se = (torch.diagonal(cov) / n).sqrt()
    assert bool(((xs.cpu().mean(0) - mean).abs() < 5 * se + 0.05).all())


# ---------------------------------------------------------------------------------------------- bridges
def _moons_circles():
    return (cs.targets.sample_dataset("moons", 2000, torch.Generator().manual_seed(0)),
            cs.targets.sample_dataset("circles", 2000, torch.Generator().manual_seed(1)))


@cuda
@needs_cuda
def test_dsbm_fits_on_cuda_and_its_drifts_match_the_cpu(tmp_path):
    """DSBM (bridge matching) on the GPU: one IPF iteration, then both learned drifts at given points agree with a
    CPU copy; samples, backward samples and the transport map run on the GPU."""
    src, dst = _moons_circles()
    kw = dict(sigma=1.0, steps=10, hidden=32, depth=2, cache_size=512, seed=0)
    b = cs.bridges.DSBM(src, dst, device="cuda", **kw).fit(ipf_iters=1, iters_per_half=10, batch=128,
                                                           progress=False)
    assert np.isfinite(b.history["loss"]).all()
    c = cpu_copy_of(b, lambda: cs.bridges.DSBM(src, dst, **kw), tmp_path)
    x = src[:128].float()
    for direction in ("forward", "backward"):
        for t in (0.1, 0.6):
            assert_close(b.drift(t, x.cuda(), direction=direction), c.drift(t, x, direction=direction),
                         atol=1e-5, rtol=1e-5)
    x0, xT = b.sample(500)
    y0, yT = b.sample_backward(500)
    y = b.transport(src[:5])
    for v in (x0, xT, y0, yT, y):
        assert v.device.type == "cuda" and bool(torch.isfinite(v).all())


# ---------------------------------------------------------------------------------------------- control
def _lqr_problem(d: int = 2, seed: int = 1, steps: int = 50):
    """A random stable LQR whose callables run on the device of x (as ``tests/control_problems.random_lqr``)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / math.sqrt(d) - np.eye(d)
    m = max(1, d // 2)
    B = rng.normal(size=(d, m))
    sigma, R = 0.5 * np.eye(d), np.diag(rng.uniform(0.3, 1.0, m))
    Q, F = np.diag(rng.uniform(0.5, 1.5, d)), np.diag(rng.uniform(0.5, 1.5, d))
    mean0, cov0 = np.ones(d), 0.5 * np.eye(d)
    At, Qt, Ft = (torch.tensor(v, dtype=torch.float32) for v in (A, Q, F))
    problem = cs.ControlProblem(d, lambda t, x: x @ At.to(x).T, sigma, lambda x: ((x @ Ft.to(x)) * x).sum(1),
                                running_cost=lambda t, x: ((x @ Qt.to(x)) * x).sum(1), control_matrix=B,
                                control_cost=R, x0=(mean0, cov0), steps=steps)
    return problem, cs.exact.LQR(A, B, Q, R, F, sigma, 1.0), mean0, cov0


@cuda
@needs_cuda
@pytest.mark.parametrize("method, iters", [("adjoint_matching", 100), ("adjoint", 60)])
def test_solve_lqr_on_cuda_reaches_the_riccati_cost(method, iters):
    """cs.solve on the GPU (affine policy, batch 2048: a GPU iteration costs the same at 256 paths): the Monte-Carlo
    cost of the learned feedback, on a 500-step grid, is within 2% of the Riccati optimum (its standard error is
    0.3%). On the CPU this budget lands within 0.6% over seeds 0-2 (0.4% at test_control_lqr's 300 x 256)."""
    problem, lqr, mean0, cov0 = _lqr_problem()
    sol = cs.solve(problem, method=method, policy="affine", iters=iters, batch=2048, lr=0.05, seed=0, device="cuda",
                   progress=False)
    assert all(p.device.type == "cuda" for p in sol.module.parameters())
    mc, se = sol.cost(60_000, seed=1, steps=500, batch=20_000)
    exact = lqr.cost(mean0, cov0)
    assert se < 0.005 * exact
    assert abs(mc - exact) < 0.02 * exact, (mc, exact, se)


# ---------------------------------------------------------------------------------------------- Langevin
@cuda
@needs_cuda
@pytest.mark.parametrize("method", ["ula", "mala"])
def test_langevin_chains_on_cuda_reach_their_invariant_law(method):
    """4000 chains on N(m, s I) from 0, on the GPU. ULA with a fixed step eps has the invariant law N(m, s / (1 -
    eps / (2 s)) I) (theory/ula.py; its AR(1) factor 1 - eps / s = 0.8 forgets the start after 300 moves to
    0.8^300); MALA, adapted during warm-up, has N(m, s I). The last draws of independent chains are then
    independent draws of that law: mean and variance within 5 standard errors."""
    s_var, eps, n, d = 0.5, 0.1, 4000, 2
    mean = torch.tensor([1.0, -0.5], dtype=F64)
    target = cs.targets.Gaussian(mean, s_var * torch.eye(d, dtype=F64))
    x0 = torch.zeros(n, d, dtype=F64, device="cuda")
    if method == "ula":
        res = cs.langevin.run_chains(target, x0, n_draws=300, method="ula", step_size=eps, warmup=0, seed=0)
        var = s_var / (1 - eps / (2 * s_var))
    else:
        res = cs.langevin.run_chains(target, x0, n_draws=50, method="mala", step_size=eps, warmup=300, seed=0)
        var = s_var
    assert res.draws.device.type == "cuda"
    last = res.draws[:, -1].cpu()
    assert bool(((last.mean(0) - mean).abs() < 5 * math.sqrt(var / n)).all())
    assert bool(((last.var(0) - var).abs() < 5 * var * math.sqrt(2 / n)).all())


@cuda
@needs_cuda
def test_smc_on_cuda_estimates_log_z():
    """Adaptive-tempering SMC on the GPU for a normalised 3-d Gaussian: log Z-hat = 0 within 0.1 (its spread over
    seeds at 2000 particles is about 0.02) and the particles live on the GPU."""
    s = cs.samplers.SMC(gaussian_target(3), n_particles=2000, device="cuda")
    x, lw = s.sample(seed=0)
    assert x.device.type == "cuda" and lw.device.type == "cuda"
    assert abs(s.last.log_Z) < 0.1


# ---------------------------------------------------------------------------------------------- metrics
@cuda
@needs_cuda
def test_metrics_on_cuda_tensors_equal_the_cpu_values():
    """Every metric takes GPU tensors and returns what it returns for the same values on the CPU."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 2, generator=g), 1.0 + torch.randn(300, 2, generator=g)
    lw = torch.randn(500, generator=g, dtype=F64)
    gmm = cs.targets.get("gmm25")
    particles = torch.randn(200, 8, generator=g)
    pair = cs.exact.EOTBenchmarkPair(2, eps=0.1, seed=0)
    xt = pair.sample_source(50, generator=torch.Generator().manual_seed(1)).float()
    model = pair.sample_conditional(xt, 30, generator=torch.Generator().manual_seed(2)).float()
    m = cs.metrics
    cases = {
        "log_Z": lambda a, b, w: m.log_Z(w), "elbo": lambda a, b, w: m.elbo(w), "eubo": lambda a, b, w: m.eubo(w),
        "ess": lambda a, b, w: m.ess(w), "logmeanexp": lambda a, b, w: float(m.logmeanexp(w)),
        "w2": lambda a, b, w: m.w2(a, b), "w2 subsampled": lambda a, b, w: m.w2(a, b, max_samples=100),
        "sinkhorn": lambda a, b, w: m.sinkhorn(a, b, eps=0.5), "mmd": lambda a, b, w: m.mmd(a, b),
        "median_bandwidth": lambda a, b, w: m.median_bandwidth(a, b),
        "energy_w2": lambda a, b, w: m.energy_w2(a[:, 0], b[:, 0]),
        "wasserstein_1d": lambda a, b, w: m.wasserstein_1d(a[:, 0], b[:, 0]),
        "histogram_tv": lambda a, b, w: m.histogram_tv(a[:, 0], b[:, 0], bins=20),
        "mode_coverage": lambda a, b, w: m.mode_coverage(4 * a, gmm), "emc": lambda a, b, w: m.emc(4 * a, gmm),
        "assign_modes": lambda a, b, w: m.assign_modes(4 * a, gmm).cpu().tolist(),
        "gaussian_fit": lambda a, b, w: torch.cat([v.cpu().reshape(-1) for v in m.gaussian_fit(a)]).tolist(),
        "bw2_uvp": lambda a, b, w: m.bw2_uvp(a, b + 0.1 * a),
    }
    on = {"cpu": (x, y, lw), "cuda": (x.cuda(), y.cuda(), lw.cuda())}
    for name, f in cases.items():
        got, want = f(*on["cuda"]), f(*on["cpu"])
        np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    for name, f in {"interatomic_distances": lambda p: m.interatomic_distances(p, 4, 2).cpu(),
                    "distance_histogram": lambda p: m.distance_histogram(p, 4, 2, bins=10, range=(0.0, 6.0))[0].cpu(),
                    "distance_histogram_w2": lambda p: m.distance_histogram_w2(p, p.flip(0) + 0.1, 4, 2)}.items():
        np.testing.assert_allclose(np.asarray(f(particles.cuda()), dtype=float), np.asarray(f(particles), dtype=float),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    got, want = m.cbw2_uvp(model.cuda(), pair, xt.cuda()), m.cbw2_uvp(model, pair, xt)
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg="cbw2_uvp")


# ---------------------------------------------------------------------------- the other trainers, briefly
@cuda
@needs_cuda
def test_other_samplers_train_and_sample_on_cuda():
    """DIS, ASBS, RTB and DiKL: a few training steps and samples on the GPU (finite, on the GPU); for RTB with an
    untrained (zero) policy every log-weight is exactly log r at the path's end (the model chain is the prior's)."""
    target = gaussian_target(2)
    dis = cs.samplers.DIS(target, steps=10, hidden=16, device="cuda").fit(iters=3, batch=32, progress=False)
    asbs = cs.samplers.ASBS(target, steps=10, hidden=16, corrector_hidden=16, device="cuda").fit(
        iters=4, batch=32, stages=2, corrector_iters=2, refresh_every=2, progress=False)
    prior = cs.generative.ExactScore(_mixture(), device="cuda")

    def log_r(x):
        return -0.5 * ((x - 1.0) ** 2).sum(1)
    rtb = cs.samplers.RTB(prior, log_r, steps=10, hidden=16, depth=1, device="cuda")
    paths = rtb.simulate(64, cuda_gen(0))
    with torch.no_grad():
        lw = rtb.log_weights(paths)
    assert_close(lw, log_r(paths.xs[:, -1].double()).cpu(), atol=1e-4, rtol=1e-5)
    rtb.fit(iters=3, batch=32, progress=False)
    dikl = cs.samplers.DiKL(target, hidden=16, depth=1, levels=3, inner_steps=1, score_hidden=16, score_depth=1,
                            posterior_particles=4, mala_steps=2, device="cuda")
    dikl.fit(iters=2, batch=16, score_warmup=2, progress=False)
    for s in (dis, asbs, rtb, dikl):
        x, _ = s.sample(100)
        assert x.device.type == "cuda" and bool(torch.isfinite(x).all()), type(s).__name__


@cuda
@needs_cuda
def test_manifold_trainers_on_cuda():
    """RiemannianDiffusionModel and RiemannianDSB on S^2 on the GPU: a few steps, samples on the sphere."""
    from controlsamp.bridges.riemannian import RiemannianDSB
    from controlsamp.generative import riemannian as R
    S2 = cs.manifolds.Sphere(2)
    mix = cs.manifolds.VonMisesFisherMixture([0.5, 0.5], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], [10.0, 5.0], dim=2)
    model = R.RiemannianDiffusionModel(S2, hidden=32, depth=2, device="cuda")
    model.fit(mix, iters=5, batch=64, progress=False)
    x = R.sample(model, 200, steps=20, generator=cuda_gen(0))
    assert x.device.type == "cuda"
    assert float((x.double().norm(dim=1) - 1).abs().max()) < 1e-4
    exact = R.ExactManifoldScore(mix)
    s = exact.score(torch.full((8,), 0.3, dtype=F64), mix.sample(8, torch.Generator().manual_seed(0)).cuda())
    assert s.device.type == "cuda" and bool(torch.isfinite(s).all())
    bridge = RiemannianDSB(S2, mix, lambda n, g: S2.random_uniform(n, g), steps=5, hidden=16, depth=1,
                           cache_size=128, device="cuda")
    bridge.fit(ipf_iters=1, iters_per_half=3, batch=32, progress=False)
    x0, xT = bridge.sample(50)
    assert xT.device.type == "cuda" and float((xT.double().norm(dim=1) - 1).abs().max()) < 1e-4


# ------------------------------------------------------------------------------------- the command's jobs
@cuda
@needs_cuda
def test_jobs_of_the_command_run_on_cuda(tmp_path):
    """``controlsamp run --device cuda`` and ``controlsamp fit-data --device cuda`` (run_job, run_generative_job):
    training, sampling and every evaluation (EUBO paths from exact samples, W2, Sinkhorn, test NLL) on the GPU,
    finite metrics; for the normalised gmm25, log Z-hat within 5 bootstrap standard errors plus 0.5 of 0 (a short
    run: the estimate is biased downwards by the ELBO gap)."""
    from controlsamp.train import run_job
    from controlsamp.train_generative import run_generative_job
    m = run_job("gmm25", "pis", "tb", iters=5, batch=64, steps=10, out=str(tmp_path / "run"), device="cuda",
                n_eval=500, progress=False)
    for key in ("log_Z", "elbo", "ess", "eubo", "w2", "sinkhorn"):
        assert math.isfinite(m[key]), (key, m[key])
    assert m["elbo"] <= m["log_Z"] + 1e-9 and m["log_Z"] - 5 * m["log_Z_se"] - 0.5 < 0.0
    g = run_generative_job("moons", iters=5, batch=64, hidden=16, depth=1, steps=20, n_samples=200, nll_samples=20,
                           out=str(tmp_path / "fit"), device="cuda", progress=False, n_train=500, n_test=100)
    assert math.isfinite(g["nll"]) and math.isfinite(g["w2"])


# ---------------------------------------------------------------------------------------- closed forms
@cuda
@needs_cuda
def test_closed_forms_take_gpu_points_and_return_on_their_device():
    """Targets, exact solutions, reference kernels and manifold mixtures compute in float64 where their parameters
    live (the CPU, or x's device for the targets) and return on x's device: the values equal the CPU's to 1e-9
    (float64; the targets' parameters are copied to the GPU, the others are evaluated on the CPU). GaussianIPF runs
    on the CPU only and says so for device='cuda'."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g, dtype=F64)
    checks = {}
    for name in ("gaussian", "gmm25", "gmm40", "funnel10", "manywell32", "dw4", "lj13", "dw4_com_free"):
        t = cs.targets.get(name)
        y = 0.3 * torch.randn(64, t.dim, generator=g, dtype=F64)
        checks[name + ".log_prob"] = (t.log_prob(y.cuda()), t.log_prob(y))
        checks[name + ".score"] = (t.score(y.cuda()), t.score(y))
    br = cs.exact.GaussianBridge([0.0, 0.0], np.eye(2), [2.0, 1.0], [[2.0, 0.3], [0.3, 0.5]])
    sf = cs.exact.SchrodingerFollmer(cs.targets.get("gmm25"), sigma=5.0)
    lqr = cs.exact.LQR([[0, 1], [0, 0]], [[0], [1]], np.eye(2), [[1.0]], np.eye(2), 0.3, 2.0)
    mix = _mixture()
    wn = cs.manifolds.WrappedNormalMixture([0.4, 0.6], [[0.0, 1.0], [2.0, -1.0]], [0.5, 0.8])
    vmf = cs.manifolds.VonMisesFisherMixture([0.5, 0.5], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], [10.0, 5.0], dim=2)
    s2 = vmf.sample(64, torch.Generator().manual_seed(1))
    for name, f, arg in [("bridge.drift", lambda z: br.drift(0.4, z), x),
                         ("follmer.drift", lambda z: sf.drift(0.3, z), x),
                         ("lqr.policy", lambda z: lqr.policy(0.5, z), x),
                         ("noised.score", lambda z: mix.score(0.3, z), x),
                         ("wn.noised_score", lambda z: wn.noised_score(0.2, z), cs.manifolds.wrap(x)),
                         ("vmf.noised_log_prob", lambda z: vmf.noised_log_prob(0.2, z), s2),
                         ("OU.sample_path", lambda z: cs.processes.OU(2).sample_path(
                             [0.5, 1.0], z, torch.Generator().manual_seed(2)), x)]:
        checks[name] = (f(arg.cuda()), f(arg))
    for name, (gpu, cpu) in checks.items():
        assert gpu.device.type == "cuda", name
        torch.testing.assert_close(gpu.cpu().double(), cpu.double(), rtol=1e-9, atol=1e-9, msg=name)
    with pytest.raises(ValueError, match="device must be 'cpu' for GaussianIPF"):
        cs.bridges.GaussianIPF(np.zeros(2), np.eye(2), np.ones(2), np.eye(2), device="cuda")
    ipf = cs.bridges.GaussianIPF(np.zeros(2), np.eye(2), np.ones(2), [[2.0, 0.5], [0.5, 1.0]]).fit(5)
    torch.testing.assert_close(ipf.drift(0.3, x.cuda()).cpu(), ipf.drift(0.3, x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- CPU-runnable: the error without CUDA
def _constructors():
    tg = gaussian_target(2)
    src, dst = _moons_circles()
    mix = _mixture()
    S2 = cs.manifolds.Sphere(2)
    from controlsamp.bridges.riemannian import RiemannianDSB
    from controlsamp.generative import riemannian as R
    from controlsamp.langevin.smc import tempered_smc
    problem, _, _, _ = _lqr_problem(steps=5)
    return {
        "PIS": lambda dev: cs.samplers.PIS(tg, steps=4, device=dev),
        "DDS": lambda dev: cs.samplers.DDS(tg, steps=4, device=dev),
        "DIS": lambda dev: cs.samplers.DIS(tg, steps=4, device=dev),
        "ASBS": lambda dev: cs.samplers.ASBS(tg, steps=4, device=dev),
        "RTB": lambda dev: cs.samplers.RTB(cs.generative.ExactScore(mix), lambda x: -x.sum(1), steps=4, device=dev),
        "DiKL": lambda dev: cs.samplers.DiKL(tg, device=dev),
        "AIS": lambda dev: cs.samplers.AIS(tg, device=dev),
        "SMC": lambda dev: cs.samplers.SMC(tg, device=dev),
        "tempered_smc": lambda dev: tempered_smc(tg, 10, device=dev),
        "DSB": lambda dev: cs.bridges.DSB(src, dst, device=dev),
        "DSBM": lambda dev: cs.bridges.DSBM(src, dst, device=dev),
        "GaussianIPF": lambda dev: cs.bridges.GaussianIPF(np.zeros(2), np.eye(2), np.ones(2), np.eye(2), device=dev),
        "RiemannianDSB": lambda dev: RiemannianDSB(S2, lambda n, g: S2.random_uniform(n, g),
                                                   lambda n, g: S2.random_uniform(n, g), device=dev),
        "DiffusionModel": lambda dev: cs.generative.DiffusionModel(cs.processes.VP(2), device=dev),
        "RiemannianDiffusionModel": lambda dev: R.RiemannianDiffusionModel(S2, device=dev),
        "ExactScore": lambda dev: cs.generative.ExactScore(mix, device=dev),
        "ExactManifoldScore": lambda dev: R.ExactManifoldScore(
            cs.manifolds.WrappedNormalMixture([1.0], [[0.0, 0.0]], [0.5]), device=dev),
        "distill": lambda dev: cs.generative.distill(cs.generative.ExactScore(mix), mix.sample(0.0, 64), iters=1,
                                                     device=dev),
        "solve": lambda dev: cs.solve(problem, iters=1, batch=4, device=dev, progress=False),
    }


CONSTRUCTORS = list(_constructors())


@pytest.mark.skipif(HAS_CUDA, reason="the error is for a machine without CUDA")
@pytest.mark.parametrize("name", CONSTRUCTORS)
def test_cuda_requested_without_cuda_is_a_clear_error(name):
    make = _constructors()[name]
    with pytest.raises(ValueError, match=r"device is 'cuda'.*use device='cpu'"):
        make("cuda")
    with pytest.raises(ValueError, match=r"device is 'cuda:0'"):
        make("cuda:0")


def test_the_cuda_marker_is_registered(pytestconfig):
    """``-m cuda`` selects these tests without an unknown-marker warning."""
    assert any(line.startswith("cuda:") for line in pytestconfig.getini("markers"))


def test_a_sampler_refuses_a_generator_that_is_not_one_naming_it():
    """simulate / sample check their generator (a CPU generator for a GPU sampler is the same ValueError)."""
    s = cs.samplers.PIS(cs.targets.get("gaussian", dim=2), steps=4)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        s.simulate(3, generator=123)
    assert s.simulate(3, generator=torch.Generator().manual_seed(0)).xs.shape == (3, 5, 2)
