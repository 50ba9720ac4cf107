"""How many CPU threads torch's intra-op parallelism uses in controlsamp.

torch starts one intra-op (OpenMP) thread per physical core. The workloads of this package are many
small operations (an MLP of width 64 on a few hundred points, a hundred times per path), far too small
to split across threads; with more than one thread every operation pays a fork/join barrier, and when
other processes share the cores the waiting threads spin against them. On a 2-core machine shared
with other jobs, PIS training ran 13x slower per iteration with torch's default (2 threads) than with
one (BENCHMARKS.md, "Speed (issue 13)").

So ``import controlsamp`` sets one intra-op thread, unless the user has already chosen:

* ``CONTROLSAMP_THREADS`` is set: a positive integer, or ``auto`` for torch's own default (one per
  core this process may run on);
* ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set: torch has applied it, controlsamp leaves it alone;
* ``torch.set_num_threads`` was called before ``import controlsamp`` with a value other than torch's
  default (a call that sets the default value itself cannot be told from no call).

Afterwards :func:`set_threads` (``controlsamp.set_threads``) or ``torch.set_num_threads`` change it at
any time, and the ``controlsamp run`` / ``demo`` commands take ``--threads``. A large CPU job (a wide
network, thousands of dimensions, batches of 10^5 points) can gain from more threads:
``CONTROLSAMP_THREADS=auto`` or ``controlsamp.set_threads("auto")``. On a GPU the count hardly matters.
Only intra-op threads are set; torch's inter-op pool is left alone (it can only be sized before its
first use).
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

ENV = "CONTROLSAMP_THREADS"
DEFAULT = 1
_USER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _physical_cores() -> Optional[int]:
    """Physical cores (distinct (physical id, core id) pairs of /proc/cpuinfo), or None where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    cores, phys = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            cores.add((phys, value.strip()))
    return len(cores) or None


def torch_default() -> int:
    """torch's own default intra-op thread count: one per physical core this process may run on."""
    usable, physical = _usable_cpus(), _physical_cores()
    return max(1, min(usable, physical) if physical else usable)


def _parse(n: Union[int, str], name: str) -> int:
    if isinstance(n, str):
        s = n.strip().lower()
        if s == "auto":
            return torch_default()
        if s.isdigit() and int(s) > 0:
            return int(s)
    elif isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    raise ValueError(f"{name} must be a positive integer or 'auto'; got {n!r}")


def set_threads(n: Union[int, str]) -> int:
    """Set torch's intra-op thread count for this process; returns the count now in effect.

    ``n``: a positive integer, or ``"auto"`` for torch's own default (one thread per physical core this
    process may run on). controlsamp's default is 1 (see :mod:`controlsamp._threads`); more threads only
    pay for large operations (wide networks, very large batches or dimensions).
    """
    count = _parse(n, "n")
    torch.set_num_threads(count)
    return torch.get_num_threads()


def user_has_chosen() -> Optional[str]:
    """Why the thread count is the user's choice (an environment variable, an earlier
    ``torch.set_num_threads``), or None when it is still torch's default."""
    for var in (ENV,) + _USER_ENV:
        if os.environ.get(var, "").strip():
            return var
    current = torch.get_num_threads()
    if current not in {torch_default(), _usable_cpus(), os.cpu_count()}:
        return f"torch.set_num_threads({current})"
    return None


def apply_default() -> int:
    """Called by ``import controlsamp``: CONTROLSAMP_THREADS if set, else :data:`DEFAULT` threads unless the
    user has already chosen (see the module docstring). Returns the count in effect."""
    value = os.environ.get(ENV, "").strip()
    if value:
        return set_threads(_parse(value, f"the environment variable {ENV}"))
    if user_has_chosen() is None:
        torch.set_num_threads(DEFAULT)
    return torch.get_num_threads()
