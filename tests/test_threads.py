"""The intra-op thread default of ``import controlsamp``, its overrides, ``set_threads`` and ``--threads``.

Thread counts only, never wall-clock times (those are in benchmarks/speed.py and BENCHMARKS.md).
"""
import os
import subprocess
import sys

import pytest
import torch

import controlsamp as cs
from controlsamp import _threads, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = "import controlsamp, torch; print(torch.get_num_threads())"


def _fresh(code: str = PROBE, **env) -> str:
    """Run ``code`` in a fresh interpreter on this source tree with the thread variables cleared, then ``env``."""
    e = {k: v for k, v in os.environ.items() if k not in ("CONTROLSAMP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=e, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_in_a_fresh_process():
    assert int(_fresh()) == _threads.DEFAULT == 1


def test_env_var_overrides_the_default():
    assert int(_fresh(CONTROLSAMP_THREADS="2")) == 2
    assert int(_fresh(CONTROLSAMP_THREADS="auto")) == _threads.torch_default()


@pytest.mark.parametrize("var", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_omp_and_mkl_variables_are_left_to_torch(var):
    torch_alone = _fresh("import torch; print(torch.get_num_threads())", **{var: "2"})  # torch may cap it
    assert _fresh(**{var: "2"}) == torch_alone


def test_an_earlier_torch_choice_is_kept():
    n = _threads.torch_default() + 2  # differs from torch's default, so it reads as the user's choice
    code = f"import torch; torch.set_num_threads({n}); import controlsamp; print(torch.get_num_threads())"
    assert int(_fresh(code)) == n


def test_bad_env_var_is_named():
    e = {k: v for k, v in os.environ.items()}
    e.update(CONTROLSAMP_THREADS="zero", PYTHONPATH=ROOT + os.pathsep + e.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", "import controlsamp"], env=e, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "CONTROLSAMP_THREADS" in out.stderr


def test_set_threads(restore_threads):
    assert cs.set_threads(2) == torch.get_num_threads() == 2
    assert cs.set_threads("1") == 1
    assert cs.set_threads("auto") == _threads.torch_default()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", "", None, True, "0"])
def test_set_threads_validates(bad, restore_threads):
    with pytest.raises(ValueError, match=r"\bn must be a positive integer or 'auto'"):
        cs.set_threads(bad)


@pytest.mark.parametrize("command", ["run", "demo"])
def test_cli_threads_reach_torch(command, monkeypatch, restore_threads):
    seen = {}
    monkeypatch.setattr(cli, command, lambda args: seen.setdefault("threads", torch.get_num_threads()) and 0)
    torch.set_num_threads(1)
    cli.main([command, "--threads", "2"])
    assert seen["threads"] == 2


def test_cli_threads_rejects_bad_values(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--threads", "0"])
    assert "--threads must be a positive integer or 'auto'" in capsys.readouterr().err


def test_cli_default_is_the_count_in_effect(monkeypatch, restore_threads):
    seen = {}
    monkeypatch.setattr(cli, "run", lambda args: seen.setdefault("args", args) and 0)
    torch.set_num_threads(1)
    cli.main(["run"])
    assert seen["args"].threads == "1" and torch.get_num_threads() == 1
