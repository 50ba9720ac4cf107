"""Targets by name: ``controlsamp.targets.get("gmm40")``."""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from .base import Target
from .funnel import Funnel
from .gaussian import Gaussian, GaussianMixture
from .manywell import ManyWell
from .particles import CentreOfMassFree, DoubleWellParticles, LennardJones

_REGISTRY: Dict[str, Callable[..., Target]] = {}


def register(name: str):
    """Decorator: register a factory ``(**kwargs) -> Target`` under ``name``."""
    def deco(factory):
        _REGISTRY[name] = factory
        return factory
    return deco


def names():
    return sorted(_REGISTRY)


def get(name: str, **kwargs) -> Target:
    """The target registered as ``name``; keyword arguments go to its factory."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown target {name!r}: name must be a registered target ({', '.join(names())})")
    return _REGISTRY[name](**kwargs)


@register("gaussian")
def _gaussian(dim: int = 2, mean=None, cov=None) -> Target:
    """N(mean, cov); defaults to the standard normal in ``dim`` dimensions."""
    mean = torch.zeros(dim, dtype=torch.float64) if mean is None else mean
    cov = torch.eye(len(mean), dtype=torch.float64) if cov is None else cov
    return Gaussian(mean, cov, name="gaussian")


@register("gmm25")
def _gmm25() -> Target:
    """Sendera et al. 2024 (App. B): 25 equal-weight 2-d components, means on {-10,-5,0,5,10}^2, cov 0.3 I."""
    grid = torch.tensor([-10.0, -5.0, 0.0, 5.0, 10.0], dtype=torch.float64)
    means = torch.cartesian_prod(grid, grid)
    covs = 0.3 * torch.eye(2, dtype=torch.float64).expand(25, 2, 2)
    return GaussianMixture(torch.ones(25), means, covs, name="gmm25")


@register("gmm40")
def _gmm40() -> Target:
    """FAB / DEM / DiKL: 40 equal-weight 2-d components, means ~ U[-40, 40]^2 drawn after
    ``torch.manual_seed(0)`` (float32, as in FAB), std softplus(1) on both axes."""
    gen = torch.Generator().manual_seed(0)
    means = ((torch.rand((40, 2), generator=gen) - 0.5) * 2 * 40.0).to(torch.float64)
    std = math.log1p(math.e)  # softplus(1.0)
    covs = (std ** 2) * torch.eye(2, dtype=torch.float64).expand(40, 2, 2)
    return GaussianMixture(torch.ones(40), means, covs, name="gmm40")


@register("funnel10")
def _funnel10() -> Target:
    """Neal's funnel in 10-d with x0 ~ N(0, 3^2) (the benchmark definition)."""
    return Funnel(10, 3.0, name="funnel10")


@register("funnel10_pis")
def _funnel10_pis() -> Target:
    """The PIS repository's funnel, x0 ~ N(0, 1): a bug per Sendera et al. 2024, kept by name only."""
    return Funnel(10, 1.0, name="funnel10_pis")


@register("funnel")
def _funnel(dim: int = 10, x0_std: float = 3.0) -> Target:
    """Neal's funnel with chosen ``dim`` and ``x0_std``."""
    return Funnel(dim, x0_std, name="funnel")


@register("manywell32")
def _manywell32() -> Target:
    """FAB many-well, 16 blocks (d = 32), log Z = 164.69568, 2^16 modes."""
    return ManyWell(32, name="manywell32")


@register("manywell")
def _manywell(dim: int = 32) -> Target:
    """FAB many-well with an even ``dim``."""
    return ManyWell(dim, name="manywell")


@register("dw4")
def _dw4() -> Target:
    """bgflow multi-particle double well: 4 particles in 2-d (d = 8)."""
    return DoubleWellParticles(4, 2, name="dw4")


@register("lj13")
def _lj13() -> Target:
    """Lennard-Jones, 13 particles in 3-d (d = 39), ordered-pair sum (f = 1, DEM / ASBS)."""
    return LennardJones(13, 3, name="lj13")


@register("dw4_com_free")
def _dw4_com_free() -> Target:
    """dw4 in orthonormal coordinates of its centre-of-mass-free subspace (d = 6): normalisable."""
    return CentreOfMassFree(_dw4())


@register("lj13_com_free")
def _lj13_com_free() -> Target:
    """lj13 in orthonormal coordinates of its centre-of-mass-free subspace (d = 36): normalisable."""
    return CentreOfMassFree(_lj13())
