r"""An E(n)-equivariant graph network (Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks",
ICML, arXiv:2102.09844) as a one-step generator for particle targets (:mod:`controlsamp.targets.particles`), e.g.
for :class:`~controlsamp.samplers.DiKL` on ``dw4`` / ``lj13`` as He et al. 2024 do.

Positions are flattened particle-major, as in the particle targets: a row of width :math:`N s` holds
:math:`N` particles :math:`x_i \in \mathbb R^s`. On the fully connected graph of the particles, layer
:math:`l` maps node features :math:`h_i` and positions :math:`x_i` by (eqs. 3-6 of the paper)

.. math::
    m_{ij} &= \phi_e\big(h_i, h_j, |x_i - x_j|^2\big), \\
    x_i &\leftarrow x_i + \frac{1}{N - 1}\sum_{j \ne i} (x_i - x_j)\,\phi_x(m_{ij}), \\
    m_i &= \sum_{j \ne i} m_{ij}, \\
    h_i &\leftarrow h_i + \phi_h(h_i, m_i),

with :math:`\phi_e, \phi_h` two-layer SiLU MLPs, :math:`\phi_x` a SiLU MLP to a scalar, the paper's normalising
constant :math:`C = 1/(N - 1)`, and the residual form of the feature update (the paper's own implementation). The
initial features are one learned vector shared by every particle (the particles are indistinguishable), so the map
is equivariant under permutations of the particles, orthogonal maps (rotations and reflections) and translations:
:math:`\phi_e` sees only features and squared distances, and the position update is a sum of relative vectors
with invariant coefficients.

As a generator, :math:`z \sim \mathcal N(0, I_{Ns})` is first centred (its particles' mean is removed), the layers
are applied (the last without the feature update, which nothing would read) and the output is centred again, so :math:`g(Rz + t) = R\,g(z)` for every orthogonal :math:`R` and
translation :math:`t` of all particles, and every output has centre of mass 0 (the centre-of-mass-free subspace
where the translation-invariant particle energies are normalisable). The last layer of every :math:`\phi_x` is
zero at initialisation, so the generator starts as the centring map: its initial law is the centred Gaussian.
"""
from __future__ import annotations

import torch
from torch import nn

from .._validate import check_count, check_dim
from ..targets.particles import centre_of_mass_free_basis

Tensor = torch.Tensor

__all__ = ["EGNNGenerator", "EGNNLayer"]


def _mlp(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.SiLU(), nn.Linear(hidden, width_out))


class EGNNLayer(nn.Module):
    r"""One equivariant layer (eqs. 3-6 of Satorras et al. 2021, see the module docstring) on a fully connected
    graph: ``(h (..., N, H), x (..., N, s)) -> (h, x)``. The last layer of :math:`\phi_x` starts at zero. With
    ``update_features=False`` (the generator's last layer, whose features nothing reads) there is no :math:`\phi_h`
    and ``h`` is returned unchanged."""

    def __init__(self, hidden: int, update_features: bool = True):
        super().__init__()
        self.phi_e = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.phi_x = _mlp(hidden, hidden, 1)
        nn.init.zeros_(self.phi_x[-1].weight)
        nn.init.zeros_(self.phi_x[-1].bias)
        self.phi_h = _mlp(2 * hidden, hidden, hidden) if update_features else None

    def forward(self, h: Tensor, x: Tensor):
        N = x.shape[-2]
        diff = x.unsqueeze(-2) - x.unsqueeze(-3)  # (..., N, N, s): x_i - x_j
        d2 = (diff * diff).sum(-1, keepdim=True)  # (..., N, N, 1)
        hi = h.unsqueeze(-2).expand(*h.shape[:-1], N, h.shape[-1])  # h_i along rows
        hj = h.unsqueeze(-3).expand(*h.shape[:-2], N, N, h.shape[-1])  # h_j along columns
        m = self.phi_e(torch.cat([hi, hj, d2], -1))  # (..., N, N, H)
        off = 1.0 - torch.eye(N, dtype=x.dtype, device=x.device)[..., None]  # no self-edges
        m = m * off
        x = x + (diff * (self.phi_x(m) * off)).sum(-2) / (N - 1)
        if self.phi_h is not None:
            h = h + self.phi_h(torch.cat([h, m.sum(-2)], -1))
        return h, x


class EGNNGenerator(nn.Module):
    r"""``EGNNGenerator(n_particles, spatial_dim, hidden=64, layers=3)``: an E(n)-equivariant map
    :math:`z \mapsto g(z)` of flattened particle positions (..., ``n_particles * spatial_dim``) to the same shape,
    with zero centre of mass (see the module docstring).

    Args:
        n_particles: N (at least 2). spatial_dim: s.
        hidden: the width of the node features and of every MLP.
        layers: the number of EGNN layers (0: the centring map).
        output: ``"positions"`` (the centred positions, width :math:`Ns`, for e.g. ``dw4``) or ``"com_free"``
            (their coordinates :math:`y = B^\top g(z)` of width :math:`(N-1)s` in the orthonormal basis :math:`B` of
            the centre-of-mass-free subspace, :func:`~controlsamp.targets.particles.centre_of_mass_free_basis`: the
            coordinates of :class:`~controlsamp.targets.CentreOfMassFree` targets such as ``dw4_com_free``). The
            latent keeps width :math:`Ns`.

    ``z`` may have any leading batch shape; it is cast to the parameters' dtype (use ``.to(torch.float64)`` on the
    module for float64). Starts as the centring map :math:`z \mapsto z - \bar z`.
    """

    def __init__(self, n_particles: int, spatial_dim: int, hidden: int = 64, layers: int = 3,
                 output: str = "positions"):
        super().__init__()
        self.n_particles = check_dim(n_particles, "n_particles")
        if self.n_particles < 2:
            raise ValueError(f"n_particles must be at least 2; got {self.n_particles}")
        self.spatial_dim = check_dim(spatial_dim, "spatial_dim")
        self.hidden = check_dim(hidden, "hidden")
        self.dim = self.n_particles * self.spatial_dim
        self.h0 = nn.Parameter(0.1 * torch.randn(self.hidden))  # one learned feature vector for every particle
        L = check_count(layers, "layers")
        self.layers = nn.ModuleList(EGNNLayer(self.hidden, update_features=k < L - 1) for k in range(L))
        if output not in ("positions", "com_free"):
            raise ValueError(f"output must be 'positions' or 'com_free'; got {output!r}")
        self.output = output
        # kept in float64 outside the module's state (a buffer would lose digits through a float32 round trip)
        self._basis = centre_of_mass_free_basis(self.n_particles, self.spatial_dim) if output == "com_free" else None

    def forward(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor):
            z = torch.as_tensor(z)
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(f"z must have last dimension n_particles * spatial_dim = {self.n_particles} * "
                             f"{self.spatial_dim} = {self.dim}; got shape {tuple(z.shape)}")
        z = z.to(dtype=self.h0.dtype, device=self.h0.device)
        batch = z.shape[:-1]
        x = z.reshape(*batch, self.n_particles, self.spatial_dim)
        x = x - x.mean(-2, keepdim=True)
        h = self.h0.expand(*batch, self.n_particles, self.hidden)
        for layer in self.layers:
            h, x = layer(h, x)
        x = (x - x.mean(-2, keepdim=True)).reshape(*batch, self.dim)
        return x @ self._basis.to(dtype=x.dtype, device=x.device) if self.output == "com_free" else x

    def extra_repr(self) -> str:
        return (f"n_particles={self.n_particles}, spatial_dim={self.spatial_dim}, hidden={self.hidden}, "
                f"output={self.output!r}")
