r"""Data sources: one function that turns what a user holds (an array of points, a target with an exact
sampler, a function of (n, generator)) into a sampler ``sample(n, generator) -> (n, d)`` float64 tensor, for the
bridges' endpoint laws and the data of score-based generative models."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["as_sampler"]


def as_sampler(obj, name: str) -> Callable[[int, torch.Generator], Tensor]:
    """An endpoint law as a function (n, generator) -> (n, d) float64 tensor: an (N, d) array or tensor
    (rows drawn uniformly with replacement), a Target with an exact ``sample`` or a callable
    ``fn(n, generator)``."""
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        data = torch.as_tensor(np.array(obj) if isinstance(obj, np.ndarray) else obj).detach().to(torch.float64)
        if data.ndim != 2 or data.shape[0] < 1:
            raise ValueError(f"{name} given as data must have shape (N, d) with N >= 1; got {tuple(data.shape)}")
        if not torch.isfinite(data).all():
            raise ValueError(f"{name} holds non-finite values")
        data = data.cpu()

        def sample(n, generator):
            return data[torch.randint(data.shape[0], (n,), generator=generator)]
        sample.dim = data.shape[1]
        return sample
    if hasattr(obj, "sample") and hasattr(obj, "dim"):
        def sample(n, generator):
            return obj.sample(n, generator=generator).detach().to(torch.float64).cpu()
        sample.dim = int(obj.dim)
        return sample
    if callable(obj):
        probe = torch.as_tensor(obj(2, torch.Generator().manual_seed(0)))
        if probe.ndim != 2 or probe.shape[0] != 2:
            raise ValueError(f"{name} as a callable must return (n, d) samples for fn(n, generator); "
                             f"fn(2, g) gave shape {tuple(probe.shape)}")

        def sample(n, generator):
            return torch.as_tensor(obj(n, generator)).detach().to(torch.float64).cpu()
        sample.dim = probe.shape[1]
        return sample
    raise ValueError(f"{name} must be an (N, d) array, a Target with sample(n) or a callable fn(n, generator); "
                     f"got {type(obj).__name__}")
