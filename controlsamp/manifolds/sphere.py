r"""The unit sphere :math:`S^d = \{x \in \mathbb R^{d+1}: |x| = 1\}` with the round metric.

.. math::
    P(x) v = v - (x \cdot v)\, x, \qquad
    \exp_x(v) = \cos(|v|)\, x + \sin(|v|)\, \frac{v}{|v|}, \qquad
    \log_x(y) = \frac{\theta}{\sin\theta}\,\big(y - \cos\theta\, x\big),\ \theta = \arccos(x \cdot y),

volume :math:`|S^d| = 2\pi^{(d+1)/2} / \Gamma((d+1)/2)` (4 pi on S^2). The uniform law is a normalised standard
normal vector. On S^2, :meth:`Sphere.from_lonlat` / :meth:`Sphere.to_lonlat` convert longitude / latitude (the
earth-science data sets' coordinates) to unit vectors x = (cos lat cos lon, cos lat sin lon, sin lat).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from .._validate import as_points, check_dim
from .base import Manifold

Tensor = torch.Tensor

#: below this angle the series forms of exp / log (sin(r)/r, theta/sin(theta)) are used
_SMALL = 1e-6


def _sinc(r: Tensor) -> Tensor:
    """sin(r) / r, with its Taylor series near 0."""
    small = r.abs() < _SMALL
    return torch.where(small, 1 - r * r / 6, torch.sin(r) / torch.where(small, torch.ones_like(r), r))


class Sphere(Manifold):
    """The unit sphere S^d in R^{d+1} (module docstring); ``dim`` = d >= 1, ``ambient_dim`` = d + 1."""

    _membership = "points of a sphere are unit vectors"

    def __init__(self, dim: int = 2):
        self.dim = check_dim(dim, "dim")
        self.ambient_dim = self.dim + 1

    def __repr__(self) -> str:
        return f"Sphere({self.dim})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Sphere) and other.dim == self.dim

    def __hash__(self) -> int:
        return hash(("Sphere", self.dim))

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        return (x.norm(dim=-1) - 1).abs()

    def projection(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def proj(self, x: Tensor, v: Tensor) -> Tensor:
        return v - (x * v).sum(-1, keepdim=True) * x

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        r = v.norm(dim=-1, keepdim=True)
        y = torch.cos(r) * x + _sinc(r) * v
        return y / y.norm(dim=-1, keepdim=True)  # round-off back onto the sphere

    def angle(self, x: Tensor, y: Tensor) -> Tensor:
        """(n,) the angle theta = arccos(x . y) in [0, pi], computed stably as atan2(|x - y| |x + y|, ...)."""
        # atan2 of |x ^ y| and x . y, with |x ^ y| from |x - y| |x + y| / 2 (accurate at 0 and pi)
        c = (x * y).sum(-1)
        s = 0.5 * (x - y).norm(dim=-1) * (x + y).norm(dim=-1)
        return torch.atan2(s, c)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        theta = self.angle(x, y).unsqueeze(-1)
        u = self.proj(x, y - x)  # = y - cos(theta) x, of norm sin(theta)
        return u / _sinc(theta)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return self.angle(x, y)

    @property
    def log_volume(self) -> float:
        n = self.dim + 1
        return math.log(2.0) + 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n)

    def random_uniform(self, n: int, generator: Optional[torch.Generator] = None, dtype=torch.float64,
                       device="cpu") -> Tensor:
        z = torch.randn(check_dim(n, "n"), self.ambient_dim, generator=generator, dtype=dtype, device=device)
        return z / z.norm(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ S^2 coordinates
    def _need_s2(self, what: str) -> None:
        if self.dim != 2:
            raise ValueError(f"{what} is defined on S^2 only; this is {self!r}")

    def from_lonlat(self, lon, lat, degrees: bool = True) -> Tensor:
        """Unit vectors (n, 3) from longitudes and latitudes (1-d arrays of equal length; degrees unless
        ``degrees=False``); a latitude outside [-90, 90] degrees is a ValueError."""
        self._need_s2("from_lonlat")
        ll = as_points(np.stack([np.asarray(lon, dtype=np.float64).reshape(-1),
                                 np.asarray(lat, dtype=np.float64).reshape(-1)], 1), "lon/lat", 2)
        if degrees:
            ll = ll * (math.pi / 180.0)
        if bool((ll[:, 1].abs() > math.pi / 2 + 1e-12).any()):
            raise ValueError("lat must lie in [-90, 90] degrees ([-pi/2, pi/2] radians)")
        lon_r, lat_r = ll[:, 0], ll[:, 1]
        return torch.stack([torch.cos(lat_r) * torch.cos(lon_r), torch.cos(lat_r) * torch.sin(lon_r),
                            torch.sin(lat_r)], 1)

    def to_lonlat(self, x, degrees: bool = True) -> Tuple[Tensor, Tensor]:
        """(lon in (-180, 180], lat in [-90, 90]) of points (n, 3) of S^2 (degrees unless ``degrees=False``)."""
        self._need_s2("to_lonlat")
        x = self.points(x)
        lon = torch.atan2(x[:, 1], x[:, 0])
        lat = torch.asin(x[:, 2].clamp(-1.0, 1.0))
        if degrees:
            lon, lat = lon * (180.0 / math.pi), lat * (180.0 / math.pi)
        return lon, lat
