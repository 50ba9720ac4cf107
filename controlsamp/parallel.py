r"""Data-parallel training over processes with ``torch.distributed`` (gloo on CPUs, NCCL on GPUs).

**Shards.** A run's randomness is split into S *shards*. Shard s owns its random streams (seeded from the run's seed
and s; shard 0's are those of a one-shard run) and draws B / S of every iteration's B paths (or data points). W
processes, W dividing S, each simulate S / W consecutive shards. Every iteration minimises the loss of the whole
batch of B:

* a loss that is a mean over paths is averaged over the shards;
* a loss with batch statistics (the log-variance's mean of log w) sees the rows of every shard
  (:meth:`DataParallel.cat_rows`), so its statistics are those of the whole batch;
* gradients are averaged over the processes before they are clipped and applied (:meth:`average_gradients`);
* replay buffers receive every shard's samples in shard order, so they are the same in every process.

Hence a run depends on its seed and S, never on W: a one-process run with ``shards=2`` and a two-process run agree
up to the rounding of the gradient sums. The default is S = W. This is synchronous data parallelism as in
``torch.nn.parallel.DistributedDataParallel`` (Li et al. 2020, "PyTorch Distributed: experiences on accelerating
data parallel training"), with the reductions written out so that they also cover batch statistics and buffers.

**The gradient of a loss with batch statistics.** Let :math:`L(\ell_1, \dots, \ell_B)` be the loss of the whole
batch, :math:`\ell_j` differentiable in the parameters :math:`\theta` on the process that simulated path j only.
Process p builds :math:`L` from every row, its own rows :math:`\ell_j` replaced by
:math:`W\ell_j - (W-1)\,\mathrm{sg}[\ell_j]` (the same value), the others detached; its gradient is
:math:`W\sum_{j \in p} \partial_j L\,\nabla_\theta \ell_j`, and the mean over the W processes is
:math:`\sum_j \partial_j L\,\nabla_\theta\ell_j = \nabla_\theta L`. Parameters of the loss itself (trajectory
balance's log Z) get the full gradient in every process, which the mean leaves unchanged.

The processes are started by ``torchrun`` (or ``controlsamp run --nproc N``), which sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins the process group. Without an initialised group
everything here is the one-process identity.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from ._validate import check_dim

Tensor = torch.Tensor

__all__ = ["DataParallel", "init_from_env", "destroy", "local_device", "world_size", "rank"]


def world_size() -> int:
    """The number of processes of the initialised default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env(device="cpu") -> bool:
    """Join the default process group from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``) when it is set and no group exists yet: the NCCL backend for a CUDA ``device`` (then this
    process uses GPU ``LOCAL_RANK``), gloo otherwise. Returns whether a group is initialised afterwards."""
    if not dist.is_available():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("WORLD_SIZE > 1 asks for several processes, but this torch build has no "
                             "torch.distributed")
        return False
    if dist.is_initialized():
        return True
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def destroy() -> None:
    """Leave the default process group (nothing without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device) -> torch.device:
    """``device`` for this process: a CUDA device without an index becomes GPU ``LOCAL_RANK`` (one GPU per
    process, as torchrun lays them out); anything else is returned as is."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


class DataParallel:
    """The shards of one training run and the reductions over the processes that simulate them.

    Args:
        shards: S, the number of random shards (None: the number of processes). It must be a multiple of the
            number of processes W; process p simulates shards p S / W, ..., (p + 1) S / W - 1.
    """

    def __init__(self, shards: Optional[int] = None):
        self.world, self.rank = world_size(), rank()
        self.shards = self.world if shards is None else check_dim(shards, "shards")
        if self.shards % self.world:
            raise ValueError(f"shards must be a multiple of the number of processes ({self.world}); got "
                             f"{self.shards}")
        per = self.shards // self.world
        self.own: List[int] = list(range(self.rank * per, (self.rank + 1) * per))

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world > 1

    @property
    def writer(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"DataParallel(shards={self.shards}, world={self.world}, rank={self.rank})"

    def split(self, n: int, name: str = "batch") -> int:
        """The rows per shard of a batch of ``n``; ``n`` must be a multiple of S (a ValueError names ``name``)."""
        if n % self.shards:
            raise ValueError(f"{name} ({n}) must be a multiple of shards ({self.shards}): every shard draws the same "
                             "number of rows")
        return n // self.shards

    # ------------------------------------------------------------------ collectives
    def _comm(self, t: Tensor) -> Tensor:
        """``t`` on the device the backend communicates on (CUDA for NCCL, CPU for gloo)."""
        if dist.get_backend() == "nccl":
            return t.to(torch.device("cuda", torch.cuda.current_device()))
        return t.cpu()

    def _gather(self, t: Tensor) -> List[Tensor]:
        """Every process's ``t`` (same shape and dtype everywhere), in rank order, on ``t``'s device."""
        c = self._comm(t.detach().contiguous())
        out = [torch.empty_like(c) for _ in range(self.world)]
        dist.all_gather(out, c)
        return [o.to(t.device) for o in out]

    def cat_rows(self, parts: Sequence[Tensor]) -> Tensor:
        """The rows of all S shards in shard order, from this process's ``parts`` (one per own shard, equal
        shapes). This process's rows keep their graph, with their gradient multiplied by W (see the module
        docstring: after :meth:`average_gradients` the gradient is that of the whole batch); the others are
        detached."""
        local = torch.cat(list(parts))
        if not self.distributed:
            return local
        rows = self._gather(local)
        rows[self.rank] = self.world * local - (self.world - 1) * local.detach() if local.requires_grad else local
        return torch.cat(rows)

    def sum(self, value: float) -> float:
        """The sum over processes of a number (e.g. energy evaluations), in rank order."""
        if not self.distributed:
            return float(value)
        return float(torch.stack(self._gather(torch.tensor([float(value)], dtype=torch.float64))).sum())

    def count_since(self, before: int, now: int) -> int:
        """A counter every process advanced on its own shards (e.g. energy evaluations) from the shared ``before`` to
        its own ``now``: ``before`` plus the increments of all processes. In one process, ``now``."""
        return before + int(self.sum(now - before)) if self.distributed else int(now)

    def mean(self, value: float) -> float:
        """The mean over processes of a number (e.g. a per-path mean of this process's shards)."""
        return self.sum(value) / self.world if self.distributed else float(value)

    def mean_loss(self, losses: Sequence[Tensor]) -> Tuple[Tensor, float]:
        """A loss that is a mean over points, from its value on each of this process's shards (equal sizes): (the
        mean over these shards, to differentiate here; its mean over the processes, the whole batch's value). After
        :meth:`average_gradients` the gradient is the whole batch's. One shard: the loss itself."""
        loss = losses[0] if len(losses) == 1 else torch.stack(list(losses)).mean()
        return loss, self.mean(float(loss.detach()))

    def average_gradients(self, parameters: Sequence[Tensor]) -> None:
        """Replace each parameter's gradient by its mean over the processes (one all-reduce of one flat buffer;
        a missing gradient counts as zero and stays missing where it is missing everywhere)."""
        if not self.distributed:
            return
        params = [p for p in parameters]
        if not params:
            return
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
        any_grad = torch.stack(self._gather(present)).amax(0) > 0
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
                          for p, keep in zip(params, any_grad) if keep]) if bool(any_grad.any()) else None
        if flat is None:
            return
        c = self._comm(flat)
        dist.all_reduce(c, op=dist.ReduceOp.SUM)
        c = (c / self.world).to(flat.device)
        offset = 0
        for p, keep in zip(params, any_grad):
            if not keep:
                continue
            n = p.numel()
            g = c[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    def gather_objects(self, obj) -> list:
        """Every process's ``obj`` (picklable), in rank order."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
