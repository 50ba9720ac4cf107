"""EGNNGenerator (cs.samplers.EGNNGenerator, Satorras et al. 2021): E(n) and permutation equivariance measured
numerically in float64 (random orthogonal maps with reflections, translations, particle permutations), a zero
centre of mass, the identity-like start, dtypes and batch shapes, errors, and a smoke test of DiKL on dw4."""
import math

import pytest
import torch

import controlsamp as cs
from controlsamp.samplers.egnn import EGNNGenerator

D64 = torch.float64
CASES = [(4, 2), (13, 3), (5, 3)]


def make(N, s, seed=0, layers=3, hidden=32, perturb=0.3):
    """A float64 generator whose zero-initialised output layers are perturbed, so the map is far from the
    centring map it starts as (otherwise the equivariance checks would test only the centring)."""
    torch.manual_seed(seed)
    g = EGNNGenerator(N, s, hidden=hidden, layers=layers).to(D64)
    with torch.no_grad():
        for layer in g.layers:
            layer.phi_x[-1].weight.normal_(0.0, perturb)
            layer.phi_x[-1].bias.normal_(0.0, perturb)
    return g


def random_orthogonal(s, gen, reflect):
    Q, R = torch.linalg.qr(torch.randn(s, s, dtype=D64, generator=gen))
    Q = Q * torch.sign(torch.diagonal(R))
    if (torch.det(Q) < 0) != reflect:
        Q[:, 0] = -Q[:, 0]
    return Q


def rotate(z, Q, N, s):
    return (z.reshape(-1, N, s) @ Q.T).reshape(z.shape)


@pytest.mark.parametrize("N, s", CASES)
@pytest.mark.parametrize("reflect", [False, True])
def test_orthogonal_equivariance(N, s, reflect):
    g = make(N, s)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(16, N * s, dtype=D64, generator=gen)
    with torch.no_grad():
        out = g(z)
        assert (out - (z.reshape(16, N, s) - z.reshape(16, N, s).mean(1, keepdim=True)).reshape(16, -1)).abs().max() > 0.1
        for _ in range(3):
            Q = random_orthogonal(s, gen, reflect)
            assert abs(torch.det(Q).item() - (-1.0 if reflect else 1.0)) < 1e-12
            err = (g(rotate(z, Q, N, s)) - rotate(out, Q, N, s)).abs().max().item()
            assert err < 1e-10, err


@pytest.mark.parametrize("N, s", CASES)
def test_translation_invariance(N, s):
    g = make(N, s)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(16, N * s, dtype=D64, generator=gen)
    t = 5.0 * torch.randn(16, 1, s, dtype=D64, generator=gen)  # one translation per row, every particle
    with torch.no_grad():
        shifted = (z.reshape(16, N, s) + t).reshape(16, -1)
        err = (g(shifted) - g(z)).abs().max().item()
    assert err < 1e-10, err


@pytest.mark.parametrize("N, s", CASES)
def test_permutation_equivariance(N, s):
    g = make(N, s)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(16, N * s, dtype=D64, generator=gen)
    with torch.no_grad():
        out = g(z).reshape(16, N, s)
        for _ in range(3):
            perm = torch.randperm(N, generator=gen)
            zp = z.reshape(16, N, s)[:, perm].reshape(16, -1)
            err = (g(zp).reshape(16, N, s) - out[:, perm]).abs().max().item()
            assert err < 1e-10, err


@pytest.mark.parametrize("N, s", CASES)
def test_output_centre_of_mass_is_zero_and_start_is_centring(N, s):
    gen = torch.Generator().manual_seed(4)
    z = 3.0 + torch.randn(32, N * s, dtype=D64, generator=gen)
    with torch.no_grad():
        out = make(N, s)(z)
        assert out.reshape(32, N, s).mean(1).abs().max().item() < 1e-12
        fresh = EGNNGenerator(N, s).to(D64)  # zero phi_x output layers: the centring map
        centred = cs.targets.particles.remove_mean(z, N, s)
        assert torch.allclose(fresh(z), centred, atol=1e-14, rtol=0)


def test_dtypes_and_batch_shapes():
    g = make(4, 2).float()
    z = torch.randn(3, 5, 8)
    out = g(z)
    assert out.shape == (3, 5, 8) and out.dtype == torch.float32
    assert g(z[0, 0]).shape == (8,)
    assert torch.allclose(g(z.reshape(15, 8)).reshape(3, 5, 8), out, atol=1e-6)
    assert g(z.double()).dtype == torch.float32  # cast to the parameters' dtype
    g64 = g.double()
    out64 = g64(z.double())
    assert out64.dtype == D64 and torch.allclose(out64.float(), out, atol=1e-5)
    assert g64(torch.zeros(0, 8, dtype=D64)).shape == (0, 8)
    loss = g64(z.double()).pow(2).sum()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g64.parameters())


def test_errors():
    g = EGNNGenerator(4, 2)
    with pytest.raises(ValueError, match="4 \\* 2 = 8"):
        g(torch.randn(5, 6))
    with pytest.raises(ValueError, match="n_particles"):
        EGNNGenerator(1, 3)
    with pytest.raises(ValueError, match="spatial_dim"):
        EGNNGenerator(4, 0)
    with pytest.raises(ValueError, match="layers"):
        EGNNGenerator(4, 2, layers=-1)
    with pytest.raises(ValueError, match="hidden"):
        EGNNGenerator(4, 2, hidden=0)
    with pytest.raises(ValueError, match="dimension"):  # DiKL refuses a generator of the wrong width
        cs.samplers.DiKL(cs.targets.get("lj13"), generator=EGNNGenerator(4, 2))


def test_dikl_on_dw4_smoke():
    """A smoke test of integration only (nothing is claimed about sample quality): DiKL on the registry's dw4
    (8-d positions; the generator's output is centred, and the noised target's score has no centre-of-mass
    component, so the translation-invariant target needs no reparametrisation) with an EGNN generator runs a few
    iterations; the loss and the samples' energies are finite and the samples stay centred."""
    tg = cs.targets.get("dw4")
    torch.manual_seed(0)
    model = cs.samplers.DiKL(tg, generator=EGNNGenerator(4, 2, hidden=16, layers=2), levels=3, t_min=0.02,
                             t_max=0.5, inner_steps=2, score_hidden=32, score_depth=2, posterior_particles=4,
                             mala_steps=4)
    before = [p.detach().clone() for p in model.generator.parameters()]
    model.fit(iters=4, batch=16, lr=1e-3, score_warmup=5, progress=False)
    assert all(math.isfinite(v) for v in model.history["loss"]) and len(model.history["loss"]) == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters()))
    x, log_w = model.sample(256, seed=1)
    assert x.shape == (256, 8) and torch.isnan(log_w).all()
    assert torch.isfinite(tg.energy(x)).all()
    assert x.reshape(256, 4, 2).mean(1).abs().max().item() < 1e-5
    assert model.target_evals > 0


@pytest.mark.parametrize("N, s, name", [(4, 2, "dw4"), (13, 3, "lj13")])
def test_com_free_output_is_the_coordinates_of_the_positions(N, s, name):
    """output="com_free" returns B^T g(z) for the same weights: it equals CentreOfMassFree.coordinates of the
    positions to 1e-12, maps back to them exactly (the positions are centred), and the com-free target's energy of it
    is the particle energy of the positions."""
    g = make(N, s)
    c = EGNNGenerator(N, s, hidden=32, layers=3, output="com_free").to(D64)
    c.load_state_dict(g.state_dict())
    z = torch.randn(20, N * s, dtype=D64, generator=torch.Generator().manual_seed(3))
    x, y = g(z), c(z)
    tg = cs.targets.get(f"{name}_com_free")
    assert y.shape == (20, (N - 1) * s)
    assert torch.allclose(y, tg.coordinates(x), atol=1e-12, rtol=0)
    assert torch.allclose(tg.positions(y), x, atol=1e-12, rtol=0)
    assert torch.allclose(tg.energy(y), cs.targets.get(name).energy(x), atol=1e-9, rtol=1e-12)
    with pytest.raises(ValueError, match="output"):
        EGNNGenerator(N, s, output="coordinates")
