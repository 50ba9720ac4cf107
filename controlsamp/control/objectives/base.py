r"""What every objective shares: one signature, a registry, and the log-weight objectives' base class.

An objective is a ``torch.nn.Module`` (so one that owns parameters, like trajectory balance's log Z, trains
and checkpoints with the policy) called as

    ``loss, info = objective(problem, policy, batch)``

with ``batch`` a :class:`Batch` (the number of paths, the random streams, the iteration's entropy and,
for off-policy training, paths drawn by a behaviour law). ``info`` holds detached per-path log-weights
(``"log_w"``) or costs (``"cost"``) for monitoring; ``needs_data`` marks objectives that only regress on
data a method supplies (ASBS's endpoint pairs), not on paths they could draw themselves. ``check(problem)`` raises a ValueError saying why an
objective does not apply to a problem.

A loss that is a function of the path log-weights log w alone is a :class:`LogWeightObjective`: it
defines ``of_log_weights(log_w)``; the base class draws or takes the paths and computes log w through
``problem.log_weights``, the same weights ``sample()`` reports. Adding one is adding one module to this
package: subclasses register themselves under their ``name`` (and ``aliases``), and the package imports
every module in it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ...parallel import DataParallel
from ..problem import ControlProblem, Paths

Tensor = torch.Tensor
REGISTRY: Dict[str, type] = {}


class Batch(NamedTuple):
    """One iteration's inputs: ``n`` paths, the random ``streams`` (a :class:`controlsamp.training.Streams`),
    the iteration's ``entropy`` (seeds torchsde's Brownian path), the ``device``/``dtype`` of the paths, and
    ``paths`` drawn by a behaviour law (None: the objective draws on-policy paths itself)."""
    n: int
    streams: object
    entropy: int = 0
    device: object = None
    dtype: torch.dtype = torch.float32
    paths: Optional[Paths] = None


class Objective(nn.Module, ABC):
    """Base class; see the module docstring. Class attributes: ``name``, ``aliases``, ``off_policy`` (whether
    it accepts paths from a behaviour law other than the current control)."""

    name: str = ""
    aliases: Tuple[str, ...] = ()
    off_policy: bool = False
    needs_data: bool = False  # trains only on data its caller supplies (batch.paths), e.g. ASBS's endpoint pairs
    #: whether the loss differentiates the problem's drift and costs in the state (the relative entropy through
    #: the SDE, adjoint matching): then they must be written with torch operations (checked by ``solve``)
    differentiates_state: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            where = (cls.__module__, cls.__qualname__)
            for key in (cls.name, *cls.aliases):
                old = REGISTRY.get(key)
                if old is not None and (old.__module__, old.__qualname__) != where:  # a redefinition replaces
                    raise ValueError(f"objective name {key!r} is taken by {old.__module__}.{old.__qualname__}")
                REGISTRY[key] = cls

    def check(self, problem: ControlProblem) -> None:
        """Raise a ValueError if the objective does not apply to ``problem``."""

    @abstractmethod
    def forward(self, problem: ControlProblem, policy: nn.Module, batch: Batch) -> Tuple[Tensor, dict]:
        """(loss, info) of one batch."""

    def sharded(self, problem: ControlProblem, policy: nn.Module, batches: Sequence[Batch],
                parallel: DataParallel) -> Tuple[Tensor, float, dict]:
        """The loss of the whole batch, one ``batches`` entry per shard this process simulates
        (:mod:`controlsamp.parallel`): (the loss to differentiate here, its value for the whole batch, ``info``
        with the per-path entries of every shard). A loss that is a mean over paths is averaged over the shards;
        after :meth:`DataParallel.average_gradients` the gradient is that of the whole batch. With one shard in
        one process this is ``forward``."""
        if len(batches) == 1 and not parallel.distributed:
            loss, info = self(problem, policy, batches[0])
            return loss, float(loss.detach()), info
        outs = [self(problem, policy, b) for b in batches]
        loss, value = parallel.mean_loss([o[0] for o in outs])
        info = {k: parallel.cat_rows([o[1][k].detach() for o in outs]) for k in outs[0][1]}
        return loss, value, info

    def extra_repr(self) -> str:
        return self.name


class LogWeightObjective(Objective):
    """A loss that is a function of the log-weights of a batch of detached paths (any behaviour law)."""

    off_policy = True
    differentiates_state = False

    def check(self, problem: ControlProblem) -> None:
        if problem.kl_scale() is None:
            raise ValueError(f"the {self.name!r} objective is a function of path log-weights, which need a "
                             "relative-entropy problem: control_matrix = sigma and control_cost = (rho/2) I")

    @abstractmethod
    def of_log_weights(self, log_w: Tensor) -> Tensor:
        """The loss as a function of log w (n,), float64."""

    def log_weights(self, problem: ControlProblem, policy: nn.Module, batch: Batch) -> Tensor:
        """log w (n,) of the batch's paths (on-policy paths drawn from its streams when it has none)."""
        paths = batch.paths
        if paths is None:
            paths = problem.on_policy_paths(policy, batch.n, batch.streams.device, batch.device, batch.dtype)
        return problem.log_weights(policy, paths)

    def forward(self, problem: ControlProblem, policy: nn.Module, batch: Batch) -> Tuple[Tensor, dict]:
        log_w = self.log_weights(problem, policy, batch)
        return self.of_log_weights(log_w), {"log_w": log_w.detach()}

    def sharded(self, problem: ControlProblem, policy: nn.Module, batches: Sequence[Batch],
                parallel: DataParallel) -> Tuple[Tensor, float, dict]:
        """The loss of the log-weights of every shard's paths together (:meth:`DataParallel.cat_rows`), so that
        batch statistics (the log-variance's mean) are those of the whole batch; the same value in every
        process."""
        if len(batches) == 1 and not parallel.distributed:
            return super().sharded(problem, policy, batches, parallel)
        log_w = parallel.cat_rows([self.log_weights(problem, policy, b) for b in batches])
        loss = self.of_log_weights(log_w)
        return loss, float(loss.detach()), {"log_w": log_w.detach()}


def get_objective(objective, **options) -> Objective:
    """An objective from its name (see ``REGISTRY``) with ``options``, or an :class:`Objective` as is."""
    if isinstance(objective, Objective):
        if options:
            raise ValueError(f"options {sorted(options)} are for an objective given by name; got an instance")
        return objective
    if objective not in REGISTRY:
        raise ValueError(f"objective must be one of {sorted(REGISTRY)} or an Objective; got {objective!r}")
    return REGISTRY[objective](**options)
