"""The `Target` interface: an unnormalised density pi~ on R^d given by its log."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._validate import check_dim


class Target:
    """An unnormalised target density pi~(x) = Z pi(x) on R^d.

    Subclasses implement ``log_prob`` (log pi~, batched over the first axis); ``score`` defaults to
    autograd of ``log_prob``. ``log_Z`` is ``None`` when the normaliser is unknown, and ``sample``
    raises when no exact sampler exists.
    """

    dim: int
    log_Z: Optional[float] = None
    name: str = "target"

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} does not define log_prob")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log pi~(x), shape (n, d), by autograd."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.log_prob(xg).sum(), xg)
        return g

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise ValueError(f"target {self.name!r} has no exact sampler")

    def _check_x(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}); got {tuple(x.shape)}")

    @classmethod
    def from_log_prob(cls, fn: Callable[[torch.Tensor], torch.Tensor], dim: int, log_Z: Optional[float] = None,
                      name: str = "custom") -> "Target":
        """Wrap a user's batched log-density ``fn: (n, dim) -> (n,)``."""
        return _FunctionTarget(fn, check_dim(dim, "dim"), log_Z, name)


class _FunctionTarget(Target):
    def __init__(self, fn, dim, log_Z, name):
        self.fn, self.dim, self.log_Z, self.name = fn, dim, log_Z, name

    def log_prob(self, x):
        self._check_x(x)
        out = self.fn(x)
        if out.shape != x.shape[:1]:
            raise ValueError(f"log_prob of target {self.name!r} must return shape ({x.shape[0]},); got {tuple(out.shape)}")
        bad = torch.isnan(out) | (out == float("inf"))
        if bad.any():
            raise ValueError(f"log_prob of target {self.name!r} returned NaN or +inf at {int(bad.sum())} "
                             f"of {len(out)} points")
        return out
