r"""Particle-system targets: N particles in s spatial dimensions, positions flattened particle-major.

A batch ``x`` of shape (n, N*s) holds ``x.view(n, N, s)``: particle i is ``x[:, i*s:(i+1)*s]``.

Both energies below depend on the positions only through the pairwise distances (plus, for
Lennard-Jones, the distances to the centre of mass), so they are invariant under permutations of
the particles, rotations and reflections (the orthogonal group O(s)) and translations. Translation
invariance means exp(-E) is constant along the centre of mass: the density is *not* normalisable on
R^(N s). It is normalisable on the centre-of-mass-free subspace {sum_i x_i = 0} (dimension (N-1)s),
which is where samplers in the literature (bgflow, DEM, ASBS; equivariant networks with the mean
removed and noise projected) work; :func:`remove_mean` projects onto it. ``log_Z`` is ``None`` and
there is no exact sampler. Temperature 1 throughout: log_prob = -E.
"""
from __future__ import annotations

import abc
from typing import Tuple

import torch

from .._validate import check_dim, check_positive
from .base import Target


def centre_of_mass_free_basis(n_particles: int, spatial_dim: int, dtype=torch.float64) -> torch.Tensor:
    """An orthonormal basis B of the centre-of-mass-free subspace {sum_i x_i = 0} of R^(N s).

    B = Q ⊗ I_s, shape (N s, (N - 1) s), with Q the N x (N - 1) Helmert basis of {v : sum v = 0}
    (column k: 1/sqrt(k(k+1)) on the first k entries, -k/sqrt(k(k+1)) on entry k + 1). B'B = I and
    B B' is the projection :func:`remove_mean`.
    """
    n_particles = check_dim(n_particles, "n_particles")
    spatial_dim = check_dim(spatial_dim, "spatial_dim")
    if n_particles < 2:
        raise ValueError(f"n_particles must be at least 2; got {n_particles}")
    Q = torch.zeros(n_particles, n_particles - 1, dtype=dtype)
    for k in range(1, n_particles):
        Q[:k, k - 1] = 1.0 / (k * (k + 1)) ** 0.5
        Q[k, k - 1] = -k / (k * (k + 1)) ** 0.5
    return torch.kron(Q, torch.eye(spatial_dim, dtype=dtype))


def _particles(x: torch.Tensor, n_particles: int, spatial_dim: int, name: str = "x") -> torch.Tensor:
    if x.shape[-1] != n_particles * spatial_dim:
        raise ValueError(f"{name} must have last dimension n_particles * spatial_dim = "
                         f"{n_particles} * {spatial_dim} = {n_particles * spatial_dim}; got shape {tuple(x.shape)}")
    return x.reshape(*x.shape[:-1], n_particles, spatial_dim)


def _pair_vectors(x: torch.Tensor, n_particles: int, spatial_dim: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_i - x_j over unordered pairs i < j (row-major, as scipy's pdist), and their (i, j) indices."""
    p = _particles(x, n_particles, spatial_dim)
    i, j = torch.triu_indices(n_particles, n_particles, offset=1, device=x.device)
    return p[..., i, :] - p[..., j, :], i, j


def _safe_norm(diff: torch.Tensor) -> torch.Tensor:
    """|diff| over the last axis; exact, with gradient 0 (not NaN) where diff = 0."""
    sq = (diff * diff).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def pairwise_distances(x: torch.Tensor, n_particles: int, spatial_dim: int) -> torch.Tensor:
    """Distances |x_i - x_j| over unordered pairs i < j: (..., N*s) -> (..., N(N-1)/2).

    Pairs are in row-major order (0,1), (0,2), ..., (1,2), ... as ``scipy.spatial.distance.pdist``.
    Differentiable, with zero (not NaN) gradient at coincident particles.
    """
    n_particles = check_dim(n_particles, "n_particles")
    spatial_dim = check_dim(spatial_dim, "spatial_dim")
    diff, _, _ = _pair_vectors(x, n_particles, spatial_dim)
    return _safe_norm(diff)


def remove_mean(x: torch.Tensor, n_particles: int, spatial_dim: int) -> torch.Tensor:
    """Project (..., N*s) positions onto the zero-centre-of-mass subspace: x_i - mean_j x_j."""
    n_particles = check_dim(n_particles, "n_particles")
    spatial_dim = check_dim(spatial_dim, "spatial_dim")
    p = _particles(x, n_particles, spatial_dim)
    return (p - p.mean(-2, keepdim=True)).reshape(x.shape)


class _PairTarget(Target, metaclass=abc.ABCMeta):
    """Shared machinery: E(x) = c * sum_{i<j} u(d_ij) + extra(x); log_prob = -E, closed-form score."""

    _pair_coeff: float = 1.0

    def _init_particles(self, n_particles, spatial_dim):
        self.n_particles = check_dim(n_particles, "n_particles")
        if self.n_particles < 2:
            raise ValueError(f"n_particles must be at least 2; got {self.n_particles}")
        self.spatial_dim = check_dim(spatial_dim, "spatial_dim")
        self.dim = self.n_particles * self.spatial_dim
        self.log_Z = None

    @abc.abstractmethod
    def _pair_energy(self, d: torch.Tensor) -> torch.Tensor:
        """u(d), elementwise."""

    @abc.abstractmethod
    def _pair_energy_grad(self, d: torch.Tensor) -> torch.Tensor:
        """u'(d), elementwise."""

    def _extra_energy(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def _extra_energy_grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x), shape (n,)."""
        x = self._check_x(x)
        d = pairwise_distances(x, self.n_particles, self.spatial_dim)
        return self._pair_coeff * self._pair_energy(d).sum(-1) + self._extra_energy(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -self.energy(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """-grad E(x), closed form (the pair term of coincident particles contributes 0)."""
        x = self._check_x(x)
        diff, i, j = _pair_vectors(x, self.n_particles, self.spatial_dim)
        d = _safe_norm(diff)
        unit = diff / torch.where(d > 0, d, torch.ones_like(d)).unsqueeze(-1)  # 0 where d = 0
        f = (self._pair_coeff * self._pair_energy_grad(d)).unsqueeze(-1) * unit  # dE/dx_i per pair
        grad = torch.zeros(x.shape[0], self.n_particles, self.spatial_dim, dtype=x.dtype, device=x.device)
        grad.index_add_(1, i, f)
        grad.index_add_(1, j, -f)
        return -(grad.reshape(x.shape) + self._extra_energy_grad(x))

    def pairwise_distances(self, x: torch.Tensor) -> torch.Tensor:
        return pairwise_distances(x, self.n_particles, self.spatial_dim)

    def remove_mean(self, x: torch.Tensor) -> torch.Tensor:
        return remove_mean(x, self.n_particles, self.spatial_dim)


class DoubleWellParticles(_PairTarget):
    r"""Multi-particle double well, "dw4" (bgflow; Köhler, Klein & Noé 2020, "Equivariant flows").

    .. math:: E(x) = \sum_{i<j} 0.9\,(d_{ij} - 4)^4 - 4\,(d_{ij} - 4)^2, \qquad d_{ij} = |x_i - x_j|,

    over *unordered* pairs, temperature 1, ``log_prob = -E``. Default: 4 particles in 2-d (d = 8).

    Symmetries: permutations of particles, rotations and reflections, translations. Because of
    translation invariance the density is not normalisable on R^(N s); it is normalisable on the
    centre-of-mass-free subspace (the quartic confines every pair distance), where the literature's
    samplers work (see :func:`remove_mean`). ``log_Z = None``; no exact sampler.

    The pair energy is finite at d = 0 (166.4), so no distance clamp is needed; at exactly
    coincident particles the pair's (direction-less) gradient is taken as 0.
    """

    def __init__(self, n_particles: int = 4, spatial_dim: int = 2, name: str = "dw4"):
        self._init_particles(n_particles, spatial_dim)
        self.name = name

    def _pair_energy(self, d):
        r = d - 4.0
        r2 = r * r
        return 0.9 * r2 * r2 - 4.0 * r2

    def _pair_energy_grad(self, d):
        r = d - 4.0
        return 3.6 * r * r * r - 8.0 * r


class LennardJones(_PairTarget):
    r"""Lennard-Jones cluster with a harmonic centring term, "lj13" (13 particles in 3-d, d = 39).

    .. math::
        E(x) = f \sum_{i \ne j} \Big[\Big(\frac{1}{d_{ij}}\Big)^{12} - 2\Big(\frac{1}{d_{ij}}\Big)^{6}\Big]
               + \tfrac12 \sum_i |x_i - \bar x|^2, \qquad \bar x = \tfrac1N \sum_i x_i,

    (epsilon = 1, r_m = 1, oscillator scale 1), temperature 1, ``log_prob = -E``.

    Convention: the sum runs over *ordered* pairs i != j with ``pair_factor`` f = 1 (DEM / ASBS / iDEM
    convention: twice the unordered sum). EACF (Klein et al.) uses f = 0.5, i.e. the unordered sum:
    pass ``pair_factor=0.5`` for it. Energies of the two conventions are not comparable.

    Symmetries: permutations of particles, rotations and reflections, translations (the harmonic term
    uses x_i - x̄, so it confines only the spread about the centre of mass). Hence the density is not
    normalisable on R^(N s): it is constant along the centre of mass. On the centre-of-mass-free
    subspace it is normalisable (LJ is bounded below, the harmonic term confines the spread), and
    samplers in the literature work there (see :func:`remove_mean`). ``log_Z = None``; no exact sampler.

    Short distances: below ``min_distance`` (default 0.01, in units of r_m) the pair energy
    u(d) = d^-12 - 2 d^-6 is continued linearly with its value and slope at ``min_distance``
    (C^1, still strictly repulsive). Where this differs from the exact formula the pair energy already
    exceeds u(0.01) ≈ 1e24, a Boltzmann weight below exp(-1e24), so no expectation changes; in return
    log_prob and score stay finite in float32 and float64 (also at coincident particles), where the
    raw formula would overflow to inf and give NaN (inf - inf).
    """

    def __init__(self, n_particles: int = 13, spatial_dim: int = 3, pair_factor: float = 1.0,
                 min_distance: float = 1e-2, name: str = "lj13"):
        self._init_particles(n_particles, spatial_dim)
        self.pair_factor = check_positive(pair_factor, "pair_factor")
        self.min_distance = check_positive(min_distance, "min_distance")
        self._pair_coeff = 2.0 * self.pair_factor  # ordered-pair sum = 2 x unordered
        self.name = name

    @staticmethod
    def _u(d):
        r6 = d.pow(-6)
        return r6 * (r6 - 2.0)

    @staticmethod
    def _du(d):
        r6 = d.pow(-6)
        return 12.0 * r6 * (1.0 - r6) / d

    def _pair_energy(self, d):
        dc = d.clamp_min(self.min_distance)
        return self._u(dc) + self._du(dc) * (d - dc)

    def _pair_energy_grad(self, d):
        return self._du(d.clamp_min(self.min_distance))

    def _extra_energy(self, x):
        c = remove_mean(x, self.n_particles, self.spatial_dim)
        return 0.5 * (c * c).sum(-1)

    def _extra_energy_grad(self, x):
        return remove_mean(x, self.n_particles, self.spatial_dim)


class CentreOfMassFree(Target):
    r"""A particle target in orthonormal coordinates of its centre-of-mass-free subspace.

    With B the basis of :func:`centre_of_mass_free_basis` (B'B = I, range {sum_i x_i = 0}), the
    coordinates y in R^((N-1) s) stand for the positions x = B y, and

    .. math:: \log \tilde\pi(y) = -E(B y), \qquad \nabla_y \log \tilde\pi(y) = B^\top \nabla_x \log \tilde\pi(B y).

    This is a normalisable density on R^((N-1) s) (the translation direction, along which exp(-E) is
    constant, is removed), so every sampler of this package applies unchanged, and its log Z is the
    normaliser over the subspace with its own Lebesgue measure (B is an isometry), the quantity the
    literature's mean-free samplers target (bgflow, DEM, ASBS). Distances are preserved:
    |B y - B y'| = |y - y'|, so W2 between position samples equals W2 between coordinates.
    ``positions(y)`` maps back to R^(N s) and ``coordinates(x)`` projects positions (after
    removing their mean). ``log_Z = None``; no exact sampler.
    """

    def __init__(self, base: "_PairTarget", name: str = ""):
        if not isinstance(base, _PairTarget):
            raise TypeError(f"base must be a particle target (DoubleWellParticles, LennardJones); got {type(base).__name__}")
        self.base = base
        self.n_particles, self.spatial_dim = base.n_particles, base.spatial_dim
        self.dim = (self.n_particles - 1) * self.spatial_dim
        self.log_Z = None
        self.name = name or f"{base.name}_com_free"
        self._basis = centre_of_mass_free_basis(self.n_particles, self.spatial_dim)

    def basis(self, like: torch.Tensor) -> torch.Tensor:
        """B, shape (N s, (N-1) s), on ``like``'s device and dtype."""
        return self._basis.to(device=like.device, dtype=like.dtype)

    def positions(self, y: torch.Tensor) -> torch.Tensor:
        """x = B y: (n, (N-1) s) -> (n, N s), centre of mass 0."""
        y = self._check_x(y)
        return y @ self.basis(y).T

    def coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """y = B' x: (n, N s) -> (n, (N-1) s) (B' annihilates the centre of mass, so x need not be centred)."""
        x = self.base._check_x(x)
        return x @ self.basis(x)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        return self.base.energy(self.positions(y))

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        return -self.energy(y)

    def score(self, y: torch.Tensor) -> torch.Tensor:
        return self.base.score(self.positions(y)) @ self.basis(y)

    def pairwise_distances(self, y: torch.Tensor) -> torch.Tensor:
        return self.base.pairwise_distances(self.positions(y))
