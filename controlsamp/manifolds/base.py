r"""The interface every manifold of :mod:`controlsamp.manifolds` implements.

A point is a row of ``ambient_dim`` coordinates (batch-first, (n, ambient_dim)): unit vectors of
:math:`\mathbb R^{d+1}` for the sphere, angles in :math:`[-\pi, \pi)^d` for the flat torus. A tangent vector at
x is a row of the same shape lying in the tangent space :math:`T_x M` (orthogonal to x on the sphere; any vector
on the torus). Brownian motion on M is the diffusion with generator :math:`\tfrac12 \Delta_M` (the
Laplace–Beltrami operator), so that on the torus it is the wrapped standard Brownian motion; the geodesic
random walk (Jørgensen 1975; De Bortoli et al. 2022, "Riemannian score-based generative modelling")

.. math:: X_{k+1} = \exp_{X_k}\big(h\, b(X_k) + \sqrt{h}\, Z_k\big), \qquad Z_k \sim N(0, I_{T_{X_k} M}),

converges weakly, as h -> 0, to the diffusion :math:`dX = b(X) dt + dB_M` (weak order 1).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, Optional

import torch

from .._validate import as_points, check_positive

Tensor = torch.Tensor


class Manifold(ABC):
    """A compact Riemannian manifold embedded in (or charted by) ``ambient_dim`` coordinates.

    Attributes: ``dim`` (the intrinsic dimension d), ``ambient_dim`` (the coordinates of a point)."""

    dim: int
    ambient_dim: int

    # ------------------------------------------------------------------ checks
    def points(self, x, name: str = "x", dtype: Optional[torch.dtype] = None, device=None,
               atol: float = 1e-6) -> Tensor:
        """``x`` as an (n, ambient_dim) tensor of points of M (a single point (ambient_dim,) becomes (1, ...));
        a point off M by more than ``atol`` is a ValueError naming ``name`` and the first such row."""
        x = as_points(x, name, self.ambient_dim, dtype=dtype, device=device, single=True)
        off = self.distance_to_manifold(x)
        if x.shape[0] and bool((off > atol).any()):
            i = int((off > atol).nonzero()[0, 0])
            raise ValueError(f"{name} must hold points of {self!r}; row {i} is off it by {float(off[i]):.3g} "
                             f"({self._membership})")
        return x

    _membership = ""

    @abstractmethod
    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """(n,) how far each ambient row is from M (0 on M)."""

    # ------------------------------------------------------------------ geometry
    @abstractmethod
    def proj(self, x: Tensor, v: Tensor) -> Tensor:
        """The orthogonal projection of ambient vectors v onto the tangent spaces at x, (n, ambient_dim)."""

    @abstractmethod
    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """The exponential map: the end at time 1 of the geodesic from x with velocity v (tangent at x)."""

    @abstractmethod
    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """The logarithm map: the tangent vector v at x of smallest norm with exp(x, v) = y."""

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """(n,) geodesic distances |log_x y|."""
        return self.log(x, y).norm(dim=-1)

    @abstractmethod
    def projection(self, x: Tensor) -> Tensor:
        """The nearest point of M to each ambient row (re-normalising or re-wrapping after round-off)."""

    @property
    @abstractmethod
    def log_volume(self) -> float:
        """log |M|, the log of the Riemannian volume."""

    @property
    def volume(self) -> float:
        return math.exp(self.log_volume)

    @abstractmethod
    def random_uniform(self, n: int, generator: Optional[torch.Generator] = None, dtype=torch.float64,
                       device="cpu") -> Tensor:
        """n points of the uniform (normalised volume) law on M."""

    def uniform_log_prob(self, x: Tensor) -> Tensor:
        """(n,) log-density of the uniform law, -log |M|, with respect to the volume measure."""
        return torch.full(x.shape[:1], -self.log_volume, dtype=x.dtype, device=x.device)

    def random_tangent_normal(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """A standard normal vector of each tangent space T_x M, (n, ambient_dim)."""
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return self.proj(x, z)

    def divergence(self, field: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = False) -> Tensor:
        r"""(n,) the Riemannian divergence of the tangent field :math:`V = P\,\mathrm{field}` at x, by autograd:
        :math:`\operatorname{div}_M V = \operatorname{tr}(P(x)\, \partial_x (P(x) \mathrm{field}(x)))` for an
        embedded manifold (the divergence in the angles on the flat torus). Exact (one backward pass per
        ambient coordinate); ``field`` maps (n, ambient_dim) to (n, ambient_dim)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = self.proj(x, field(x))
            div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for j in range(self.ambient_dim):  # tr(P J) = sum_j (P grad v_j)_j, P symmetric
                (g,) = torch.autograd.grad(v[:, j].sum(), x, create_graph=create_graph, retain_graph=True)
                div = div + self.proj(x, g)[:, j]
            return div if create_graph else div.detach()

    # ------------------------------------------------------------------ walks
    def random_walk_step(self, x: Tensor, h: float, drift: Optional[Tensor] = None,
                         generator: Optional[torch.Generator] = None) -> Tensor:
        r"""One geodesic random walk step :math:`\exp_x(h\,b + \sqrt h Z)` (module docstring); ``drift`` b is
        tangent at x (projected here), None for Brownian motion."""
        v = math.sqrt(h) * self.random_tangent_normal(x, generator)
        if drift is not None:
            v = v + h * self.proj(x, drift)
        return self.exp(x, v)

    def random_walk(self, x_start: Tensor, steps: int, step_size, drift: Optional[Callable[[int, Tensor], Tensor]] = None,
                    scale=None, generator: Optional[torch.Generator] = None, record: bool = False) -> Tensor:
        r"""The geodesic random walk with drift, for k = 0..K-1 (K = ``steps``):

        .. math:: X_{k+1} = \exp_{X_k}\big(h_k\, b_k(X_k) + g_k \sqrt{h_k}\, Z_k\big),

        a weak-order-1 scheme for :math:`dX = b(t, X) dt + g(t) dB_M` (De Bortoli et al. 2022, Alg. 1).
        ``step_size``: h (a float) or the K step sizes; ``scale``: None (g = 1), a float or the K values g_k;
        ``drift(k, x)``: b_k at step k, projected onto the tangent space here (None: no drift). Returns the
        path (n, K + 1, ambient_dim) with ``record``, else the last state (n, ambient_dim)."""
        steps = int(steps)
        hs = [float(step_size)] * steps if isinstance(step_size, (int, float)) else [float(h) for h in step_size]
        gs = ([1.0] * steps if scale is None else [float(scale)] * steps if isinstance(scale, (int, float))
              else [float(g) for g in scale])
        if len(hs) != steps or len(gs) != steps:
            raise ValueError(f"step_size and scale must be numbers or hold {steps} values (steps); got "
                             f"{len(hs)} and {len(gs)}")
        x, xs = x_start, [x_start]
        for k in range(steps):
            v = gs[k] * math.sqrt(hs[k]) * self.random_tangent_normal(x, generator)
            if drift is not None:
                v = v + hs[k] * self.proj(x, drift(k, x))
            x = self.exp(x, v)
            if record:
                xs.append(x)
        return torch.stack(xs, 1) if record else x

    def brownian(self, x, t: float, steps: int = 100, generator: Optional[torch.Generator] = None) -> Tensor:
        """Brownian motion (generator Laplace-Beltrami / 2) run for time t from each row of x, by ``steps``
        geodesic random walk steps (exact in law on the torus, see :meth:`Torus.brownian`)."""
        x = self.points(x)
        t = check_positive(t, "t")
        return self.random_walk(x, steps, t / steps, generator=generator)
