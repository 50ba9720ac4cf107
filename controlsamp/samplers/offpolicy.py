r"""Off-policy training pieces of Sendera et al. 2024 ("Improved off-policy training of diffusion samplers"):
a replay buffer of terminal states with rank-based priority, and local search by MALA on buffer samples.

* Replay buffer: terminal samples x with their log-rewards log pi~(x); a batch is drawn with probability
  proportional to 1 / (k N + rank(x)) (rank 0 the highest reward; Tripp et al. 2020), k = ``rank_weight``.
  Backward paths from these samples (the reference's time reversal) train the sampler off-policy.
* Local search: MALA steps (:mod:`controlsamp.langevin.mala`) from buffer samples, with the step adapted
  toward acceptance ``target_accept`` (default 0.574); the chains' final states, or (with ``burn_in``, Sendera
  et al.'s scheme) every state after the burn-in, join a buffer.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..langevin import mala

Tensor = torch.Tensor


class ReplayBuffer:
    r"""A FIFO buffer of (x, log_reward) with rank-based sampling. ``state_dict`` / ``load_state_dict`` make it
    part of a checkpoint.

    Rank-based priority (Tripp et al. 2020): with N samples ranked r = 0 (highest log-reward) to N - 1, a draw
    picks rank r with probability :math:`p(r) \propto 1 / (kN + r)`, k = ``rank_weight``.

    Cost: the samples live in a ring (allocated by doubling up to ``capacity``) and their ranking is kept
    up to date by merging on each ``add``: adding m samples costs O(m log m + m log N) plus one sequential
    pass over the N ranks, a draw of n costs O(N + n), with no sort, gather or copy of the whole buffer
    (Sendera et al.'s buffers hold 600 000 samples, where a full sort and copy per iteration cost more than
    the training step)."""

    def __init__(self, capacity: int, dim: int, rank_weight: float = 1e-2):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be a positive integer; got {capacity}")
        self.capacity, self.dim, self.rank_weight = int(capacity), int(dim), float(rank_weight)
        self._clear(torch.empty(0, self.dim), torch.empty(0))

    def _clear(self, x: Tensor, log_r: Tensor) -> None:
        """Hold exactly (x, log_r), oldest first."""
        self._x, self._log_r = x.clone(), log_r.clone()  # slot storage (here slot i holds the i-th oldest)
        self._n, self._head = x.shape[0], x.shape[0] % self.capacity  # head: the next slot to write
        # the ranking (numpy, whose insert and delete run in C): slots by log-reward, best first, equal
        # log-rewards oldest first; and their log-rewards
        self._order = torch.argsort(self._log_r, descending=True, stable=True).numpy()
        self._ranked = self._log_r.numpy()[self._order]
        self._journal: Optional[list] = None  # rows written over since the last boundary(), to undo them
        self._mark = None

    def __len__(self) -> int:
        return self._n

    @property
    def x(self) -> Tensor:
        """The samples, oldest first (n, dim)."""
        return self._chronological(self._x)

    @property
    def log_r(self) -> Tensor:
        """Their log-rewards, oldest first (n,)."""
        return self._chronological(self._log_r)

    def _chronological(self, a: Tensor, n: Optional[int] = None, head: Optional[int] = None) -> Tensor:
        n, head = (self._n, self._head) if n is None else (n, head)
        if n < self.capacity:
            return a[:n]
        return torch.cat([a[head:n], a[:head]])

    def boundary(self) -> Callable[[], dict]:
        """Mark a step boundary of the training loop (:func:`controlsamp.training.fit_loop`): returns a function
        that gives ``state_dict()`` as it is now, valid until the next mark. Until then each ``add`` keeps the rows
        it writes over (O(rows added)), so a step costs no copy of the whole buffer; the state is rebuilt only when
        it is asked for (an interrupted step)."""
        token = object()
        self._journal, self._mark = [], (self._n, self._head, token)

        def state() -> dict:
            if self._mark is None or self._mark[2] is not token:
                raise RuntimeError("this boundary of the replay buffer was replaced by a later one")
            x, log_r = self._x.clone(), self._log_r.clone()
            for slots, old_x, old_r in reversed(self._journal):
                x[slots], log_r[slots] = old_x, old_r
            n, head, _ = self._mark
            return {"x": self._chronological(x, n, head).clone(), "log_r": self._chronological(log_r, n, head).clone()}
        return state

    def _grow(self, need: int) -> None:
        """Make room for ``need`` slots (at most the capacity), keeping the slot indices."""
        size = self._x.shape[0]
        if need <= size:
            return
        size = min(self.capacity, max(need, 2 * size, 1024))
        x, log_r = torch.empty(size, self.dim), torch.empty(size)
        x[:self._n], log_r[:self._n] = self._x[:self._n], self._log_r[:self._n]
        self._x, self._log_r = x, log_r

    def add(self, x: Tensor, log_r: Tensor) -> None:
        ok = (torch.isfinite(log_r) & torch.isfinite(x).all(1)).cpu()  # (the buffer lives on the CPU)
        x, log_r = x.detach().float().cpu()[ok][-self.capacity:], log_r.detach().float().cpu()[ok][-self.capacity:]
        m = x.shape[0]
        if m == 0:
            return
        self._grow(min(self.capacity, self._n + m))
        slots = (self._head + torch.arange(m)) % self.capacity
        n_old = self._n
        if self._journal is not None:  # what these slots held at the boundary
            self._journal.append((slots, self._x[slots].clone(), self._log_r[slots].clone()))
        gone = n_old + m - self.capacity
        if gone > 0:  # the oldest samples are written over: they leave the ranking
            self._unrank(self._log_r[slots[m - gone:]])
        self._x[slots], self._log_r[slots] = x, log_r
        self._n, self._head = min(self.capacity, n_old + m), (self._head + m) % self.capacity
        # merge the new samples, best first, into the ranking, after the kept samples of equal log-reward
        new_rank = torch.argsort(log_r, descending=True, stable=True).numpy()
        new_vals = log_r.numpy()[new_rank]
        at = np.searchsorted(-self._ranked, -new_vals, side="right")
        self._order = np.insert(self._order, at, slots.numpy()[new_rank])
        self._ranked = np.insert(self._ranked, at, new_vals)

    def _unrank(self, values: Tensor) -> None:
        """Remove the oldest samples, whose log-rewards are ``values``, from the ranking. Among equal log-rewards
        the ranking lists the oldest first, and these are the oldest of all, so a value met c times removes the
        first c places of its run: found by binary search, with no search for slots."""
        v = -np.sort(-values.numpy())
        first_of_run = np.searchsorted(-self._ranked, -v, side="left")
        within = np.arange(v.shape[0]) - np.searchsorted(-v, -v, side="left")
        places = first_of_run + within
        self._order, self._ranked = np.delete(self._order, places), np.delete(self._ranked, places)

    def sample(self, n: int, generator=None) -> Tuple[Tensor, Tensor]:
        if self._n == 0:
            raise ValueError("the replay buffer is empty")
        N = self._n
        weights = 1.0 / (self.rank_weight * N + torch.arange(N, dtype=torch.float32))
        ranks = torch.multinomial(weights, n, replacement=True, generator=generator)
        idx = torch.from_numpy(self._order[ranks.numpy()])
        return self._x[idx], self._log_r[idx]

    def state_dict(self) -> dict:
        return {"x": self.x.clone(), "log_r": self.log_r.clone()}

    def load_state_dict(self, state: dict) -> None:
        self._clear(state["x"], state["log_r"])


def local_search(log_density: Callable[[Tensor], Tuple[Tensor, Tensor]], x: Tensor, n_steps: int,
                 step_size: float, generator=None, target_accept: float = 0.574,
                 adapt_rate: float = 0.05, burn_in: Optional[int] = None) -> Tuple[Tensor, Tensor, float]:
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
        burn_in: None (default): return the chains' final states. An integer b in [0, n_steps): return the
            chains' states after each of the steps b + 1, ..., n_steps, ``n (n_steps - b)`` rows in step order
            (a rejected move repeats the state it stayed in). Sendera et al. 2024 run 200 steps with a burn-in
            of 100 and keep the accepted moves after it (their ``langevin.py``).

    Returns (x, log pi~(x), the adapted step).
    """
    if burn_in is not None and not 0 <= burn_in < n_steps:
        raise ValueError(f"burn_in must be None or an integer in [0, n_steps) = [0, {n_steps}); got {burn_in}")
    state = mala.init(x, log_density)
    kept_x, kept_log_prob = [], []
    for i in range(n_steps):
        state, info = mala.step(state, log_density, step_size, generator)
        step_size = mala.adapt_step(step_size, info.acceptance_rate, target_accept, adapt_rate)
        if burn_in is not None and i >= burn_in:
            kept_x.append(state.x)
            kept_log_prob.append(state.log_prob)
    if burn_in is None:
        return state.x, state.log_prob, step_size
    return torch.cat(kept_x), torch.cat(kept_log_prob), step_size
