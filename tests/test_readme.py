"""The README's Python snippets run as written, print their results next to the values they should be near,
and those results are within tolerances derived from their sample sizes; every link of the README and of
docs/ resolves inside the repository.

Each snippet runs in a fresh namespace (the README presents them as independent), and its check reads the
variables the snippet defines. A new snippet needs a check here: ``test_every_snippet_has_a_check`` fails
until it has one.

Tolerances. For an importance estimate of log Z from n weights whose normalised ESS is e, the relative
variance of Z-hat is about (1/e - 1)/n (the second moment of the normalised weights), so by the delta method
log Z-hat lies within z sqrt((1/e - 1)/n) of log Z, z = 5 here (fixed seeds make each check deterministic on a
given build; z = 5 keeps it valid across builds). Means of n exact samples are checked within 5 standard
errors; deterministic identities to round-off.
"""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import controlsamp as cs

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
Z = 5.0

# a distinctive line of each snippet -> the name of its check below
NEEDLES = {
    'pis = cs.samplers.PIS(target, steps=50, sigma=5 ** 0.5)': "pis_gmm25",
    "asbs = cs.samplers.ASBS(": "asbs",
    "class MeanAbsoluteDeviation(": "custom_objective",
    "smc = cs.samplers.SMC(": "smc_and_mala",
    "bridge = cs.bridges.GaussianIPF(": "bridges",
    "br = cs.exact.GaussianBridge(": "tour",
    "sol = cs.solve(": "solve",
    "model = cs.generative.DiffusionModel(": "generative",
}


def _block(needle):
    found = [b for b in BLOCKS if needle in b]
    assert len(found) == 1, f"{len(found)} README snippets contain {needle!r}"
    return found[0]


def _run(needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # snippets write files (a saved sampler)
    namespace = {}
    exec(compile(_block(needle), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.strip(), "the snippet prints nothing"
    return namespace, printed


def importance_band(log_w, z=Z):
    """z standard deviations of log Z-hat = logmeanexp(log w): sqrt((1/ESS - 1) / n) by the delta method."""
    log_w = torch.as_tensor(log_w, dtype=torch.float64)
    ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / len(log_w))
    return z * math.sqrt(max(1.0 / ess - 1.0, 0.0) / len(log_w))


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= len(NEEDLES)


def test_every_snippet_has_a_check():
    for block in BLOCKS:
        owners = [needle for needle in NEEDLES if needle in block]
        assert len(owners) == 1, f"README snippet without exactly one check in tests/test_readme.py:\n{block[:300]}"
        assert "print(" in block, f"README snippet that prints nothing:\n{block[:300]}"


def test_pis_gmm25(tmp_path, monkeypatch, capsys):
    ns, printed = _run("pis = cs.samplers.PIS(target, steps=50, sigma=5 ** 0.5)", tmp_path, monkeypatch, capsys)
    assert "(exact 0)" in printed and "sample floor" in printed
    est, elbo, log_w, n = ns["est"], ns["elbo"], ns["log_w"], ns["n"]
    assert log_w.shape == (n,) and ns["x"].shape == (n, 2)
    assert abs(est - 0.0) <= importance_band(log_w), (est, importance_band(log_w))
    assert est <= math.log(1000.0)  # Markov: P(Z-hat >= 1000 Z) <= 1/1000, whatever the weights' tails
    assert elbo <= est + 1e-12      # mean <= log-mean-exp on any sample
    assert 0.0 < ns["floor"] < ns["w2"]  # exact samples are nearer each other than a short run is to them
    assert ns["coverage"] >= 0.6
    assert (tmp_path / "pis.pt").exists()


def test_asbs(tmp_path, monkeypatch, capsys):
    ns, printed = _run("asbs = cs.samplers.ASBS(", tmp_path, monkeypatch, capsys)
    assert "(exact 0)" in printed
    assert abs(ns["est"] - ns["target"].log_Z) <= importance_band(ns["log_w"])


def test_custom_objective(tmp_path, monkeypatch, capsys):
    ns, printed = _run("class MeanAbsoluteDeviation(", tmp_path, monkeypatch, capsys)
    assert "(exact 0)" in printed
    _, log_w = ns["pis"].sample(1000)  # the snippet's own draw (same default seed)
    assert abs(ns["est"]) <= importance_band(log_w) + 1e-9


def test_smc_and_mala(tmp_path, monkeypatch, capsys):
    ns, printed = _run("smc = cs.samplers.SMC(", tmp_path, monkeypatch, capsys)
    assert "(exact 0)" in printed and "R-hat" in printed
    assert len(printed.splitlines()) <= 4  # the SMC result prints as one line, not its tensors
    smc = ns["smc"]
    assert abs(ns["est"] - smc.last.log_Z) < 1e-9
    # particles move independently between temperatures: their final weights are importance weights
    assert abs(ns["est"]) <= importance_band(ns["log_w"]), (ns["est"], importance_band(ns["log_w"]))
    assert float(ns["rhat"].min()) > 2.0  # 8 MALA chains in different modes of gmm25 do not mix


def test_bridges(tmp_path, monkeypatch, capsys):
    ns, printed = _run("bridge = cs.bridges.GaussianIPF(", tmp_path, monkeypatch, capsys)
    assert "theory: rho_max^4" in printed and "sample floor" in printed
    bridge = ns["bridge"]
    assert bridge.history[-1]["coupling_error"] < 1e-12
    # the fitted rate matches the linearised IPF's rho_max^4 (tests/test_gaussian_ipf.py: to 1e-3)
    assert abs(bridge.convergence_rate() - ns["rho_max"] ** 4) <= 1e-3
    assert ns["xT"].shape == (500, 2) and ns["y"].shape == (5, 2)
    assert 0.0 < ns["floor"] < ns["w2"] < 5.0


def test_generative(tmp_path, monkeypatch, capsys):
    """The learned model's test NLL is above the exact entropy of the same points up to Monte-Carlo error (the
    paired per-point difference is a KL plus noise) and within 0.3 nats of it (measured 0.11); the exact score's
    samples are within the spread of the W2 sample floor (mean + 5 sd over 8 pairs of exact sample sets)."""
    ns, printed = _run("model = cs.generative.DiffusionModel(", tmp_path, monkeypatch, capsys)
    assert "(exact " in printed and "sample floor" in printed
    mix, test = ns["mix"], ns["test"]
    diff = -ns["ll"] + mix.log_prob(0.0, test)
    gap, se = float(diff.mean()), float(diff.std()) / math.sqrt(diff.numel())
    assert -Z * se < gap < 0.3, (gap, se)
    floors = [cs.metrics.w2(mix.sample(0.0, 2000, generator=torch.Generator().manual_seed(10 + 2 * i)),
                            mix.sample(0.0, 2000, generator=torch.Generator().manual_seed(11 + 2 * i))) for i in range(8)]
    w2_exact = cs.metrics.w2(ns["x_exact"], ns["fresh"])
    assert w2_exact < np.mean(floors) + Z * np.std(floors), (w2_exact, floors)


def test_tour(tmp_path, monkeypatch, capsys):
    ns, printed = _run("br = cs.exact.GaussianBridge(", tmp_path, monkeypatch, capsys)
    assert "exact" in printed
    paths, m_t, S_t = ns["paths"], ns["m_t"], ns["S_t"]
    n = paths.shape[0]
    assert paths.shape == (n, 11, 2)
    se = (S_t.diagonal() / n).sqrt()
    assert ((paths[:, 5].mean(0) - m_t).abs() <= Z * se).all()
    # the printed LQR cost is x0' P(0) x0 + int_0^T tr(sigma sigma' P(t)) dt (Simpson's rule on the Riccati solution)
    lqr = ns["lqr"]
    ts = np.linspace(0.0, 2.0, 401)
    trace = np.array([0.3 ** 2 * float(torch.trace(torch.as_tensor(lqr.riccati(t)))) for t in ts])
    h = ts[1] - ts[0]
    integral = h / 3 * (trace[0] + trace[-1] + 4 * trace[1:-1:2].sum() + 2 * trace[2:-1:2].sum())
    x0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    quad = float(x0 @ torch.as_tensor(lqr.riccati(0.0), dtype=torch.float64) @ x0) + integral
    assert abs(lqr.cost([1.0, 0.0]) - quad) <= 1e-6 * quad
    Phi, Q = ns["Phi"], ns["Q"]
    assert torch.allclose(Phi @ Phi.T + Q, torch.eye(2, dtype=Q.dtype), atol=1e-12)
    assert float(ns["sf"].drift(0.0, torch.zeros(1, 2)).abs().max()) < 1e-10  # E[X_1] = 0 for gmm25


def test_solve(tmp_path, monkeypatch, capsys):
    ns, printed = _run("sol = cs.solve(", tmp_path, monkeypatch, capsys)
    assert "optimum" in printed
    mean, se, exact = ns["mean"], ns["se"], ns["exact"]
    # no policy beats the optimum beyond Monte Carlo noise and the 500-step Euler evaluation's bias (h = 0.002);
    # 200 iterations of adjoint matching on the exact (affine) policy class get within 2%
    assert mean >= exact - Z * se - 0.005 * exact
    assert mean <= exact + Z * se + 0.02 * exact
    assert ns["u"].shape == (5, 1)


# ------------------------------------------------------------------------------------------------- links
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
REPO_DIRS = ("controlsamp/", "tests/", "examples/", "benchmarks/", "theory/", "docs/")


def _references(path):
    text = path.read_text()
    links = [m.split("#")[0] for m in re.findall(r"\]\(([^)\s]+)\)", text) if not m.startswith(("http", "#"))]
    named = re.findall(r"(?<![\w/.-])([\w/.-]+\.md)\b", text)
    paths = [m for m in re.findall(r"`([\w/.-]+)`", text) if m.startswith(REPO_DIRS)]
    return [r for r in links + named + paths if r]


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_links_resolve_inside_the_repository(path):
    missing = [ref for ref in _references(path)
               if not (path.parent / ref).exists() and not (ROOT / ref).exists()]
    assert not missing, f"{path.name} refers to files not in the repository: {missing}"
