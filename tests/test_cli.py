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


def test_run_measures_a_particle_target_against_reference_samples(tmp_path):
    """`controlsamp run --reference FILE` on dw4 in centre-of-mass-free coordinates (no exact sampler):
    W2, energy W2 and interatomic-distance W2 are measured against the file's samples. Each is
    recomputed here by an independent route: W2 by scipy's assignment solver (equal sizes: the optimal
    coupling is a permutation), the 1-d ones by sorting (the quantile coupling)."""
    import json

    import numpy as np
    import pytest
    import torch
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist, pdist

    import controlsamp as cs
    from controlsamp import train

    t = cs.targets.get("dw4_com_free")
    ref = np.random.default_rng(0).normal(0, 2.0, size=(200, t.dim))
    ref_path = tmp_path / "ref.npy"
    np.save(ref_path, ref)
    out = tmp_path / "run"
    assert cli.main(["run", "--target", "dw4_com_free", "--sampler", "dds", "--loss", "lv", "--iters", "3",
                     "--batch", "16", "--steps", "10", "--out", str(out), "--quiet", "--n-eval", "200",
                     "--reference", str(ref_path)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    x = np.load(out / "samples.npy").astype(np.float64)
    assert m["reference"] == str(ref_path) and m["reference_n"] == 200 and "eubo" not in m
    assert "log_Z_true" not in m and "delta_log_Z" not in m
    c = cdist(x, ref, "sqeuclidean")
    r, k = linear_sum_assignment(c)
    assert abs(m["w2"] - np.sqrt(c[r, k].mean())) < 1e-4 * m["w2"]
    energy = lambda a: t.energy(torch.from_numpy(a)).numpy()
    e_w2 = np.sqrt(np.mean((np.sort(energy(x)) - np.sort(energy(ref))) ** 2))
    assert abs(m["energy_w2"] - e_w2) < 1e-4 * e_w2
    dists = lambda a: np.sort(np.concatenate([pdist(p.reshape(4, 2)) for p in t.positions(torch.from_numpy(a)).numpy()]))
    d_w2 = np.sqrt(np.mean((dists(x) - dists(ref)) ** 2))
    assert abs(m["distance_w2"] - d_w2) < 1e-4 * d_w2
    with pytest.raises(ValueError, match="reference must have shape"):
        train.run_job(target="dw4_com_free", sampler="dds", loss="lv", iters=1, batch=4, steps=5, out=str(tmp_path / "bad"),
                      progress=False, n_eval=10, reference=np.zeros((10, 8)))
