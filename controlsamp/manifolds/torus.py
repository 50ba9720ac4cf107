r"""The flat torus :math:`T^d = (\mathbb R / 2\pi \mathbb Z)^d`, points as angles in :math:`[-\pi, \pi)^d`.

.. math::
    \exp_x(v) = \mathrm{wrap}(x + v), \qquad \log_x(y) = \mathrm{wrap}(y - x), \qquad
    \mathrm{wrap}(a) = a - 2\pi \left\lfloor \frac{a + \pi}{2\pi} \right\rfloor,

the metric is Euclidean in the angles, every vector is tangent (P = I), volume :math:`(2\pi)^d`. Brownian
motion is the wrapped Euclidean Brownian motion, so its law at time t from x is the wrapped normal
:math:`\mathrm{wrap}(x + \sqrt t Z)`, sampled exactly by :meth:`Torus.brownian`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._validate import check_dim, check_positive
from .base import Manifold

Tensor = torch.Tensor


def wrap(a: Tensor) -> Tensor:
    """Angles a reduced to [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


class Torus(Manifold):
    """The flat torus T^d in angle coordinates (module docstring); ``dim`` = ``ambient_dim`` = d."""

    _membership = "points of a torus are angles in [-pi, pi)"

    def __init__(self, dim: int = 2):
        self.dim = check_dim(dim, "dim")
        self.ambient_dim = self.dim

    def __repr__(self) -> str:
        return f"Torus({self.dim})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Torus) and other.dim == self.dim

    def __hash__(self) -> int:
        return hash(("Torus", self.dim))

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        # angles are accepted in [-pi, pi] (pi itself is -pi after wrapping)
        return ((x.abs() - math.pi).clamp(min=0.0)).amax(dim=-1) if x.shape[1] else x.new_zeros(x.shape[0])

    def projection(self, x: Tensor) -> Tensor:
        return wrap(x)

    def proj(self, x: Tensor, v: Tensor) -> Tensor:
        return v

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return wrap(x + v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return wrap(y - x)

    @property
    def log_volume(self) -> float:
        return self.dim * math.log(2 * math.pi)

    def random_uniform(self, n: int, generator: Optional[torch.Generator] = None, dtype=torch.float64,
                       device="cpu") -> Tensor:
        u = torch.rand(check_dim(n, "n"), self.dim, generator=generator, dtype=dtype, device=device)
        return 2 * math.pi * u - math.pi

    def brownian(self, x, t: float, steps: int = 1, generator: Optional[torch.Generator] = None) -> Tensor:
        """Brownian motion for time t from each row of x, exactly: wrap(x + sqrt(t) Z) (``steps`` is ignored:
        the wrapped normal is the exact law)."""
        x = self.points(x)
        t = check_positive(t, "t")
        return wrap(x + math.sqrt(t) * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
