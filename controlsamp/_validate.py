"""Input checks shared by every layer: each error names the argument and what was expected."""
from __future__ import annotations

import functools
import math
import operator
from typing import Optional

import numpy as np
import torch

Array = "torch.Tensor | np.ndarray | float | list"

DTYPE = torch.float64


def as_tensor(value, name: str, dtype: torch.dtype = DTYPE, device=None) -> torch.Tensor:
    """Convert a number, list, numpy array or tensor to a tensor of ``dtype``; reject text, NaN and inf."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be numeric (a number, array or tensor); got the text {value!r}")
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


def _check_scalar(value, name: str, strict: Optional[bool]) -> float:
    """A finite scalar > 0 (``strict``), >= 0 (``strict=False``) or of any sign (``strict=None``), else a ValueError
    naming ``name``."""
    kind = {True: "positive", False: "non-negative", None: "finite"}[strict]
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise ValueError(f"{name} must be a {kind} number; got {value!r} ({type(value).__name__})")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a {kind} number; got {value!r}") from exc
    if not math.isfinite(v) or (strict is not None and (v < 0 or (strict and v == 0))):
        raise ValueError(f"{name} must be a {kind} finite number; got {v}" if strict is not None else
                         f"{name} must be a finite number; got {v}")
    return v


def check_number(value, name: str) -> float:
    """A finite real scalar (numpy and 0-d tensors accepted; strings and bools rejected)."""
    return _check_scalar(value, name, strict=None)


def check_positive(value, name: str) -> float:
    """A finite scalar > 0."""
    return _check_scalar(value, name, strict=True)


def check_nonnegative(value, name: str) -> float:
    """A finite scalar >= 0."""
    return _check_scalar(value, name, strict=False)


def check_dim(value, name: str = "dim") -> int:
    """A positive integer (numpy integers accepted, bools and floats rejected); see :func:`check_int`."""
    return check_int(value, name, minimum=1)


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
    """A symmetric matrix, positive definite (default) or positive semi-definite (``psd=True``).

    Every criterion is relative to the matrix's own scale, so a covariance of any units passes or fails alike
    (1e-13 I is as valid as I). Positive definiteness is decided by a Cholesky factorisation in float64 of the
    Jacobi-scaled matrix D^{-1/2} M D^{-1/2} (D = diag M): it is accepted when every pivot squared exceeds
    ``d * eps`` (float64's resolution for that matrix), so covariances of condition number 1e13 and beyond pass
    while a numerically singular one is refused. Positive semi-definiteness allows eigenvalues down to
    -1e-10 times the largest eigenvalue magnitude (round-off). A refusal reports the smallest eigenvalue,
    computed in float64 on the matrix as given."""
    m = check_square(value, name, dim, **kw)
    m64 = m.to(torch.float64)
    scale = float(m64.abs().max()) if m64.numel() else 0.0
    asym = float((m64 - m64.T).abs().max()) if m64.numel() else 0.0
    if asym > 1e-8 * scale:
        raise ValueError(f"{name} must be symmetric; max |{name} - {name}^T| = {asym:.3g} (entries up to {scale:.3g})")
    m = 0.5 * (m + m.T)
    m64 = 0.5 * (m64 + m64.T)
    if psd:
        eig = torch.linalg.eigvalsh(m64)
        eig_min, top = float(eig.min()), float(eig.abs().max())
        if eig_min < -1e-10 * top:
            raise ValueError(f"{name} must be positive semi-definite; smallest eigenvalue {eig_min:.3g} "
                             f"(largest magnitude {top:.3g})")
        return m
    if is_numerically_spd(m64):
        return m
    eig = torch.linalg.eigvalsh(m64)
    eig_min, eig_max = float(eig.min()), float(eig.max())
    if eig_min > 0:
        raise ValueError(f"{name} must be symmetric positive definite; it is numerically singular: smallest "
                         f"eigenvalue {eig_min:.3g} against largest {eig_max:.3g} (condition number "
                         f"{eig_max / eig_min:.3g}, beyond what float64 resolves)")
    raise ValueError(f"{name} must be symmetric positive definite; smallest eigenvalue {eig_min:.3g} "
                     f"(largest {eig_max:.3g})")


def is_numerically_spd(m: torch.Tensor) -> bool:
    """Whether the symmetric matrix ``m`` is positive definite to float64 precision: its Jacobi-scaled form
    has a Cholesky factor with every pivot squared above ``d * eps`` (see :func:`check_symmetric`)."""
    m64 = m.to(torch.float64)
    d = m64.shape[-1]
    diag = torch.diagonal(m64)
    if d == 0 or not bool((diag > 0).all()) or not bool(torch.isfinite(m64).all()):
        return False
    r = diag.rsqrt()
    L, info = torch.linalg.cholesky_ex(m64 * r[:, None] * r[None, :])
    if int(info) != 0:
        return False
    return float(torch.diagonal(L).min()) ** 2 > d * torch.finfo(torch.float64).eps


def check_internal_spd(m: torch.Tensor, what: str) -> torch.Tensor:
    """Check a matrix the package computed (not a user's argument) for numerical positive definiteness; a
    failure is a FloatingPointError that says which intermediate broke and how (it never blames an argument
    the user did not pass in that form)."""
    if is_numerically_spd(m):
        return m
    eig = torch.linalg.eigvalsh(0.5 * (m + m.T).to(torch.float64))
    raise FloatingPointError(f"internal: {what} is not numerically positive definite in float64 (eigenvalues from "
                             f"{float(eig.min()):.3g} to {float(eig.max()):.3g}); the problem is too ill-conditioned "
                             "for this closed form")


def check_spd(value, name: str, dim: Optional[int] = None, **kw) -> torch.Tensor:
    """A symmetric positive definite matrix."""
    return check_symmetric(value, name, dim, psd=False, **kw)


def check_points(x, name: str, dim: int, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """Points of shape (n, dim) in ``dtype``; a single point of shape (dim,) becomes (1, dim) (see
    :func:`as_points`)."""
    return as_points(x, name, dim, dtype=dtype, single=True)


#: Relative round-off accepted past either end of [0, T] (ODE solvers evaluate at t + c h, which can
#: exceed the end time by an ulp); such a time is clamped to the end.
TIME_ROUNDOFF = 1e-12


def check_time(t, T: float, name: str = "t") -> float:
    """A scalar time in [0, T]; a time within ``TIME_ROUNDOFF * max(1, T)`` outside it is clamped."""
    try:
        if isinstance(t, (str, bytes, bool)):
            raise TypeError
        tv = float(t)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a scalar time in [0, {T}]; got {t!r}") from exc
    slack = TIME_ROUNDOFF * max(1.0, float(T))
    if not math.isfinite(tv) or not (-slack <= tv <= T + slack):
        raise ValueError(f"{name} must lie in [0, T] = [0, {T}]; got {tv}")
    return min(max(tv, 0.0), float(T))


def check_int(value, name: str, minimum: Optional[int] = None) -> int:
    """An integer (Python or numpy; bools, floats such as 2.5 or 2.0, and strings are refused, never truncated)
    at least ``minimum`` when given, else a ValueError naming ``name``."""
    kind = "a positive integer" if minimum == 1 else \
        "an integer" + ("" if minimum is None else f" >= {minimum}")
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    try:
        v = int(operator.index(value))
    except TypeError as exc:
        raise ValueError(f"{name} must be {kind}; got {value!r} ({type(value).__name__})") from exc
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be {kind}; got {v}")
    return v


def check_seed(value, name: str = "seed") -> int:
    """A random seed: an integer that torch's generators accept, in [-2^63, 2^64 - 1]."""
    v = check_int(value, name)
    if not -(2 ** 63) <= v < 2 ** 64:
        raise ValueError(f"{name} must be an integer in [-2^63, 2^64 - 1] (torch's seed range); got {v}")
    return v


def check_count(value, name: str) -> int:
    """A non-negative integer (0 allowed: "none"); see :func:`check_int`."""
    return check_int(value, name, minimum=0)


def check_grad_clip(value, name: str = "grad_clip") -> Optional[float]:
    """``None`` (no clipping) or a finite number > 0 (the largest gradient norm); 0 and negative values are
    refused (0 would mean "no step", a negative value would reverse the update)."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be None (no clipping) or a positive number; got {value!r}") from exc
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be None (no clipping) or a positive finite number; got {value!r}")
    return v


def check_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """A floating-point torch dtype; ``None`` is ``torch.get_default_dtype()`` (so that
    ``torch.set_default_dtype(torch.float64)`` is followed); names such as ``"float64"`` are accepted."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point torch dtype (torch.float32, torch.float64) or None "
                         f"(torch's default dtype); got {dtype!r}")
    return dtype


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` if every entry is finite, else a ValueError naming ``name``. One reduction (the sum; a finite
    sum of finite entries can only overflow, which the exact check below then clears)."""
    if x.is_floating_point() or x.is_complex():
        if not math.isfinite(float(x.detach().sum())) and not bool(torch.isfinite(x.detach()).all()):
            bad = ~torch.isfinite(x.detach())
            raise ValueError(f"{name} contains NaN or inf ({int(bad.sum())} of {x.numel()} entries)")
    return x


def as_points(x, name: str, dim: Optional[int] = None, dtype: Optional[torch.dtype] = None, device=None,
              single: bool = False) -> torch.Tensor:
    """Points of shape (n, dim) as a floating tensor, from a tensor, numpy array or nested list. A tensor keeps
    its floating dtype and device unless ``dtype`` / ``device`` are given; integer or bool input is promoted to
    ``dtype`` or torch's default float dtype (so ``log_prob`` of integer points is not rounded); numpy floats
    keep their precision. NaN or inf entries are a ValueError naming ``name``. With ``single``, one point of
    shape (dim,) becomes (1, dim)."""
    if not isinstance(x, torch.Tensor):
        try:
            arr = np.asarray(x)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise TypeError
            xt = torch.as_tensor(np.ascontiguousarray(arr), device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be an array or tensor of points (n, {dim if dim else 'd'}); "
                             f"got {type(x).__name__}") from exc
    else:
        xt = x
    if xt.is_complex():
        raise ValueError(f"{name} must be real; got dtype {xt.dtype}")
    if not xt.is_floating_point():
        xt = xt.to(dtype or torch.get_default_dtype())
    elif dtype is not None and xt.dtype != dtype:
        xt = xt.to(dtype)
    if device is not None and xt.device != torch.device(device):
        xt = xt.to(device)
    if single and xt.ndim == 1:
        xt = xt.unsqueeze(0)
    if xt.ndim != 2 or (dim is not None and xt.shape[1] != dim):
        raise ValueError(f"{name} must have shape (n, {dim if dim is not None else 'd'}); got {tuple(xt.shape)}")
    return check_finite(xt, name)


def _no_graph_message(name: str) -> str:
    return (f"{name} is not differentiable by torch's autograd: it returned a value with no autograd graph to its "
            "input x that still changes with x (computed through numpy, .item(), .detach() or another library?), "
            "so its gradient in x, which this computation needs, would be silently wrong. Write it with torch "
            "operations (torch.exp, torch.sum, ...); for a target, alternatively subclass "
            "controlsamp.targets.Target and define a closed-form score(x)")


def call_with_graph(fn, x: torch.Tensor, name: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``fn(x)`` for an ``x`` that requires grad, with an autograd graph to ``x``.

    A value computed without a graph is looked at once more, at a perturbed x: if it does not change, the
    function does not depend on x (a constant energy, a zero drift) and the value is returned with a zero
    gradient attached; if it changes, it depends on x but autograd cannot see how (numpy, ``.item()``,
    ``.detach()``), and a ValueError naming ``name`` says so, instead of a wrong (zero) gradient or torch's
    "element 0 of tensors does not require grad". torch's "Can't call numpy() on Tensor that requires grad" is
    turned into the same error. ``out``: ``fn(x)`` when the caller has it already."""
    if out is None:
        try:
            out = fn(x)
        except RuntimeError as exc:
            if "numpy()" in str(exc) or "requires grad" in str(exc):
                raise ValueError(_no_graph_message(name)) from exc
            raise
    if not isinstance(out, torch.Tensor) or out.requires_grad or not x.requires_grad or not torch.is_grad_enabled():
        return out
    with torch.no_grad():
        x0 = x.detach()
        ramp = torch.linspace(0.5, 1.5, x0.shape[-1], dtype=x0.dtype, device=x0.device) if x0.ndim else 1.0
        again = fn(x0 + 1e-3 * (1.0 + x0.abs()) * ramp)
    same = (isinstance(again, torch.Tensor) and again.shape == out.shape
            and bool(((again.to(out.dtype) == out) | (torch.isnan(again) & torch.isnan(out))).all()))
    if not same:
        raise ValueError(_no_graph_message(name))
    return out + 0.0 * x.sum()


def on_cpu(fn):
    """Decorate a closed form computed in float64 on the CPU (a function of points x: a drift, a score, a conditional
    law): tensor arguments on another device (a GPU) are copied to the CPU, and the tensor results (alone or in a
    tuple) are copied back to the device of the first such argument. Both copies are differentiable, so a GPU caller
    gets the exact values and gradients on its own device, at the cost of the transfers. A generator it is given
    draws on the CPU (a CPU generator)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        device = next((a.device for a in (*args, *kwargs.values())
                       if isinstance(a, torch.Tensor) and a.device.type != "cpu"), None)
        if device is None:
            return fn(*args, **kwargs)

        def cpu(a):
            return a.cpu() if isinstance(a, torch.Tensor) else a

        def back(o):
            return o.to(device) if isinstance(o, torch.Tensor) else o
        out = fn(*map(cpu, args), **{k: cpu(v) for k, v in kwargs.items()})
        return tuple(map(back, out)) if isinstance(out, tuple) else back(out)
    return wrapped


def check_generator(generator, device, name: str = "generator") -> Optional[torch.Generator]:
    """None or a :class:`torch.Generator` on the type of ``device`` (where the states it draws for live): torch draws
    a device's random numbers only from a generator of that device, so a CPU generator for states on a GPU (or the
    reverse) is a ValueError naming ``name`` that says which generator to pass, in place of torch's error from
    inside the first draw."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None; got {type(generator).__name__}")
    dev = torch.device(device)
    if generator.device.type != dev.type:
        raise ValueError(f"{name} is a generator on {generator.device.type!r} but the states live on {dev.type!r}; "
                         f"pass torch.Generator(device={str(dev)!r}) (or None)")
    return generator


def check_device(device, name: str = "device") -> torch.device:
    """A torch device this machine has: "cpu", "cuda", "cuda:N" or a :class:`torch.device`. A device
    that torch knows but this build or machine lacks (CUDA without a CUDA build or GPU, an index past the
    GPU count), a name torch does not know ("gpu") and "mps" (no float64 there) are ValueErrors naming
    ``name``, in place of torch's assertion from deep inside the first tensor operation."""
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
        raise ValueError(f"{name} is {device!r}, but Apple's MPS backend has no float64, which controlsamp uses for "
                         f"log-weights, closed forms and metrics; use {name}='cpu' (or 'cuda')")
    elif dev.type != "cpu":
        raise ValueError(f"{name} must be 'cpu' or 'cuda[:N]'; got {device!r}")
    return dev
