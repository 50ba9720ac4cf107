"""The data sources of generative modelling (`controlsamp.generative.data`) and `controlsamp fit-data` end to end."""
import json
import math
import sys

import numpy as np
import pytest
import torch

from controlsamp import cli
from controlsamp.generative import data

# A tiny moons job: a few iterations, a short sampler, a handful of likelihoods.
TINY = ["fit-data", "--data", "moons", "--iters", "12", "--batch", "32", "--hidden", "16", "--depth", "2",
        "--steps", "20", "--n-samples", "150", "--nll-samples", "10", "--n-train", "300", "--n-test", "150",
        "--checkpoint-every", "4", "--quiet"]


def _strict_json(path):
    def refuse(token):
        raise AssertionError(f"{path} is not strict JSON: {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------------------------------------ data
def test_digits_split_is_fixed_disjoint_and_complete():
    train, test, every = data.digits("train"), data.digits("test"), data.digits("all")
    assert train.shape == (1438, 64) and test.shape == (359, 64) and every.shape == (1797, 64)
    assert train.dtype == torch.float64
    assert torch.equal(train, data.digits("train", seed=0)) and not torch.equal(train, data.digits("train", seed=1))
    i_train, i_test = data._split(1797, 0.2, 0)
    assert set(i_train.tolist()).isdisjoint(i_test.tolist())
    assert sorted(i_train.tolist() + i_test.tolist()) == list(range(1797))
    assert torch.equal(every[i_train], train) and torch.equal(every[i_test], test)
    assert data.digits("test", test_fraction=0.5).shape == (898, 64)
    (lab_x, labels), (_, every_labels) = data.digits("train", return_labels=True), data.digits("all", return_labels=True)
    assert torch.equal(lab_x, train) and labels.shape == (1438,) and labels.dtype == torch.int64
    assert torch.equal(every_labels[i_train], labels) and set(every_labels.tolist()) == set(range(10))
    for x in (train, test):  # integer levels 0..16
        assert torch.equal(x, x.round()) and x.min() == 0 and x.max() == data.DIGITS_LEVELS - 1
    with pytest.raises(ValueError, match="split"):
        data.digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits("train", test_fraction=1.0)


def test_model_space_maps_and_dequantisation():
    levels = data.DIGITS_LEVELS
    x = torch.arange(levels, dtype=torch.float64)
    y = data.to_model_space(x, levels)
    assert torch.allclose(y, 2 * (x + 0.5) / levels - 1) and y.min() > -1 and y.max() < 1
    assert torch.equal(data.from_model_space(y, levels), x)
    assert torch.equal(data.from_model_space(torch.tensor([-3.0, 3.0]), levels), torch.tensor([0.0, 16.0],
                                                                                               dtype=torch.float64))
    with pytest.raises(ValueError, match="integer levels"):
        data.to_model_space(torch.tensor([17.0]), levels)
    train, test, info = data.load_data("digits")
    assert isinstance(train, data.DequantisedData) and len(train) == 1438 and train.dim == 64
    draw = train(500, torch.Generator().manual_seed(0))
    assert draw.shape == (500, 64) and draw.min() >= -1 and draw.max() < 1
    assert not torch.equal(draw, data.to_model_space(data.from_model_space(draw, levels), levels))  # not centres
    rows = {tuple(r) for r in train.x_int.tolist()}
    assert all(tuple(r) in rows for r in data.from_model_space(draw, levels).tolist())  # each a training image
    assert test.shape == (359, 64) and torch.equal(data.from_model_space(test, levels), data.digits("test"))
    assert info["levels"] == levels and info["dim"] == 64 and info["n_test"] == 359
    assert math.isclose(info["log_scale"], 64 * math.log(2 / levels))
    assert info["max_distance"] > info["scale"] > 0


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    data._digits_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    try:
        with pytest.raises(ImportError, match="pip install scikit-learn"):
            data.digits()
    finally:
        data._digits_arrays.cache_clear()


def test_toy_sets_are_seeded_with_separate_train_and_test_streams():
    train, test, info = data.load_data("eight_gaussians", n_train=400, n_test=100, seed=3)
    assert train.shape == (400, 2) and test.shape == (100, 2) and train.dtype == torch.float64
    again, again_test, _ = data.load_data("eight_gaussians", n_train=400, n_test=100, seed=3)
    assert torch.equal(train, again) and torch.equal(test, again_test)
    assert not torch.equal(train[:100], test)
    assert not torch.equal(train, data.load_data("eight_gaussians", n_train=400, n_test=100, seed=4)[0])
    assert info["levels"] is None and info["log_scale"] == 0.0 and info["dim"] == 2
    exact = torch.cdist(train, train).max().item()
    assert math.isclose(info["max_distance"], exact, rel_tol=1e-12)
    with pytest.raises(ValueError, match="moons, circles"):
        data.load_data("swiss_roll")


def test_npy_files_split_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npy"
    np.save(good, rng.normal(size=(50, 3)))
    train, test, info = data.load_data(str(good), seed=1)
    assert train.shape == (40, 3) and test.shape == (10, 3) and info["dim"] == 3
    both = torch.cat([train, test])
    assert torch.equal(both[both[:, 0].argsort()], torch.from_numpy(np.load(good))[np.load(good)[:, 0].argsort()])
    assert torch.equal(train, data.load_data(str(good), seed=1)[0])
    with pytest.raises(ValueError, match="no such file"):
        data.load_data(str(tmp_path / "missing.npy"))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(10))
    with pytest.raises(ValueError, match=r"shape \(N, d\).*\(10,\)"):
        data.load_data(str(flat))
    bad = rng.normal(size=(20, 2))
    bad[7, 1], bad[12, 0] = np.nan, np.inf
    nan = tmp_path / "nan.npy"
    np.save(nan, bad)
    with pytest.raises(ValueError, match=r"non-finite .* row 7.*2 rows"):
        data.load_data(str(nan))
    text = tmp_path / "text.npy"
    np.save(text, np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="numeric"):
        data.load_data(str(text))


# ------------------------------------------------------------------------------------------------ the CLI
def _interrupt_at(monkeypatch, call: int):
    """Ctrl-C at the ``call``-th training loss."""
    from controlsamp.generative import model
    real, count = model.score_matching_loss, [0]

    def loss(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(model, "score_matching_loss", loss)


def test_fit_data_writes_files_and_resumes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    out, straight = tmp_path / "run", tmp_path / "straight"
    args = TINY + ["--out", str(out)]
    # interrupted at iteration 7 of 12: exit code 130, the command that resumes it
    _interrupt_at(monkeypatch, 8)
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted at iteration 7 of 12" in err and "fit-data" in err and "--resume" in err
    monkeypatch.undo()
    assert not (out / "metrics.json").exists() and (out / "checkpoint.pt").exists()
    # a new run into the folder is refused; so is a resume with other settings
    with pytest.raises(SystemExit):
        cli.main(args)
    assert "already holds a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([a if a != "--quiet" else "--lr=0.01" for a in args] + ["--quiet", "--resume"])
    assert "lr: 0.001 then, 0.01 now" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(args + ["--reference", "ve", "--resume"])
    assert "reference: 'vp' then, 've' now" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([a if a != "12" else "20" for a in args] + ["--resume"])
    assert "iters = 12 (now 20)" in capsys.readouterr().err
    # the resumed run finishes as an uninterrupted one would
    assert cli.main(args + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "VP score model (eps, simple weighting) on moons" in printed and "bits_per_dim" in printed
    assert cli.main(TINY + ["--out", str(straight)]) == 0
    m, m_straight = _strict_json(out / "metrics.json"), _strict_json(straight / "metrics.json")
    for key in ("nll", "nll_se", "bits_per_dim", "nfe", "wall_time_s", "iters", "w2", "w2_floor", "mmd", "mmd_floor",
                "mmd_bandwidth", "final_loss", "sample_s"):
        assert m[key] is not None, key
    assert m["iters"] == 12 and m["nfe"] == 20 and m["nll_n"] == 10 and m["nll_divergence"] == "exact"
    assert math.isclose(m["bits_per_dim"], m["nll"] / (2 * math.log(2)))
    for key in ("nll", "w2", "mmd", "final_loss"):
        assert m[key] == m_straight[key], key
    x = np.load(out / "samples.npy")
    assert x.shape == (150, 2) and x.dtype == np.float32
    assert np.array_equal(x, np.load(straight / "samples.npy"))
    assert (out / "samples.png").stat().st_size > 10_000 and (out / "model.pt").exists()
    job = _strict_json(out / "job.json")
    assert job["target"] == "moons" and job["fit_options"]["reference"] == "vp"
    # the sampler may change on resume (evaluation only); --force starts afresh
    assert cli.main(args + ["--resume", "--sampler", "heun", "--nll-samples", "0"]) == 0
    m = _strict_json(out / "metrics.json")
    assert m["sampler"] == "heun" and m["nll"] is None and m["iters"] == 12
    assert cli.main(args + ["--force", "--iters", "3"]) == 0
    assert _strict_json(out / "metrics.json")["iters"] == 3


def test_fit_data_digits_writes_levels(tmp_path, capsys):
    out = tmp_path / "digits"
    assert cli.main(["fit-data", "--data", "digits", "--iters", "3", "--batch", "16", "--hidden", "16", "--steps", "5",
                     "--n-samples", "16", "--nll-samples", "4", "--quiet", "--out", str(out)]) == 0
    x = np.load(out / "samples.npy")
    assert x.shape == (16, 64) and np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 16
    m = _strict_json(out / "metrics.json")
    assert m["levels"] == 17 and m["nll_divergence"] == "hutchinson" and m["bits_per_dim_dequantised"] is True
    assert math.isclose(m["bits_per_dim"], (m["nll"] - 64 * math.log(2 / 17)) / (64 * math.log(2)))
    assert "w2" not in m  # only for 2-d data
    assert (out / "samples.png").stat().st_size > 10_000
    assert "17-level data" in capsys.readouterr().out


@pytest.mark.parametrize("reference, sampler", [("ve", "pc"), ("cld", "sscs")])
def test_fit_data_other_references(tmp_path, reference, sampler):
    out = tmp_path / reference
    assert cli.main(TINY + ["--reference", reference, "--sampler", sampler, "--out", str(out)]) == 0
    m = _strict_json(out / "metrics.json")
    assert m["reference"] == reference and math.isfinite(m["nll"]) and m["w2"] > 0
    if reference == "ve":  # Song & Ermon's sigma_max: the largest pairwise distance of the training data
        train = data.load_data("moons", n_train=300, n_test=150)[0]
        assert math.isclose(m["reference_settings"]["sigma_max"], torch.cdist(train, train).max().item())
    else:
        assert m["reference_settings"]["velocity_var"] == pytest.approx(0.01)


@pytest.mark.parametrize("dim", [1, 3])
def test_fit_data_on_a_npy_file(tmp_path, dim):
    path = tmp_path / "points.npy"
    np.save(path, np.random.default_rng(0).normal(size=(100, dim)))
    out = tmp_path / "run"
    assert cli.main(TINY + ["--data", str(path), "--out", str(out)]) == 0
    m = _strict_json(out / "metrics.json")
    assert m["n_train"] == 80 and m["n_test"] == 20 and m["dim"] == dim and "w2" not in m
    assert np.load(out / "samples.npy").shape == (150, dim) and (out / "samples.png").stat().st_size > 10_000
    assert _strict_json(out / "job.json")["target"] == str(path)


def test_fit_data_refuses_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(TINY + ["--reference", "cld", "--parametrisation", "x0", "--out", str(tmp_path / "a")])
    assert "cannot be used with a CLD reference" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(TINY + ["--data", str(tmp_path / "none.npy"), "--out", str(tmp_path / "b")])
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(TINY + ["--out", str(tmp_path / "c"), "--resume"])
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_fit_data_with_differential_privacy_reports_the_privacy_spent(tmp_path, capsys):
    """`fit-data --dp-epsilon 5` trains by DP-SGD: metrics.json holds epsilon (at most 5, and the accountant's for
    the noise multiplier, rate and steps it reports), delta and the noise multiplier, and the printout names them;
    CLD and a non-default weighting are refused before training."""
    from controlsamp.generative import dpdm
    out = tmp_path / "dp"
    assert cli.main(["fit-data", "--data", "moons", "--iters", "20", "--batch", "64", "--dp-epsilon", "5",
                     "--dp-noise-multiplicity", "2", "--nll-samples", "0", "--n-samples", "50", "--steps", "10",
                     "--n-train", "640", "--out", str(out), "--quiet"]) == 0
    m = _strict_json(out / "metrics.json")
    assert m["epsilon"] <= 5.0 and m["delta"] == 1e-5 and m["noise_multiplicity"] == 2
    assert m["sample_rate"] == 0.1
    assert abs(m["epsilon"] - dpdm.epsilon_spent(m["noise_multiplier"], 0.1, 20, 1e-5)) < 1e-9
    assert "epsilon" in capsys.readouterr().out
    for extra, match in ((["--reference", "cld"], "isotropic reference"), (["--weighting", "likelihood"], "weighting")):
        with pytest.raises(SystemExit):
            cli.main(["fit-data", "--data", "moons", "--iters", "2", "--dp-epsilon", "5", "--out",
                      str(tmp_path / "bad"), "--quiet"] + extra)
        assert match in capsys.readouterr().err
        assert not (tmp_path / "bad" / "checkpoint.pt").exists()
