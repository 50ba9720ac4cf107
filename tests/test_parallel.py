"""Data-parallel training (controlsamp.parallel) with two gloo processes on the CPU, against one process:

* the gradient of one step, on the same paths, equals the one-process gradient of the whole batch (float64, 1e-10);
* a two-process run reproduces a one-process run with the same seed and shards (float64, 1e-6), with exploration,
  a replay buffer and local search, through torchsde's adjoint, for ASBS (corrector and adjoint matching on its
  buffers), for DiKL (score steps, surrogate, adapted posterior MALA steps), for score models (denoising score
  matching in R^2 and on the sphere, GENIE's head on a score model), for ``cs.solve`` on an LQR
  (backprop, torchsde's adjoint, log-variance) and for the neural bridges (DSB, DSBM: caches simulated per shard);
* a two-process checkpoint resumes in two processes, or in one process with the same shards, as if uninterrupted;
* the one trainer without data-parallel support (DPDM's DP-SGD) refuses to run in a group of several processes.
"""
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import controlsamp as cs
from controlsamp.control import Batch
from controlsamp.control.problem import Paths
from controlsamp.parallel import DataParallel
from controlsamp.training import Streams

WORLD = 2
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _entry(rank, fn, world, init, out, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.save(fn(rank, *args), f"{out}{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(fn, *args, world=WORLD):
    """fn(rank, *args) in ``world`` gloo processes forked from this one (they start with controlsamp imported);
    their results in rank order."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "result")
        mp.start_processes(_entry, args=(fn, world, "file://" + os.path.join(d, "rendezvous"), out, args),
                           nprocs=world, start_method="fork", join=True)
        return [torch.load(f"{out}{r}.pt", weights_only=False) for r in range(world)]


def _sampler(kind="dds"):
    target = cs.targets.get("gmm25")
    cls = cs.samplers.DDS if kind == "dds" else cs.samplers.PIS
    return cls(target, steps=6, sigma=5 ** 0.5, hidden=16, depth=2, seed=1, dtype=torch.float64)


def _rows(paths: Paths, lo: int, hi: int) -> Paths:
    return Paths(*[None if f is None else f[lo:hi] for f in paths])


GRAD_LOSSES = ("lv", "vargrad", "tb", "known_log_Z", "am")
N_PATHS = 12


def _gradients(rank, losses):
    """Per loss: (the one-process gradient of the whole batch, the two-process gradient of this rank's half)."""
    out = {}
    for loss in losses:
        s = _sampler()
        gen = torch.Generator().manual_seed(3)
        paths = s.simulate(N_PATHS, gen, explore=0.5).detached_from_model()  # the same paths in every process
        objective = s.make_objective(loss, **({"log_Z": 1.5} if loss == "known_log_Z" else {}))
        if loss == "tb":
            objective.log_Z.data.fill_(0.3)
        params = list(s.policy.parameters()) + list(objective.parameters())

        def grads():
            return [p.grad.detach().clone() for p in params]

        value, _ = objective(s.problem, s.policy, Batch(N_PATHS, Streams(0), 0, "cpu", torch.float64, paths))
        value.backward()  # one process, the whole batch, no communication
        one = grads()
        for p in params:
            p.grad = None
        dp = DataParallel()
        half = N_PATHS // WORLD
        mine = _rows(paths, rank * half, (rank + 1) * half)
        loss_here, loss_value, info = objective.sharded(s.problem, s.policy,
                                                        [Batch(half, Streams(0), 0, "cpu", torch.float64, mine)], dp)
        loss_here.backward()
        dp.average_gradients(params)
        out[loss] = dict(one=one, two=grads(), value_one=float(value), value_two=loss_value,
                         log_w=info.get("log_w"))
    return out


def test_one_step_gradient_equals_the_one_process_gradient_on_the_same_paths():
    results = spawn(_gradients, GRAD_LOSSES)
    for loss in GRAD_LOSSES:
        for r in range(WORLD):
            res = results[r][loss]
            assert abs(res["value_two"] - res["value_one"]) <= 1e-10 * max(1.0, abs(res["value_one"])), loss
            for g1, g2 in zip(res["one"], res["two"]):
                scale = max(1.0, float(g1.abs().max()))
                assert float((g1 - g2).abs().max()) <= 1e-10 * scale, (loss, r)
        # every process holds the same averaged gradient, and it is not zero
        assert all(torch.equal(a, b) for a, b in zip(results[0][loss]["two"], results[1][loss]["two"]))
        assert max(float(g.abs().max()) for g in results[0][loss]["one"]) > 1e-6, loss


FIT_CASES = {
    "lv+explore+buffer+ls": ("dds", dict(loss="lv", explore=0.5, buffer=64, local_search_every=3,
                                         local_search_steps=2, local_search_burn_in=0, local_search_buffer=64,
                                         backward_every=2)),
    "tb": ("dds", dict(loss="tb", grad_clip=5.0)),  # (a constant rate: the resumed run extends it)
    "kl-adjoint": ("pis", dict(loss="kl")),
}
ITERS, BATCH = 8, 16


def _fit(kind, options, iters, checkpoint=None, resume=False, shards=None):
    s = _sampler(kind)
    s.fit(iters=iters, batch=BATCH, seed=5, progress=False, checkpoint=checkpoint, checkpoint_every=2,
          resume=resume, shards=shards, **options)
    state = {k: v.detach().clone() for k, v in s.policy.state_dict().items()}
    return dict(state=state, history={k: list(v) for k, v in s.history.items() if k != "seconds"},
                evals=s.target_evals)


def _fit_dsm(shards=None):
    """A score model trained by denoising score matching on a fixed data set (float64)."""
    data = cs.targets.get("gmm25").sample(256, generator=torch.Generator().manual_seed(0)).double()
    model = cs.generative.DiffusionModel(cs.processes.VP(2), hidden=16, depth=1, ema=0.9, dtype=torch.float64)
    model.fit(data, iters=ITERS, batch=BATCH, seed=2, progress=False, shards=shards)
    state = {k: v.detach().clone() for k, v in model.network.state_dict().items()}
    state.update({f"ema.{k}": v.detach().clone() for k, v in model.ema.state_dict().items()})
    return dict(state=state, history={k: list(v) for k, v in model.history.items() if k != "seconds"}, evals=0)


def _fit_asbs(shards=None):
    """ASBS: two stages of corrector matching then adjoint matching, buffers refreshed every 3 steps (float64)."""
    s = cs.samplers.ASBS(cs.targets.get("gmm25"), steps=6, hidden=16, seed=1, dtype=torch.float64)
    s.fit(iters=ITERS, batch=BATCH, stages=2, corrector_iters=2, refresh_every=3, buffer=64, seed=5, progress=False,
          shards=shards)
    state = {k: v.detach().clone() for k, v in s.policy.state_dict().items()}
    state.update({f"corrector.{k}": v.detach().clone() for k, v in s.corrector.state_dict().items()})
    return dict(state=state, history={k: list(v) for k, v in s.history.items() if k != "seconds"},
                evals=s.target_evals)


SOLVE_METHODS = ("backprop", "adjoint", "log_variance")


def _solve(method, shards=None):
    """cs.solve on a 2-d LQR (a relative-entropy one for the log-variance loss), MLP policy, float64."""
    from control_problems import random_lqr
    problem = random_lqr(2, seed=1, kl=method == "log_variance", steps=8)[0]
    sol = cs.solve(problem, method=method, policy="mlp", iters=ITERS, batch=BATCH, lr=1e-2, seed=5,
                   dtype=torch.float64, progress=False, shards=shards)
    return dict(state={k: v.detach().clone() for k, v in sol.module.state_dict().items()},
                history={k: list(v) for k, v in sol.history.items() if k != "seconds"}, evals=0)


def _fit_genie(shards=None):
    """GENIE's head on a score model trained by DSM, both with the same shards (float64)."""
    from controlsamp.generative import genie
    data = cs.targets.get("gmm25").sample(256, generator=torch.Generator().manual_seed(0)).double() / 5
    model = cs.generative.DiffusionModel(cs.processes.VP(2), hidden=16, depth=1, ema=0.0, dtype=torch.float64)
    model.fit(data, iters=ITERS, batch=BATCH, seed=2, progress=False, shards=shards)
    head = genie.fit_genie_head(model, data, iters=ITERS, batch=BATCH, hidden=8, seed=3, progress=False,
                                shards=shards)
    return dict(state={k: v.detach().clone() for k, v in head.state_dict().items()},
                history={k: list(v) for k, v in head.history.items() if k != "seconds"}, evals=0)


def _fit_dikl(shards=None):
    """DiKL on a 1-d two-mode mixture: score steps, the surrogate and the posterior MALA steps (float64)."""
    tg = cs.targets.GaussianMixture(torch.ones(2), torch.tensor([[-2.0], [2.0]]), 0.25 * torch.ones(2, 1, 1))
    m = cs.samplers.DiKL(tg, hidden=8, depth=1, levels=4, t_min=0.02, t_max=0.8, inner_steps=2, score_hidden=8,
                         score_depth=1, posterior_particles=4, mala_steps=3, dtype=torch.float64)
    m.fit(iters=4, batch=BATCH, score_warmup=2, seed=2, progress=False, shards=shards)
    state = {k: v.detach().clone() for k, v in m.generator.state_dict().items()}
    state["mala_step"] = m.mala_step.clone()
    return dict(state=state, history={k: list(v) for k, v in m.history.items() if k != "seconds"},
                evals=m.target_evals)


def _fit_sphere(shards=None):
    """A score model on S^2 by denoising score matching (heat-kernel targets) on a von Mises–Fisher law (float64)."""
    from controlsamp.generative.riemannian import RiemannianDiffusionModel
    from controlsamp.manifolds import Sphere
    from controlsamp.manifolds.mixtures import VonMisesFisherMixture
    law = VonMisesFisherMixture([1.0], [[0.0, 0.0, 1.0]], [10.0], dim=2)
    model = RiemannianDiffusionModel(Sphere(2), hidden=8, depth=1, n_freq=2, seed=0, dtype=torch.float64)
    model.fit(law, iters=ITERS, batch=BATCH, lr=3e-3, seed=2, progress=False, shards=shards)
    state = {k: v.detach().clone() for k, v in model.network.state_dict().items()}
    return dict(state=state, history={k: list(v) for k, v in model.history.items() if k != "seconds"}, evals=0)


BRIDGES = ("DSB", "DSBM")


def _bridge(cls, shards=None):
    """Two IPF iterations of a bridge between 2-d Gaussians, caches refreshed mid half-bridge (float64)."""
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randn(128, 2, generator=g).double(), torch.randn(128, 2, generator=g).double() + 1.0
    m = getattr(cs.bridges, cls)(src, tgt, steps=4, hidden=8, cache_size=32, cache_refresh=3, seed=3,
                                 dtype=torch.float64)
    m.fit(2, 4, batch=BATCH, seed=4, progress=False, shards=shards)
    return dict(state={k: v.detach().clone() for k, v in m.nets.state_dict().items()},
                history={k: list(v) for k, v in m.history.items() if k != "seconds"}, evals=0)


def _sphere_bridge(shards=None):
    """Two IPF iterations of the Riemannian DSB on S^2, from the uniform law to a cap (float64)."""
    from controlsamp.bridges import RiemannianDSB
    from controlsamp.manifolds import Sphere
    s2, g = Sphere(2), torch.Generator().manual_seed(0)
    pole = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64).expand(128, 3)
    tgt = s2.exp(pole, 0.3 * s2.proj(pole, torch.randn(128, 3, generator=g, dtype=torch.float64)))
    m = RiemannianDSB(s2, lambda n, gen: s2.random_uniform(n, gen), tgt, steps=4, hidden=8, depth=1, cache_size=32,
                      cache_refresh=3, seed=3, dtype=torch.float64)
    m.fit(2, 4, batch=BATCH, seed=4, progress=False, shards=shards)
    return dict(state={k: v.detach().clone() for k, v in m.nets.state_dict().items()},
                history={k: list(v) for k, v in m.history.items() if k != "seconds"}, evals=0)


def _fits(rank, cases, folder):
    out = {name: _fit(kind, options, ITERS) for name, (kind, options) in cases.items()}
    out["dsm"] = _fit_dsm()
    out["sphere"] = _fit_sphere()
    out["genie"] = _fit_genie()
    out["dikl"] = _fit_dikl()
    out["asbs"] = _fit_asbs()
    out.update({f"solve:{m}": _solve(m) for m in SOLVE_METHODS})
    out.update({f"bridge:{c}": _bridge(c) for c in BRIDGES})
    out["bridge:sphere"] = _sphere_bridge()
    kind, options = cases["tb"]
    out["tb:first-half"] = _fit(kind, options, ITERS, os.path.join(folder, "tb.pt"))
    try:  # the trainer without data-parallel support
        from controlsamp.generative import dpdm
        data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
        dpdm.fit_private(cs.generative.DiffusionModel(cs.processes.VP(2), hidden=8, depth=1), data, iters=1, batch=8,
                         noise_multiplier=1.0, progress=False)
    except ValueError as exc:
        out["unsupported"] = str(exc)
    return out


def _resume(rank, case, folder):
    kind, options = FIT_CASES[case]
    return _fit(kind, options, 2 * ITERS, os.path.join(folder, "tb.pt"), resume=True)


def _close(a, b, tol=1e-6):
    for k in a["state"]:
        assert torch.allclose(a["state"][k], b["state"][k], rtol=0, atol=tol), k
    assert set(a["history"]) == set(b["history"])
    for k in a["history"]:
        x, y = torch.tensor(a["history"][k]), torch.tensor(b["history"][k])
        assert x.shape == y.shape and torch.allclose(x, y, rtol=tol, atol=tol), k
    assert a["evals"] == b["evals"]


def test_two_processes_reproduce_one_process_with_the_same_shards_and_resume(tmp_path):
    two = spawn(_fits, FIT_CASES, str(tmp_path))
    for name, (kind, options) in FIT_CASES.items():
        one = _fit(kind, options, ITERS, shards=WORLD)
        _close(two[0][name], one)
        _close(two[1][name], one)  # every process ends with the same model
        other = _fit(kind, options, ITERS)  # one shard: other random draws, another run
        assert not torch.allclose(torch.tensor(other["history"]["loss"]), torch.tensor(one["history"]["loss"]))
    _close(two[0]["dsm"], _fit_dsm(shards=WORLD))  # a score model by denoising score matching
    _close(two[1]["dsm"], _fit_dsm(shards=WORLD))
    sphere = _fit_sphere(shards=WORLD)  # a score model on the sphere
    _close(two[0]["sphere"], sphere)
    _close(two[1]["sphere"], sphere)
    head = _fit_genie(shards=WORLD)  # GENIE's head
    _close(two[0]["genie"], head)
    _close(two[1]["genie"], head)
    assert max(head["history"]["loss"]) > 0
    dikl = _fit_dikl(shards=WORLD)  # DiKL
    _close(two[0]["dikl"], dikl)
    _close(two[1]["dikl"], dikl)
    asbs = _fit_asbs(shards=WORLD)  # ASBS, whose buffers hold every shard's pairs
    _close(two[0]["asbs"], asbs)
    _close(two[1]["asbs"], asbs)
    assert not torch.allclose(torch.tensor(_fit_asbs()["history"]["loss"]), torch.tensor(asbs["history"]["loss"]))
    for method in SOLVE_METHODS:  # the control solver
        one = _solve(method, shards=WORLD)
        _close(two[0][f"solve:{method}"], one)
        _close(two[1][f"solve:{method}"], one)
    for cls in BRIDGES:  # the neural bridges
        one = _bridge(cls, shards=WORLD)
        _close(two[0][f"bridge:{cls}"], one)
        _close(two[1][f"bridge:{cls}"], one)
    one = _sphere_bridge(shards=WORLD)  # the Riemannian bridge (its caches are simulated on the manifold)
    _close(two[0]["bridge:sphere"], one)
    _close(two[1]["bridge:sphere"], one)
    assert not torch.allclose(torch.tensor(_sphere_bridge()["history"]["loss"]), torch.tensor(one["history"]["loss"]))
    # the checkpoint of the two-process run resumes, in two processes or in one with the same shards
    full = _fit(*FIT_CASES["tb"], 2 * ITERS, shards=WORLD)
    import shutil
    shutil.copy(tmp_path / "tb.pt", tmp_path / "tb-copy.pt")
    resumed_two = spawn(_resume, "tb", str(tmp_path))
    _close(resumed_two[0], full)
    os.replace(tmp_path / "tb-copy.pt", tmp_path / "tb.pt")
    _close(_fit(*FIT_CASES["tb"], 2 * ITERS, str(tmp_path / "tb.pt"), resume=True, shards=WORLD), full)
    with pytest.raises(ValueError, match="shards"):  # another number of shards is another run
        _fit(*FIT_CASES["tb"], 2 * ITERS, str(tmp_path / "tb.pt"), resume=True)
    # a trainer without data-parallel support refuses to run in a group of several processes
    assert all("does not train on several processes" in res.get("unsupported", "") for res in two)




def test_shards_must_divide_the_batch_and_be_a_multiple_of_the_processes():
    s = _sampler()
    with pytest.raises(ValueError, match="batch .* multiple of shards"):
        s.fit(iters=1, batch=15, shards=2, progress=False)
    with pytest.raises(ValueError, match="shards"):
        s.fit(iters=1, batch=16, shards=0, progress=False)


@pytest.mark.slow  # (about 25 s: torchrun's agent and two fresh interpreters; fit-data's test covers the group path)
def test_cli_nproc_2_reproduces_shards_2_in_one_process(tmp_path):
    import json

    from controlsamp import cli
    args = ["run", "--target", "gmm25", "--sampler", "dds", "--loss", "lv", "--iters", "6", "--batch", "32",
            "--steps", "8", "--n-eval", "200", "--quiet", "--buffer", "64", "--local-search-every", "3"]
    assert cli.main(args + ["--nproc", "2", "--out", str(tmp_path / "two")]) == 0
    assert cli.main(args + ["--shards", "2", "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for key in ("log_Z", "elbo", "ess", "w2", "eubo", "target_evals"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
    assert json.loads((tmp_path / "two" / "job.json").read_text())["fit_options"]["shards"] == 2
    assert cli._without_nproc(["run", "--nproc", "2", "--iters", "3", "--nproc=4"]) == ["run", "--iters", "3"]


FIT_DATA = ["fit-data", "--data", "moons", "--iters", "6", "--batch", "32", "--hidden", "16", "--depth", "1",
            "--steps", "10", "--n-samples", "100", "--nll-samples", "0", "--quiet", "--n-train", "200",
            "--n-test", "100"]


def _fit_data(rank, folder):
    from controlsamp import cli
    return cli.main(FIT_DATA + ["--out", folder])


def test_fit_data_in_two_processes_reproduces_shards_2_in_one_process(tmp_path):
    import json

    from controlsamp import cli
    assert spawn(_fit_data, str(tmp_path / "two")) == [0, 0]
    assert cli.main(FIT_DATA + ["--shards", "2", "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for key in ("final_loss", "w2", "mmd"):
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
    with pytest.raises(SystemExit):  # differential privacy runs unsharded
        cli.main(FIT_DATA + ["--shards", "2", "--dp-epsilon", "5", "--out", str(tmp_path / "dp")])
