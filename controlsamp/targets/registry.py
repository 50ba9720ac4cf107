"""Targets by name: ``controlsamp.targets.get("gmm40")``."""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from .base import Target
from .gaussian import Gaussian, GaussianMixture

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
    if name not in _REGISTRY:
        raise ValueError(f"unknown target {name!r}; available: {', '.join(names())}")
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
