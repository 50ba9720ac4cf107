r"""Off-policy training pieces of Sendera et al. 2024 ("Improved off-policy training of diffusion samplers"):
a replay buffer of terminal states with rank-based priority, and local search by MALA on buffer samples.

* Replay buffer: terminal samples x with their log-rewards log pi~(x); a batch is drawn with probability
  proportional to 1 / (k N + rank(x)) (rank 0 the highest reward; Tripp et al. 2020), k = ``rank_weight``.
  Backward paths from these samples (the reference's time reversal) train the sampler off-policy.
* Local search: a few MALA steps (:mod:`controlsamp.langevin.mala`) from buffer samples, with the step
  adapted toward acceptance ``target_accept`` (default 0.574); the results join the buffer.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from ..langevin import mala

Tensor = torch.Tensor


class ReplayBuffer:
    """A FIFO buffer of (x, log_reward) with rank-based sampling. ``state_dict`` / ``load_state_dict`` make it
    part of a checkpoint."""

    def __init__(self, capacity: int, dim: int, rank_weight: float = 1e-2):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be a positive integer; got {capacity}")
        self.capacity, self.dim, self.rank_weight = int(capacity), int(dim), float(rank_weight)
        self.x = torch.empty(0, dim)
        self.log_r = torch.empty(0)

    def __len__(self) -> int:
        return self.x.shape[0]

    def add(self, x: Tensor, log_r: Tensor) -> None:
        ok = (torch.isfinite(log_r) & torch.isfinite(x).all(1)).cpu()  # (the buffer lives on the CPU)
        self.x = torch.cat([self.x, x.detach().float().cpu()[ok]])[-self.capacity:]
        self.log_r = torch.cat([self.log_r, log_r.detach().float().cpu()[ok]])[-self.capacity:]

    def sample(self, n: int, generator=None) -> Tuple[Tensor, Tensor]:
        if len(self) == 0:
            raise ValueError("the replay buffer is empty")
        N = len(self)
        ranks = torch.empty(N)
        ranks[torch.argsort(self.log_r, descending=True)] = torch.arange(N, dtype=torch.float32)
        p = 1.0 / (self.rank_weight * N + ranks)
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
        return self.x[idx], self.log_r[idx]

    def state_dict(self) -> dict:
        return {"x": self.x, "log_r": self.log_r}

    def load_state_dict(self, state: dict) -> None:
        self.x, self.log_r = state["x"], state["log_r"]


def local_search(log_density: Callable[[Tensor], Tuple[Tensor, Tensor]], x: Tensor, n_steps: int,
                 step_size: float, generator=None, target_accept: float = 0.574,
                 adapt_rate: float = 0.05) -> Tuple[Tensor, Tensor, float]:
    r"""Run ``n_steps`` MALA steps (Roberts & Tweedie 1996; :func:`controlsamp.langevin.mala.step`) from ``x``,
    adapting the step after each one.

    Args:
        log_density: ``x -> (log pi~(x), grad log pi~(x))``, e.g. a :class:`~controlsamp.targets.TargetEvaluator`.
        x: the starting points (n, d).
        n_steps: the number of MALA steps.
        step_size: the initial step :math:`\epsilon` (one for all chains).
        generator: the ``torch.Generator`` of the proposals and the accept/reject draws.
        target_accept: the mean acceptance the step is driven toward (default 0.574, MALA's optimal rate in
            high dimension, Roberts & Rosenthal 1998).
        adapt_rate: the Robbins–Monro gain on :math:`\log\epsilon` of
            :func:`controlsamp.langevin.mala.adapt_step` (default 0.05).

    Returns (x, log pi~(x), the adapted step).
    """
    state = mala.init(x, log_density)
    for _ in range(n_steps):
        state, info = mala.step(state, log_density, step_size, generator)
        step_size = mala.adapt_step(step_size, info.acceptance_rate, target_accept, adapt_rate)
    return state.x, state.log_prob, step_size
