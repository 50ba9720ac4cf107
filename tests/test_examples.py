"""Every script in examples/ runs and writes its picture."""
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_and_draws(path, tmp_path, monkeypatch):
    out = tmp_path / "figure.png"
    monkeypatch.setattr(sys, "argv", [str(path), "--out", str(out)])
    runpy.run_path(str(path), run_name="__main__")
    assert out.stat().st_size > 10_000  # a real picture, not an empty canvas
