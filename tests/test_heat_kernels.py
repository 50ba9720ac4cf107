"""Heat kernels of the sphere and the torus (controlsamp.manifolds.heat) against independent sources: direct image
sums in numpy, Gauss–Legendre quadrature of the volume, an mpmath evaluation of the zonal series with enough digits for
its cancellation, finite differences of the heat equation, a Fourier-spectral method-of-lines solution of the heat
equation on the circle (scipy's solve_ivp), Monte Carlo of the geodesic random walk in CLT bands, autograd and
finite differences along geodesics for the scores, and the sympy derivations of theory/heat_kernel.py."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp
from scipy.stats import chi2

from controlsamp.manifolds import Sphere, Torus
from controlsamp.manifolds import heat as H
from theory import heat_kernel as th_heat

F64 = torch.float64


# ---------------------------------------------------------------------------------------------- helpers
def _pairs(d: int, thetas) -> tuple:
    """x0 = e_0 and x at the given angles from it in the (e_0, e_1) plane, on S^d."""
    th = torch.as_tensor(thetas, dtype=F64)
    x0 = torch.zeros(th.numel(), d + 1, dtype=F64)
    x0[:, 0] = 1
    x = torch.zeros(th.numel(), d + 1, dtype=F64)
    x[:, 0], x[:, 1] = torch.cos(th), torch.sin(th)
    return x0, x


def _log_kernel(d, thetas, t, **kw) -> np.ndarray:
    x0, x = _pairs(d, thetas)
    return H.heat_kernel_log_prob(Sphere(d), x0, x, t, **kw).numpy()


def _mp_log_kernel(theta: float, t: float, d: int) -> float:
    """log p_t(theta) on S^d by the zonal series in mpmath, with digits for its cancellation (about pi^2/(2t) / ln 10
    beyond double precision) and terms until they are below the working precision."""
    dps = int(40 + math.pi ** 2 / (2 * t) / 2.3)
    with mpmath.workdps(dps):
        tt, u = mpmath.mpf(t), mpmath.cos(mpmath.mpf(theta))
        nu = mpmath.mpf(d - 1) / 2
        vol = 2 * mpmath.pi ** (mpmath.mpf(d + 1) / 2) / mpmath.gamma(mpmath.mpf(d + 1) / 2)
        p_prev, p = mpmath.mpf(1), u
        total = 1 + (d + 1) * mpmath.exp(-d * tt / 2) * u
        l = 1
        while True:
            p_prev, p = p, (2 * (l + nu) * u * p - l * p_prev) / (l + 2 * nu)
            l += 1
            term = mpmath.binomial(l + d - 2, l) * (2 * l + d - 1) / (d - 1) * mpmath.exp(-l * (l + d - 1) * tt / 2)
            total += term * p
            if l > 10 and term < mpmath.mpf(10) ** (-dps + 5):
                return float(mpmath.log(total / vol))


def _gl(a: float, b: float, n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (a + b), 0.5 * (b - a) * w


def _sphere_mass(d: int, t: float) -> float:
    """int_{S^d} p_t(x0, x) dx = |S^{d-1}| int_0^pi p_t(theta) sin^{d-1}(theta) dtheta, by Gauss–Legendre on
    [0, c] and [c, pi] with c = min(pi/2, 15 sqrt(t)) (the kernel's width is sqrt(t))."""
    c = min(math.pi / 2, 15 * math.sqrt(t))
    parts = [_gl(0.0, c, 200), _gl(c, math.pi, 400)]
    th = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] for p in parts])
    p = np.exp(_log_kernel(d, th, t))
    ring = 2.0 if d == 1 else math.exp(Sphere(d - 1).log_volume)
    return float(ring * np.sum(w * p * np.sin(th) ** (d - 1)))


# ---------------------------------------------------------------------------------------------- wrapped normal
@pytest.mark.parametrize("var", [1e-6, 1e-2, 0.5, 3.0, 2 * math.pi + 0.1, 40.0])
def test_wrapped_normal_matches_a_long_direct_sum(var):
    """Against sum_{|k| <= 200} N(delta + 2 pi k; 0, var) in numpy (log-sum-exp), for the image and the Fourier
    branch; every log-density to 1e-13 absolute (relative density)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-math.pi, math.pi, (500, 2))
    mean = np.array([0.3, -2.9])
    x[0] = mean + math.pi  # the antipodal point: two images tie
    ks = np.arange(-200, 201)
    z = ((x - mean + math.pi) % (2 * math.pi) - math.pi)[..., None] + 2 * math.pi * ks
    e = -z ** 2 / (2 * var)
    mx = e.max(-1, keepdims=True)
    want = (mx[..., 0] + np.log(np.exp(e - mx).sum(-1)) - 0.5 * math.log(2 * math.pi * var)).sum(-1)
    got = H.wrapped_normal_log_prob(x, mean, var).numpy()
    assert np.abs(got - want).max() < 1e-13


def test_wrapped_normal_truncation_bound_and_score():
    """The chosen K leaves a relative truncation error below 1e-15 at the worst point (delta = pi), and the score
    equals autograd of the log-density."""
    for var in (0.01, 1.0, 5.0):
        K = H.wrapped_normal_terms(var)
        full = H.wrapped_normal_log_prob([[math.pi - 1e-12]], [0.0], var, terms=K + 30)
        cut = H.wrapped_normal_log_prob([[math.pi - 1e-12]], [0.0], var, terms=K)
        assert abs(float(full - cut)) < 2e-15, (var, K)
    x = (torch.rand(200, 3, dtype=F64) * 2 - 1) * math.pi
    var = torch.tensor([0.05, 1.0, 9.0], dtype=F64)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(H.wrapped_normal_log_prob(xr, 0.2, var).sum(), xr)
    s = H.wrapped_normal_score(x, 0.2, var)
    assert torch.allclose(s, g, atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("d", [2, 3])
def test_sphere_kernel_matches_high_precision_series(d):
    """log p_t against the mpmath series (digits enough for the cancellation), from theta = 0 to the antipode, in the
    short-time regime (Mehler–Dirichlet integral on S^2, images on S^3) and in the series regime. The series'
    round-off near the antipode is about eps e^{pi^2/2t} (1e-10 at t = 0.4, the switch); the short-time forms are
    exact to round-off. Measured: 2.4e-12 (series at the switch, antipode), 6e-14 otherwise."""
    thetas = [0.0, 1e-7, 0.05, 0.4, 1.0, 2.0, 2.9, math.pi - 1e-6, math.pi]
    for t in (0.01, 0.1, H.T_SWITCH - 1e-9, H.T_SWITCH, 1.3):
        got = _log_kernel(d, thetas, t)
        want = np.array([_mp_log_kernel(a, t, d) for a in thetas])
        bound = 1e-12 if t < H.T_SWITCH else max(1e-12, 1e-16 * math.exp(math.pi ** 2 / (2 * t)) * 5)
        assert np.abs(got - want).max() < bound, (t, np.abs(got - want).max())


def test_sphere_and_circle_kernels_at_other_dimensions():
    """S^1 (the wrapped normal in the angle) is exact; S^4 uses the series (with the Varadhan form only beyond its
    resolution) for t >= 1e-3: exact to 1e-12 where the density is at least 1e-7 of its peak."""
    thetas = [0.0, 0.2, 1.0, 2.5, math.pi]
    for t in (0.01, 0.5):
        got = _log_kernel(1, thetas, t)
        want = np.array([_mp_log_kernel_circle(a, t) for a in thetas])
        assert np.abs(got - want).max() < 1e-13
    got = _log_kernel(4, [0.0, 0.1, 0.3, 1.0], 0.05)
    want = np.array([_mp_log_kernel(a, 0.05, 4) for a in [0.0, 0.1, 0.3, 1.0]])
    assert np.abs(got - want).max() < 1e-12


def _mp_log_kernel_circle(theta: float, t: float) -> float:
    with mpmath.workdps(30):
        s = mpmath.nsum(lambda k: mpmath.exp(-(theta + 2 * mpmath.pi * k) ** 2 / (2 * t)), [-mpmath.inf, mpmath.inf])
        return float(mpmath.log(s / mpmath.sqrt(2 * mpmath.pi * t)))


@pytest.mark.parametrize("d, t", [(1, 0.01), (1, 2.0), (2, 1e-3), (2, 0.03), (2, 0.39), (2, 0.41), (2, 3.0),
                                  (3, 1e-3), (3, 0.2), (3, 1.0), (4, 0.02), (4, 0.7)])
def test_sphere_kernel_integrates_to_one(d, t):
    """int_{S^d} p_t(x0, x) dx = 1 by 600-point Gauss–Legendre in the angle with the sphere's area element
    |S^{d-1}| sin^{d-1}(theta). Measured: below 1e-13 on S^1..S^3. On S^4 the series is used where the kernel is
    above 1e-7 of its peak and the Varadhan form beyond, whose relative error there (about t d(d-1)/12, more near the
    antipode) times the tail's mass gives the measured 2e-8 at t = 0.02 (and 1e-14 at t = 0.7, all series)."""
    assert abs(_sphere_mass(d, t) - 1) < (1e-12 if d <= 3 else 1e-7 if t < 0.1 else 1e-12)


@pytest.mark.parametrize("d", [1, 2])
def test_torus_kernel_integrates_to_one(d):
    """The periodic trapezoidal rule on a grid of 256^d angles (spectrally accurate for the smooth periodic kernel)."""
    N = 256
    g = -math.pi + 2 * math.pi * torch.arange(N, dtype=F64) / N
    x = g.unsqueeze(-1) if d == 1 else torch.cartesian_prod(g, g)
    for t in (0.05, 0.7, 12.0):
        p = torch.exp(H.heat_kernel_log_prob(Torus(d), torch.full((1, d), 0.4, dtype=F64), x, t))
        assert abs(float(p.sum()) * (2 * math.pi / N) ** d - 1) < 1e-12


@pytest.mark.parametrize("d", [2, 3])
def test_heat_equation_residual(d):
    """d_t p = (1/2)(p'' + (d-1) cot(theta) p') by fourth-order central differences (h_t = t / 300, h_theta = 1e-3:
    truncation about (h_t / t)^4 and h_theta^4 / t^2 relative, round-off about eps / h^2 ~ 2e-10) in the short-time and
    the series regimes, relative to max |d_t p|. Measured: below 1.1e-9."""
    thetas = np.array([0.3, 1.0, 2.0, 2.7])
    hth = 1e-3
    worst = 0.0

    def p(th, tt):
        return np.exp(_log_kernel(d, th, tt))

    for t in (0.08, 0.25, 0.6, 2.0):
        ht = t / 300
        pt = (-p(thetas, t + 2 * ht) + 8 * p(thetas, t + ht) - 8 * p(thetas, t - ht) + p(thetas, t - 2 * ht)) / (12 * ht)
        f = {k: p(thetas + k * hth, t) for k in (-2, -1, 0, 1, 2)}
        d2 = (-f[2] + 16 * f[1] - 30 * f[0] + 16 * f[-1] - f[-2]) / (12 * hth ** 2)
        d1 = (-f[2] + 8 * f[1] - 8 * f[-1] + f[-2]) / (12 * hth)
        lap = d2 + (d - 1) / np.tan(thetas) * d1
        worst = max(worst, float(np.abs(pt - 0.5 * lap).max() / np.abs(pt).max()))
    assert worst < 1e-8, worst


def test_circle_kernel_against_a_spectral_method_of_lines_solution():
    """T^1: start from the wrapped series at t0 = 0.1, evolve d_t p = p''/2 to t1 = 0.5 by the Fourier-spectral
    method of lines (256 points, scipy's DOP853 at rtol 1e-12), compare with the series at t1. Measured: 2e-14."""
    N = 256
    g = -math.pi + 2 * math.pi * np.arange(N) / N
    x0 = torch.zeros(1, 1, dtype=F64)
    kernel = lambda t: np.exp(H.heat_kernel_log_prob(Torus(1), x0, torch.as_tensor(g).unsqueeze(-1), t).numpy())  # noqa
    freq = np.fft.fftfreq(N, d=1.0 / N)

    def rhs(_, p):
        return 0.5 * np.real(np.fft.ifft(-(freq ** 2) * np.fft.fft(p)))

    sol = solve_ivp(rhs, (0.1, 0.5), kernel(0.1), method="DOP853", rtol=1e-12, atol=1e-14)
    assert sol.success
    assert np.abs(sol.y[:, -1] - kernel(0.5)).max() < 1e-8


def test_varadhan_error_at_the_switch_points():
    """The Varadhan form against the exact kernel near theta = 0: its relative error is t d(d-1)/12 to first order
    (on S^3 exactly e^{t/2} - 1, the factor it lacks). Reported at the switch points: S^2 at t = 0.4 and S^4 at
    t = 1e-3 (the default switches of the short-time forms)."""
    for d, t in ((2, H.T_SWITCH), (2, 0.05), (3, 0.1), (4, H.T_SWITCH_VARADHAN), (4, 0.02)):
        th = [0.0, 0.5 * math.sqrt(t), math.sqrt(t)]
        exact = _log_kernel(d, th, t, t_switch=0.0)
        var = _log_kernel(d, th, t, short_time="varadhan", t_switch=10.0)
        err = exact - var  # log(p / p_Varadhan)
        first_order = t * d * (d - 1) / 12
        if d == 3:
            assert np.abs(err - t / 2).max() < 1e-12
        assert np.all(np.abs(err / first_order - 1) < 0.25), (d, t, err, first_order)
    # at the default switch of S^2 the exact short-time form is used instead: there the error is 6.7e-2 in log p
    err = _log_kernel(2, [0.0], H.T_SWITCH, t_switch=0.0) - _log_kernel(2, [0.0], H.T_SWITCH, short_time="varadhan",
                                                                         t_switch=10.0)
    assert 0.06 < float(err[0]) < 0.075


# ---------------------------------------------------------------------------------------------- scores
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_sphere_score_is_the_gradient_along_geodesics(d):
    """The score is tangent at x and its component along a unit tangent v equals the central difference of log p
    along the geodesic exp_x(s v) (s = +-1e-5), relative to 1 + |score|, in every regime."""
    g = torch.Generator().manual_seed(d)
    S = Sphere(d)
    n = 300
    x0, x = S.random_uniform(n, generator=g), S.random_uniform(n, generator=g)
    v = S.proj(x, torch.randn(n, d + 1, generator=g, dtype=F64))
    v = v / v.norm(dim=-1, keepdim=True)
    for t in (3e-3, 0.05, 0.39, 0.41, 2.0):
        if d == 4 and t < 0.39:
            continue  # the Varadhan tail of S^4 is approximate; the series part is checked at t >= 0.39
        s = H.heat_kernel_score(S, x0, x, t)
        assert float((s * x).sum(-1).abs().max()) < 1e-9 * (1 + float(s.norm(dim=-1).max()))
        h = 1e-5
        lp = lambda y: H.heat_kernel_log_prob(S, x0, y, t)  # noqa: E731
        fd = (lp(S.exp(x, h * v)) - lp(S.exp(x, -h * v))) / (2 * h)
        an = (s * v).sum(-1)
        assert float(((fd - an).abs() / (1 + an.abs())).max()) < 1e-6, (d, t)


def test_sphere_score_near_the_poles_and_across_the_switch():
    """Near theta = 0, |score| / theta -> 1/t - 1/6 + O(t) on S^2 (from log p = -theta^2/2t + (1/2) log(theta/sin)
    + ...); near the antipode the score vanishes linearly in pi - theta (p is smooth there); the score is continuous
    across t_switch (the series against the short-time form)."""
    S = Sphere(2)
    x0, x = _pairs(2, [1e-9, 1e-4, math.pi - 1e-4, math.pi - 1e-9])
    for t in (0.01, 0.3):
        s = H.heat_kernel_score(S, x0, x, t).norm(dim=-1)
        assert torch.isfinite(s).all()
        assert abs(float(s[1] / s[0]) - 1e5) < 1e-3 * 1e5 and abs(float(s[2] / s[3]) - 1e5) < 1e-3 * 1e5
    s = H.heat_kernel_score(S, x0, x, 0.01).norm(dim=-1)
    assert abs(float(s[0]) / 1e-9 / (1 / 0.01 - 1 / 6) - 1) < 1e-3
    x0, x = _pairs(2, [0.2, 1.0, 2.0, 3.0])
    below = H.heat_kernel_score(S, x0, x, H.T_SWITCH, t_switch=H.T_SWITCH + 1e-12)
    above = H.heat_kernel_score(S, x0, x, H.T_SWITCH)
    assert float((below - above).norm(dim=-1).max()) < 1e-9


def test_torus_score_is_the_autograd_gradient():
    g = torch.Generator().manual_seed(1)
    x0 = Torus(2).random_uniform(100, generator=g)
    x = Torus(2).random_uniform(100, generator=g).requires_grad_(True)
    t = torch.rand(100, generator=g, dtype=F64) * 3 + 1e-3
    (grad,) = torch.autograd.grad(H.heat_kernel_log_prob(Torus(2), x0, x, t).sum(), x)
    assert torch.allclose(H.heat_kernel_score(Torus(2), x0, x.detach(), t), grad, atol=1e-11, rtol=1e-11)


# ---------------------------------------------------------------------------------------------- sampling
def _walk_cosine_mean(d: int, h: float, steps: int) -> float:
    """E[x_K . x0] of the geodesic random walk, exactly: each step multiplies it by E[cos(sqrt(h) R)], R ~ chi_d
    (the tangent part averages to 0), computed by 1-d quadrature of the chi density."""
    r, w = _gl(0.0, 12.0, 200)
    dens = r ** (d - 1) * np.exp(-r * r / 2) / (2 ** (d / 2 - 1) * math.gamma(d / 2))
    return float(np.sum(w * dens * np.cos(math.sqrt(h) * r))) ** steps


@pytest.mark.parametrize("d", [2, 3])
def test_random_walk_matches_the_kernel(d):
    """Monte Carlo of sample_heat_kernel (200 geodesic random-walk steps, n = 20000, fixed seed): the mean of x . x0
    equals the walk's exact mean within 4 standard errors, and the walk's mean is the kernel's e^{-d t/2} up to its
    O(h) bias (measured 1.3e-4 at h = 0.0025); the histogram of the angle against the kernel's bin probabilities
    (Gauss–Legendre) passes a chi-square test at level 1e-4 (20 bins)."""
    n, t, steps = 20000, 0.5, 200
    g = torch.Generator().manual_seed(10 + d)
    S = Sphere(d)
    x0 = torch.zeros(1, d + 1, dtype=F64)
    x0[0, 0] = 1
    x = H.sample_heat_kernel(S, x0, t, generator=g, steps=steps, n=n)
    c = x[:, 0]
    walk = _walk_cosine_mean(d, t / steps, steps)
    se = float(c.std()) / math.sqrt(n)
    assert abs(float(c.mean()) - walk) < 4 * se
    assert abs(walk - math.exp(-d * t / 2)) < 5e-4
    edges = np.linspace(0, math.pi, 21)
    probs = []
    ring = math.exp(Sphere(d - 1).log_volume)
    for a, b in zip(edges[:-1], edges[1:]):
        th, w = _gl(a, b, 40)
        probs.append(ring * np.sum(w * np.exp(_log_kernel(d, th, t)) * np.sin(th) ** (d - 1)))
    probs = np.array(probs)
    assert abs(probs.sum() - 1) < 1e-12
    counts = np.histogram(S.angle(x0.expand(n, -1), x).numpy(), bins=edges)[0]
    keep = probs * n > 5
    stat = float(np.sum((counts[keep] - n * probs[keep]) ** 2 / (n * probs[keep])))
    assert stat < chi2.ppf(1 - 1e-4, keep.sum() - 1), stat


def test_torus_draws_are_exact_and_accept_one_time_per_row():
    """E[cos(x - x0)] = e^{-t/2} per coordinate for the wrapped normal, within 4 standard errors, with a float t and
    with an (n,) tensor of times."""
    n = 40000
    g = torch.Generator().manual_seed(3)
    x0 = torch.tensor([[0.5, -3.0]], dtype=F64)
    x = H.sample_heat_kernel(Torus(2), x0, 0.8, generator=g, n=n)
    c = torch.cos(x - x0)
    assert torch.all((c.mean(0) - math.exp(-0.4)).abs() < 4 * c.std(0) / math.sqrt(n))
    t = torch.full((n,), 2.0, dtype=F64)
    t[::2] = 0.2
    x = H.sample_heat_kernel(Torus(2), x0, t, generator=g, n=n)
    for tv in (0.2, 2.0):
        c = torch.cos(x - x0)[t == tv]
        assert torch.all((c.mean(0) - math.exp(-tv / 2)).abs() < 4 * c.std(0) / math.sqrt(c.shape[0]))


def test_sphere_draws_with_one_time_per_row():
    n = 20000
    g = torch.Generator().manual_seed(4)
    S = Sphere(2)
    x0 = S.random_uniform(n, generator=g)
    t = torch.full((n,), 1.0, dtype=F64)
    t[::2] = 0.1
    x = H.sample_heat_kernel(S, x0, t, generator=g, steps=100)
    cos = (x * x0).sum(-1)
    for tv in (0.1, 1.0):
        c = cos[t == tv]
        walk = _walk_cosine_mean(2, tv / 100, 100)
        assert abs(float(c.mean()) - walk) < 4 * float(c.std()) / math.sqrt(c.numel())


# ---------------------------------------------------------------------------------------------- theory
def test_theory_expressions_match_controlsamp():
    """The sympy series terms, Varadhan form, S^3 images, wrapped images and Bessel ratios of theory/heat_kernel.py,
    lambdified, against controlsamp's numbers."""
    us = np.linspace(-1, 1, 7)
    for (d, l), term in th_heat.derive().zonal_terms.items():
        f = sp.lambdify((th_heat.u, th_heat.t), term, "numpy")
        c = torch.zeros(l + 1, dtype=F64)
        c[l] = math.exp(-0.3 * l * (l + d - 1) / 2)
        val, _ = H.zonal_series(torch.as_tensor(us), c, d)
        assert np.allclose(val.numpy(), f(us, 0.3), rtol=1e-12, atol=1e-14), (d, l)
    # Varadhan (theta <= pi/2, where no floor applies) on S^2 and S^5
    thetas = np.array([0.0, 0.2, 1.0, 1.5])
    for d in (2, 5):
        f = sp.lambdify((th_heat.theta, th_heat.t), th_heat.varadhan(d), "numpy")
        with np.errstate(invalid="ignore", divide="ignore"):
            want = np.log(f(thetas, 0.02))
        want[0] = -d / 2 * math.log(2 * math.pi * 0.02)
        got = _log_kernel(d, thetas, 0.02, short_time="varadhan", t_switch=1.0)
        assert np.allclose(got, want, atol=1e-12)
    # S^3: the image sum (k = -3..3) against the kernel in both regimes
    f = sp.lambdify((th_heat.theta, th_heat.t, th_heat.k), th_heat.derive().s3_image, "numpy")
    thetas = np.array([0.3, 1.0, 2.0, 3.0])
    for t in (0.1, 1.5):
        want = np.log(sum(f(thetas, t, k) for k in range(-3, 4)))
        assert np.allclose(_log_kernel(3, thetas, t), want, atol=1e-12)
    # the wrapped images against the torus kernel
    f = sp.lambdify((th_heat.x, th_heat.t, th_heat.k), th_heat.derive().wrapped_image, "numpy")
    xs = np.linspace(-math.pi, math.pi, 9)
    want = np.log(sum(f(xs, 0.7, k) for k in range(-6, 7)))
    got = H.heat_kernel_log_prob(Torus(1), [[0.0]], torch.as_tensor(xs).unsqueeze(-1), 0.7).numpy()
    assert np.allclose(got, want, atol=1e-13)
    # Bessel ratios a_l(kappa) on S^2 against the ive ratios the mixtures use
    from controlsamp.manifolds.mixtures import _log_bessel_ratios
    for l, ratio in th_heat.derive().bessel_ratios.items():
        f = sp.lambdify(th_heat.kappa, ratio, "mpmath")
        for kap in (0.5, 3.0, 40.0):
            with mpmath.workdps(40):
                want = float(f(mpmath.mpf(kap)))
            assert math.isclose(math.exp(_log_bessel_ratios(kap, 2, np.array([l]))[0]), want, rel_tol=1e-12)


# ---------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_argument():
    S = Sphere(2)
    x0, x = _pairs(2, [0.1, 0.2])
    cases = [
        (lambda: H.heat_kernel_log_prob("S2", x0, x, 0.1), "manifold"),
        (lambda: H.heat_kernel_log_prob(S, x0, x * 2, 0.1), "x"),
        (lambda: H.heat_kernel_log_prob(S, x0 * 2, x, 0.1), "x0"),
        (lambda: H.heat_kernel_log_prob(S, x0, x, 0.0), "t"),
        (lambda: H.heat_kernel_log_prob(S, x0, x, [0.1, 0.2, 0.3]), "t"),
        (lambda: H.heat_kernel_log_prob(S, x0, x, 0.1, terms=0), "terms"),
        (lambda: H.heat_kernel_log_prob(S, x0, x, 0.1, t_switch=-1.0), "t_switch"),
        (lambda: H.heat_kernel_score(S, x0, x, 0.1, short_time="fast"), "short_time"),
        (lambda: H.heat_kernel_score(S, x0, x, 0.1, nodes=1), "nodes"),
        (lambda: H.heat_kernel_score(S, x0, x, 0.1, tol=2.0), "tol"),
        (lambda: H.heat_kernel_log_prob(S, x0[:1].repeat(3, 1), x, 0.1), "x0"),
        (lambda: H.wrapped_normal_log_prob([[0.1, 0.2]], [0.0, 0.0], -1.0), "var"),
        (lambda: H.wrapped_normal_log_prob([[0.1, 0.2]], [0.0, 0.0, 0.0], 1.0), "mean"),
        (lambda: H.sample_heat_kernel(S, x0, 0.1, steps=0), "steps"),
        (lambda: H.sample_heat_kernel(S, x0, 0.1, n=5), "n"),
        (lambda: H.zonal_series(torch.zeros(3), torch.zeros(0), 2), "coefficients"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=name):
            fn()
