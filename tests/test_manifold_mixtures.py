"""von Mises–Fisher and wrapped normal mixtures (controlsamp.manifolds.mixtures) against independent sources:
quadrature of the volume, mpmath normalisers and noised series, a direct two-dimensional scipy quadrature of the heat
kernel against the vMF density, Monte Carlo in CLT bands (samples, noised samples, entropies), the closed-form
entropies of one component, finite differences along geodesics for the scores."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import eval_legendre

from controlsamp.manifolds import Sphere, Torus
from controlsamp.manifolds import heat as H
from controlsamp.manifolds.mixtures import VonMisesFisherMixture, WrappedNormalMixture

F64 = torch.float64
MEANS = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.6, -0.8]], dtype=F64)


def _sphere_grid(nu: int = 200, nphi: int = 400):
    """Points and weights of the product rule on S^2: Gauss–Legendre in the height u, trapezoidal in the longitude."""
    xg, wg = np.polynomial.legendre.leggauss(nu)
    phi = 2 * math.pi * np.arange(nphi) / nphi
    s = np.sqrt(1 - xg ** 2)
    X = np.stack([s[:, None] * np.cos(phi)[None], s[:, None] * np.sin(phi)[None], np.repeat(xg[:, None], nphi, 1)], -1)
    W = np.repeat(wg[:, None], nphi, 1) * (2 * math.pi / nphi)
    return torch.as_tensor(X.reshape(-1, 3)), torch.as_tensor(W.reshape(-1))


def _band_mass(log_prob, a: float, b: float, nu: int = 24, nphi: int = 256) -> float:
    """The mass of {a <= x_3 < b} on S^2: Gauss–Legendre in the height on [a, b], trapezoidal in the longitude."""
    xg, wg = np.polynomial.legendre.leggauss(nu)
    u, w = 0.5 * (b - a) * xg + 0.5 * (a + b), 0.5 * (b - a) * wg
    phi = 2 * math.pi * np.arange(nphi) / nphi
    s = np.sqrt(1 - u ** 2)
    X = np.stack([s[:, None] * np.cos(phi)[None], s[:, None] * np.sin(phi)[None], np.repeat(u[:, None], nphi, 1)], -1)
    p = torch.exp(log_prob(torch.as_tensor(X.reshape(-1, 3)))).numpy().reshape(nu, nphi)
    return float((p.sum(1) * w).sum() * 2 * math.pi / nphi)


def _mp_noised_vmf(theta: float, t: float, kappa: float) -> float:
    """log of the heat-noised vMF on S^2 at angle theta from its mean, by the Legendre series with mpmath Bessel
    functions, at enough digits for its cancellation (about 2 kappa / ln 10 beyond double precision)."""
    with mpmath.workdps(int(40 + 2 * kappa / 2.3)):
        u, kap, tt = mpmath.cos(mpmath.mpf(theta)), mpmath.mpf(kappa), mpmath.mpf(t)
        i_half = mpmath.besseli(mpmath.mpf(1) / 2, kap)
        total, p_prev, p, l = mpmath.mpf(0), mpmath.mpf(1), u, 0
        while True:
            P = 1 if l == 0 else u if l == 1 else None
            if P is None:
                p_prev, p = p, ((2 * l - 1) * u * p - (l - 1) * p_prev) / l
                P = p
            term = (2 * l + 1) / (4 * mpmath.pi) * mpmath.besseli(l + mpmath.mpf(1) / 2, kap) / i_half \
                * mpmath.exp(-l * (l + 1) * tt / 2)
            total += term * P
            if l > 5 and term < mpmath.mpf(10) ** (-mpmath.mp.dps + 8):
                return float(mpmath.log(total))
            l += 1


def _at_angles(mu: torch.Tensor, thetas) -> torch.Tensor:
    """Points of S^2 at the given angles from the unit vector mu (in a fixed plane through it)."""
    a = torch.tensor([1.0, 0.0, 0.0], dtype=F64) if abs(float(mu[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    e = a - (a @ mu) * mu
    e = e / e.norm()
    th = torch.as_tensor(thetas, dtype=F64).unsqueeze(-1)
    return torch.cos(th) * mu + torch.sin(th) * e


# ---------------------------------------------------------------------------------------------- vMF: the data law
def test_vmf_normaliser_against_mpmath():
    """log C_d(kappa) = (d-1)/2 log kappa - (d+1)/2 log 2 pi - log I_{(d-1)/2}(kappa) with mpmath Bessel functions, for
    kappa from 1e-6 to 1e5 and d = 1, 2, 3, 5 (the log-density at the mean is log C + kappa)."""
    for d in (1, 2, 3, 5):
        kappas = [1e-6, 0.3, 10.0, 1e3, 1e5]
        mix = VonMisesFisherMixture(np.ones(5), np.tile(np.eye(d + 1)[:1], (5, 1)), kappas, dim=d)
        mu = torch.zeros(1, d + 1, dtype=F64)
        mu[0, 0] = 1
        for j, kap in enumerate(kappas):
            nu = mpmath.mpf(d - 1) / 2
            with mpmath.workdps(40):
                want = float(nu * mpmath.log(kap) - (nu + 1) * mpmath.log(2 * mpmath.pi)
                             - mpmath.log(mpmath.besseli(nu, kap)) + kap)
            assert math.isclose(float(mix._log_norm[j]), want, rel_tol=1e-13, abs_tol=1e-12), (d, kap)


def test_vmf_log_prob_is_normalised():
    """Product quadrature on S^2 (200 x 400 points); measured 2e-16."""
    X, W = _sphere_grid()
    mix = VonMisesFisherMixture([0.5, 0.3, 0.2], MEANS, [2.0, 30.0, 80.0])
    assert abs(float((torch.exp(mix.log_prob(X)) * W).sum()) - 1) < 1e-11


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_vmf_samples_have_the_exact_moments(d):
    """n = 40000 draws of one vMF: the mean of w = mu . x and of w^2 against their values by scipy quadrature of the
    density of w, proportional to e^{kappa w} (1 - w^2)^{(d-2)/2}, within 4 standard errors; the mean of the tangent
    part is 0 (4 SE per coordinate); the mixture's sample mean is sum_j w_j A_d(kappa_j) mu_j (4 SE)."""
    g = torch.Generator().manual_seed(d)
    n = 40000
    mu = torch.zeros(d + 1, dtype=F64)
    mu[0] = 0.6
    mu[-1] = 0.8
    for kappa in (0.7, 25.0):
        mix = VonMisesFisherMixture([1.0], mu.unsqueeze(0), [kappa], dim=d)
        x = mix.sample(n, generator=g)
        assert torch.allclose(x.norm(dim=-1), torch.ones(n, dtype=F64), atol=1e-12)
        w = x @ mu
        dens = lambda s: math.exp(kappa * (s - 1)) * (1 - s * s) ** ((d - 2) / 2)  # noqa: E731
        Z = integrate.quad(dens, -1, 1, limit=200)[0]
        for k in (1, 2):
            want = integrate.quad(lambda s: s ** k * dens(s), -1, 1, limit=200)[0] / Z
            wk = w ** k
            assert abs(float(wk.mean()) - want) < 4 * float(wk.std()) / math.sqrt(n), (d, kappa, k)
        tang = x - w.unsqueeze(-1) * mu
        assert torch.all(tang.mean(0).abs() < 4 * tang.std(0).clamp(min=1e-12) / math.sqrt(n))
    if d == 2:
        mix = VonMisesFisherMixture([0.5, 0.3, 0.2], MEANS, [2.0, 30.0, 500.0])
        x = mix.sample(n, generator=g)
        assert torch.all((x.mean(0) - mix.mean_resultant()).abs() < 4 * x.std(0) / math.sqrt(n))


def test_vmf_score_is_the_gradient_along_geodesics():
    g = torch.Generator().manual_seed(5)
    mix = VonMisesFisherMixture([0.5, 0.3, 0.2], MEANS, [2.0, 30.0, 80.0])
    S = mix.manifold
    x = S.random_uniform(300, generator=g)
    v = S.proj(x, torch.randn(300, 3, generator=g, dtype=F64))
    v = v / v.norm(dim=-1, keepdim=True)
    s = mix.score(x)
    assert float((s * x).sum(-1).abs().max()) < 1e-12
    h = 1e-5
    fd = (mix.log_prob(S.exp(x, h * v)) - mix.log_prob(S.exp(x, -h * v))) / (2 * h)
    an = (s * v).sum(-1)
    assert float(((fd - an).abs() / (1 + an.abs())).max()) < 1e-6


# ---------------------------------------------------------------------------------------------- vMF: noised law
def _noised_against_mpmath(cases) -> float:
    worst = 0.0
    for kappa, t in cases:
        mix = VonMisesFisherMixture([1.0], MEANS[:1], [kappa])
        thetas = [0.0, 0.1, 0.3, 1.0, 2.0, math.pi]
        got = mix.noised_log_prob(t, _at_angles(MEANS[0], thetas)).numpy()
        want = np.array([_mp_noised_vmf(a, t, kappa) for a in thetas])
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def test_noised_vmf_against_high_precision_series():
    """One component, from the mean to the antipode, against the mpmath Legendre series with mpmath Bessel ratios:
    the float64 series where it is resolved (f >= 1e-8 of its peak, where its round-off is at most about
    eps / 1e-8 = 2e-8 relative) and the exact convolution integral beyond (the far tail, down to log p = -118).
    Measured: 1.5e-9 (kappa = 60, at the threshold of the series), 1.5e-11 otherwise."""
    worst = _noised_against_mpmath(((20.0, 0.1), (5.0, 0.01), (60.0, 0.01)))
    assert worst < 1e-7, worst


@pytest.mark.slow
def test_noised_vmf_against_high_precision_series_concentrated():
    """As above for kappa = 200, t = 0.003 (down to log p = -396; 214 digits). Measured: 2.9e-10."""
    worst = _noised_against_mpmath(((200.0, 0.003),))
    assert worst < 1e-7, worst


def test_noised_vmf_against_a_direct_convolution():
    """p_t(x) = int_{S^2} p_t(x, y) vMF(y) dy by scipy's dblquad over y in polar coordinates about the mean, with the
    heat kernel as a numpy Legendre series (scipy.special.eval_legendre), at three points and t = 0.3, 1.0: an
    independent evaluation of the convolution. Measured: 4e-13 relative."""
    kappa = 8.0
    mix = VonMisesFisherMixture([1.0], MEANS[:1], [kappa])
    C = kappa / (4 * math.pi * math.sinh(kappa))
    for t in (0.3, 1.0):
        ls = np.arange(60)
        coef = (2 * ls + 1) / (4 * math.pi) * np.exp(-ls * (ls + 1) * t / 2)
        for th in (0.0, 1.2, 2.8):
            x = np.array([math.sin(th), 0.0, math.cos(th)])

            def integrand(phi, u):
                s = math.sqrt(max(1 - u * u, 0.0))
                y = np.array([s * math.cos(phi), s * math.sin(phi), u])
                return float(np.dot(coef, eval_legendre(ls, np.clip(x @ y, -1, 1)))) * C * math.exp(kappa * (u - 1)) \
                    * math.exp(kappa)

            val = integrate.dblquad(integrand, -1, 1, 0, 2 * math.pi, epsabs=1e-13, epsrel=1e-11)[0]
            got = math.exp(float(mix.noised_log_prob(t, torch.as_tensor(x).unsqueeze(0))))
            assert abs(got / val - 1) < 1e-8, (t, th, got, val)


def test_noised_vmf_at_zero_and_small_times():
    """t = 0 gives log_prob exactly; for small t, (log p_t - log p) / t -> (Delta p) / (2p) = ((1 - u^2) kappa^2 -
    2 kappa u) / 2 for one component on S^2 (the heat equation at t = 0); a (n,) tensor of times with zeros mixes
    both."""
    g = torch.Generator().manual_seed(7)
    mix = VonMisesFisherMixture([0.5, 0.3, 0.2], MEANS, [5.0, 50.0, 1000.0])
    x = mix.sample(400, generator=g)
    assert torch.equal(mix.noised_log_prob(0.0, x), mix.log_prob(x))
    assert torch.equal(mix.noised_score(0.0, x), mix.score(x))
    one = VonMisesFisherMixture([1.0], MEANS[:1], [12.0])
    x = one.sample(200, generator=g)
    u = x @ MEANS[0]
    t = 1e-6
    rate = (one.noised_log_prob(t, x) - one.log_prob(x)) / t
    want = ((1 - u ** 2) * 144 - 24 * u) / 2
    assert float((rate - want).abs().max()) < 1e-3 * float(want.abs().max())
    tt = torch.zeros(200, dtype=F64)
    tt[1::2] = 0.2
    mixed = one.noised_log_prob(tt, x)
    assert torch.equal(mixed[::2], one.log_prob(x[::2]))
    assert torch.allclose(mixed[1::2], one.noised_log_prob(0.2, x[1::2]), rtol=0, atol=1e-13)


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5])
def test_noised_vmf_mixture_is_normalised_and_has_the_heat_flow_mean(t):
    """Quadrature on S^2 (64 x 128 points): the noised mixture integrates to 1 and its mean is e^{-t} E[x_0] (the
    coordinates are degree-1 harmonics, eigenfunctions of Laplace/2 with eigenvalue -1). Measured: 2e-15."""
    X, W = _sphere_grid(64, 128)
    mix = VonMisesFisherMixture([0.6, 0.4], MEANS[:2], [3.0, 15.0])
    p = torch.exp(mix.noised_log_prob(t, X)) * W
    assert abs(float(p.sum()) - 1) < 1e-12
    assert torch.allclose((p.unsqueeze(-1) * X).sum(0), math.exp(-t) * mix.mean_resultant(), atol=1e-12)


def test_noised_vmf_against_monte_carlo_of_noised_samples():
    """Draws of B_t from the mixture (sample, then 100 geodesic random-walk steps): the histogram of mu_1 . x in 16
    bins against the bin probabilities of noised_log_prob (quadrature over each band), each bin within 4 binomial standard
    errors plus the walk's O(h) bias (bounded by 2e-3 of the bin mass)."""
    g = torch.Generator().manual_seed(9)
    n, t = 40000, 0.3
    mix = VonMisesFisherMixture([0.6, 0.4], MEANS[:2], [3.0, 15.0])
    x = H.sample_heat_kernel(mix.manifold, mix.sample(n, generator=g), t, generator=g, steps=100)
    edges = np.linspace(-1, 1, 17)
    probs = np.array([_band_mass(lambda X: mix.noised_log_prob(t, X), a, b) for a, b in zip(edges[:-1], edges[1:])])
    assert abs(probs.sum() - 1) < 1e-12
    counts = np.histogram((x @ MEANS[0]).numpy(), bins=edges)[0] / n
    se = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts - probs) < 4 * se + 2e-3 * probs), (counts - probs) / se


def test_noised_vmf_score_is_the_gradient_along_geodesics():
    g = torch.Generator().manual_seed(11)
    mix = VonMisesFisherMixture([0.5, 0.3, 0.2], MEANS, [2.0, 30.0, 300.0])
    S = mix.manifold
    x = torch.cat([S.random_uniform(100, generator=g), mix.sample(100, generator=g)])
    v = S.proj(x, torch.randn(200, 3, generator=g, dtype=F64))
    v = v / v.norm(dim=-1, keepdim=True)
    for t in (0.002, 0.1, 1.0):
        s = mix.noised_score(t, x)
        assert float((s * x).sum(-1).abs().max()) < 1e-9 * (1 + float(s.norm(dim=-1).max()))
        h = 1e-5
        fd = (mix.noised_log_prob(t, S.exp(x, h * v)) - mix.noised_log_prob(t, S.exp(x, -h * v))) / (2 * h)
        an = (s * v).sum(-1)
        assert float(((fd - an).abs() / (1 + an.abs())).max()) < 1e-5, t


# ---------------------------------------------------------------------------------------------- entropies
def test_vmf_entropy_closed_form_quadrature_and_monte_carlo():
    """One component: the closed form H = -log C_2(kappa) - kappa A_2(kappa) (Mardia & Jupp 9.3) to 1e-10; a mixture:
    doubled resolution agrees to 1e-9 and Monte Carlo -E[log p] (n = 40000) within 4 standard errors; S^1 too."""
    for kappa in (0.5, 7.0, 300.0):
        one = VonMisesFisherMixture([1.0], MEANS[2:], [kappa])
        A = 1 / math.tanh(kappa) - 1 / kappa
        closed = -(math.log(kappa / (4 * math.pi)) - math.log1p(-math.exp(-2 * kappa)) - kappa + math.log(2)) \
            - kappa * A
        assert abs(one.entropy() - closed) < 1e-10, (kappa, one.entropy(), closed)
    g = torch.Generator().manual_seed(13)
    for mix in (VonMisesFisherMixture([0.5, 0.3, 0.2], MEANS, [2.0, 30.0, 80.0]),
                VonMisesFisherMixture([0.7, 0.3], [[1.0, 0.0], [0.0, -1.0]], [4.0, 40.0], dim=1)):
        h = mix.entropy()
        assert abs(h - mix.entropy(nodes=256, azimuths=512)) < 1e-9
        lp = mix.log_prob(mix.sample(40000, generator=g))
        assert abs(float(-lp.mean()) - h) < 4 * float(lp.std()) / math.sqrt(40000)


def test_wrapped_normal_entropy():
    """One narrow component: the Gaussian entropy (1/2) log(2 pi e s^2) per coordinate (wrapping changes it by about
    e^{-pi^2/2s^2} ~ 1e-24); a mixture on T^1 and T^2: doubled resolution to 1e-10 and Monte Carlo in 4 SE."""
    one = WrappedNormalMixture([1.0], [[0.3, -1.0]], [[0.3, 0.2]])
    want = 0.5 * math.log(2 * math.pi * math.e * 0.09) + 0.5 * math.log(2 * math.pi * math.e * 0.04)
    assert abs(one.entropy() - want) < 1e-10
    g = torch.Generator().manual_seed(17)
    for mix in (WrappedNormalMixture([0.3, 0.7], [[0.0], [3.0]], [0.4, 1.5]),
                WrappedNormalMixture([0.3, 0.3, 0.4], [[0.0, 0.0], [3.0, -3.0], [1.0, 2.0]], [[0.4, 0.9], [1.5, 0.3],
                                                                                             [0.5, 0.5]])):
        h = mix.entropy()
        assert abs(h - mix.entropy(points_per_scale=4.0)) < 1e-10
        lp = mix.log_prob(mix.sample(40000, generator=g))
        assert abs(float(-lp.mean()) - h) < 4 * float(lp.std()) / math.sqrt(40000)


# ---------------------------------------------------------------------------------------------- wrapped normals
def test_wrapped_mixture_density_score_and_noising():
    """log_prob against direct image sums in numpy; noised_log_prob(t) equals the mixture with variances s^2 + t
    (computed independently, in numpy); scores equal autograd; samples have E[cos(x - m)] = e^{-s^2/2} (4 SE);
    normalised on a 256^2 grid."""
    weights, means = np.array([0.3, 0.7]), np.array([[0.5, -2.0], [3.0, 1.0]])
    scales = np.array([[0.3, 0.8], [1.2, 0.5]])
    mix = WrappedNormalMixture(weights, means, scales)
    rng = np.random.default_rng(0)
    x = rng.uniform(-math.pi, math.pi, (300, 2))
    ks = np.arange(-40, 41)

    def direct(var):
        z = ((x[:, None, :] - means[None] + math.pi) % (2 * math.pi) - math.pi)[..., None] + 2 * math.pi * ks
        dens = (np.exp(-z ** 2 / (2 * var[None, :, :, None])) / np.sqrt(2 * math.pi * var[None, :, :, None])).sum(-1)
        return np.log((weights * dens.prod(-1)).sum(-1))

    assert np.abs(mix.log_prob(x).numpy() - direct(scales ** 2)).max() < 1e-13
    for t in (0.01, 0.7, 9.0):
        assert np.abs(mix.noised_log_prob(t, x).numpy() - direct(scales ** 2 + t)).max() < 1e-13
        xr = torch.as_tensor(x).requires_grad_(True)
        (grad,) = torch.autograd.grad(mix.noised_log_prob(t, xr).sum(), xr)
        assert torch.allclose(mix.noised_score(t, torch.as_tensor(x)), grad, atol=1e-11)
    g = torch.Generator().manual_seed(19)
    one = WrappedNormalMixture([1.0], [[0.5, 3.0]], [[0.3, 1.7]])
    s = torch.cos(one.sample(40000, generator=g) - one.means)
    assert torch.all((s.mean(0) - torch.exp(-one.scales[0] ** 2 / 2)).abs() < 4 * s.std(0) / 200)
    N = 256
    grid = -math.pi + 2 * math.pi * torch.arange(N, dtype=F64) / N
    P = torch.exp(mix.log_prob(torch.cartesian_prod(grid, grid)))
    assert abs(float(P.sum()) * (2 * math.pi / N) ** 2 - 1) < 1e-12


# ---------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_argument():
    cases = [
        (lambda: VonMisesFisherMixture([0.5, -0.5], MEANS[:2], [1.0, 1.0]), "weights"),
        (lambda: VonMisesFisherMixture([0.5, 0.5], MEANS[:2] * 2, [1.0, 1.0]), "means"),
        (lambda: VonMisesFisherMixture([0.5, 0.5], MEANS[:2], [1.0, 1.0], dim=3), "means"),
        (lambda: VonMisesFisherMixture([0.5, 0.5], MEANS[:2], [1.0, 0.0]), "kappas"),
        (lambda: VonMisesFisherMixture([0.5, 0.5], MEANS[:2], [1.0]), "kappas"),
        (lambda: VonMisesFisherMixture([0.5, 0.5], MEANS[:2], [1.0, 2.0], dim=0), "dim"),
        (lambda: VonMisesFisherMixture([0.5, 0.5], MEANS[:2], [1.0, 2.0], tail="fast"), "tail"),
        (lambda: VonMisesFisherMixture([1.0], MEANS[:1], [1.0]).log_prob([[1.0, 1.0, 0.0]]), "x"),
        (lambda: VonMisesFisherMixture([1.0], MEANS[:1], [1.0]).noised_log_prob(-0.1, MEANS[:1]), "t"),
        (lambda: VonMisesFisherMixture([1.0], MEANS[:1], [1.0]).sample(0), "n"),
        (lambda: VonMisesFisherMixture([1.0], [[0.0, 0.0, 0.0, 1.0]], [1.0], dim=3).entropy(), "entropy"),
        (lambda: WrappedNormalMixture([1.0], [[0.0, 0.0]], [[1.0, -1.0]]), "scales"),
        (lambda: WrappedNormalMixture([1.0], [[0.0, 0.0]], [1.0, 1.0, 1.0]), "scales"),
        (lambda: WrappedNormalMixture([1.0, 1.0], [[0.0, 0.0]], [1.0, 1.0]), "means"),
        (lambda: WrappedNormalMixture([1.0], [[0.0, 0.0, 0.0]], [1.0]).entropy(), "entropy"),
        (lambda: WrappedNormalMixture([1.0], [[0.0, 0.0]], [1.0]).log_prob([[0.0, 4.0]]), "x"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=name):
            fn()
    assert isinstance(Sphere(2), Sphere) and isinstance(Torus(1), Torus)


def test_noised_vmf_mixture_is_differentiable_in_x_and_its_gradient_is_the_noised_score():
    """The likelihood ODE and ISM differentiate the noised law in x: autograd of noised_log_prob, projected to the
    tangent space, equals noised_score, for a mixture of several components at t > 0."""
    s2 = Sphere(2)
    mix = VonMisesFisherMixture([0.3, 0.3, 0.4], s2.random_uniform(3, torch.Generator().manual_seed(0)),
                                [5.0, 10.0, 3.0])
    x = s2.random_uniform(20, torch.Generator().manual_seed(1)).requires_grad_(True)
    for t in (0.05, 0.4):
        (g,) = torch.autograd.grad(mix.noised_log_prob(t, x).sum(), x)
        assert float((s2.proj(x, g) - mix.noised_score(t, x)).detach().abs().max()) < 1e-10
