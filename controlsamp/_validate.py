"""Input checks shared by every layer: each error names the argument and what was expected."""
from __future__ import annotations

import math
import operator
from typing import Optional

import numpy as np
import torch

Array = "torch.Tensor | np.ndarray | float | list"

DTYPE = torch.float64


def as_tensor(value, name: str, dtype: torch.dtype = DTYPE, device=None) -> torch.Tensor:
    """Convert a number, list, numpy array or tensor to a tensor of ``dtype``; reject NaN and inf."""
    try:
        if isinstance(value, torch.Tensor):
            out = value.to(dtype=dtype, device=device if device is not None else value.device)
        else:
            out = torch.as_tensor(np.array(value, dtype=np.float64), dtype=dtype, device=device)  # copies strides away
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric (a number, array or tensor); got {type(value).__name__}") from exc
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    return out


def _check_scalar(value, name: str, strict: bool) -> float:
    """A finite scalar > 0 (``strict``) or >= 0, else a ValueError naming ``name``."""
    kind = "positive" if strict else "non-negative"
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a {kind} number; got {value!r}") from exc
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"{name} must be a {kind} finite number; got {v}")
    return v


def check_positive(value, name: str) -> float:
    """A finite scalar > 0."""
    return _check_scalar(value, name, strict=True)


def check_nonnegative(value, name: str) -> float:
    """A finite scalar >= 0."""
    return _check_scalar(value, name, strict=False)


def check_dim(value, name: str = "dim") -> int:
    """A positive integer (numpy integers accepted, bools and floats rejected)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    try:
        v = operator.index(value)
    except TypeError as exc:
        raise ValueError(f"{name} must be a positive integer; got {value!r}") from exc
    if v < 1:
        raise ValueError(f"{name} must be a positive integer; got {v}")
    return int(v)


def check_vector(value, name: str, dim: Optional[int] = None, **kw) -> torch.Tensor:
    """A 1-d tensor of length ``dim`` (when given)."""
    v = as_tensor(value, name, **kw)
    if v.ndim == 0:
        v = v.reshape(1)
    if v.ndim != 1:
        raise ValueError(f"{name} must be a vector of shape (d,); got shape {tuple(v.shape)}")
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"{name} must have length {dim}; got {v.shape[0]}")
    return v


def check_square(value, name: str, dim: Optional[int] = None, **kw) -> torch.Tensor:
    """A (d, d) matrix; a scalar becomes a 1x1 matrix."""
    m = as_tensor(value, name, **kw)
    if m.ndim == 0:
        m = m.reshape(1, 1)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square matrix of shape (d, d); got shape {tuple(m.shape)}")
    if dim is not None and m.shape[0] != dim:
        raise ValueError(f"{name} must have shape ({dim}, {dim}); got {tuple(m.shape)}")
    return m


def check_symmetric(value, name: str, dim: Optional[int] = None, psd: bool = False, **kw) -> torch.Tensor:
    """A symmetric matrix, positive definite (default) or positive semi-definite (``psd=True``)."""
    m = check_square(value, name, dim, **kw)
    scale = max(1.0, float(m.abs().max()))
    if float((m - m.T).abs().max()) > 1e-8 * scale:
        raise ValueError(f"{name} must be symmetric; max |{name} - {name}^T| = {float((m - m.T).abs().max()):.3g}")
    m = 0.5 * (m + m.T)
    eig_min = float(torch.linalg.eigvalsh(m).min())
    if psd:
        if eig_min < -1e-10 * scale:
            raise ValueError(f"{name} must be positive semi-definite; smallest eigenvalue {eig_min:.3g}")
    elif eig_min <= 1e-13 * scale:
        raise ValueError(f"{name} must be symmetric positive definite; smallest eigenvalue {eig_min:.3g}")
    return m


def check_spd(value, name: str, dim: Optional[int] = None, **kw) -> torch.Tensor:
    """A symmetric positive definite matrix."""
    return check_symmetric(value, name, dim, psd=False, **kw)


def check_points(x, name: str, dim: int, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """Points of shape (n, dim); a single point of shape (dim,) becomes (1, dim)."""
    if isinstance(x, torch.Tensor):
        xt = x.to(dtype)
    else:
        xt = as_tensor(x, name, dtype)
    if xt.ndim == 1:
        xt = xt.unsqueeze(0)
    if xt.ndim != 2 or xt.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}); got {tuple(xt.shape)}")
    return xt


#: Relative round-off accepted past either end of [0, T] (ODE solvers evaluate at t + c h, which can
#: exceed the end time by an ulp); such a time is clamped to the end.
TIME_ROUNDOFF = 1e-12


def check_time(t, T: float, name: str = "t") -> float:
    """A scalar time in [0, T]; a time within ``TIME_ROUNDOFF * max(1, T)`` outside it is clamped."""
    try:
        tv = float(t)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a scalar time in [0, {T}]; got {t!r}") from exc
    slack = TIME_ROUNDOFF * max(1.0, float(T))
    if not math.isfinite(tv) or not (-slack <= tv <= T + slack):
        raise ValueError(f"{name} must lie in [0, T] = [0, {T}]; got {tv}")
    return min(max(tv, 0.0), float(T))


def check_device(device, name: str = "device") -> torch.device:
    """A torch device this machine has: "cpu", "cuda", "cuda:N", "mps" or a :class:`torch.device`. A device
    that torch knows but this build or machine lacks (CUDA without a CUDA build or GPU, an index past the
    GPU count) and a name torch does not know ("gpu") are ValueErrors naming ``name``, in place of torch's
    assertion from deep inside the first tensor operation."""
    if isinstance(device, str) and device.strip().lower() == "gpu":
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda'; got 'gpu' (did you mean 'cuda'?)")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:0'; got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(f"{name} is {device!r}, but this torch build has no CUDA support (the CPU build: "
                             f"install a CUDA build of torch to use a GPU); use {name}='cpu'")
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"{name} is {device!r}, but no CUDA GPU is visible on this machine; use {name}='cpu'")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{name} is {device!r}, but this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{name} is {device!r}, but MPS is not available on this machine; use {name}='cpu'")
    elif dev.type != "cpu":
        raise ValueError(f"{name} must be 'cpu', 'cuda[:N]' or 'mps'; got {device!r}")
    return dev
