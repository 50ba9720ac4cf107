"""Every script in examples/ runs on small arguments, writes its picture, and documents its defaults.

The examples' defaults are sized for a good picture (up to a minute each); the tests give each one a small
budget, enough to exercise every line that draws or prints, so that they stay in the fast suite.
"""
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))

# Small arguments per example (the defaults train for up to a minute). An example missing here runs with
# its defaults; add it when it trains.
FAST = {
    "exact_bridges.py": [],
    "gaussian_bridge.py": ["--iters", "4"],
    "generative_digits.py": ["--iters", "20", "--steps", "20", "--nll-samples", "10"],
    "langevin_vs_diffusion.py": ["--budget", "1e5"],
    "lqr.py": ["--iters", "10"],
    "manifolds.py": ["--iters", "20", "--n-test", "20"],
    "moons_to_circles.py": ["--ipf-iters", "1", "--iters-per-half", "30"],
    "pis_vs_exact.py": ["--iters", "10"],
    "rtb_digits.py": ["--prior-iters", "20", "--clf-iters", "20", "--steps", "10", "--iters", "5", "--batch", "16",
                      "--n-samples", "64"],
    "sample_gmm.py": ["--iters", "10"],
}
# Examples that compare samples with exact ones by W2 print the sample floor next to it.
REPORTS_W2 = {"langevin_vs_diffusion.py", "moons_to_circles.py", "pis_vs_exact.py", "sample_gmm.py"}


def _run(path, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    runpy.run_path(str(path), run_name="__main__")


def test_every_example_has_fast_arguments():
    assert sorted(FAST) == [p.name for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_and_draws(path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "figure.png"
    _run(path, [*FAST.get(path.name, []), "--out", str(out)], monkeypatch)
    assert out.stat().st_size > 10_000  # a real picture, not an empty canvas
    printed = capsys.readouterr().out
    if path.name in REPORTS_W2:
        assert "W2" in printed and "floor" in printed, printed


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_help_shows_defaults(path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        _run(path, ["--help"], monkeypatch)
    assert stop.value.code == 0
    text = capsys.readouterr().out
    # one block per option ("  --out OUT  where ... (default: ...)", help lines may wrap); all but -h
    blocks = [b for b in text.split("\n  -")[1:] if not b.startswith("h, --help")]
    assert any(b.startswith("-out") for b in blocks), text
    for block in blocks:
        assert "(default:" in " ".join(block.split()), f"{path.name}: no default shown for -{block.strip()}"
