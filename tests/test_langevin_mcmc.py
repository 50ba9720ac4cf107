"""ULA and MALA (controlsamp.langevin): ULA's biased invariant variance against theory/ula.py, MALA's
unbiasedness on Gaussians and on the funnel's x0 marginal, preconditioning, step adaptation.

Every band is z = 4 standard errors of the statistic over independent chains: the sample mean has
sd sqrt(v / n), the sample variance of a Gaussian sd v sqrt(2 / (n - 1)).
"""
import math

import pytest
import torch

import controlsamp as cs
from controlsamp.langevin import mala, run_chains, ula
from controlsamp.langevin.proposal import Preconditioner, init, log_accept_ratio, propose, target_log_density
from theory import ula as ula_theory

Z = 4.0


def _var_band(v, n):
    return Z * v * math.sqrt(2.0 / (n - 1))


def _gaussian(mean, cov, shift=0.0):
    g = cs.targets.Gaussian(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64))
    return cs.targets.Target.from_log_prob(lambda x: g.log_prob(x) + shift, g.dim, log_Z=shift)


@pytest.mark.parametrize("s,h", [(1.0, 0.5), (2.0, 0.3), (0.5, 0.05)])
def test_ula_invariant_variance_matches_theory(s, h):
    """ULA on N(0, s): the variance after burn-in equals s / (1 - h/(2s)) (theory/ula.py), not s."""
    vstar = float(ula_theory.stationary_variance().subs({ula_theory.h: h, ula_theory.s: s}))
    assert vstar == pytest.approx(s / (1 - h / (2 * s)), rel=1e-12)
    d, n = 4, 20000
    target = _gaussian(torch.zeros(d), s * torch.eye(d))
    rho2 = (1 - h / s) ** 2
    burn = int(math.ceil(math.log(1e-6) / math.log(rho2)))  # v_n - v* = rho^(2n) (v0 - v*) < 1e-6 v*
    res = run_chains(target, torch.zeros(n, d, dtype=torch.float64), 1, method="ula", step_size=h, warmup=0,
                     thin=burn, seed=1)
    x = res.draws[:, -1].reshape(-1)  # n d independent coordinates
    assert abs(float(x.var()) - vstar) < _var_band(vstar, x.numel())
    assert abs(float(x.var()) - s) > 2 * _var_band(vstar, x.numel())  # the band excludes s: the test sees the bias
    assert abs(float(x.mean())) < Z * math.sqrt(vstar / x.numel())


def test_preconditioned_ula_whitens():
    """With P = S on N(0, S), ULA is standard ULA in whitened coordinates: invariant covariance S / (1 - h/2)."""
    S = torch.tensor([[2.0, 0.9], [0.9, 0.6]], dtype=torch.float64)
    h, n = 0.4, 20000
    target = _gaussian(torch.zeros(2), S)
    res = run_chains(target, torch.zeros(n, 2, dtype=torch.float64), 1, method="ula", step_size=h, warmup=0,
                     thin=80, precond=S, seed=2)
    x = res.draws[:, -1]
    expect = S / (1 - h / 2)
    cov = torch.cov(x.T)
    for i in range(2):
        assert abs(float(cov[i, i] - expect[i, i])) < _var_band(float(expect[i, i]), n)
    # the sample covariance's sd: sqrt((S_ij^2 + S_ii S_jj) / (n - 1))
    sd01 = math.sqrt((expect[0, 1] ** 2 + expect[0, 0] * expect[1, 1]) / (n - 1))
    assert abs(float(cov[0, 1] - expect[0, 1])) < Z * sd01


@pytest.mark.parametrize("precond", [None, "diag", "dense"])
def test_mala_is_unbiased_on_an_anisotropic_gaussian(precond):
    """MALA from N(0, I) reaches N(m, S) exactly (mean and variances within CLT bands), whatever P."""
    m = torch.tensor([1.0, -2.0], dtype=torch.float64)
    S = torch.tensor([[3.0, 1.2], [1.2, 1.0]], dtype=torch.float64)
    P = {None: None, "diag": torch.diagonal(S), "dense": S}[precond]
    target = _gaussian(m, S, shift=0.3)
    n = 4000
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = run_chains(target, x0, 1, method="mala", step_size=0.3, warmup=200, thin=200, precond=P, seed=3)
    x = res.draws[:, -1]
    for i in range(2):
        v = float(S[i, i])
        assert abs(float(x[:, i].mean() - m[i])) < Z * math.sqrt(v / n)
        assert abs(float(x[:, i].var()) - v) < _var_band(v, n)
    assert 0.45 < float(res.accept_prob.mean()) < 0.7  # the warm-up tuned the step to ~0.574


def test_mala_keeps_the_funnel_x0_marginal():
    """Started from exact funnel samples, 300 frozen MALA moves keep x0 ~ N(0, 9) and the chains move."""
    target = cs.targets.get("funnel10")
    n = 4000
    x0 = target.sample(n, generator=torch.Generator().manual_seed(4)).double()
    res = run_chains(target, x0, 1, method="mala", step_size=0.05, warmup=0, thin=300, seed=5)
    x = res.draws[:, -1, 0]
    assert abs(float(x.mean())) < Z * math.sqrt(9.0 / n)
    assert abs(float(x.var()) - 9.0) < _var_band(9.0, n)
    assert float((res.draws[:, -1] - x0).abs().sum(1).gt(0).double().mean()) > 0.9  # most chains moved


def test_mh_ratio_is_detailed_balance():
    """log r(x -> y) = -log r(y -> x) for the preconditioned proposal (the MH ratio's defining symmetry)."""
    target = _gaussian(torch.zeros(3), torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)))
    ld = target_log_density(target)
    P = Preconditioner(torch.tensor([[1.0, 0.2, 0.0], [0.2, 2.0, 0.3], [0.0, 0.3, 0.7]], dtype=torch.float64), 3)
    x = init(torch.randn(50, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64), ld)
    y = propose(x, ld, 0.2, P, torch.Generator().manual_seed(7))
    assert torch.allclose(log_accept_ratio(x, y, 0.2, P), -log_accept_ratio(y, x, 0.2, P), atol=1e-10)


def test_per_chain_steps_and_adaptation():
    """A per-chain step adapts each chain to its own acceptance; the scalar step follows the mean."""
    target = _gaussian(torch.zeros(2), torch.eye(2))
    ld = target_log_density(target)
    state = mala.init(torch.zeros(3, 2, dtype=torch.float64), ld)
    step = torch.tensor([0.01, 0.5, 5.0], dtype=torch.float64)
    state, info = mala.step(state, ld, step, torch.Generator().manual_seed(0))
    acc = info.acceptance_rate
    new = mala.adapt_step(step, acc, target=0.574, rate=0.1)
    assert torch.allclose(new, step * torch.exp(0.1 * (acc - 0.574)))
    assert mala.adapt_step(1.0, acc, target=0.574, rate=0.1) == pytest.approx(math.exp(0.1 * (float(acc.mean()) - 0.574)))
    _, info_ula = ula.step(state, ld, 0.3, torch.Generator().manual_seed(1))
    acc_ula = info_ula.acceptance_rate
    assert acc_ula.shape == (3,) and bool(((acc_ula >= 0) & (acc_ula <= 1)).all())


def test_kernel_info_and_local_search_knobs():
    """MALA's info is consistent (accepted iff the state moved; the rate is the clipped exp of the log
    ratio); ULA always moves. local_search is MALA with Robbins-Monro adaptation toward target_accept at
    gain adapt_rate: it equals that loop written out (same generator, same numbers)."""
    from controlsamp.samplers.offpolicy import local_search
    target = _gaussian(torch.zeros(2), torch.eye(2))
    ld = target_log_density(target)
    x0 = 3.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    state = mala.init(x0, ld)
    new, info = mala.step(state, ld, 1.5, torch.Generator().manual_seed(3))
    moved = (new.x != state.x).any(-1)
    assert torch.equal(moved, info.is_accepted) and 0 < int(moved.sum()) < 64
    assert torch.equal(info.acceptance_rate, torch.exp(info.proposal_log_ratio.clamp(max=0.0)))
    y, uinfo = ula.step(state, ld, 1.5, torch.Generator().manual_seed(3))
    assert torch.equal(uinfo.acceptance_rate, torch.exp(uinfo.proposal_log_ratio.clamp(max=0.0)))
    assert bool((y.x != state.x).any(-1).all())
    x, lp, step = local_search(ld, x0, 6, 0.2, torch.Generator().manual_seed(4), target_accept=0.3, adapt_rate=0.2)
    gen, eps, state = torch.Generator().manual_seed(4), 0.2, mala.init(x0, ld)
    for _ in range(6):
        state, info = mala.step(state, ld, eps, gen)
        eps = eps * math.exp(0.2 * (float(info.acceptance_rate.mean()) - 0.3))
    assert torch.equal(x, state.x) and torch.equal(lp, state.log_prob) and step == pytest.approx(eps, rel=1e-15)
    # with a burn-in of b: the states after steps b + 1, ..., n, in step order (Sendera et al.'s scheme)
    xs, lps, step_b = local_search(ld, x0, 6, 0.2, torch.Generator().manual_seed(4), target_accept=0.3,
                                   adapt_rate=0.2, burn_in=4)
    gen, eps, state, kept = torch.Generator().manual_seed(4), 0.2, mala.init(x0, ld), []
    for i in range(6):
        state, info = mala.step(state, ld, eps, gen)
        eps = eps * math.exp(0.2 * (float(info.acceptance_rate.mean()) - 0.3))
        if i >= 4:
            kept.append(state)
    assert xs.shape == (2 * 64, 2) and lps.shape == (2 * 64,) and step_b == pytest.approx(eps, rel=1e-15)
    assert torch.equal(xs, torch.cat([k.x for k in kept])) and torch.equal(lps, torch.cat([k.log_prob for k in kept]))
    for bad in (6, -1):
        with pytest.raises(ValueError, match="burn_in"):
            local_search(ld, x0, 6, 0.2, burn_in=bad)


def test_target_evaluations_are_counted_and_bad_energies_reported():
    target = _gaussian(torch.zeros(2), torch.eye(2))
    res = run_chains(target, torch.zeros(10, 2, dtype=torch.float64), 5, warmup=3, seed=0)
    assert res.target_evals == 10 * (1 + 3 + 5)
    bad = cs.targets.Target.from_log_prob(lambda x: torch.where(x[:, 0] > 0.5, float("nan"), -x[:, 0] ** 2), 1)
    with pytest.raises(ValueError, match="NaN"):
        run_chains(bad, torch.ones(4, 1, dtype=torch.float64), 2, warmup=0, seed=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="hmc"), "method"), (dict(step_size=-1.0), "step_size"), (dict(thin=0), "thin"),
    (dict(target_accept=1.5), "target_accept"), (dict(x0=torch.zeros(4, 3)), "x0"),
    (dict(precond=torch.ones(3)), "precond"), (dict(precond=torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
])
def test_bad_input_is_named(kwargs, match):
    target = _gaussian(torch.zeros(2), torch.eye(2))
    args = dict(x0=torch.zeros(4, 2, dtype=torch.float64), n_draws=2, warmup=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        run_chains(target, **args)


def test_run_chains_on_a_constant_energy_is_a_random_walk():
    """A log-density that does not depend on x has score 0 (it used to fail with "element 0 of tensors does not
    require grad"): MALA then proposes a Gaussian random walk, always accepted."""
    flat = cs.targets.Target.from_log_prob(lambda x: torch.zeros(x.shape[0], dtype=x.dtype), 2)
    res = run_chains(flat, torch.zeros(4, 2, dtype=torch.float64), n_draws=5, warmup=0, step_size=0.1)
    assert torch.equal(res.accept_prob, torch.ones(4, 5, dtype=res.accept_prob.dtype))


def test_run_chains_refuses_non_finite_starts_and_float_counts():
    x0 = torch.tensor([[0.0, float("nan")]])
    with pytest.raises(ValueError, match=r"\bx0\b.*NaN"):
        run_chains(cs.targets.get("gmm25"), x0, n_draws=2)
    with pytest.raises(ValueError, match=r"\bn_draws\b"):
        run_chains(cs.targets.get("gmm25"), torch.zeros(1, 2), n_draws=2.5)
