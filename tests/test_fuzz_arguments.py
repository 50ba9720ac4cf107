"""Bad arguments thrown at every public constructor and main method: each must be refused with a ValueError
or TypeError that names the argument, raised by controlsamp itself (not a deep torch / numpy / scipy error),
never a silent NaN or a truncated value.

Every case below is (what, argument name, strategy of bad values, call). The strategies draw the classic
mistakes: NaN and infinities, zero and negative numbers where a positive one is needed, floats where a count
is needed (2.5 must not become 2), strings, None, wrong shapes, non-SPD matrices, devices this machine lacks,
integer dtypes. Hypothesis draws a few values per case (derandomised, see conftest.py); the file runs in well
under a minute on one core.
"""
import os
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import controlsamp as cs
from controlsamp import weights

NAN, INF = float("nan"), float("inf")
PACKAGE = os.path.dirname(os.path.abspath(cs.__file__))


# ------------------------------------------------------------------------------------------------ bad values
def one_of(*values):
    return st.sampled_from(list(values))


POSITIVE = one_of(0, 0.0, -1.0, -1e-300, NAN, INF, -INF, "1.0", None, [1.0, 2.0], True, object())
NONNEG = one_of(-1.0, -1e-300, NAN, INF, -INF, "0", None, [0.0], True)
COUNT = one_of(0, -1, -10 ** 9, 2.5, 1.0, 3.0, "3", None, NAN, True, np.float64(2.0))  # >= 1
COUNT0 = one_of(-1, -5, 2.5, 0.0, "3", None, NAN, True)  # >= 0
SEED = one_of(2.5, "1", None, NAN, 2 ** 70, True)
GRAD_CLIP = one_of(0, 0.0, -1.0, -1e-9, NAN, INF, "1", True)
PROB = one_of(0.0, 1.0, -0.5, 1.5, NAN, INF, "0.5", None)
BAD_DEVICES = ["gpu", "GPU", "tpu", "cuda:99", "meta", 3.5, "", "cpu:x"]
if not torch.cuda.is_available():
    BAD_DEVICES.append("cuda")
DEVICE = st.sampled_from(BAD_DEVICES)
DTYPE = one_of(torch.int64, torch.bool, torch.int32, "int32", 3, "floatx")


def time_in(T=1.0):
    return one_of(-0.5, T + 1.0, -1e-3, NAN, INF, "0.5", None)


@st.composite
def points(draw, d=2, min_rows=1):
    """Points that must be refused for dimension d: NaN / inf entries, a wrong number of columns, a 3-d
    array, non-numeric input; as numpy arrays or float32 / float64 tensors."""
    n = draw(st.integers(min_rows, 4))
    kind = draw(st.sampled_from(["nan", "inf", "-inf", "columns", "3d", "text", "none"]))
    if kind == "text":
        return [["a"] * d] * n
    if kind == "none":
        return None
    x = np.random.default_rng(draw(st.integers(0, 99))).normal(size=(n, d))
    if kind in ("nan", "inf", "-inf"):
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = {"nan": NAN, "inf": INF, "-inf": -INF}[kind]
    elif kind == "columns":
        x = np.random.default_rng(0).normal(size=(n, d + draw(st.sampled_from([-1, 1]))))
    else:
        x = x[None]
    as_what = draw(st.sampled_from(["numpy", "float32", "float64"]))
    return x if as_what == "numpy" else torch.as_tensor(x, dtype=getattr(torch, as_what))


@st.composite
def vectors(draw, d=None):
    """A vector that must be refused (NaN / inf entry, 2-d, text; a wrong length when d is given)."""
    choices = ["nan", "inf", "2d", "text", "none"] + (["length"] if d is not None else [])
    kind = draw(st.sampled_from(choices))
    m = d or 2
    v = np.linspace(0.1, 1.0, m)
    if kind == "nan":
        v[0] = NAN
    elif kind == "inf":
        v[-1] = -INF
    elif kind == "2d":
        v = np.stack([v, v])
    elif kind == "text":
        return "abc"
    elif kind == "none":
        return None
    else:
        v = np.ones(m + 1)
    return v


@st.composite
def spd(draw, d=2):
    """A matrix that must be refused as a covariance of size d: not symmetric, indefinite, singular, with
    NaN / inf, of the wrong shape, text."""
    kind = draw(st.sampled_from(["negative", "indefinite", "singular", "asymmetric", "nan", "inf", "shape", "text",
                                 "zero"]))
    eye = np.eye(d)
    if kind == "negative":
        return -draw(st.floats(1e-6, 1e6)) * eye
    if kind == "indefinite":
        m = eye.copy()
        m[0, 0] = -draw(st.floats(1e-3, 10.0))
        return m
    if kind == "singular":
        v = np.ones((d, 1))
        return v @ v.T
    if kind == "asymmetric":
        m = eye.copy()
        m[0, -1] += 1.0 if d > 1 else 0.0
        return m if d > 1 else -eye
    if kind == "nan":
        m = eye.copy()
        m[0, 0] = NAN
        return m
    if kind == "inf":
        return np.where(eye > 0, INF, 0.0)
    if kind == "shape":
        return np.eye(d + 1)
    if kind == "zero":
        return np.zeros((d, d))
    return "eye"


LOG_W = one_of(np.array([0.0, NAN, 1.0]), np.array([0.0, INF]), np.full(4, -INF), np.zeros(0), np.zeros((2, 3)),
               "abc", None)


# ------------------------------------------------------------------------------------------------ fixtures
G2 = cs.targets.Gaussian(np.zeros(2), np.eye(2))
GMM = cs.targets.GaussianMixture([0.3, 0.7], [[-1.0, 0.0], [1.0, 0.0]], [np.eye(2), 0.5 * np.eye(2)])
FUNNEL = cs.targets.Funnel(3)
CUSTOM = cs.targets.Target.from_log_prob(lambda x: -0.5 * (x * x).sum(1), 2)
DATA = np.random.default_rng(0).normal(size=(32, 2))
_cache = {}


def cached(key, make):
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def pis():
    return cached("pis", lambda: cs.samplers.PIS(G2, steps=4, hidden=8))


def dsb():
    return cached("dsb", lambda: cs.bridges.DSB(DATA, DATA + 1.0, steps=4, hidden=8, depth=1))


def lqr():
    return cached("lqr", lambda: cs.exact.LQR(-np.eye(2), np.eye(2), np.eye(2), np.eye(2), np.eye(2), 0.5, 1.0))


def bridge():
    return cached("bridge", lambda: cs.exact.GaussianBridge(np.zeros(2), np.eye(2), np.ones(2), 2 * np.eye(2)))


def problem():
    return cached("problem", lambda: cs.ControlProblem(2, lambda t, x: -x, 1.0, lambda x: (x * x).sum(1), steps=4))


def solution():
    return cached("solution", lambda: cs.solve(problem(), method="log_variance", iters=1, batch=4, progress=False))


def smc():
    return cached("smc", lambda: cs.samplers.SMC(G2, n_particles=8, n_mcmc=1))


def score_model():
    return cached("score_model", lambda: cs.generative.DiffusionModel(cs.processes.VP(2), hidden=8, depth=1))


def kw(fn, name, **fixed):
    """``call(bad)`` = fn(**fixed, name=bad)."""
    return lambda bad: fn(**{**fixed, name: bad})


# ------------------------------------------------------------------------------------------------ the cases
CASES = [
    # targets -------------------------------------------------------------------------------------
    ("Gaussian", "mean", vectors(), lambda v: cs.targets.Gaussian(v, np.eye(2))),
    ("Gaussian", "cov", spd(2), lambda v: cs.targets.Gaussian(np.zeros(2), v)),
    ("GaussianMixture", "weights", one_of([-1.0, 2.0], [NAN, 1.0], [0.0, 0.0], "ab", [[1.0, 2.0]], None),
     lambda v: cs.targets.GaussianMixture(v, [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), np.eye(2)])),
    ("GaussianMixture", "covs", spd(2), lambda v: cs.targets.GaussianMixture([0.5, 0.5], np.zeros((2, 2)),
                                                                              np.stack([np.eye(2), v]))
     if np.shape(v) == (2, 2) else cs.targets.GaussianMixture([0.5, 0.5], np.zeros((2, 2)), [np.eye(2), -np.eye(2)])),
    ("Funnel", "dim", st.one_of(COUNT, st.just(1)), lambda v: cs.targets.Funnel(v)),
    ("Funnel", "x0_std", POSITIVE, lambda v: cs.targets.Funnel(3, v)),
    ("ManyWell", "dim", st.one_of(COUNT, st.just(3)), lambda v: cs.targets.ManyWell(v)),
    ("LennardJones", "pair_factor", POSITIVE, lambda v: cs.targets.LennardJones(3, 2, pair_factor=v)),
    ("DoubleWellParticles", "n_particles", st.one_of(COUNT, st.just(1)), lambda v: cs.targets.DoubleWellParticles(v)),
    ("Target.from_log_prob", "dim", COUNT, lambda v: cs.targets.Target.from_log_prob(lambda x: x.sum(1), v)),
    ("Target.from_log_prob", "fn", one_of(None, 3, "f"), lambda v: cs.targets.Target.from_log_prob(v, 2)),
    ("Target.from_log_prob", "log_Z", one_of(NAN, INF, "a", [1.0, 2.0]),
     lambda v: cs.targets.Target.from_log_prob(lambda x: x.sum(1), 2, log_Z=v)),
    ("targets.get", "name", one_of("nope", 3, None), lambda v: cs.targets.get(v)),
    ("Gaussian.log_prob", "x", points(2), lambda v: G2.log_prob(v)),
    ("Gaussian.score", "x", points(2), lambda v: G2.score(v)),
    ("GaussianMixture.log_prob", "x", points(2), lambda v: GMM.log_prob(v)),
    ("GaussianMixture.score", "x", points(2), lambda v: GMM.score(v)),
    ("Funnel.log_prob", "x", points(3), lambda v: FUNNEL.log_prob(v)),
    ("Funnel.score", "x", points(3), lambda v: FUNNEL.score(v)),
    ("from_log_prob.log_prob", "x", points(2), lambda v: CUSTOM.log_prob(v)),
    ("from_log_prob.score", "x", points(2), lambda v: CUSTOM.score(v)),
    ("Gaussian.sample", "n", COUNT, lambda v: G2.sample(v)),
    ("GaussianMixture.sample", "n", COUNT, lambda v: GMM.sample(v)),
    ("Funnel.sample", "n", COUNT, lambda v: FUNNEL.sample(v)),
    # diffusion samplers -------------------------------------------------------------------------
    ("PIS", "target", one_of(None, 3, "gaussian", np.zeros(2)), lambda v: cs.samplers.PIS(v)),
    *[("PIS", name, strat, kw(cs.samplers.PIS, name, target=G2, steps=4, hidden=8))
      for name, strat in [("steps", COUNT), ("sigma", POSITIVE), ("T", POSITIVE), ("hidden", COUNT),
                          ("depth", COUNT0), ("n_freq", COUNT0), ("seed", SEED), ("device", DEVICE), ("dtype", DTYPE),
                          ("score_clip", POSITIVE), ("parametrisation", one_of("drift", 3, None))]],
    *[("DDS", name, strat, kw(cs.samplers.DDS, name, target=G2, steps=4, hidden=8))
      for name, strat in [("beta_min", POSITIVE), ("beta_max", POSITIVE), ("schedule", one_of("quadratic", 3, None)),
                          ("device", DEVICE)]],
    *[("ASBS", name, strat, kw(cs.samplers.ASBS, name, target=G2, steps=4, hidden=8, corrector_hidden=8))
      for name, strat in [("prior_std", NONNEG), ("corrector_hidden", COUNT), ("corrector", one_of("x", 3)),
                          ("device", DEVICE), ("dtype", DTYPE)]],
    *[("PIS.fit", name, strat, lambda v, name=name: pis().fit(**{"iters": 1, "batch": 4, "progress": False, name: v}))
      for name, strat in [("iters", COUNT), ("batch", COUNT), ("lr", POSITIVE), ("lr_log_Z", POSITIVE),
                          ("buffer", COUNT0), ("local_search_steps", COUNT0), ("local_search_every", COUNT0),
                          ("local_search_step", POSITIVE), ("local_search_accept", PROB), ("rank_weight", NONNEG),
                          ("grad_clip", GRAD_CLIP), ("explore", NONNEG), ("seed", SEED),
                          ("checkpoint_every", COUNT), ("backward_every", COUNT),
                          ("lr_schedule", one_of("None", "linear", 3)), ("loss", one_of("nope", 3, ["tb"]))]],
    *[("ASBS.fit", name, strat,
       lambda v, name=name: cached("asbs", lambda: cs.samplers.ASBS(G2, steps=4, hidden=8, corrector_hidden=8)).fit(
           **{"iters": 1, "batch": 4, "progress": False, name: v}))
      for name, strat in [("iters", COUNT), ("batch", COUNT), ("buffer", COUNT), ("grad_clip", GRAD_CLIP),
                          ("lr", POSITIVE), ("seed", SEED), ("stages", COUNT), ("corrector_iters", COUNT),
                          ("refresh_every", COUNT)]],
    ("PIS.sample", "n", COUNT, lambda v: pis().sample(v)),
    ("PIS.sample", "batch", COUNT, lambda v: pis().sample(4, batch=v)),
    ("PIS.log_Z", "n", COUNT, lambda v: pis().log_Z(v)),
    ("PIS.drift", "t", time_in(1.0), lambda v: pis().drift(v, np.zeros((2, 2)))),
    ("PIS.drift", "x", points(2), lambda v: pis().drift(0.5, v)),
    # Monte Carlo samplers -----------------------------------------------------------------------
    *[("AIS", name, strat, kw(cs.samplers.AIS, name, target=G2, steps=3, n_particles=8))
      for name, strat in [("steps", COUNT), ("n_particles", st.one_of(COUNT, st.just(1))), ("step_size", POSITIVE),
                          ("n_mcmc", COUNT0), ("device", DEVICE), ("dtype", DTYPE), ("seed", SEED),
                          ("target_accept", PROB), ("beta_min", POSITIVE), ("kernel", one_of("hmc", 3, None)),
                          ("prior_std", POSITIVE)]],
    *[("SMC", name, strat, kw(cs.samplers.SMC, name, target=G2, n_particles=8))
      for name, strat in [("n_particles", st.one_of(COUNT, st.just(1))), ("steps", one_of(-1, 2.5, "3", NAN, True)),
                          ("n_mcmc", COUNT0),
                          ("target_ess", PROB), ("resample_threshold", one_of(-0.1, 1.5, NAN, "a", None)),
                          ("max_temps", COUNT), ("step_decades", NONNEG), ("device", DEVICE), ("dtype", DTYPE),
                          ("seed", SEED), ("tempering_tol", POSITIVE), ("adapt_rate", POSITIVE),
                          ("precond_min_var", POSITIVE), ("target_accept", PROB)]],
    ("SMC.run", "n", one_of(1, 0, -1, 2.5, 8.0, "8", NAN, True), lambda v: smc().run(v)),
    ("SMC.run", "seed", one_of(2.5, "1", NAN, 2 ** 70, True), lambda v: smc().run(8, seed=v)),
    ("run_chains", "x0", points(2), lambda v: cs.langevin.run_chains(G2, v, n_draws=2, warmup=1)),
    ("run_chains", "n_draws", COUNT0, lambda v: cs.langevin.run_chains(G2, np.zeros((2, 2)), n_draws=v, warmup=1)),
    ("run_chains", "seed", SEED, lambda v: cs.langevin.run_chains(G2, np.zeros((2, 2)), n_draws=1, warmup=1, seed=v)),
    # bridges ------------------------------------------------------------------------------------
    ("DSB", "source", one_of(np.full((4, 2), NAN), np.zeros(4), "abc", None, 3),
     lambda v: cs.bridges.DSB(v, DATA, steps=4, hidden=8, depth=1)),
    *[("DSB", name, strat, kw(cs.bridges.DSB, name, source=DATA, target=DATA + 1.0, steps=4, hidden=8, depth=1))
      for name, strat in [("sigma", POSITIVE), ("T", POSITIVE), ("steps", COUNT), ("hidden", COUNT),
                          ("depth", COUNT), ("ema", one_of(-0.1, 1.0, 2.0, NAN, "a", None)), ("ema_warmup", NONNEG),
                          ("cache_size", COUNT), ("cache_refresh", COUNT), ("device", DEVICE), ("dtype", DTYPE),
                          ("seed", SEED)]],
    ("DSBM", "steps", COUNT, lambda v: cs.bridges.DSBM(DATA, DATA, steps=v, hidden=8)),
    ("DSB.transport", "x", points(2), lambda v: dsb().transport(v)),
    ("DSB.drift", "x", points(2), lambda v: dsb().drift(0.5, v)),
    ("DSB.drift", "t", time_in(1.0), lambda v: dsb().drift(v, np.zeros((1, 2)))),
    ("DSB.sample", "n", COUNT, lambda v: dsb().sample(v)),
    *[("DSB.fit", name, strat, lambda v, name=name: dsb().fit(**{"ipf_iters": 1, "iters_per_half": 1, "batch": 4,
                                                                  "progress": False, name: v}))
      for name, strat in [("ipf_iters", COUNT), ("iters_per_half", COUNT), ("batch", COUNT), ("lr", POSITIVE),
                          ("grad_clip", GRAD_CLIP), ("seed", SEED)]],
    *[("GaussianIPF", name, strat, kw(cs.bridges.GaussianIPF, name, mean0=np.zeros(2), cov0=np.eye(2),
                                      mean1=np.ones(2), cov1=np.eye(2)))
      for name, strat in [("cov0", spd(2)), ("cov1", spd(2)), ("mean1", vectors(2)), ("steps", COUNT),
                          ("n_samples", COUNT), ("seed", SEED), ("method", one_of("x", 3)),
                          ("noise", one_of("x", None)), ("sigma", POSITIVE), ("T", POSITIVE)]],
    # exact solutions ----------------------------------------------------------------------------
    ("GaussianBridge", "mean0", vectors(), lambda v: cs.exact.GaussianBridge(v, np.eye(2), np.ones(2), np.eye(2))),
    *[("GaussianBridge", name, strat, kw(cs.exact.GaussianBridge, name, mean0=np.zeros(2), cov0=np.eye(2),
                                         mean1=np.ones(2), cov1=np.eye(2)))
      for name, strat in [("cov0", spd(2)), ("mean1", vectors(2)), ("cov1", spd(2)), ("sigma", POSITIVE),
                          ("T", POSITIVE), ("reference", one_of(3, "ou", cs.processes.OU(3)))]],
    ("GaussianBridge.drift", "x", points(2), lambda v: bridge().drift(0.5, v)),
    ("GaussianBridge.drift", "t", time_in(1.0), lambda v: bridge().drift(v, np.zeros((1, 2)))),
    ("GaussianBridge.marginal", "t", time_in(1.0), lambda v: bridge().marginal(v)),
    ("GaussianBridge.sample_coupling", "n", COUNT, lambda v: bridge().sample_coupling(v)),
    ("SchrodingerFollmer", "target", one_of(None, 3, FUNNEL, "gaussian"), lambda v: cs.exact.SchrodingerFollmer(v)),
    ("SchrodingerFollmer", "sigma", POSITIVE, lambda v: cs.exact.SchrodingerFollmer(G2, sigma=v)),
    ("SchrodingerFollmer", "T", POSITIVE, lambda v: cs.exact.SchrodingerFollmer(G2, T=v)),
    ("SchrodingerFollmer.drift", "x", points(2), lambda v: cs.exact.SchrodingerFollmer(GMM).drift(0.5, v)),
    ("SchrodingerFollmer.drift", "t", time_in(1.0),
     lambda v: cs.exact.SchrodingerFollmer(G2).drift(v, np.zeros((1, 2)))),
    *[("LQR", name, strat, kw(cs.exact.LQR, name, A=-np.eye(2), B=np.eye(2), Q=np.eye(2), R=np.eye(2), F=np.eye(2),
                             sigma=0.5, T=1.0))
      for name, strat in [("A", one_of(np.ones((2, 3)), np.full((2, 2), NAN), "a", None)),
                          ("B", one_of(np.ones((3, 2)), np.full((2, 2), INF), "b")),
                          ("Q", one_of(-np.eye(2), np.array([[1.0, 2.0], [0.0, 1.0]]), np.full((2, 2), NAN),
                                       np.eye(3))),
                          ("R", spd(2)), ("F", one_of(-np.eye(2), np.full((2, 2), NAN), "f")),
                          ("sigma", one_of(-1.0, NAN, np.ones(3), np.ones((3, 2)), "s")), ("T", POSITIVE)]],
    ("LQR.policy", "x", points(2), lambda v: lqr().policy(0.5, v)),
    ("LQR.policy", "t", time_in(1.0), lambda v: lqr().policy(v, np.zeros((1, 2)))),
    ("LQR.riccati", "t", time_in(1.0), lambda v: lqr().riccati(v)),
    ("LQR.cost", "x0", points(2), lambda v: lqr().cost(v)),
    ("LQR.cost", "cov0", one_of(-np.eye(2), np.full((2, 2), NAN), np.eye(3)), lambda v: lqr().cost(np.zeros(2), v)),
    ("LQR.euler_gains", "steps", COUNT, lambda v: lqr().euler_gains(v)),
    ("gaussian_kl", "cov0", spd(2), lambda v: cs.exact.gaussian_kl(np.zeros(2), v, np.zeros(2), np.eye(2))),
    ("entropic_ot_gaussian", "eps", POSITIVE,
     lambda v: cs.exact.entropic_ot_gaussian(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), v)),
    # control ------------------------------------------------------------------------------------
    *[("ControlProblem", name, strat, kw(cs.ControlProblem, name, dim=2, drift=None, sigma=1.0,
                                         terminal_cost=lambda x: (x * x).sum(1)))
      for name, strat in [("dim", COUNT), ("sigma", one_of(0.0, -1.0, NAN, "s", np.ones(3), np.array([1.0, -1.0]))),
                          ("T", POSITIVE), ("steps", COUNT), ("control_cost", spd(2)),
                          ("drift", one_of(3, "f")), ("terminal_cost", one_of(None, 3, "g")),
                          ("running_cost", one_of(3, "q")), ("control_matrix", one_of(np.ones((3, 2)), "B"))]],
    *[("solve", name, strat, lambda v, name=name: cs.solve(problem(), **{"iters": 1, "batch": 4, "progress": False,
                                                                          name: v}))
      for name, strat in [("method", one_of("nope", 3, None)), ("iters", COUNT), ("batch", COUNT), ("lr", POSITIVE),
                          ("seed", SEED), ("device", DEVICE), ("dtype", DTYPE), ("grad_clip", GRAD_CLIP),
                          ("lr_schedule", one_of("linear", 3)), ("policy", one_of("cnn", 3, None)),
                          ("checkpoint_every", COUNT), ("policy_kwargs", one_of(3, "hidden"))]],
    ("solve", "problem", one_of(None, 3, "lqr"), lambda v: cs.solve(v, iters=1)),
    ("Solution.policy", "x", points(2), lambda v: solution().policy(0.5, v)),
    ("Solution.cost", "n", COUNT, lambda v: solution().cost(v)),
    # metrics ------------------------------------------------------------------------------------
    ("metrics.w2", "x", points(2), lambda v: cs.metrics.w2(v, DATA)),
    ("metrics.w2", "y", points(2), lambda v: cs.metrics.w2(DATA, v)),
    ("metrics.w2", "max_samples", one_of(0, -1, 2.5, "3", NAN, True),
     lambda v: cs.metrics.w2(DATA, DATA, max_samples=v)),
    ("metrics.sinkhorn", "eps", POSITIVE, lambda v: cs.metrics.sinkhorn(DATA, DATA, v)),
    ("metrics.sinkhorn", "numItermax", COUNT, lambda v: cs.metrics.sinkhorn(DATA, DATA, 1.0, numItermax=v)),
    ("metrics.mmd", "bandwidth", one_of(0.0, -1.0, NAN, INF, "1.0", [1.0], True),
     lambda v: cs.metrics.mmd(DATA, DATA, bandwidth=v)),
    ("metrics.mmd", "y", points(2, min_rows=2), lambda v: cs.metrics.mmd(DATA, v)),
    ("metrics.log_Z", "log_w", LOG_W, lambda v: cs.metrics.log_Z(v)),
    ("metrics.log_Z", "n_boot", COUNT, lambda v: cs.metrics.log_Z(np.zeros(4), n_boot=v)),
    ("metrics.ess", "log_w", LOG_W, lambda v: cs.metrics.ess(v)),
    ("metrics.elbo", "log_w", LOG_W, lambda v: cs.metrics.elbo(v)),
    ("metrics.logmeanexp", "log_w", one_of(np.array([0.0, NAN]), np.array([INF, 0.0]), np.zeros(0), "abc", None),
     lambda v: cs.metrics.logmeanexp(v)),
    ("metrics.logmeanexp", "dim", one_of(2, -3, 0.5, "0"), lambda v: cs.metrics.logmeanexp(np.zeros((2, 2)), dim=v)),
    ("metrics.wasserstein_1d", "u", one_of(np.array([0.0, NAN]), np.zeros(0), np.zeros((3, 2)), "a"),
     lambda v: cs.metrics.wasserstein_1d(v, np.zeros(3))),
    ("weights.systematic_resample", "log_w", one_of(torch.tensor([0.0, NAN]), torch.tensor([INF, 0.0]),
                                                    torch.full((3,), -INF), torch.zeros(0), torch.zeros(2, 2),
                                                    np.zeros(3)),
     lambda v: weights.systematic_resample(v)),
    # processes ----------------------------------------------------------------------------------
    ("OU", "theta", POSITIVE, lambda v: cs.processes.OU(2, theta=v)),
    ("OU", "dim", COUNT, lambda v: cs.processes.OU(v)),
    ("Brownian", "sigma", POSITIVE, lambda v: cs.processes.Brownian(2, sigma=v)),
    ("OU.drift", "x", points(2), lambda v: cs.processes.OU(2).drift(0.5, v)),
    ("OU.marginal", "t", time_in(1.0), lambda v: cs.processes.OU(2).marginal(v, np.zeros(2))),
    ("lti_transition", "A", one_of(np.ones((2, 3)), np.full((2, 2), NAN), "A", None),
     lambda v: cs.processes.lti_transition(v, np.eye(2), 0.1)),
    ("lti_transition", "D", one_of(np.ones((3, 3)), np.full((2, 2), INF), "D"),
     lambda v: cs.processes.lti_transition(-np.eye(2), v, 0.1)),
    ("lti_transition", "h", NONNEG, lambda v: cs.processes.lti_transition(-np.eye(2), np.eye(2), v)),
    ("SubVP", "beta_max", POSITIVE, lambda v: cs.processes.SubVP(2, beta_max=v)),
    ("Reversed", "t_min", one_of(-0.1, 1.0, 2.0, NAN, INF, "0.1", None), lambda v: cs.processes.Reversed(
        cs.processes.VP(2), t_min=v)),
    ("VP.marginal_coefficients", "t", time_in(1.0), lambda v: cs.processes.VP(2).marginal_coefficients(v)),
    # generative models ---------------------------------------------------------------------------
    ("DiffusionModel", "t_min", one_of(0.0, -0.1, 1.0, 2.0, NAN, INF, "0.1", None),
     kw(cs.generative.DiffusionModel, "t_min", reference=cs.processes.VP(2))),
    ("DiffusionModel", "hidden", COUNT, kw(cs.generative.DiffusionModel, "hidden", reference=cs.processes.VP(2))),
    ("DiffusionModel", "ema", one_of(-0.1, 1.0, 1.5, NAN, "0.9", None),
     kw(cs.generative.DiffusionModel, "ema", reference=cs.processes.VP(2))),
    ("DiffusionModel", "seed", SEED, kw(cs.generative.DiffusionModel, "seed", reference=cs.processes.VP(2))),
    ("DiffusionModel", "device", DEVICE, kw(cs.generative.DiffusionModel, "device", reference=cs.processes.VP(2))),
    ("DiffusionModel", "dtype", DTYPE, kw(cs.generative.DiffusionModel, "dtype", reference=cs.processes.VP(2))),
    ("DiffusionModel", "parametrisation", one_of("noise", None, 3, "x_0"),
     kw(cs.generative.DiffusionModel, "parametrisation", reference=cs.processes.VP(2))),
    ("DiffusionModel", "velocity_var", one_of(0.0, -1.0, NAN, INF, "0.1"),
     kw(cs.generative.DiffusionModel, "velocity_var", reference=cs.processes.CLD(2))),
    ("DiffusionModel.fit", "data", points(2), lambda v: score_model().fit(v, iters=1, progress=False)),
    ("DiffusionModel.fit", "iters", COUNT, lambda v: score_model().fit(np.zeros((4, 2)), iters=v, progress=False)),
    ("DiffusionModel.fit", "batch", COUNT, lambda v: score_model().fit(np.zeros((4, 2)), batch=v, iters=1,
                                                                       progress=False)),
    ("DiffusionModel.fit", "lr", POSITIVE, lambda v: score_model().fit(np.zeros((4, 2)), lr=v, iters=1,
                                                                       progress=False)),
    ("DiffusionModel.fit", "grad_clip", GRAD_CLIP, lambda v: score_model().fit(np.zeros((4, 2)), grad_clip=v, iters=1,
                                                                               progress=False)),
    ("DiffusionModel.fit", "t_sampling", one_of("log", None, 3), lambda v: score_model().fit(
        np.zeros((4, 2)), t_sampling=v, iters=1, progress=False)),
    ("DiffusionModel.score", "x", points(2), lambda v: score_model().score(0.5, v)),
    ("generative.sample", "n", COUNT, lambda v: cs.generative.sample(score_model(), v, steps=2)),
    ("generative.sample", "steps", COUNT, lambda v: cs.generative.sample(score_model(), 2, steps=v)),
    ("generative.sample", "sampler", one_of("ddpm", None, 3), lambda v: cs.generative.sample(score_model(), 2,
                                                                                             sampler=v, steps=2)),
    ("generative.reverse_sde", "x_T", points(2), lambda v: cs.generative.reverse_sde(score_model(), x_T=v, steps=2)),
    ("generative.predictor_corrector", "snr", POSITIVE,
     lambda v: cs.generative.predictor_corrector(score_model(), 2, steps=2, snr=v)),
    ("generative.annealed_langevin", "step_size", POSITIVE,
     lambda v: cs.generative.annealed_langevin(score_model(), 2, steps=2, step_size=v)),
    ("generative.pf_ode_sample", "steps", COUNT, lambda v: cs.generative.pf_ode_sample(score_model(), 2, method="heun",
                                                                                       steps=v)),
    ("generative.log_likelihood", "x", points(2), lambda v: cs.generative.log_likelihood(score_model(), v)),
    ("RTB", "steps", COUNT, lambda v: cs.samplers.RTB(score_model(), lambda x: x.sum(1), steps=v)),
    ("RTB", "scheme", one_of("heun", None, 3), lambda v: cs.samplers.RTB(score_model(), lambda x: x.sum(1), scheme=v)),
]


def _innermost_file(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename


@pytest.mark.parametrize("what, name, strategy, call", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_argument_is_refused_by_name(what, name, strategy, call):
    @settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(bad=strategy)
    def check(bad):
        try:
            out = call(bad)
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", msg), \
                f"{what}({name}={bad!r}): the error does not name {name!r}: {type(exc).__name__}: {msg}"
            where = _innermost_file(exc)
            assert where.startswith(PACKAGE), \
                f"{what}({name}={bad!r}) raised from {where}, not from controlsamp: {type(exc).__name__}: {msg}"
            return
        raise AssertionError(f"{what}({name}={bad!r}) was accepted; it returned {out!r:.200}")

    check()


def test_every_public_sampler_and_bridge_class_is_fuzzed():
    """The table above covers each public sampler, bridge and exact class (a new one must be added to it)."""
    covered = {c[0].split(".")[0] for c in CASES}
    for cls in list(cs.samplers.SAMPLERS.values()) + [cs.bridges.DSB, cs.bridges.DSBM, cs.bridges.GaussianIPF,
                                                    cs.exact.GaussianBridge, cs.exact.SchrodingerFollmer,
                                                    cs.exact.LQR, cs.generative.DiffusionModel]:
        if cls.__name__ == "DIS":
            continue  # DDS's constructor
        assert cls.__name__ in covered, cls.__name__
