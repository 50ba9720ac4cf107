"""The `Target` interface: an unnormalised density pi~ on R^d given by its log."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._validate import as_points, call_with_graph, check_dim, check_number


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
        """grad_x log pi~(x), shape (n, d), by autograd (0 for a log-density that does not depend on x; a
        ValueError for one computed outside torch's autograd, e.g. through numpy)."""
        x = self._check_x(x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.log_prob_with_graph(xg).sum(), xg)
        return g

    def log_prob_with_graph(self, x: torch.Tensor) -> torch.Tensor:
        """``log_prob(x)`` for an ``x`` that requires grad, differentiable in ``x``: a log-density that does not
        depend on x gets a zero gradient, one computed without an autograd graph (numpy) is a ValueError that
        says so (see :func:`controlsamp._validate.call_with_graph`)."""
        return call_with_graph(self.log_prob, x, f"the log-density of target {self.name!r}")

    def __repr__(self) -> str:
        log_z = "unknown" if self.log_Z is None else f"{float(self.log_Z):.6g}"
        kind = "Target" if isinstance(self, _FunctionTarget) else type(self).__name__
        return f"{kind}(name={getattr(self, 'name', None)!r}, dim={getattr(self, 'dim', '?')}, log_Z={log_z})"

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise ValueError(f"target {self.name!r} has no exact sampler")

    def _check_x(self, x) -> torch.Tensor:
        """``x`` as an (n, dim) floating tensor (numpy arrays and lists accepted, integers promoted to the default
        float dtype), free of NaN and inf; else a ValueError naming x."""
        return as_points(x, "x", self.dim)

    @classmethod
    def from_log_prob(cls, fn: Callable[[torch.Tensor], torch.Tensor], dim: int, log_Z: Optional[float] = None,
                      name: str = "custom") -> "Target":
        """Wrap a user's batched log-density ``fn: (n, dim) -> (n,)``, written with torch operations (its gradient,
        the score, is taken by autograd; a function computed through numpy is reported where a gradient is
        needed). ``log_Z``: the log normaliser if known (a finite number) or None."""
        if not callable(fn):
            raise ValueError(f"fn must be a callable log-density (n, dim) -> (n,); got {type(fn).__name__}")
        if log_Z is not None:
            log_Z = check_number(log_Z, "log_Z (a finite number or None)")
        if not isinstance(name, str):
            raise ValueError(f"name must be a string; got {type(name).__name__}")
        return _FunctionTarget(fn, check_dim(dim, "dim"), log_Z, name)


class _FunctionTarget(Target):
    def __init__(self, fn, dim, log_Z, name):
        self.fn, self.dim, self.log_Z, self.name = fn, dim, log_Z, name

    def log_prob(self, x):
        x = self._check_x(x)
        try:
            out = self.fn(x)
        except RuntimeError as exc:
            if "numpy()" in str(exc):  # the function converts x to numpy: it has no gradient
                raise ValueError(f"the log-density of target {self.name!r} converts x to numpy, which torch refuses "
                                 "for a tensor that requires grad; write it with torch operations so that its "
                                 "gradient (the score) exists, or subclass controlsamp.targets.Target with a "
                                 "closed-form score(x)") from exc
            raise
        if not isinstance(out, torch.Tensor):
            try:
                out = torch.as_tensor(out, dtype=x.dtype, device=x.device)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f"log_prob of target {self.name!r} must return a tensor of shape ({x.shape[0]},); "
                                 f"got {type(out).__name__}") from exc
        elif not out.is_floating_point():
            out = out.to(x.dtype)
        if x.requires_grad and not out.requires_grad and torch.is_grad_enabled():
            out = call_with_graph(self.fn, x, f"the log-density of target {self.name!r}", out)
        if out.shape != x.shape[:1]:
            raise ValueError(f"log_prob of target {self.name!r} must return shape ({x.shape[0]},); got {tuple(out.shape)}")
        bad = torch.isnan(out) | (out == float("inf"))
        if bad.any():
            raise ValueError(f"log_prob of target {self.name!r} returned NaN or +inf at {int(bad.sum())} "
                             f"of {len(out)} points")
        return out
