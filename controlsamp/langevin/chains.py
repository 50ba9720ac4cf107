r"""Run batches of ULA or MALA chains: warm-up with step-size adaptation, then frozen-kernel draws.

:func:`run_chains` is the driver over the pure kernels of :mod:`.ula` and :mod:`.mala`. During the
``warmup`` moves the step follows the Robbins–Monro rule of :func:`.mala.adapt_step` toward
``target_accept`` (MALA's acceptance, or the acceptance MALA would have had for ULA's move); after it
the step is frozen, so the kernel is a fixed :math:`\pi`-invariant kernel (MALA) and the draws are
a Markov chain with that kernel. The draws come back as ``(n_chains, n_draws, d)`` for
:mod:`.diagnostics`.

A kernel, here and in :func:`controlsamp.langevin.smc.tempered_smc`, is a function
``kernel(state, log_density, step_size, generator, precond) -> (new_state, info)`` on a
:class:`~.proposal.LangevinState`, with ``info.acceptance_rate`` (n,) the acceptance probability that
step adaptation follows (:class:`.mala.MALAInfo`, :class:`.ula.ULAInfo`); :data:`METHODS` names the two
built in, and :func:`resolve_kernel` turns a name or a function into one.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import numpy as np
import torch

from .._validate import as_points, check_count, check_positive, check_seed
from ..targets import Target
from ..targets.evaluation import TargetEvaluator
from . import mala, ula
from .proposal import Preconditioner, init

Tensor = torch.Tensor
METHODS = {"ula": ula.step, "mala": mala.step}

__all__ = ["ChainResult", "run_chains", "METHODS", "resolve_kernel"]


def resolve_kernel(kernel: Union[str, Callable], name: str = "kernel") -> Callable:
    """The kernel function for a name in :data:`METHODS` (``"ula"``, ``"mala"``) or a callable kernel
    (returned as it is); anything else is a ValueError naming the argument ``name``."""
    if isinstance(kernel, str) and kernel in METHODS:
        return METHODS[kernel]
    if callable(kernel):
        return kernel
    got = repr(kernel) if isinstance(kernel, str) else type(kernel).__name__
    raise ValueError(f"{name} must be one of {sorted(METHODS)} or a kernel function; got {got}")


class ChainResult(NamedTuple):
    """Draws (n_chains, n_draws, d), the acceptance probabilities after warm-up (n_chains, n_draws),
    the frozen step size and the number of target evaluations."""
    draws: Tensor
    accept_prob: Tensor
    step_size: Union[float, Tensor]
    target_evals: int


def _nonneg_int(value, name: str) -> int:
    return check_count(value, name)


def run_chains(target, x0, n_draws: int, method: Union[str, Callable] = "mala",
               step_size: Union[float, Tensor] = 0.1, warmup: int = 500, target_accept: Optional[float] = None,
               adapt_rate: float = 0.05, precond=None, thin: int = 1, seed: int = 0) -> ChainResult:
    r"""Run ``len(x0)`` chains of ``method`` (``"ula"``, ``"mala"`` or a kernel function) on ``target``.

    Args:
        target: a :class:`~controlsamp.targets.Target`.
        x0: starting points (n_chains, d).
        n_draws: draws kept per chain after warm-up (every ``thin``-th move).
        method: the kernel, by name or as a function (see the module).
        step_size: the initial step :math:`\epsilon` (a float, or one per chain, shape (n_chains,)).
        warmup: moves with step adaptation before the draws (0 keeps ``step_size`` fixed).
        target_accept: the acceptance rate the warm-up aims at; default 0.574 (MALA's optimal rate in
            high dimension, Roberts & Rosenthal 1998).
        adapt_rate: the Robbins–Monro gain on :math:`\log\epsilon`.
        precond: a fixed preconditioner :math:`P` (``None``, a diagonal (d,) or an SPD matrix (d, d)).
        thin: keep one move in ``thin``.
        seed: seeds the chains' randomness.
    """
    kernel = resolve_kernel(method, "method")
    n_draws = _nonneg_int(n_draws, "n_draws")
    warmup = _nonneg_int(warmup, "warmup")
    thin = _nonneg_int(thin, "thin")
    if thin == 0:
        raise ValueError("thin must be at least 1")
    target_accept = 0.574 if target_accept is None else check_positive(target_accept, "target_accept")
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept}")
    check_positive(adapt_rate, "adapt_rate")
    if not isinstance(target, Target):
        raise ValueError(f"target must be a controlsamp.targets.Target; got {type(target).__name__}")
    floating = (isinstance(x0, torch.Tensor) and x0.is_floating_point()) or \
        (isinstance(x0, np.ndarray) and np.issubdtype(x0.dtype, np.floating))
    x0 = as_points(x0, "x0", target.dim, dtype=None if floating else torch.float64)  # integers: float64
    seed = check_seed(seed)
    P = Preconditioner(precond, target.dim)
    log_density = TargetEvaluator(target)
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    state = init(x0, log_density)
    for _ in range(warmup):
        state, info = kernel(state, log_density, step_size, gen, P)
        step_size = mala.adapt_step(step_size, info.acceptance_rate, target_accept, adapt_rate)
    draws, accs = [], []
    for i in range(n_draws * thin):
        state, info = kernel(state, log_density, step_size, gen, P)
        if (i + 1) % thin == 0:
            draws.append(state.x)
            accs.append(info.acceptance_rate)
    n, d = x0.shape
    out = torch.stack(draws, 1) if draws else x0.new_zeros(n, 0, d)
    acc_out = torch.stack(accs, 1) if accs else x0.new_zeros(n, 0)
    return ChainResult(out, acc_out, step_size, log_density.evals)
