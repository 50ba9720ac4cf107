r"""Two-dimensional toy data sets made in code: moons, circles, eight Gaussians, checkerboard, spirals.

These are the standard toy distributions of the flow and bridge literature (FFJORD, DSB, DSBM,
torchcfm). Their geometry and scales follow the FFJORD toy data (Grathwohl et al. 2019, "FFJORD:
free-form continuous dynamics for scalable reversible generative models", ``lib/toy_data.py`` of
github.com/rtqichen/ffjord), which put every set roughly inside the box [-4, 4]^2; each function
says the ranges it produces. They are *distributions*, sampled i.i.d.: mixture labels and angles are
drawn at random (scikit-learn's ``make_moons`` / ``make_circles`` instead place points on an even
grid of angles and split the points exactly in half, which is a design, not a sample).

Every function takes ``n`` (a positive integer) and an optional ``torch.Generator`` and returns a
float32 tensor of shape (n, 2), computed in float64 and cast at the end. ``DATASETS`` maps the
names to the functions; ``get_dataset(name)`` returns the function and
``sample_dataset(name, n, generator=None, **kwargs)`` calls it.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch

from .._validate import DTYPE, check_dim, check_nonnegative, check_positive

__all__ = ["moons", "circles", "eight_gaussians", "checkerboard", "spirals",
           "DATASETS", "get_dataset", "sample_dataset"]


def _check_generator(generator) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
    return generator


def _out(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32)


def moons(n: int, noise: float = 0.05, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Two interleaving half circles ("two moons").

    Before scaling, a point is on the upper half of the unit circle centred at (0, 0),
    (cos t, sin t), or on the lower half of the unit circle centred at (1, 0.5),
    (1 - cos t, 0.5 - sin t), with probability 1/2 each and t ~ U[0, pi]; isotropic Gaussian noise of
    standard deviation ``noise`` is added (the scikit-learn ``make_moons`` geometry). The set is then
    mapped by z -> 2 z + (-1, -0.2) (FFJORD's standardisation), so the noise-free points fill
    x in [-3, 3], y in [-1.2, 1.8], and the noise standard deviation after scaling is 2 * noise.
    FFJORD uses noise = 0.1; torchcfm's variant is 3 z - 1 with noise 0.2.
    """
    n = check_dim(n, "n")
    noise = check_nonnegative(noise, "noise")
    gen = _check_generator(generator)
    t = math.pi * torch.rand(n, dtype=DTYPE, generator=gen)
    inner = torch.rand(n, dtype=DTYPE, generator=gen) < 0.5
    x = torch.where(inner, 1.0 - torch.cos(t), torch.cos(t))
    y = torch.where(inner, 0.5 - torch.sin(t), torch.sin(t))
    z = torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, dtype=DTYPE, generator=gen)
    return _out(2.0 * z + torch.tensor([-1.0, -0.2], dtype=DTYPE))


def circles(n: int, noise: float = 0.08, factor: float = 0.5,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Two concentric circles.

    Before scaling, a point is (r cos t, r sin t) with t ~ U[0, 2 pi) and r = 1 (outer circle) or
    r = ``factor`` (inner circle, 0 < factor < 1) with probability 1/2 each, plus isotropic Gaussian
    noise of standard deviation ``noise`` (the scikit-learn ``make_circles`` geometry). The set is then
    multiplied by 3 (FFJORD: factor 0.5, noise 0.08, times 3), so the circles have radii 3 and
    3 * factor, the noise-free points lie in [-3, 3]^2, and the noise standard deviation after scaling
    is 3 * noise.
    """
    n = check_dim(n, "n")
    noise = check_nonnegative(noise, "noise")
    factor = check_positive(factor, "factor")
    if factor >= 1.0:
        raise ValueError(f"factor (inner radius / outer radius) must lie in (0, 1); got {factor}")
    gen = _check_generator(generator)
    t = 2.0 * math.pi * torch.rand(n, dtype=DTYPE, generator=gen)
    inner = torch.rand(n, dtype=DTYPE, generator=gen) < 0.5
    r = torch.where(inner, torch.full_like(t, factor), torch.ones_like(t))
    z = torch.stack([r * torch.cos(t), r * torch.sin(t)], dim=1)
    z = z + noise * torch.randn(n, 2, dtype=DTYPE, generator=gen)
    return _out(3.0 * z)


EIGHT_GAUSSIANS_RADIUS = 4.0 / 1.414
EIGHT_GAUSSIANS_STD = 0.5 / 1.414


def eight_gaussians(n: int, radius: float = EIGHT_GAUSSIANS_RADIUS, std: float = EIGHT_GAUSSIANS_STD,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""An equal-weight mixture of eight isotropic Gaussians with centres on a circle:

    .. math:: \frac18 \sum_{k=0}^{7} \mathcal N\big(\text{radius}\,(\cos\tfrac{k\pi}{4}, \sin\tfrac{k\pi}{4}),\
       \text{std}^2 I\big).

    The defaults are FFJORD's (centres at distance 4, std 0.5, the whole set divided by 1.414): radius
    4 / 1.414 = 2.83 and std 0.5 / 1.414 = 0.354, so the points lie in about [-4, 4]^2. (torchcfm's
    ``sample_8gaussians`` uses radius 5 and variance 0.1.) ``centres(radius)`` is
    :func:`eight_gaussians_centres`.
    """
    n = check_dim(n, "n")
    radius = check_positive(radius, "radius")
    std = check_nonnegative(std, "std")
    gen = _check_generator(generator)
    k = torch.randint(0, 8, (n,), generator=gen)
    centres = eight_gaussians_centres(radius)
    return _out(centres[k] + std * torch.randn(n, 2, dtype=DTYPE, generator=gen))


def eight_gaussians_centres(radius: float = EIGHT_GAUSSIANS_RADIUS) -> torch.Tensor:
    """The eight mixture centres radius * (cos k pi / 4, sin k pi / 4), k = 0..7, shape (8, 2), float64."""
    radius = check_positive(radius, "radius")
    a = torch.arange(8, dtype=DTYPE) * (math.pi / 4.0)
    return radius * torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def checkerboard(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Uniform on the "black" squares of a 4 x 4 checkerboard of side-2 squares covering [-4, 4]^2.

    The square [2i, 2i + 2) x [2j, 2j + 2), i, j in {-2, -1, 0, 1}, is black when i + j is even, which
    gives 8 black squares, each with probability 1/8 (FFJORD's checkerboard: x1 ~ U[-2, 2] with
    x2 on alternating unit squares, times 2). Range: exactly [-4, 4]^2.
    """
    n = check_dim(n, "n")
    gen = _check_generator(generator)
    squares = checkerboard_squares()
    k = torch.randint(0, squares.shape[0], (n,), generator=gen)
    x = _out(2.0 * (squares[k] + torch.rand(n, 2, dtype=DTYPE, generator=gen)))
    # float32 rounding can put a point just below 2i + 2 onto the edge of the next (white) square
    upper = _out(2.0 * (squares[k] + 1.0))
    return torch.where(x >= upper, torch.nextafter(upper, torch.full_like(upper, -math.inf)), x)


def checkerboard_squares() -> torch.Tensor:
    """Lower-left corners (i, j) / 1 of the 8 black unit squares, i + j even, shape (8, 2), float64;
    the data-set squares are [2i, 2i + 2) x [2j, 2j + 2)."""
    ij = torch.cartesian_prod(torch.arange(-2, 2), torch.arange(-2, 2))
    return ij[(ij.sum(1) % 2) == 0].to(DTYPE)


SPIRAL_TURN = 3.0 * math.pi  # 540 degrees


def spirals(n: int, noise: float = 0.1, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Two interleaved Archimedean spirals.

    With s = 3 pi sqrt(u), u ~ U[0, 1] (so mass is uniform in area, not in s), a point of the first arm
    is (-s cos s, s sin s) / 3 and a point of the second arm its negative, each arm with probability
    1/2, plus isotropic Gaussian noise of standard deviation ``noise``. The radius of a noise-free point
    is s / 3 in [0, pi], increasing linearly with the angle s swept along the arm (540 degrees in all).
    This is FFJORD's "2spirals" (scale 1/3, Gaussian noise 0.1) without its extra U[0, 0.5)/3 jitter
    per coordinate, which would shift the arms off the origin. Range: about [-3.5, 3.5]^2.
    """
    n = check_dim(n, "n")
    noise = check_nonnegative(noise, "noise")
    gen = _check_generator(generator)
    s = SPIRAL_TURN * torch.sqrt(torch.rand(n, dtype=DTYPE, generator=gen))
    arm = torch.where(torch.rand(n, dtype=DTYPE, generator=gen) < 0.5, -1.0, 1.0).to(DTYPE)
    z = arm.unsqueeze(1) * torch.stack([-s * torch.cos(s), s * torch.sin(s)], dim=1) / 3.0
    return _out(z + noise * torch.randn(n, 2, dtype=DTYPE, generator=gen))


DATASETS: Dict[str, Callable[..., torch.Tensor]] = {
    "moons": moons,
    "circles": circles,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "spirals": spirals,
}


def get_dataset(name: str) -> Callable[..., torch.Tensor]:
    """The sampler ``fn(n, ..., generator=None) -> (n, 2)`` registered as ``name`` in ``DATASETS``."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def sample_dataset(name: str, n: int, generator: Optional[torch.Generator] = None, **kwargs) -> torch.Tensor:
    """``n`` samples (float32, shape (n, 2)) of the data set ``name``; ``kwargs`` go to its function
    (e.g. ``noise=0.1`` for moons)."""
    return get_dataset(name)(n, generator=generator, **kwargs)
