"""The `controlsamp demo` table: every closed form agrees with its independent solver."""
import re

from controlsamp import cli


def test_demo_rows_agree(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.search(r"\s\d\.\d\de[-+]\d\d\s", line)]
    assert len(rows) == len(cli.CHECKS)
    for line in rows:
        err = float(re.search(r"\s(\d\.\d\de[-+]\d\d)\s", line).group(1))
        if "Monte Carlo" in line:
            se = float(re.search(r"standard error (\S+) ", line).group(1))
            assert err < 5 * se, line
        else:
            assert err < 1e-8, line


def test_unknown_command_exits_with_usage():
    import pytest
    with pytest.raises(SystemExit):
        cli.main(["nope"])


def test_run_writes_samples_metrics_checkpoint_and_picture(tmp_path, capsys):
    """A tiny `controlsamp run` on gmm25: the files exist, the metrics are consistent with the samples, and
    --resume continues from the checkpoint (same metrics as an uninterrupted run of the same length)."""
    import json

    import numpy as np
    out = tmp_path / "run"
    args = ["run", "--target", "gmm25", "--sampler", "pis", "--loss", "tb", "--iters", "6", "--batch", "16",
            "--steps", "10", "--seed", "3", "--out", str(out), "--quiet", "--n-eval", "300"]
    assert cli.main(args) == 0
    x = np.load(out / "samples.npy")
    assert x.shape == (300, 2)
    m = json.loads((out / "metrics.json").read_text())
    for key in ("log_Z", "elbo", "ess", "target_evals", "wall_time_s", "log_Z_true", "w2", "sinkhorn", "eubo",
                "mode_coverage"):
        assert key in m, key
    assert m["elbo"] <= m["log_Z"]  # Jensen, exact for the sample
    assert m["target_evals"] == 6 * 16 * 11  # 10 scores and one reward per path
    assert (out / "samples.png").stat().st_size > 10_000
    assert (out / "checkpoint.pt").exists() and (out / "sampler.pt").exists()
    # resume: a longer run continues from the 6 done iterations
    assert cli.main([a if a != "6" else "9" for a in args] + ["--resume"]) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["target_evals"] == 9 * 16 * 11
    straight = tmp_path / "straight"
    assert cli.main([a if a != "6" else "9" for a in args[:-5]] + ["--out", str(straight), "--quiet", "--n-eval",
                                                                  "300"]) == 0
    m3 = json.loads((straight / "metrics.json").read_text())
    assert m3["log_Z"] == m2["log_Z"]
    assert "PIS / tb on gmm25" in capsys.readouterr().out
