"""SIGKILL at random moments: a training run (library API, a checkpoint every iteration) is killed outright
several times and resumed after each kill. The checkpoint must always load (never corrupt, never from the
future or the past of the run) and the final state must equal an uninterrupted run's, bit for bit.

The quick test forks the test process (the child starts at once, with the same torch state); the slow one
starts fresh interpreters (``python -c``) and kills them, imports included."""
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import controlsamp as cs
from controlsamp.training import read_checkpoint

from sampler_helpers import gaussian_target

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL") or "fork" not in multiprocessing.get_all_start_methods(),
                                reason="needs SIGKILL and fork (POSIX)")

PIS_KW = dict(batch=16, loss="tb", lr=3e-3, buffer=64, explore=0.3, local_search_every=3, local_search_steps=2,
              lr_schedule="cosine", progress=False, seed=7)


def _train_pis(ck: str, iters: int) -> None:
    cs.samplers.PIS(gaussian_target(2), steps=6, hidden=16).fit(iters, checkpoint=ck, checkpoint_every=1,
                                                                 resume=True, **PIS_KW)


def _same(a, b, where="state") -> None:
    """Equal trees of tensors and plain data (the training state of two checkpoints)."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _compare_final(reference: str, killed: str, iters: int) -> None:
    ref, got = read_checkpoint(reference), read_checkpoint(killed)
    assert got["iteration"] == ref["iteration"] == iters
    for payload in (ref, got):
        assert len(payload["history"].pop("seconds")) == iters  # wall times differ; all else is equal
    for key in ("modules", "rng", "extra", "history", "config"):
        _same(ref[key], got[key], key)


def _kill_and_resume(start, ck: str, iters: int, kills: int, seed: int, span: float, timeout: float):
    """Start the run with ``start()`` (a handle with .pid, .alive() and .wait(timeout)), SIGKILL it
    after a seeded random delay in (0, span), check the checkpoint, and again, ``kills`` times; then let the
    last run finish. Returns the iterations the checkpoint held after each kill and how many kills hit a
    running process."""
    rng = random.Random(seed)
    seen, hits = [], 0
    for _ in range(kills):
        proc = start()
        time.sleep(rng.uniform(0.0, span))
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)
            hits += 1
        code = proc.wait(timeout)
        assert code in (0, -signal.SIGKILL), f"the run failed (exit {code})"
        if os.path.exists(ck):
            state = read_checkpoint(ck)  # never corrupt: a ValueError would fail the test here
            assert 0 <= state["iteration"] <= iters
            assert all(len(v) == state["iteration"] for v in state["history"].values())
            assert not seen or state["iteration"] >= seen[-1]  # never goes back
            seen.append(state["iteration"])
    proc = start()
    assert proc.wait(timeout) == 0
    return seen, hits


class _Forked:
    def __init__(self, target, *args):
        self.p = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
        self.p.start()
        self.pid = self.p.pid

    def alive(self) -> bool:
        return self.p.is_alive()

    def wait(self, timeout: float) -> int:
        self.p.join(timeout)
        if self.p.is_alive():
            os.kill(self.pid, signal.SIGKILL)
            self.p.join()
            pytest.fail(f"the training process did not finish in {timeout} s")
        return self.p.exitcode


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """Five kills of a PIS run with a replay buffer and local search; the last run finishes. The reference is
    an uninterrupted run in this process; a forked uninterrupted run (equal to it) times the kills."""
    iters = 40
    reference, forked = str(tmp_path / "reference.pt"), str(tmp_path / "forked.pt")
    _train_pis(reference, iters)  # also warms this process up, so that its forks start at full speed
    t0 = time.perf_counter()
    assert _Forked(_train_pis, forked, iters).wait(120) == 0
    span = time.perf_counter() - t0
    _compare_final(reference, forked, iters)
    ck = str(tmp_path / "ck.pt")
    seen, hits = _kill_and_resume(lambda: _Forked(_train_pis, ck, iters), ck, iters, kills=5, seed=1,
                                  span=0.25 * span, timeout=120)
    assert hits >= 3, f"only {hits} kills hit a running process: {seen}"
    _compare_final(reference, ck, iters)
    left = set(os.listdir(tmp_path)) - {"ck.pt", "reference.pt", "forked.pt"}
    assert all(f.startswith("ck.pt.tmp") for f in left), left  # at most a killed write's temporary file


# ------------------------------------------------------------------------- slow: fresh interpreters
CHILD = r"""
import sys, torch
sys.path.insert(0, {tests!r})
import controlsamp as cs
from sampler_helpers import gaussian_target
kind, ck, iters = {kind!r}, {ck!r}, {iters}
print("ready", flush=True)
if kind == "PIS":
    cs.samplers.PIS(gaussian_target(2), steps=6, hidden=16).fit(iters, checkpoint=ck, checkpoint_every=1,
                                                                 resume=True, **{pis_kw!r})
elif kind == "ASBS":
    cs.samplers.ASBS(gaussian_target(2), steps=5, hidden=16, corrector_hidden=16).fit(
        iters, batch=16, stages=2, corrector_iters=10, refresh_every=3, buffer=64, lr_schedule="cosine", seed=3,
        checkpoint=ck, checkpoint_every=1, resume=True, progress=False)
else:
    g = torch.Generator().manual_seed(0)
    src, dst = torch.randn(300, 2, generator=g) - 1.0, torch.randn(300, 2, generator=g) + 1.0
    getattr(cs.bridges, kind)(src, dst, steps=5, hidden=32, cache_size=128, cache_refresh=7, seed=2).fit(
        2, iters // 4, batch=32, seed=5, checkpoint=ck, checkpoint_every=1, resume=True, progress=False)
"""


class _Interpreter:
    def __init__(self, kind: str, ck: str, iters: int):
        code = CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)), kind=kind, ck=ck, iters=iters,
                            pis_kw=PIS_KW)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
        self.pid = self.p.pid
        assert self.p.stdout.readline().strip() == "ready"  # the kill clock starts after the imports

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            pytest.fail(f"the training process did not finish in {timeout} s")
        finally:
            self.p.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind, iters, total", [("PIS", 120, 120), ("ASBS", 60, 80), ("DSB", 80, 80),
                                               ("DSBM", 80, 80)])
def test_sigkill_fuzz_fresh_interpreters(kind, iters, total, tmp_path):
    """Six kills at seeded random moments of a run in a fresh interpreter, for a sampler with a replay
    buffer and local search, ASBS (buffer refreshes, corrector stages) and both neural bridges (caches, EMA)."""
    reference = str(tmp_path / "reference.pt")
    t0 = time.perf_counter()
    assert _Interpreter(kind, reference, iters).wait(600) == 0
    span = time.perf_counter() - t0
    ck = str(tmp_path / "ck.pt")
    seen, hits = _kill_and_resume(lambda: _Interpreter(kind, ck, iters), ck, total, kills=6, seed=11,
                                  span=0.3 * span, timeout=600)
    assert hits >= 3, f"only {hits} kills hit a running process: {seen}"
    _compare_final(reference, ck, total)  # ASBS: 60 adjoint-matching + 2 stages x 10 corrector steps


def test_cli_run_killed_at_random_moments_resumes_to_the_uninterrupted_run(tmp_path):
    """`controlsamp run` (a fresh interpreter, the CLI's own files: job.json, checkpoint.pt, metrics) killed
    with SIGKILL at seeded random moments after its first checkpoint, three times, each time continued with
    `--resume`: the checkpoint always loads and the finished run's samples and metrics equal those of an
    uninterrupted run with the same arguments, bit for bit."""
    import json

    import numpy as np

    from controlsamp import cli
    args = ["run", "--target", "gmm25", "--sampler", "pis", "--loss", "tb", "--iters", "150", "--batch", "16",
            "--steps", "5", "--n-eval", "200", "--checkpoint-every", "1", "--seed", "3", "--quiet"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert cli.main(args + ["--out", str(ref)]) == 0
    rng = random.Random(0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = []
    for k in range(3):
        cmd = [sys.executable, "-c", "import sys; from controlsamp.cli import main; sys.exit(main())",
               *args, "--out", str(out)] + (["--resume"] if k else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        ck = out / "checkpoint.pt"
        before = ck.stat().st_mtime_ns if ck.exists() else None
        t0 = time.time()
        # wait for this process's first checkpoint (imports take seconds), then kill at a random moment
        while proc.poll() is None and (not ck.exists() or ck.stat().st_mtime_ns == before):
            assert time.time() - t0 < 120
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (-signal.SIGKILL, 0), err
        state = read_checkpoint(str(ck))  # never corrupt
        assert 1 <= state["iteration"] <= 150
        done.append(state["iteration"])
    assert done == sorted(done) and done[0] < done[-1]  # the kills landed at different points of the run
    assert cli.main(args + ["--out", str(out), "--resume"]) == 0
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # a killed write's temporary is removed on resume
    assert np.array_equal(np.load(ref / "samples.npy"), np.load(out / "samples.npy"))
    m_ref, m_out = (json.load(open(d / "metrics.json")) for d in (ref, out))
    for key in ("log_Z", "elbo", "ess", "w2", "target_evals"):
        assert m_ref[key] == m_out[key], key
