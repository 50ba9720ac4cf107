"""Geometry of controlsamp.manifolds: exp / log / distance identities, the uniform laws' moments, the Riemannian
divergence against the spherical-harmonic eigenvalues, and the geodesic random walk's moments against the exact
one-step recursion (and its limit, Brownian motion) and the torus's exact wrapped normal."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from controlsamp.manifolds import Sphere, Torus, wrap

MANIFOLDS = [Sphere(2), Sphere(3), Torus(1), Torus(2)]


def _pair(m, n, seed):
    g = torch.Generator().manual_seed(seed)
    return m.random_uniform(n, g), m.random_uniform(n, g)


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_exp_inverts_log_and_log_is_tangent_with_the_distance_as_norm(m):
    x, y = _pair(m, 200, 0)
    v = m.log(x, y)
    assert float((m.proj(x, v) - v).abs().max()) < 1e-12
    assert float((m.log(x, m.exp(x, v)) - v).abs().max()) < 1e-9
    assert float((m.exp(x, v) - y).abs().max()) < 1e-9
    assert float((v.norm(dim=-1) - m.dist(x, y)).abs().max()) < 1e-12
    assert float((m.dist(x, y) - m.dist(y, x)).abs().max()) < 1e-12
    assert float(m.distance_to_manifold(m.exp(x, 3.0 * v)).max()) < 1e-12


@pytest.mark.parametrize("m", [Sphere(2), Sphere(4)], ids=repr)
def test_sphere_geodesics_have_constant_speed_and_the_angle_is_accurate_near_0_and_pi(m):
    g = torch.Generator().manual_seed(1)
    x = m.random_uniform(100, g)
    v = m.proj(x, torch.randn(x.shape, generator=g, dtype=x.dtype))
    v = v / v.norm(dim=-1, keepdim=True)
    for s in (1e-9, 0.3, 1.7, math.pi - 1e-7):
        assert float((m.dist(x, m.exp(x, s * v)) - s).abs().max()) < 1e-8
    assert float(m.dist(x, x).abs().max()) < 1e-12
    assert float((m.dist(x, -x) - math.pi).abs().max()) < 1e-12


def test_torus_wrap_and_log_take_the_short_way_round():
    t = Torus(1)
    x, y = torch.tensor([[3.0]], dtype=torch.float64), torch.tensor([[-3.0]], dtype=torch.float64)
    assert abs(float(t.log(x, y)) - (2 * math.pi - 6.0)) < 1e-12
    a = torch.linspace(-20, 20, 101, dtype=torch.float64)
    w = wrap(a)
    assert bool(((w >= -math.pi) & (w < math.pi)).all())
    assert float(((w - a) / (2 * math.pi) - ((w - a) / (2 * math.pi)).round()).abs().max()) < 1e-12


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_uniform_law_moments_in_clt_bands(m):
    n = 40000
    x = m.random_uniform(n, torch.Generator().manual_seed(2))
    assert float(m.distance_to_manifold(x).max()) < 1e-12
    if isinstance(m, Sphere):  # E x = 0, E x x' = I / (d + 1); Var x_i = 1/(d+1), Var x_i^2 = E x_i^4 - 1/(d+1)^2
        D = m.ambient_dim
        assert float(x.mean(0).abs().max()) < 4.5 * math.sqrt(1.0 / D / n)
        ex4 = 3.0 / (D * (D + 2))
        assert float(((x ** 2).mean(0) - 1.0 / D).abs().max()) < 4.5 * math.sqrt((ex4 - 1.0 / D ** 2) / n)
    else:  # angles uniform on [-pi, pi): mean 0, variance pi^2 / 3
        assert float(x.mean(0).abs().max()) < 4.5 * math.sqrt(math.pi ** 2 / 3 / n)
        assert float((x.var(0) - math.pi ** 2 / 3).abs().max()) < 4.5 * math.sqrt((math.pi ** 4 / 5 - math.pi ** 4 / 9) / n)


def test_volumes_are_the_closed_forms():
    assert abs(Sphere(1).volume - 2 * math.pi) < 1e-12
    assert abs(Sphere(2).volume - 4 * math.pi) < 1e-12
    assert abs(Sphere(3).volume - 2 * math.pi ** 2) < 1e-12
    assert abs(Sphere(4).volume - 8 * math.pi ** 2 / 3) < 1e-12
    assert abs(Torus(3).volume - (2 * math.pi) ** 3) < 1e-9


@pytest.mark.parametrize("d", [2, 3, 5])
def test_divergence_of_coordinate_gradients_is_the_first_eigenvalue(d):
    """grad_M x_i = P e_i and Laplace-Beltrami x_i = -d x_i on S^d (degree-1 harmonics); degree 2: the
    harmonic x_1 x_2 has eigenvalue -2 (2 + d - 1)."""
    m = Sphere(d)
    x = m.random_uniform(50, torch.Generator().manual_seed(3))
    e = torch.zeros(m.ambient_dim, dtype=torch.float64)
    e[0] = 1.0
    assert float((m.divergence(lambda y: e.expand_as(y), x) + d * x[:, 0]).abs().max()) < 1e-12
    grad_q = lambda y: torch.stack([y[:, 1], y[:, 0]] + [torch.zeros_like(y[:, 0])] * (d - 1), 1)  # grad x1 x2
    assert float((m.divergence(grad_q, x) + 2 * (d + 1) * x[:, 0] * x[:, 1]).abs().max()) < 1e-12


def test_divergence_on_the_torus_is_the_divergence_in_the_angles():
    m = Torus(2)
    x = m.random_uniform(50, torch.Generator().manual_seed(4))
    field = lambda y: torch.stack([torch.sin(y[:, 0]) * torch.cos(y[:, 1]), torch.cos(2 * y[:, 1])], 1)
    exact = torch.cos(x[:, 0]) * torch.cos(x[:, 1]) - 2 * torch.sin(2 * x[:, 1])
    assert float((m.divergence(field, x) - exact).abs().max()) < 1e-12


def _one_step_mean_cos(h, d):
    """E cos(sqrt(h) R), R ~ chi_d: the factor by which one isotropic geodesic step on S^d shrinks E[x . x0]."""
    dens = lambda r: r ** (d - 1) * math.exp(-r * r / 2) / (2 ** (d / 2 - 1) * special.gamma(d / 2))
    return integrate.quad(lambda r: math.cos(math.sqrt(h) * r) * dens(r), 0, np.inf, epsabs=1e-14)[0]


@pytest.mark.parametrize("d", [2, 3])
def test_geodesic_random_walk_mean_follows_its_exact_recursion_and_tends_to_brownian_motion(d):
    """Isotropic steps give E[X_{k+1} | X_k] = m_h X_k with m_h = E cos(sqrt(h) R), so E[X_K . x0] = m_h^K
    exactly for the scheme; m_h^K -> exp(-d t / 2), Brownian motion's value, at weak order 1 in h."""
    m, t, n = Sphere(d), 0.6, 20000
    x0 = m.random_uniform(1, torch.Generator().manual_seed(5)).repeat(n, 1)
    steps = 60
    xs = m.random_walk(x0, steps, t / steps, generator=torch.Generator().manual_seed(6))
    c = (xs * x0).sum(-1)
    exact = _one_step_mean_cos(t / steps, d) ** steps
    assert abs(float(c.mean()) - exact) < 4.5 * float(c.std()) / math.sqrt(n)
    errs = [abs(_one_step_mean_cos(t / k, d) ** k - math.exp(-d * t / 2)) for k in (50, 100, 200)]
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2  # first order


def test_torus_brownian_is_the_exact_wrapped_normal():
    m, t, n = Torus(2), 0.8, 40000
    x0 = torch.tensor([[2.5, -3.0]], dtype=torch.float64).repeat(n, 1)
    x = m.brownian(x0, t, generator=torch.Generator().manual_seed(7))
    c = torch.cos(x - x0)  # E cos(B_t) = exp(-t/2), Var = (1 + e^{-2t})/2 - e^{-t}
    var = (1 + math.exp(-2 * t)) / 2 - math.exp(-t)
    assert float((c.mean(0) - math.exp(-t / 2)).abs().max()) < 4.5 * math.sqrt(var / n)
    assert float(torch.sin(x - x0).mean(0).abs().max()) < 4.5 * math.sqrt((1 - math.exp(-2 * t)) / 2 / n)


def test_lonlat_round_trip_and_errors():
    s = Sphere(2)
    lon, lat = np.array([0.0, 90.0, -179.5, 45.0]), np.array([0.0, 10.0, -89.0, 89.9])
    x = s.from_lonlat(lon, lat)
    assert float(s.distance_to_manifold(x).max()) < 1e-12
    lo, la = s.to_lonlat(x)
    assert np.allclose(lo.numpy(), lon, atol=1e-10) and np.allclose(la.numpy(), lat, atol=1e-10)
    assert abs(float(x[1, 2]) - math.sin(math.radians(10.0))) < 1e-12
    with pytest.raises(ValueError, match="lat"):
        s.from_lonlat([0.0], [95.0])
    with pytest.raises(ValueError, match="S\\^2"):
        Sphere(3).from_lonlat([0.0], [0.0])


def test_points_off_the_manifold_and_bad_walk_arguments_are_refused():
    with pytest.raises(ValueError, match="x must hold points of Sphere\\(2\\); row 1"):
        Sphere(2).points([[0.0, 0.0, 1.0], [0.0, 0.0, 1.1]])
    with pytest.raises(ValueError, match="angles"):
        Torus(2).points([[0.0, 4.0]])
    with pytest.raises(ValueError, match="shape"):
        Sphere(2).points([[1.0, 0.0]])
    with pytest.raises(ValueError, match="dim"):
        Sphere(0)
    x = Sphere(2).random_uniform(3)
    with pytest.raises(ValueError, match="steps"):
        Sphere(2).random_walk(x, 4, [0.1, 0.1])
