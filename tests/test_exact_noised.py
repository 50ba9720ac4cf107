"""cs.exact.NoisedMixture: noised marginals and scores of Gaussian-mixture data under every linear reference,
against autograd, Monte Carlo through the reference's kernel (CLT bands), the Stein identity and the
Fokker-Planck equation (finite differences)."""
import math

import pytest
import torch

import controlsamp as cs

DATA_W = [0.3, 0.7]
DATA_M = [[-1.0, 0.5], [2.0, -1.0]]
DATA_S = [[[0.4, 0.1], [0.1, 0.3]], [[0.2, 0.0], [0.0, 0.5]]]


def _mixtures():
    out = {}
    for name, ref in [("brownian", cs.processes.Brownian(2, sigma=1.3)), ("ou", cs.processes.OU(2, theta=0.8)),
                      ("vp", cs.processes.VP(2)), ("ve", cs.processes.VE(2))]:
        out[name] = cs.exact.NoisedMixture(ref, DATA_W, DATA_M, DATA_S)
    out["cld"] = cs.exact.NoisedMixture.with_velocity(cs.processes.CLD(2), DATA_W, DATA_M, DATA_S, 0.04 * 0.25)
    return out


MIXTURES = _mixtures()


@pytest.mark.parametrize("name", sorted(MIXTURES))
@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_score_is_the_gradient_of_the_log_density(name, t):
    mix = MIXTURES[name]
    x = torch.randn(64, mix.reference.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    x.requires_grad_(True)
    grad, = torch.autograd.grad(mix.log_prob(t, x).sum(), x)
    assert torch.allclose(mix.score(t, x.detach()), grad, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_marginal_matches_monte_carlo_through_the_kernel_and_stein(name):
    """X_0 drawn from the data, X_t drawn from the kernel N(Phi x0 + c, Q): the sample mean and covariance
    match the closed-form mixture's within 5 standard errors, and the closed-form score satisfies
    E[s(X_t)] = 0 and E[s(X_t) X_t^T] = -I (Stein's identity) within 5 standard errors."""
    mix, t, n = MIXTURES[name], 0.3, 200_000
    gen = torch.Generator().manual_seed(3)
    D = mix.reference.dim
    k = torch.multinomial(mix.weights, n, replacement=True, generator=gen)
    L0 = torch.linalg.cholesky(mix.covs)
    x0 = mix.means[k] + (L0[k] @ torch.randn(n, D, 1, generator=gen, dtype=torch.float64)).squeeze(-1)
    Phi, c, Q = mix.reference.transition(0.0, t)
    xt = x0 @ Phi.T + c + torch.randn(n, D, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(Q).T
    w, mu, C = mix.marginal(t)
    mean = (w[:, None] * mu).sum(0)
    cov = (w[:, None, None] * (C + mu[:, :, None] * mu[:, None, :])).sum(0) - torch.outer(mean, mean)
    se_mean = xt.std(0) / math.sqrt(n)
    assert ((xt.mean(0) - mean).abs() < 5 * se_mean).all()
    centred = xt - xt.mean(0)
    prods = centred[:, :, None] * centred[:, None, :]
    assert ((prods.mean(0) - cov).abs() < 5 * prods.std(0) / math.sqrt(n) + 1e-12).all()
    s = mix.score(t, xt)
    assert ((s.mean(0)).abs() < 5 * s.std(0) / math.sqrt(n)).all()
    sx = s[:, :, None] * xt[:, None, :]
    assert ((sx.mean(0) + torch.eye(D, dtype=torch.float64)).abs() < 5 * sx.std(0) / math.sqrt(n) + 1e-12).all()


@pytest.mark.parametrize("ref", [cs.processes.OU(1, theta=1.3, sigma=0.7), cs.processes.VP(1)], ids=["ou", "vp"])
def test_density_solves_the_fokker_planck_equation(ref):
    """d_t p = -d_x(f p) + g^2/2 d_xx p at a few points, by central differences in float64."""
    mix = cs.exact.NoisedMixture(ref, [0.4, 0.6], [[-1.0], [1.5]], [[[0.3]], [[0.6]]])
    p = lambda t, x: torch.exp(mix.log_prob(t, x))  # noqa: E731
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(-1, 1)
    t, ht, hx = 0.4, 1e-5, 1e-4
    dt = (p(t + ht, x) - p(t - ht, x)) / (2 * ht)
    flux = lambda y: ref.drift(t, y).reshape(-1) * p(t, y)  # noqa: E731
    dflux = (flux(x + hx) - flux(x - hx)) / (2 * hx)
    dxx = (p(t, x + hx) - 2 * p(t, x) + p(t, x - hx)) / hx ** 2
    g2 = float(ref.diffusion_cov(t)[0, 0])
    residual = dt + dflux - 0.5 * g2 * dxx
    assert residual.abs().max() < 1e-5 * p(t, x).max(), residual


def test_sample_has_the_marginal_moments():
    mix, t, n = MIXTURES["vp"], 0.5, 100_000
    xs = mix.sample(t, n, generator=torch.Generator().manual_seed(4))
    w, mu, _ = mix.marginal(t)
    mean = (w[:, None] * mu).sum(0)
    assert ((xs.mean(0) - mean).abs() < 5 * xs.std(0) / math.sqrt(n)).all()


def test_bad_arguments_name_themselves():
    ref = cs.processes.VP(2)
    with pytest.raises(ValueError, match="weights"):
        cs.exact.NoisedMixture(ref, [0.5, -0.5], DATA_M, DATA_S)
    with pytest.raises(ValueError, match="means"):
        cs.exact.NoisedMixture(ref, DATA_W, [[0.0, 0.0, 0.0]] * 2, DATA_S)
    with pytest.raises(ValueError, match="covs"):
        cs.exact.NoisedMixture(ref, DATA_W, DATA_M, [[[1.0, 2.0], [2.0, 1.0]]] * 2)
    with pytest.raises(ValueError, match="x"):
        MIXTURES["vp"].score(0.5, torch.zeros(3, 5))


def test_agrees_with_the_sympy_derivation():
    """theory/noised_score.py's score and density (a scalar OU reference, Gaussian data and a two-component
    mixture), evaluated by lambdify, equal NoisedMixture's to round-off."""
    import sympy as sp

    from theory import noised_score as th
    k = th.derive()
    theta, sigma, t = 1.3, 0.7, 0.45
    ref = cs.processes.OU(1, theta=theta, sigma=sigma, T=2.0)
    ys = torch.linspace(-3, 3, 13, dtype=torch.float64)
    gauss = cs.exact.NoisedMixture(ref, [1.0], [[0.4]], [[[0.3]]])
    subs = {th.theta: theta, th.sigma: sigma, th.t: t, th.m: 0.4, th.s: 0.3}
    score = sp.lambdify(th.y, k.score.subs(subs), "math")
    dens = sp.lambdify(th.y, k.density.subs(subs), "math")
    assert torch.allclose(gauss.score(t, ys[:, None])[:, 0],
                          torch.tensor([score(float(v)) for v in ys], dtype=torch.float64), atol=1e-12, rtol=1e-12)
    assert torch.allclose(gauss.log_prob(t, ys[:, None]).exp(),
                          torch.tensor([dens(float(v)) for v in ys], dtype=torch.float64), atol=1e-14, rtol=1e-12)
    mix = cs.exact.NoisedMixture(ref, [0.25, 0.75], [[-0.5], [1.5]], [[[1 / 3]], [[2 / 3]]])
    subs = {th.theta: theta, th.sigma: sigma, th.t: t, th.m1: -0.5, th.m2: 1.5, th.s1: 1 / 3, th.s2: 2 / 3,
            th.w1: 0.25}
    mscore = sp.lambdify(th.y, k.mixture_score.subs(subs), "math")
    assert torch.allclose(mix.score(t, ys[:, None])[:, 0],
                          torch.tensor([mscore(float(v)) for v in ys], dtype=torch.float64), atol=1e-12, rtol=1e-12)
