"""GENIE (cs.generative.genie, Dockhorn, Vahdat & Kreis 2022): the exact total derivative d eps / d gamma against
its closed form for Gaussian data (for the exact mixture source and for DiffusionModel networks of every
parametrisation that compute the exact Gaussian output), the TTM2 step's global order 2 against DDIM's 1 with the
exact mixture score (measured slopes against a tight scipy solve), the learned head, and errors."""
import math

import numpy as np
import pytest
import torch

import controlsamp as cs
from controlsamp.generative import genie

D64 = torch.float64
M = torch.tensor([0.5, -1.0], dtype=D64)
S = torch.tensor([[1.5, 0.4], [0.4, 0.3]], dtype=D64)


def gaussian_source(reference, t_min=1e-3):
    mix = cs.exact.NoisedMixture(reference, [1.0], M[None], S[None])
    return cs.generative.ExactScore(mix, t_min=t_min)


def closed_form(reference, t, x):
    """eps = gamma (S + gamma^2 I)^{-1} (y - m) and d eps / d gamma = S (S + gamma^2 I)^{-2} (y - m), y = x / alpha:
    the PF-ODE of Gaussian data in DDIM's variables is dy/dgamma = gamma (S + gamma^2)^{-1} (y - m), solved by
    y - m = (S + gamma^2)^{1/2} c."""
    a, q = reference.marginal_coefficients(torch.tensor([t], dtype=D64))
    a, g = float(a[0]), float(q[0].sqrt() / a[0])
    y = x / a
    A = torch.linalg.inv(S + g * g * torch.eye(2, dtype=D64))
    return g * (y - M) @ A.T, (y - M) @ (S @ A @ A).T


REFERENCES = [cs.processes.VP(2), cs.processes.VE(2, sigma_min=0.01, sigma_max=10.0), cs.processes.SubVP(2)]


@pytest.mark.parametrize("reference", REFERENCES, ids=["vp", "ve", "subvp"])
@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_exact_mixture_derivative_matches_the_gaussian_closed_form(reference, t):
    x = torch.randn(50, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    eps, d = genie.eps_and_derivative(gaussian_source(reference), t, x)
    eps_cf, d_cf = closed_form(reference, t, x)
    assert torch.allclose(eps, eps_cf, atol=1e-10, rtol=1e-10)
    assert torch.allclose(d, d_cf, atol=1e-9, rtol=1e-9), (d - d_cf).abs().max()


class GaussianNet(torch.nn.Module):
    """A network (t, x) -> the exact output of the given parametrisation for Gaussian data on VP(2), written with
    torch operations of t (so forward-mode AD sees the time dependence through the network, as with a real one)."""

    def __init__(self, parametrisation):
        super().__init__()
        self.parametrisation = parametrisation
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, t, x):
        t = t.to(x.dtype)[:, None]
        log_a2 = -(0.1 * t + 0.5 * (20.0 - 0.1) * t * t)
        a, s = torch.exp(0.5 * log_a2), torch.sqrt(-torch.expm1(log_a2))
        C = (a * a)[:, :, None] * S + (s * s)[:, :, None] * torch.eye(2, dtype=x.dtype)
        score = -torch.linalg.solve(C, (x - a * M).unsqueeze(-1)).squeeze(-1)
        eps = -s * score
        if self.parametrisation == "eps":
            return eps + 0 * self.dummy
        if self.parametrisation == "score":
            return score
        if self.parametrisation == "x0":
            return (x - s * eps) / a
        return a * eps - s * (x - s * eps) / a  # v for VP: alpha eps - sigma x0


@pytest.mark.parametrize("parametrisation", ["eps", "score", "x0", "v"])
def test_model_derivative_includes_the_time_dependence(parametrisation):
    """A DiffusionModel whose network returns the exact Gaussian output: the JVP through the network's time input
    and alpha_t, sigma_t gives the closed-form total derivative (1e-8)."""
    ref = cs.processes.VP(2)
    model = cs.generative.DiffusionModel(ref, parametrisation=parametrisation, network=GaussianNet(parametrisation),
                                         ema=0.0, dtype=D64)
    model.ema.module.load_state_dict(model.network.state_dict())
    x = torch.randn(40, 2, dtype=D64, generator=torch.Generator().manual_seed(1))
    for t in (0.05, 0.5):
        eps, d = genie.eps_and_derivative(model, t, x)
        eps_cf, d_cf = closed_form(ref, t, x)
        assert torch.allclose(eps, eps_cf, atol=1e-9) and torch.allclose(d, d_cf, atol=1e-8), (d - d_cf).abs().max()
    t = torch.linspace(0.05, 0.9, 40, dtype=D64)  # one time per point
    _, d = genie.eps_and_derivative(model, t, x)
    d_cf = torch.stack([closed_form(ref, float(t[i]), x[i:i + 1])[1][0] for i in range(40)])
    assert torch.allclose(d, d_cf, atol=1e-8)


def _slope(steps, errs):
    return -np.polyfit(np.log(steps), np.log(errs), 1)[0]


def test_ttm2_is_second_order_and_ddim_first_order():
    """A 3-component 2-d mixture on VP, exact score, t_min 1e-3, 64 start points: the max error at t_min against
    scipy's RK45 at rtol = atol = 1e-11 falls with the steps K = 16..128 with a fitted slope of at least 1.8 for
    GENIE (measured 1.94) and within [0.8, 1.2] for DDIM (measured 0.95); GENIE's error is below DDIM's at every K
    (measured 5.2e-2 .. 9.3e-4 against 0.29 .. 0.040)."""
    mix = cs.exact.NoisedMixture(cs.processes.VP(2), [0.3, 0.5, 0.2], [[2.0, 0.0], [-1.0, 1.0], [0.0, -2.0]],
                                 [0.3 * torch.eye(2), 0.5 * torch.eye(2), 0.2 * torch.eye(2)])
    src = cs.generative.ExactScore(mix, t_min=1e-3)
    xT = src.prior_sample(64, torch.Generator().manual_seed(0))
    ref, _ = cs.generative.pf_ode_sample(src, x_T=xT, method="scipy", rtol=1e-11, atol=1e-11)
    steps = [16, 32, 64, 128]
    e_genie, e_ddim = [], []
    for K in steps:
        xg, info = genie.genie_sample(src, x_T=xT, steps=K)
        xd, _ = cs.generative.pf_ode_sample(src, x_T=xT, method="ddim", steps=K)
        e_genie.append(float((xg - ref).abs().max()))
        e_ddim.append(float((xd - ref).abs().max()))
        assert info["nfe"] == K and info["jvp"] == K and info["head_evals"] == 0
    print("GENIE", e_genie, _slope(steps, e_genie), "DDIM", e_ddim, _slope(steps, e_ddim))
    assert _slope(steps, e_genie) >= 1.8
    assert 0.8 <= _slope(steps, e_ddim) <= 1.2
    assert all(g < d for g, d in zip(e_genie, e_ddim))


def test_an_untrained_head_gives_ddim_and_a_trained_one_approaches_the_jvp():
    """The head's output layer starts at zero, so GENIE with it equals DDIM (1e-12). On a model whose network is the
    exact Gaussian output (GaussianNet, eps), a head trained for 400 steps on its exact JVPs brings the relative error
    of the scaled target gamma d eps / d gamma from about 1 (the zero prediction: 0.90 over the first 10 steps) below
    0.3 (measured 0.074), and
    GENIE with it beats DDIM's ODE error at 10 steps on the GENIE code's grid (quadratic, analytical first step;
    mean error 0.047 against 0.158). benchmarks/genie.py does the same on a learned mixture model."""
    ref = cs.processes.VP(2)
    model = cs.generative.DiffusionModel(ref, network=GaussianNet("eps"), ema=0.0, dtype=D64)
    model.ema.module.load_state_dict(model.network.state_dict())
    data = M + torch.randn(4000, 2, dtype=D64, generator=torch.Generator().manual_seed(0)) @ torch.linalg.cholesky(S).T
    head = genie.GenieHead(2, hidden=32, depth=2).to(D64)
    xT = model.prior_sample(200, torch.Generator().manual_seed(2))
    xg, info = cs.generative.sample(model, sampler="genie", x_T=xT, steps=8, head=head)
    xd, _ = cs.generative.pf_ode_sample(model, x_T=xT, method="ddim", steps=8)
    assert torch.allclose(xg, xd, atol=1e-12) and info["head_evals"] == 8 and info["jvp"] == 0
    head = genie.fit_genie_head(model, data, iters=400, batch=128, lr=3e-3, hidden=64, progress=False)
    first, last = np.mean(head.history["rel_err"][:10]), np.mean(head.history["rel_err"][-50:])
    ode, _ = cs.generative.pf_ode_sample(model, x_T=xT, method="dopri5", rtol=1e-9, atol=1e-9)
    opts = dict(x_T=xT, steps=10, grid="quadratic", afs=True)
    e_head = float((genie.genie_sample(model, head=head, **opts)[0] - ode).norm(dim=1).mean())
    e_ddim = float((genie.genie_sample(model, order=1, **opts)[0] - ode).norm(dim=1).mean())
    print("head relative error", first, last, "ODE error head", e_head, "DDIM", e_ddim)
    assert first > 0.8 and last < 0.3
    assert e_head < e_ddim


@pytest.mark.parametrize("reference", REFERENCES, ids=["vp", "ve", "subvp"])
def test_order_one_is_ddim_and_afs_saves_one_evaluation(reference):
    """order=1 is the package's DDIM on the same grid (1e-12); with the analytical first step the first step costs no
    evaluation, and on a quadratic grid the steps crowd toward t_min."""
    src = gaussian_source(reference)
    xT = src.prior_sample(30, torch.Generator().manual_seed(7))
    x1, info = genie.genie_sample(src, x_T=xT, steps=12, order=1)
    xd, _ = cs.generative.pf_ode_sample(src, x_T=xT, method="ddim", steps=12)
    assert torch.allclose(x1, xd, atol=1e-12, rtol=1e-12) and info["nfe"] == 12 and info["jvp"] == 0
    _, info = genie.genie_sample(src, x_T=xT, steps=12, afs=True)
    assert info["nfe"] == info["jvp"] == 11
    q = genie.genie_grid(src, 4, "quadratic")
    assert q[0] == src.T and q[-1] == src.t_min and bool((q[:-1] > q[1:]).all())
    assert float(q[-2] - q[-1]) < float(q[0] - q[1])


def test_errors():
    cld = cs.exact.NoisedMixture.with_velocity(cs.processes.CLD(2), [1.0], [[0.0, 0.0]], [torch.eye(2)], 0.01)
    with pytest.raises(ValueError, match="isotropic reference"):
        genie.genie_sample(cs.generative.ExactScore(cld), n=4)
    src = gaussian_source(cs.processes.VP(2))
    with pytest.raises(ValueError, match="steps"):
        genie.genie_sample(src, n=4, steps=0)
    with pytest.raises(ValueError, match=r"t must lie in \[t_min, T\]"):
        genie.eps_and_derivative(src, 1.5, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="pass n"):
        genie.genie_sample(src)
    with pytest.raises(ValueError, match="order"):
        genie.genie_sample(src, n=4, order=3)
    with pytest.raises(ValueError, match="grid"):
        genie.genie_sample(src, n=4, grid="log")


@pytest.mark.parametrize("reference", REFERENCES, ids=["vp", "ve", "subvp"])
def test_isotropic_score_equals_the_per_time_score(reference):
    """NoisedMixture.isotropic_score at each point's kernel (a, q) equals NoisedMixture.score at its time (1e-12), so
    ExactScore's vectorised per-point times agree with the per-time path."""
    mix = cs.exact.NoisedMixture(reference, [0.3, 0.7], [[1.0, 0.0], [-1.0, 2.0]], [S, 0.5 * torch.eye(2, dtype=D64)])
    g = torch.Generator().manual_seed(4)
    x = 2 * torch.randn(30, 2, dtype=D64, generator=g)
    t = 0.01 + 0.98 * torch.rand(30, dtype=D64, generator=g)
    per_time = torch.stack([mix.score(float(t[i]), x[i:i + 1])[0] for i in range(30)])
    assert torch.allclose(cs.generative.ExactScore(mix).score(t, x), per_time, atol=1e-12, rtol=1e-12)
