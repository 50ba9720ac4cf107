"""Checkpoints: safe loading (weights only, no code runs), integrity (a checksum), argument checks, atomic
writes, and exact resume after an interrupt anywhere inside a training step, for every trainer."""
import os
import pickle
import random
import struct
import zipfile

import pytest
import torch
from torch import nn

import controlsamp as cs
import controlsamp.bridges.dsb as dsb_module
import controlsamp.bridges.dsbm as dsbm_module
import controlsamp.samplers.asbs as asbs_module
import controlsamp.samplers.base as sampler_base
from controlsamp import training
from controlsamp.bridges.base import NeuralBridge
from controlsamp.samplers.offpolicy import ReplayBuffer
from controlsamp.training import load_checkpoint, read_checkpoint, save_checkpoint

from sampler_helpers import gaussian_target


# ------------------------------------------------------------------------------------------------ helpers
def _lq(**kw):
    base = dict(dim=2, drift=lambda t, x: -x, sigma=0.5, terminal_cost=lambda x: (x ** 2).sum(1),
                running_cost=lambda t, x: (x ** 2).sum(1), x0=[1.0, -1.0], steps=6)
    base.update(kw)
    return cs.ControlProblem(**base)


def _bridge_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(200, 2, generator=g) - 1.0, torch.randn(200, 2, generator=g) + 1.0


class _Interrupt:
    """Replace ``owner.name`` by a wrapper that raises KeyboardInterrupt on its n-th call (a Ctrl-C landing
    at a known point inside a training step); ``calls`` counts the calls that reached the original."""

    def __init__(self, monkeypatch, owner, name: str, n: int):
        self.original, self.n, self.calls = getattr(owner, name), n, 0
        wrapper = self._method if isinstance(owner, type) else self._function
        monkeypatch.setattr(owner, name, wrapper())

    def _hit(self) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt

    def _function(self):
        def f(*args, **kwargs):
            self._hit()
            return self.original(*args, **kwargs)
        return f

    def _method(self):
        original = self.original

        def f(obj, *args, **kwargs):
            self._hit()
            return original(obj, *args, **kwargs)
        return f


def _states(obj) -> dict:
    """Every tensor of a trained object's state (networks, EMA copies, learned log Z) by name."""
    if isinstance(obj, NeuralBridge):
        return dict(obj.nets.state_dict())
    out = {f"policy.{k}": v for k, v in obj.policy.state_dict().items()}
    if getattr(obj, "objective", None) is not None:
        out.update({f"objective.{k}": v for k, v in obj.objective.state_dict().items()})
    if hasattr(obj, "corrector"):
        out.update({f"corrector.{k}": v for k, v in obj.corrector.state_dict().items()})
    return out


def _assert_same(a, b) -> None:
    sa, sb = _states(a), _states(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    timeless = [{k: v for k, v in h.items() if k != "seconds"} for h in (a.history, b.history)]
    assert timeless[0] == timeless[1]
    assert len(a.history["seconds"]) == len(b.history["seconds"])
    if hasattr(a, "target_evals"):
        assert a.target_evals == b.target_evals


# ------------------------------------------------------------------------------------- 1. safe loading
class _Evil:
    """Unpickling this object would create ``marker`` (arbitrary code on load)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _loaders(tmp_path):
    tgt = gaussian_target(2)
    src, dst = _bridge_data()
    return {
        "read_checkpoint": lambda p: read_checkpoint(p),
        "PIS.load": lambda p: cs.samplers.PIS(tgt, steps=4, hidden=8).load(p),
        "PIS.fit(resume)": lambda p: cs.samplers.PIS(tgt, steps=4, hidden=8).fit(2, batch=4, checkpoint=p,
                                                                                   resume=True, progress=False),
        "ASBS.load": lambda p: cs.samplers.ASBS(tgt, steps=4, hidden=8, corrector_hidden=8).load(p),
        "SMC.load": lambda p: cs.samplers.SMC(tgt, n_particles=10).load(p),
        "DSB.load": lambda p: cs.bridges.DSB(src, dst, steps=3, hidden=8, cache_size=16).load(p),
        "DSBM.fit(resume)": lambda p: cs.bridges.DSBM(src, dst, steps=3, hidden=8, cache_size=16).fit(
            1, 2, batch=4, checkpoint=p, resume=True, progress=False),
        "Solution.load": lambda p: cs.Solution.load(p, _lq()),
        "solve(resume)": lambda p: cs.solve(_lq(), iters=2, batch=4, checkpoint=p, resume=True, progress=False),
    }


@pytest.mark.parametrize("how", ["torch.save", "pickle", "pickle protocol 2", "inside a checkpoint"])
def test_a_crafted_pickle_is_refused_before_it_runs(how, tmp_path):
    marker = str(tmp_path / "marker")
    path = str(tmp_path / "evil.pt")
    if how == "torch.save":
        torch.save({"schema": training.SCHEMA, "kind": "PIS", "x": _Evil(marker)}, path)
    elif how.startswith("pickle"):
        with open(path, "wb") as f:
            pickle.dump(_Evil(marker), f, protocol=2 if how.endswith("2") else pickle.DEFAULT_PROTOCOL)
    else:  # a real checkpoint whose extra entry was replaced by the object
        s = cs.samplers.PIS(gaussian_target(2), steps=4, hidden=8)
        s.save(path)
        payload = torch.load(path, weights_only=True)
        payload["extra"]["evil"] = _Evil(marker)
        torch.save(payload, path)
    # the file is live: an unsafe load runs its code
    torch.load(path, weights_only=False) if not how.startswith("pickle") else pickle.load(open(path, "rb"))
    assert os.path.exists(marker)
    os.remove(marker)
    # a pickle of protocol >= 4 stops at its first opcode (FRAME), before any name is looked up
    match = "content a safe load refuses" if how == "pickle" else r"refused.*GLOBAL (builtins|io)\.open.*could run code"
    for name, load in _loaders(tmp_path).items():
        with pytest.raises(ValueError, match=match):
            load(path)
        assert not os.path.exists(marker), name


def _walk_types(obj, seen: set) -> None:
    seen.add(type(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk_types(k, seen)
            _walk_types(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk_types(v, seen)


def test_every_saved_file_holds_plain_data_only(tmp_path):
    """Training checkpoints (with replay buffer, ASBS buffers, bridge caches) and saved models of every kind
    load with weights_only=True and contain only tensors, containers, numbers, strings and None."""
    tgt = gaussian_target(2)
    src, dst = _bridge_data()
    p = {k: str(tmp_path / f"{k}.pt") for k in ("pis", "asbs", "dsbm", "solve", "pis_m", "smc", "sol", "dsb_m")}
    s = cs.samplers.PIS(tgt, steps=4, hidden=8).fit(6, batch=8, loss="tb", buffer=32, local_search_every=2,
                                                    local_search_steps=1, checkpoint=p["pis"], progress=False)
    s.save(p["pis_m"])
    cs.samplers.ASBS(tgt, steps=4, hidden=8, corrector_hidden=8).fit(
        4, batch=8, stages=2, corrector_iters=2, refresh_every=2, checkpoint=p["asbs"], progress=False)
    b = cs.bridges.DSBM(src, dst, steps=3, hidden=8, cache_size=16).fit(1, 3, batch=4, checkpoint=p["dsbm"],
                                                                         progress=False)
    b.save(p["dsb_m"])
    sol = cs.solve(_lq(), iters=3, batch=4, checkpoint=p["solve"], progress=False)
    sol.save(p["sol"])
    smc = cs.samplers.SMC(tgt, n_particles=20, steps=1)
    smc.run()
    smc.save(p["smc"])
    allowed = {dict, list, tuple, str, int, float, bool, type(None), torch.Tensor, torch.Size}
    for name, path in p.items():
        seen: set = set()
        payload = torch.load(path, weights_only=True)
        _walk_types(payload, seen)
        extra = {t for t in seen if not any(issubclass(t, a) for a in allowed)}
        assert not extra, (name, extra)
        assert payload["format"] == training.FORMAT and isinstance(payload["sha256"], str)
    assert read_checkpoint(p["pis"])["modules"]["buffer"]["x"].shape[1] == 2


def test_saving_refuses_what_would_not_load_safely(tmp_path):
    path = str(tmp_path / "x.pt")
    base = {"schema": training.SCHEMA, "kind": "K", "config": {}, "iteration": 0, "history": {}, "modules": {},
            "rng": None}
    with pytest.raises(ValueError, match=r"payload\['extra'\]\['fn'\] is a .*function"):
        save_checkpoint(path, dict(base, extra={"fn": lambda x: x}))
    with pytest.raises(ValueError, match="module"):
        save_checkpoint(path, dict(base, extra={"net": nn.Linear(2, 2)}))
    assert not os.path.exists(path)
    # a policy of one's own: the file keeps its weights; loading needs a module to put them in
    problem = _lq()

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, t, x):
            return self.lin(x)

    torch.manual_seed(1)
    sol = cs.solve(problem, policy=Lin(), iters=2, batch=4, progress=False)
    sol.save(path)
    with pytest.raises(ValueError, match="policy="):
        cs.Solution.load(path, problem)
    back = cs.Solution.load(path, problem, policy=Lin())
    x = torch.randn(5, 2)
    assert torch.equal(back.policy(0.3, x), sol.policy(0.3, x))
    with pytest.raises(ValueError, match="policy must be an nn.Module"):
        cs.Solution.load(path, problem, policy="mlp")


# ------------------------------------------------------------------------------------------- 2. integrity
def _largest_record(path: str):
    """(offset, size) of the largest stored record (a tensor's bytes) of a torch zip file."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def test_bytes_changed_inside_a_tensor_are_detected(tmp_path):
    tgt = gaussian_target(2)
    path = str(tmp_path / "ck.pt")
    s = cs.samplers.PIS(tgt, steps=4, hidden=32)
    s.save(path)
    start, size = _largest_record(path)
    assert size >= 1024  # a weight matrix
    with open(path, "r+b") as f:
        f.seek(start + size // 2)
        chunk = f.read(8)
        f.seek(start + size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    torch.load(path, weights_only=True)  # torch itself reads the damaged file without complaint
    with pytest.raises(ValueError, match="corrupt.*checksum"):
        cs.samplers.PIS(tgt, steps=4, hidden=32).load(path)
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(path)


def test_random_damage_is_an_error_or_harmless(tmp_path):
    """Bytes flipped anywhere in a training checkpoint, or the file cut short: loading is a ValueError,
    or (bytes outside the content, e.g. zip padding) the content read back is exactly the original."""
    tgt = gaussian_target(2)
    path = str(tmp_path / "ck.pt")
    cs.samplers.PIS(tgt, steps=4, hidden=8).fit(4, batch=8, loss="tb", buffer=16, checkpoint=path,
                                                progress=False)
    good = open(path, "rb").read()
    reference = read_checkpoint(path)
    rng = random.Random(0)
    errors = 0
    for trial in range(40):
        data = bytearray(good)
        if trial % 8 == 7:
            data = data[:rng.randrange(len(data))]
        else:
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        open(path, "wb").write(bytes(data))
        try:
            back = read_checkpoint(path)
        except ValueError:
            errors += 1
            continue
        assert training._digest(back) == training._digest(reference)
    assert errors >= 20
    open(path, "wb").write(good)
    assert read_checkpoint(path)["iteration"] == 4


def test_old_and_foreign_files_are_refused(tmp_path):
    path = str(tmp_path / "f.pt")
    torch.save({"schema": 1, "kind": "PIS", "config": {}, "iteration": 3}, path)
    with pytest.raises(ValueError, match="schema 1"):
        read_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a controlsamp checkpoint"):
        read_checkpoint(path)
    open(path, "wb").write(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable controlsamp checkpoint"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="does not exist"):
        read_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="path must be a file path"):
        read_checkpoint(3)


# ------------------------------------------------------------------------------ 3. arguments, atomic saves
@pytest.mark.parametrize("every", [0, -3, 2.5, True, "10"])
def test_checkpoint_every_must_be_a_positive_integer(every, tmp_path):
    tgt = gaussian_target(2)
    src, dst = _bridge_data()
    ck = str(tmp_path / "ck.pt")
    runs = [lambda: cs.samplers.PIS(tgt, steps=4, hidden=8).fit(2, batch=4, checkpoint=ck, checkpoint_every=every,
                                                                progress=False),
            lambda: cs.samplers.ASBS(tgt, steps=4, hidden=8, corrector_hidden=8).fit(
                2, batch=4, stages=1, corrector_iters=1, checkpoint=ck, checkpoint_every=every, progress=False),
            lambda: cs.bridges.DSB(src, dst, steps=3, hidden=8, cache_size=16).fit(
                1, 1, batch=4, checkpoint=ck, checkpoint_every=every, progress=False),
            lambda: cs.solve(_lq(), iters=2, batch=4, checkpoint=ck, checkpoint_every=every, progress=False)]
    for run in runs:
        with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
            run()
    assert not os.path.exists(ck)


def test_resuming_with_fewer_iterations_is_refused_and_keeps_the_file(tmp_path):
    tgt = gaussian_target(2)
    ck = str(tmp_path / "ck.pt")
    cs.samplers.PIS(tgt, steps=4, hidden=8).fit(12, batch=8, checkpoint=ck, progress=False)
    before = open(ck, "rb").read()
    with pytest.raises(ValueError, match="has done 12 iterations, more than the 8 of this run \\(iters\\)"):
        cs.samplers.PIS(tgt, steps=4, hidden=8).fit(8, batch=8, checkpoint=ck, resume=True, progress=False)
    assert open(ck, "rb").read() == before
    s = cs.samplers.PIS(tgt, steps=4, hidden=8).fit(12, batch=8, checkpoint=ck, resume=True, progress=False)
    assert len(s.history["loss"]) == 12 and read_checkpoint(ck)["iteration"] == 12
    src, dst = _bridge_data()
    ckb = str(tmp_path / "b.pt")
    kw = dict(steps=3, hidden=8, cache_size=16)
    cs.bridges.DSB(src, dst, **kw).fit(1, 4, batch=4, checkpoint=ckb, progress=False)
    with pytest.raises(ValueError, match="iters_per_half: saved 4 vs now 2"):  # a bridge's length is configuration
        cs.bridges.DSB(src, dst, **kw).fit(1, 2, batch=4, checkpoint=ckb, resume=True, progress=False)
    cka = str(tmp_path / "a.pt")
    akw = dict(batch=4, stages=2, corrector_iters=2, refresh_every=2, progress=False)
    cs.samplers.ASBS(tgt, steps=4, hidden=8, corrector_hidden=8).fit(6, checkpoint=cka, **akw)
    with pytest.raises(ValueError, match=r"done 10 iterations, more than the 8 .*iters \+ stages \* corrector_iters"):
        cs.samplers.ASBS(tgt, steps=4, hidden=8, corrector_hidden=8).fit(4, checkpoint=cka, resume=True, **akw)
    cks = str(tmp_path / "s.pt")
    cs.solve(_lq(), iters=5, batch=4, checkpoint=cks, progress=False)
    with pytest.raises(ValueError, match="has done 5 iterations, more than the 3 of this run"):
        cs.solve(_lq(), iters=3, batch=4, checkpoint=cks, resume=True, progress=False)
    model = str(tmp_path / "m.pt")
    s.save(model)
    with pytest.raises(ValueError, match="saved model"):
        cs.samplers.PIS(tgt, steps=4, hidden=8).fit(12, batch=8, checkpoint=model, resume=True, progress=False)


def test_saves_are_atomic(tmp_path, monkeypatch):
    """A save that dies mid-write (here torch.save raising after writing part of the file) leaves the previous
    file intact and no temporary file behind: bridges, solutions, samplers, training checkpoints."""
    tgt = gaussian_target(2)
    src, dst = _bridge_data()
    objects = {"bridge": cs.bridges.DSB(src, dst, steps=3, hidden=8, cache_size=16).fit(1, 2, batch=4,
                                                                                          progress=False),
               "solution": cs.solve(_lq(), iters=2, batch=4, progress=False),
               "sampler": cs.samplers.PIS(tgt, steps=4, hidden=8)}
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(100)
        raise KeyboardInterrupt

    for name, obj in objects.items():
        path = str(tmp_path / f"{name}.pt")
        obj.save(path)
        before = open(path, "rb").read()
        monkeypatch.setattr(torch, "save", dying_save)
        with pytest.raises(KeyboardInterrupt):
            obj.save(path)
        monkeypatch.setattr(torch, "save", real_save)
        assert open(path, "rb").read() == before
        read_checkpoint(path)
    ck = str(tmp_path / "ck.pt")
    cs.samplers.PIS(tgt, steps=4, hidden=8).fit(4, batch=4, checkpoint=ck, checkpoint_every=2, progress=False)
    before = open(ck, "rb").read()
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cs.samplers.PIS(tgt, steps=4, hidden=8).fit(4, batch=4, checkpoint=ck, checkpoint_every=2,
                                                    progress=False)
    assert open(ck, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == sorted([f"{n}.pt" for n in objects] + ["ck.pt"])


@pytest.mark.skipif(os.name != "posix", reason="a process is probed with signal 0 on POSIX only")
def test_a_run_removes_the_temporaries_of_killed_writers(tmp_path):
    """A write killed by SIGKILL leaves atomic_write's temporary file. Starting or resuming a run in the folder
    removes those of processes that no longer run; a live writer's, and files of other names, stay."""
    import subprocess
    import sys

    from controlsamp import train
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid now names no process
    names = [f"checkpoint.pt.tmp{child.pid}-0123abcd", f"metrics.json.tmp{os.getpid()}-89abcdef",
             "checkpoint.pt.tmp-notes", "notes.txt"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    train.prepare_out(str(tmp_path), {"target": "gmm25"}, True, train.run_files)
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:] + ["job.json"])
    assert training.remove_stale_temporaries(str(tmp_path)) == []


# ----------------------------------------------------------------------- 4. exact resume after an interrupt
def _run_interrupted(make, fit, monkeypatch, points, ck):
    """Train ``make()`` with ``fit(obj, checkpoint, resume)``, interrupted at each of ``points`` ((owner, name,
    n): the n-th call of owner.name from the start of that attempt) in turn, resuming a fresh object after
    each; the last attempt runs to the end. Returns (the final object, the checkpoint iteration after each
    interrupt)."""
    seen = []
    for i, (owner, name, n) in enumerate(points):
        with monkeypatch.context() as m:
            hook = _Interrupt(m, owner, name, n)
            obj = make()
            with pytest.raises(KeyboardInterrupt):
                fit(obj, ck, i > 0)
            assert hook.calls == n, f"{name} was called {hook.calls} < {n} times: the interrupt never happened"
        seen.append(read_checkpoint(ck)["iteration"])
    return fit(make(), ck, True), seen


PIS_FIT = dict(batch=16, loss="tb", lr=3e-3, buffer=64, explore=0.3, local_search_every=3, local_search_steps=2,
               lr_schedule="cosine", progress=False, seed=5)


def test_pis_with_buffer_and_local_search_resumes_exactly(tmp_path, monkeypatch):
    """Ctrl-C inside local search (after the parameter update of its step), inside a buffer add (forward
    iteration and local search), then twice more: each resume continues bit-identically."""
    tgt = gaussian_target(2)

    def make():
        return cs.samplers.PIS(tgt, steps=6, hidden=16)

    def fit(s, ck, resume):
        return s.fit(24, checkpoint=ck, checkpoint_every=5, resume=resume, **PIS_FIT)

    straight = make().fit(24, **PIS_FIT)
    points = [(sampler_base, "local_search", 2), (ReplayBuffer, "add", 5), (ReplayBuffer, "add", 3),
              (sampler_base, "local_search", 2)]
    resumed, seen = _run_interrupted(make, fit, monkeypatch, points, str(tmp_path / "ck.pt"))
    assert seen == sorted(seen) and len(set(seen)) == len(seen) and seen[0] == 5  # iteration 5: the 2nd search
    _assert_same(straight, resumed)


def test_local_search_buffer_resumes_exactly(tmp_path, monkeypatch):
    """The second buffer of the local search (with a burn-in) is part of the checkpoint: Ctrl-C inside a search
    and inside an add to either buffer, each resume continues bit-identically."""
    tgt = gaussian_target(2)
    kw = dict(PIS_FIT, local_search_steps=3, local_search_burn_in=1, local_search_buffer=40)

    def make():
        return cs.samplers.PIS(tgt, steps=6, hidden=16)

    def fit(s, ck, resume):
        return s.fit(24, checkpoint=ck, checkpoint_every=5, resume=resume, **kw)

    straight = make().fit(24, **kw)
    points = [(sampler_base, "local_search", 2), (ReplayBuffer, "add", 6), (ReplayBuffer, "add", 4)]
    resumed, seen = _run_interrupted(make, fit, monkeypatch, points, str(tmp_path / "ck.pt"))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    _assert_same(straight, resumed)


def test_pis_resumes_exactly_on_the_interrupted_object(tmp_path, monkeypatch):
    """Resuming with the same (interrupted, mid-step) object gives the uninterrupted run too."""
    tgt = gaussian_target(2)
    straight = cs.samplers.PIS(tgt, steps=6, hidden=16).fit(15, **PIS_FIT)
    s = cs.samplers.PIS(tgt, steps=6, hidden=16)
    ck = str(tmp_path / "ck.pt")
    with monkeypatch.context() as m:
        _Interrupt(m, sampler_base, "local_search", 3)
        with pytest.raises(KeyboardInterrupt):
            s.fit(15, checkpoint=ck, checkpoint_every=100, **PIS_FIT)
    state = read_checkpoint(ck)
    assert state["iteration"] == 8 and len(state["history"]["loss"]) == 8
    _assert_same(straight, s.fit(15, checkpoint=ck, resume=True, **PIS_FIT))


def test_dds_resumes_exactly_after_an_interrupt_past_the_update(tmp_path, monkeypatch):
    """Interrupted in the learning-rate schedule's step, after the optimiser changed the parameters."""
    tgt = gaussian_target(2)
    kw = dict(batch=16, loss="lv", lr=3e-3, explore=0.2, lr_schedule="cosine", progress=False, seed=2)

    def make():
        return cs.samplers.DDS(tgt, steps=6, hidden=16)

    def fit(s, ck, resume):
        return s.fit(16, checkpoint=ck, checkpoint_every=4, resume=resume, **kw)

    straight = make().fit(16, **kw)
    points = [(torch.optim.lr_scheduler.CosineAnnealingLR, "step", 7),
              (torch.optim.lr_scheduler.CosineAnnealingLR, "step", 4)]
    resumed, seen = _run_interrupted(make, fit, monkeypatch, points, str(tmp_path / "ck.pt"))
    assert seen == [5, 7]  # the schedule's first step() is its constructor's; iteration k calls the (k+2)-th
    _assert_same(straight, resumed)


def test_asbs_resumes_exactly(tmp_path, monkeypatch):
    """Ctrl-C inside simulate (a buffer refresh), after a buffer refresh (in the gradient clipping before the
    update), and after the update (in the learning-rate schedule's step)."""
    tgt = gaussian_target(2)
    kw = dict(batch=16, stages=2, corrector_iters=5, refresh_every=3, progress=False, seed=1, buffer=40,
              lr_schedule="cosine")

    def make():
        return cs.samplers.ASBS(tgt, steps=5, hidden=16, corrector_hidden=16)

    def fit(s, ck, resume):
        return s.fit(16, checkpoint=ck, checkpoint_every=4, resume=resume, **kw)

    straight = make().fit(16, **kw)
    points = [(cs.samplers.ASBS, "simulate", 3), (asbs_module, "descend", 4),
              (torch.optim.lr_scheduler.CosineAnnealingLR, "step", 5)]
    resumed, seen = _run_interrupted(make, fit, monkeypatch, points, str(tmp_path / "ck.pt"))
    assert seen == sorted(seen) and len(set(seen)) == 3
    _assert_same(straight, resumed)


@pytest.mark.parametrize("cls", ["DSB", "DSBM"])
def test_bridges_resume_exactly(cls, tmp_path, monkeypatch):
    """Ctrl-C inside the regression batch (mean matching / bridge matching), then after the optimiser step
    (in the EMA update) at the end of a half-bridge; resumed once on the interrupted object itself."""
    src, dst = _bridge_data()
    kw = dict(steps=4, hidden=16, cache_size=48, cache_refresh=5, seed=3)
    fit_kw = dict(batch=16, progress=False, seed=4)
    Bridge = getattr(cs.bridges, cls)
    module, batch_fn = (dsb_module, "mean_matching_batch") if cls == "DSB" else (dsbm_module,
                                                                              "bridge_matching_batch")
    straight = Bridge(src, dst, **kw).fit(2, 8, **fit_kw)
    ck = str(tmp_path / "ck.pt")
    b = Bridge(src, dst, **kw)
    with monkeypatch.context() as m:
        _Interrupt(m, module, batch_fn, 7)
        with pytest.raises(KeyboardInterrupt):
            b.fit(2, 8, checkpoint=ck, checkpoint_every=4, **fit_kw)
    assert read_checkpoint(ck)["iteration"] == 6
    with monkeypatch.context() as m:  # the same object, mid-step: steps 6.. again, interrupted at step 15
        _Interrupt(m, torch.optim.swa_utils.AveragedModel, "update_parameters", 10)
        with pytest.raises(KeyboardInterrupt):
            b.fit(2, 8, checkpoint=ck, checkpoint_every=4, resume=True, **fit_kw)
    assert read_checkpoint(ck)["iteration"] == 15
    _assert_same(straight, b.fit(2, 8, checkpoint=ck, resume=True, **fit_kw))
    c = Bridge(src, dst, **kw).fit(2, 8, checkpoint=ck, resume=True, **fit_kw)  # nothing left to do
    _assert_same(straight, c)


def test_a_second_bridge_fit_resumes_exactly(tmp_path, monkeypatch):
    """A fit that continues an earlier one (the iteration counter goes on) resumes on a fresh object too."""
    src, dst = _bridge_data()
    kw = dict(steps=4, hidden=16, cache_size=48, cache_refresh=5, seed=3)
    straight = cs.bridges.DSB(src, dst, **kw).fit(1, 4, batch=16, progress=False).fit(1, 4, batch=16,
                                                                                      progress=False)
    b = cs.bridges.DSB(src, dst, **kw).fit(1, 4, batch=16, progress=False)
    ck = str(tmp_path / "ck.pt")
    with monkeypatch.context() as m:
        _Interrupt(m, dsb_module, "mean_matching_batch", 3)
        with pytest.raises(KeyboardInterrupt):
            b.fit(1, 4, batch=16, progress=False, checkpoint=ck)
    assert read_checkpoint(ck)["iteration"] == 10
    fresh = cs.bridges.DSB(src, dst, **kw).fit(1, 4, batch=16, progress=False, checkpoint=ck, resume=True)
    _assert_same(straight, fresh)
    assert straight.history["half"] == fresh.history["half"] == [0.0] * 4 + [1.0] * 4 + [2.0] * 4 + [3.0] * 4


def test_solve_resumes_exactly(tmp_path):
    calls = {"n": 0}

    def drift(t, x):
        calls["n"] += 1
        if calls["n"] == 5 * 6 + 2:  # inside iteration 5
            raise KeyboardInterrupt
        return -x

    kw = dict(method="log_variance", iters=9, batch=8, lr=1e-2, seed=3, progress=False)
    straight = cs.solve(_lq(), **kw)
    ck = str(tmp_path / "ck.pt")
    with pytest.raises(KeyboardInterrupt):
        cs.solve(_lq(drift=drift), checkpoint=ck, **kw)
    assert read_checkpoint(ck)["iteration"] == 5
    resumed = cs.solve(_lq(), checkpoint=ck, resume=True, **kw)
    for a, b in zip(straight.module.parameters(), resumed.module.parameters()):
        assert torch.equal(a, b)
    assert straight.history["loss"] == resumed.history["loss"]


def test_a_failing_step_leaves_the_state_before_it(tmp_path, monkeypatch):
    """An error inside a step (not only Ctrl-C) also leaves the boundary state: after the cause is fixed, the
    run resumes to the uninterrupted result. The checkpoint holds no trace of the failed step."""
    tgt = gaussian_target(2)
    straight = cs.samplers.PIS(tgt, steps=6, hidden=16).fit(10, **PIS_FIT)
    ck = str(tmp_path / "ck.pt")
    with monkeypatch.context() as m:
        original = sampler_base.local_search

        def broken(*args, **kwargs):
            original(*args, **kwargs)
            raise RuntimeError("boom")
        m.setattr(sampler_base, "local_search", broken)
        with pytest.raises(RuntimeError, match="boom"):
            cs.samplers.PIS(tgt, steps=6, hidden=16).fit(10, checkpoint=ck, **PIS_FIT)
    state = read_checkpoint(ck)
    assert state["iteration"] == 2 and all(len(v) == 2 for v in state["history"].values())
    resumed = cs.samplers.PIS(tgt, steps=6, hidden=16).fit(10, checkpoint=ck, resume=True, **PIS_FIT)
    _assert_same(straight, resumed)


def test_load_checkpoint_names_the_differing_configuration(tmp_path):
    path = str(tmp_path / "c.pt")
    training.save_model(path, "K", {"a": 1, "b": torch.tensor([1.0, 2.0]), "f": len}, {}, {})
    load_checkpoint(path, "K", {"a": 1, "b": [1.0, 2.0], "f": len})
    with pytest.raises(ValueError, match=r"b: saved \[1.0, 2.0\] vs now \[1.0, 3.0\]"):
        load_checkpoint(path, "K", {"a": 1, "b": [1.0, 3.0], "f": len})
    with pytest.raises(ValueError, match="holds a K; this is a L"):
        load_checkpoint(path, "L", {})
    # nested options are compared key by key; a callable by its qualified name
    tgt = gaussian_target(2)
    smc_path = str(tmp_path / "smc.pt")
    cs.samplers.SMC(tgt, n_particles=10, kernel="ula").save(smc_path)
    cs.samplers.SMC(tgt, n_particles=10, kernel="ula").load(smc_path)
    with pytest.raises(ValueError, match=r"\(options\.kernel: saved 'ula' vs now 'mala'\)"):
        cs.samplers.SMC(tgt, n_particles=10).load(smc_path)
    with pytest.raises(ValueError, match=r"f: saved 'callable:builtins.len' vs now 'callable:builtins.max'"):
        load_checkpoint(path, "K", {"a": 1, "b": [1.0, 2.0], "f": max})
    with pytest.raises(ValueError, match=r"c: saved \(absent\) vs now 2"):
        load_checkpoint(path, "K", {"a": 1, "b": [1.0, 2.0], "f": len, "c": 2})


def test_ctrl_c_during_a_write_takes_effect_after_it(tmp_path):
    """SIGINT arriving while a checkpoint is written (here: between two halves of the write) does not cut the
    write short: the new file is complete and renamed into place, then the KeyboardInterrupt is raised (a
    KeyboardInterrupt inside torch.save's zip writer used to surface as an unrelated RuntimeError)."""
    import os
    import signal

    from controlsamp.training import atomic_write
    path = str(tmp_path / "f.bin")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"first half ")
            os.kill(os.getpid(), signal.SIGINT)
            f.write(b"second half")

    # Python's own SIGINT handler, whatever this process inherited (a background job starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, write)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert open(path, "rb").read() == b"first half second half"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]
