"""Benchmark targets (funnel, many-well, dw4, lj13): each check is against an independent number —
numerical integration, scipy densities, hand-computed energies, a numpy double loop, finite
differences — with Monte Carlo tolerances of 5 standard errors computed from the sample size."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import cumulative_simpson, dblquad, quad
from scipy.spatial.distance import pdist

import controlsamp as cs
from controlsamp.targets.base import Target
from controlsamp.targets.particles import pairwise_distances, remove_mean

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- funnel


@pytest.mark.parametrize("x0_std", [3.0, 1.0])
def test_funnel_2d_integrates_to_one(x0_std):
    t = cs.targets.Funnel(dim=2, x0_std=x0_std)
    f = lambda x1, x0: math.exp(float(t.log_prob(torch.tensor([[x0, x1]], dtype=F64))))
    # the neck: integrate x1 over +-12 conditional standard deviations e^{x0/2} (tail mass < 1e-32),
    # x0 over +-13 standard deviations
    a = 13 * x0_std
    val, err = dblquad(f, -a, a, lambda x0: -12 * math.exp(x0 / 2), lambda x0: 12 * math.exp(x0 / 2),
                       epsabs=1e-10, epsrel=1e-10)
    assert abs(val - 1.0) < 1e-7 and t.log_Z == 0.0


@pytest.mark.parametrize("name,x0_std", [("funnel10", 3.0), ("funnel10_pis", 1.0)])
def test_funnel_log_prob_is_the_sum_of_scipy_conditionals(name, x0_std):
    t = cs.targets.get(name)
    rng = np.random.default_rng(0)
    x = np.concatenate([t.sample(50, generator=_gen(0)).numpy(), rng.normal(0, 4, size=(50, 10))])
    expected = stats.norm.logpdf(x[:, 0], 0, x0_std) + stats.norm.logpdf(x[:, 1:], 0, np.exp(x[:, :1] / 2)).sum(1)
    np.testing.assert_allclose(t.log_prob(torch.tensor(x)).numpy(), expected, rtol=1e-12, atol=1e-10)


def test_funnel_float32_is_finite_and_accurate_deep_in_the_neck():
    # x0 = -100: e^{-x0} = e^{100} overflows float32 (max ~3.4e38) though every z_i = x_i e^{-x0/2} is O(1);
    # the float32 log density and score must match float64 (computed independently by scipy for log_prob)
    t = cs.targets.get("funnel10")
    z = torch.randn(6, 9, dtype=F64, generator=_gen(2))
    x0 = torch.tensor([-100.0, -95.0, -89.0, -50.0, 0.0, 20.0], dtype=F64)[:, None]
    x = torch.cat([x0, torch.exp(x0 / 2) * z], dim=1)
    lp32 = t.log_prob(x.float())
    xn = x.numpy()
    expected = stats.norm.logpdf(xn[:, 0], 0, 3.0) + stats.norm.logpdf(z.numpy()).sum(1) - 4.5 * xn[:, 0]
    assert torch.isfinite(lp32).all()
    np.testing.assert_allclose(lp32.double().numpy(), expected, rtol=1e-5)
    s32, s64 = t.score(x.float()).double(), t.score(x)
    assert torch.isfinite(s32).all()
    np.testing.assert_allclose(s32.numpy(), s64.numpy(), rtol=1e-4, atol=1e-3)  # d log pi / d x0 is O(10)


@pytest.mark.parametrize("name,x0_std", [("funnel10", 3.0), ("funnel10_pis", 1.0)])
def test_funnel_exact_samples_have_the_right_moments(name, x0_std):
    t = cs.targets.get(name)
    n = 200_000
    x = t.sample(n, generator=_gen(1))
    x0 = x[:, 0]
    assert abs(float(x0.mean())) < 5 * x0_std / math.sqrt(n)
    # Var of the sample variance of a normal: 2 s^4 / n
    assert abs(float(x0.var()) - x0_std ** 2) < 5 * math.sqrt(2.0) * x0_std ** 2 / math.sqrt(n)
    # x_i^2 e^{-x0} = z_i^2 ~ chi^2_1 (mean 1, variance 2), independent over the 9 coordinates
    w = x[:, 1:] ** 2 * torch.exp(-x[:, :1])
    assert abs(float(w.mean()) - 1.0) < 5 * math.sqrt(2.0 / (9 * n))
    # x_i e^{-x0/2} = z_i has mean 0 (variance 1)
    assert abs(float((x[:, 1:] / torch.exp(x[:, :1] / 2)).mean())) < 5 / math.sqrt(9 * n)


# ---------------------------------------------------------------- many-well

_f1 = lambda x: -x ** 4 + 6 * x ** 2 + 0.5 * x


def _x1_moment(k):
    """int x^k exp(f(x)) dx by quadrature, scaled by e^{-10}."""
    return quad(lambda x: x ** k * math.exp(_f1(x) - 10.0), -10, 10, points=[-1.7, 0.0, 1.75],
                epsabs=0, epsrel=1e-12, limit=200)[0]


def test_manywell_2d_integrates_to_exp_log_Z():
    t = cs.targets.ManyWell(dim=2)
    f = lambda x2, x1: math.exp(float(t.log_prob(torch.tensor([[x1, x2]], dtype=F64))) - 10.0)
    val, err = dblquad(f, -5, 5, -15, 15, epsabs=0, epsrel=1e-10)
    assert abs(math.log(val) + 10.0 - t.log_Z) < 1e-8


def test_manywell_log_Z_matches_references():
    t = cs.targets.get("manywell32")
    assert abs(t.log_Z - 164.69568) < 1e-4  # docs/references.md
    assert abs(t.z1 - 11784.50927) < 1e-3  # docs/references.md, given to 5 decimals
    assert abs(cs.targets.manywell.manywell_z1() - _x1_moment(0) * math.exp(10.0)) < 1e-8 * 11784.5
    assert t.n_modes == 2 ** 16 and cs.targets.get("manywell", dim=4).n_modes == 4
    assert abs(cs.targets.get("manywell", dim=4).log_Z - 2 * math.log(t.z1 * math.sqrt(2 * math.pi))) < 1e-10


def test_manywell_exact_samples_match_quadrature():
    t = cs.targets.get("manywell32")
    n = 100_000
    x = t.sample(n, generator=_gen(2))
    assert x.shape == (n, 32) and x.dtype == F64
    x1 = x[:, 0::2].reshape(-1).numpy()  # all blocks independent: n * 16 draws
    x2 = x[:, 1::2].reshape(-1).numpy()
    N = x1.size
    z = _x1_moment(0)
    m1, m2, m3, m4 = (_x1_moment(k) / z for k in (1, 2, 3, 4))
    assert abs(x1.mean() - m1) < 5 * math.sqrt((m2 - m1 ** 2) / N)
    assert abs((x1 ** 2).mean() - m2) < 5 * math.sqrt((m4 - m2 ** 2) / N)
    p_right = quad(lambda x: math.exp(_f1(x) - 10.0), 0, 10, epsabs=0, epsrel=1e-12)[0] / z
    assert abs((x1 > 0).mean() - p_right) < 5 * math.sqrt(p_right * (1 - p_right) / N)
    assert abs(x2.mean()) < 5 / math.sqrt(N) and abs(x2.var() - 1.0) < 5 * math.sqrt(2.0 / N)
    # Kolmogorov-Smirnov against the CDF from quadrature (cumulative Simpson on a 1e-4 grid, error << 1e-6)
    grid = np.linspace(-5.0, 5.0, 100_001)
    cdf = cumulative_simpson(np.exp(_f1(grid) - 10.0), x=grid, initial=0.0) / z
    assert abs(cdf[-1] - 1.0) < 1e-9
    sub = np.random.default_rng(3).choice(x1, 20_000, replace=False)
    assert stats.kstest(sub, lambda v: np.interp(v, grid, cdf)).pvalue > 1e-3
    assert stats.kstest(x2[:20_000], "norm").pvalue > 1e-3


# ---------------------------------------------------------------- scores


@pytest.mark.parametrize("target", [cs.targets.Funnel(10, 3.0), cs.targets.Funnel(5, 1.0),
                                    cs.targets.ManyWell(32), cs.targets.ManyWell(2)], ids=lambda t: f"{t.name}{t.dim}")
def test_closed_form_score_equals_autograd(target):
    x = torch.randn(64, target.dim, dtype=F64, generator=_gen(4)) * 2.0
    s, a = target.score(x), Target.score(target, x)
    np.testing.assert_allclose(s.numpy(), a.numpy(), rtol=1e-12, atol=1e-12 * float(a.abs().max()))


def _separated_config(n_particles, spatial_dim, box, min_dist, seed):
    """Random positions with every pair at least min_dist apart."""
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n_particles:
        p = rng.uniform(-box, box, size=spatial_dim)
        if all(np.linalg.norm(p - q) > min_dist for q in pts):
            pts.append(p)
    return np.array(pts).reshape(-1)


def _fd_grad(fn, x, h=1e-6):
    g = np.zeros_like(x)
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = h
        g[k] = (fn(x + e) - fn(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_particle_score_equals_finite_differences(name):
    t = cs.targets.get(name)
    if name == "dw4":
        configs = [np.random.default_rng(s).normal(0, 2.5, size=8) for s in range(3)]
    else:
        configs = [_separated_config(13, 3, 1.6, 0.85, s) for s in range(2)]
    lp = lambda v: float(t.log_prob(torch.tensor(v[None], dtype=F64)))
    for c in configs:
        fd = _fd_grad(lp, c)
        s = t.score(torch.tensor(c[None], dtype=F64))[0].numpy()
        np.testing.assert_allclose(s, fd, rtol=0, atol=1e-6 * max(1.0, np.abs(fd).max()))
    x = torch.tensor(np.stack(configs), dtype=F64)
    np.testing.assert_allclose(t.score(x).numpy(), Target.score(t, x).numpy(), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- particle energies


def test_dw4_energy_of_a_square_by_hand():
    t = cs.targets.get("dw4")
    square = torch.tensor([[0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]], dtype=F64) + 0.3
    r = 4 * math.sqrt(2) - 4  # 4 sides give (d - 4) = 0, the 2 diagonals give 4 sqrt 2 - 4
    expected = 2 * (0.9 * r ** 4 - 4 * r ** 2)
    assert abs(float(t.log_prob(square)) + expected) < 1e-12
    # one pair at distance 3 and the rest far (d - 4 = -1): E includes 0.9 - 4 = -3.1
    assert abs(float(t._pair_energy(torch.tensor(3.0, dtype=F64))) - (0.9 - 4.0)) < 1e-14


def _lj_energy_loop(x, n, s, f=1.0):
    p = x.reshape(n, s)
    e = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                d = np.linalg.norm(p[i] - p[j])
                e += f * ((1 / d) ** 12 - 2 * (1 / d) ** 6)
    return e + 0.5 * ((p - p.mean(0)) ** 2).sum()


def test_lj13_energy_equals_a_double_loop():
    t = cs.targets.get("lj13")
    t_eacf = cs.targets.LennardJones(13, 3, pair_factor=0.5)
    rng = np.random.default_rng(5)
    configs = [_separated_config(13, 3, 1.6, 0.85, 10), rng.normal(0, 1.0, size=39) + 2.0]
    c = configs[0].copy()
    c[3:6] = c[0:3] + np.array([0.05, 0.0, 0.0])  # a close pair, above min_distance: the exact formula
    configs.append(c)
    x = torch.tensor(np.stack(configs), dtype=F64)
    for k, cfg in enumerate(configs):
        for tt, f in ((t, 1.0), (t_eacf, 0.5)):
            exp = _lj_energy_loop(cfg, 13, 3, f)
            assert abs(float(-tt.log_prob(x)[k]) - exp) < 1e-11 * max(1.0, abs(exp))


@pytest.mark.parametrize("name,n,s", [("dw4", 4, 2), ("lj13", 13, 3)])
def test_particle_energy_invariances(name, n, s):
    t = cs.targets.get(name)
    rng = np.random.default_rng(6)
    base = (np.random.default_rng(7).normal(0, 2.0, size=(5, n * s)) if name == "dw4"
            else np.stack([_separated_config(13, 3, 1.6, 0.85, k) for k in range(5)]))
    lp = t.log_prob(torch.tensor(base, dtype=F64)).numpy()
    p = base.reshape(5, n, s)
    perm = rng.permutation(n)
    Q = stats.ortho_group.rvs(s, random_state=rng)  # random orthogonal matrix
    R = np.diag([-1.0] + [1.0] * (s - 1))  # a reflection
    shift = rng.normal(0, 5.0, size=s)
    for moved in (p[:, perm], p @ Q.T, p @ R.T, p + shift, (p[:, perm] @ Q.T) + shift):
        lm = t.log_prob(torch.tensor(moved.reshape(5, n * s), dtype=F64)).numpy()
        np.testing.assert_allclose(lm, lp, rtol=1e-11, atol=1e-11)
    centred = remove_mean(torch.tensor(base, dtype=F64), n, s)
    assert float(centred.reshape(5, n, s).mean(1).abs().max()) < 1e-13
    np.testing.assert_allclose(t.log_prob(centred).numpy(), lp, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_particle_targets_finite_at_coincident_particles(name, dtype):
    t = cs.targets.get(name)
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.normal(0, 1.5, size=(3, t.dim)), dtype=dtype)
    s = t.spatial_dim
    x[0, s:2 * s] = x[0, :s]  # particles 0 and 1 coincide
    x[1] = 0.0  # all particles coincide
    x[2, s:2 * s] = x[2, :s] + 1e-4  # closer than LJ's min_distance
    lp, sc = t.log_prob(x), t.score(x)
    assert lp.dtype == dtype and sc.dtype == dtype
    assert torch.isfinite(lp).all() and torch.isfinite(sc).all()
    if name == "dw4":  # the pair energy at d = 0 is 0.9 * 256 - 4 * 16
        assert abs(float(t._pair_energy(torch.zeros((), dtype=dtype))) - (0.9 * 256 - 64)) < 1e-4
    else:  # strictly more repulsive than at min_distance, C^1 at min_distance
        dmin = t.min_distance
        u = lambda d: float(t._pair_energy(torch.tensor(d, dtype=F64)))
        assert u(0.0) > u(1e-4) > u(dmin) > 1e23
        assert abs(u(dmin * (1 - 1e-9)) - u(dmin * (1 + 1e-9))) < 1e-7 * u(dmin)
        assert abs(u(0.02) - ((1 / 0.02) ** 12 - 2 * (1 / 0.02) ** 6)) < 1e-12 * u(0.02)
        # pair 0-1 pushes apart: the score of particle 1 points away from particle 0
        assert float(((sc[2, s:2 * s] - sc[2, :s]) * (x[2, s:2 * s] - x[2, :s])).sum()) > 0


def test_pairwise_distances_match_scipy_pdist():
    x = np.random.default_rng(9).normal(size=(4, 13 * 3))
    d = pairwise_distances(torch.tensor(x), 13, 3).numpy()
    assert d.shape == (4, 78)
    for k in range(4):
        np.testing.assert_allclose(d[k], pdist(x[k].reshape(13, 3)), rtol=1e-13)
    xg = torch.zeros(1, 8, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(pairwise_distances(xg, 4, 2).sum(), xg)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="n_particles"):
        pairwise_distances(torch.zeros(2, 7), 4, 2)


# ---------------------------------------------------------------- centre-of-mass-free coordinates


@pytest.mark.parametrize("n,s", [(4, 2), (13, 3), (2, 1)])
def test_com_free_basis_is_orthonormal_and_spans_the_mean_free_subspace(n, s):
    B = cs.targets.centre_of_mass_free_basis(n, s)
    assert B.shape == (n * s, (n - 1) * s)
    np.testing.assert_allclose((B.T @ B).numpy(), np.eye((n - 1) * s), atol=1e-14)
    x = torch.tensor(np.random.default_rng(10).normal(size=(5, n * s)), dtype=F64)
    # B B' is the orthogonal projection that remove_mean computes by a different route
    np.testing.assert_allclose((x @ B @ B.T).numpy(), remove_mean(x, n, s).numpy(), atol=1e-13)


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_com_free_target_is_the_particle_target_on_the_subspace(name):
    base, t = cs.targets.get(name), cs.targets.get(name + "_com_free")
    rng = np.random.default_rng(11)
    if name == "dw4":
        x = torch.tensor(rng.normal(0, 2.0, size=(4, 8)) + 3.0, dtype=F64)
    else:
        x = torch.tensor(np.stack([_separated_config(13, 3, 1.6, 0.85, k) for k in range(3)]) + 1.0, dtype=F64)
    y = t.coordinates(x)
    assert y.shape == (len(x), t.dim)
    np.testing.assert_allclose(t.positions(y).numpy(), remove_mean(x, base.n_particles, base.spatial_dim).numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(t.log_prob(y).numpy(), base.log_prob(x).numpy(), rtol=1e-11, atol=1e-10)
    np.testing.assert_allclose(t.pairwise_distances(y).numpy(), base.pairwise_distances(x).numpy(), atol=1e-12)
    # the closed-form score equals finite differences in the coordinates
    lp = lambda v: float(t.log_prob(torch.tensor(v[None], dtype=F64)))
    for k in range(2):
        fd = _fd_grad(lp, y[k].numpy())
        np.testing.assert_allclose(t.score(y[k:k + 1])[0].numpy(), fd, rtol=0, atol=1e-6 * max(1.0, np.abs(fd).max()))
    # an isometry: distances between configurations are those between their coordinates
    np.testing.assert_allclose(torch.cdist(t.positions(y), t.positions(y)).numpy(), torch.cdist(y, y).numpy(), atol=1e-11)
    with pytest.raises(TypeError, match="base must be a particle target"):
        cs.targets.CentreOfMassFree(cs.targets.get("gmm25"))


def test_com_free_dimer_normaliser_equals_the_radial_integral():
    # two particles in the plane with dw4's pair energy: the coordinates y in R^2 give the distance
    # d = sqrt(2) |y|, so Z = int_0^inf 2 pi r exp(-u(sqrt(2) r)) dr, a 1-d integral (scipy quad),
    # against a 2-d Riemann sum of exp(log_prob) over a grid that covers the density.
    t = cs.targets.CentreOfMassFree(cs.targets.DoubleWellParticles(2, 2, name="dimer"))
    u = lambda d: 0.9 * (d - 4) ** 4 - 4 * (d - 4) ** 2
    z_radial, _ = quad(lambda r: 2 * math.pi * r * math.exp(-u(math.sqrt(2) * r)), 0, 12, epsabs=1e-12, limit=200)
    g = np.linspace(-8, 8, 1601)
    h = g[1] - g[0]
    yy = torch.tensor(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), dtype=F64)
    z_grid = float(torch.exp(t.log_prob(yy)).sum()) * h * h
    assert abs(z_grid / z_radial - 1) < 1e-6


# ---------------------------------------------------------------- registry, dtype, reproducibility

_EXPECTED = {"funnel10": 10, "funnel10_pis": 10, "funnel": 10, "manywell32": 32, "manywell": 32, "dw4": 8, "lj13": 39,
             "dw4_com_free": 6, "lj13_com_free": 36}


@pytest.mark.parametrize("name", sorted(_EXPECTED))
def test_registry_builds_with_dim_and_name(name):
    t = cs.targets.get(name)
    assert t.name == name and t.dim == _EXPECTED[name] and name in cs.targets.names()
    if name.startswith(("dw4", "lj13")):
        assert t.log_Z is None
        with pytest.raises(ValueError, match="no exact sampler"):
            t.sample(3)
    else:
        assert t.sample(3, generator=_gen(0)).shape == (3, t.dim)


def test_registry_kwargs_and_errors():
    f = cs.targets.get("funnel", dim=5, x0_std=2.0)
    assert f.dim == 5 and f.x0_std == 2.0 and cs.targets.get("funnel10_pis").x0_std == 1.0
    assert cs.targets.get("funnel10").x0_std == 3.0 and cs.targets.get("lj13").pair_factor == 1.0
    assert cs.targets.get("manywell", dim=4).dim == 4
    with pytest.raises(ValueError, match="dim"):
        cs.targets.get("manywell", dim=7)
    with pytest.raises(ValueError, match="dim"):
        cs.targets.Funnel(dim=1)
    with pytest.raises(ValueError, match="x0_std"):
        cs.targets.Funnel(dim=3, x0_std=-1.0)
    with pytest.raises(ValueError, match="pair_factor"):
        cs.targets.LennardJones(pair_factor=0.0)
    with pytest.raises(ValueError, match="n_particles"):
        cs.targets.DoubleWellParticles(n_particles=1)
    with pytest.raises(ValueError, match=r"shape \(n, 39\)"):
        cs.targets.get("lj13").log_prob(torch.zeros(2, 38))


@pytest.mark.parametrize("name", ["funnel10", "manywell32", "dw4", "lj13"])
def test_float32_in_float32_out(name):
    t = cs.targets.get(name)
    x64 = torch.tensor(_separated_config(13, 3, 1.6, 0.85, 11)[None], dtype=F64) if name == "lj13" \
        else torch.randn(16, t.dim, dtype=F64, generator=_gen(12))
    x32 = x64.float()
    for fn in (t.log_prob, t.score):
        out32, out64 = fn(x32), fn(x64)
        assert out32.dtype == torch.float32 and out64.dtype == F64
        np.testing.assert_allclose(out32.double().numpy(), out64.numpy(), rtol=1e-4,
                                   atol=1e-4 * float(out64.abs().max()))
    if t.log_Z is not None:
        assert t.sample(4, generator=_gen(0), dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("name", ["funnel10", "manywell32"])
def test_sampling_is_reproducible_with_a_seeded_generator(name):
    t = cs.targets.get(name)
    a, b = t.sample(1000, generator=_gen(13)), t.sample(1000, generator=_gen(13))
    c = t.sample(1000, generator=_gen(14))
    assert torch.equal(a, b) and not torch.equal(a, c)
