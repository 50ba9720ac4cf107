"""A Brownian motion on a uniform grid, for torchsde solvers with a fixed step."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torchsde

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, step) pairs over generator seeds


class GridBrownian(torchsde.BaseBrownian):
    r"""W on the grid t_i = i h, i = 0..K, h = T / K: ``bm(ta, tb) = W(tb) - W(ta)`` for grid times.

    Two modes: from stored increments (``GridBrownian(increments, T)``, shape (K, *size)), or seeded
    (``GridBrownian.seeded(T, K, size, seed)``), where the increment of step i is drawn afresh at every
    query from a generator seeded by (seed, i). The seeded path is a function of the seed alone and costs
    no memory, so a solver's adjoint pass keeps a flat memory profile. Fixed-step torchsde solvers (Euler,
    reversible Heun) and their adjoints only query grid times; a query more than ``tolerance`` steps (1%)
    off the grid raises a ValueError (use ``BrownianInterval`` for adaptive solvers).
    """

    def __init__(self, increments: Optional[torch.Tensor], T: float, steps: Optional[int] = None,
                 size: Optional[Sequence[int]] = None, seed: int = 0, dtype=None, device=None,
                 tolerance: float = 1e-2):
        super().__init__()
        self.tolerance = float(tolerance)
        if increments is not None:
            self.K = increments.shape[0]
            self.W = torch.cat([torch.zeros_like(increments[:1]), increments.cumsum(0)])
            self._size, self._dtype, self._device = tuple(increments.shape[1:]), increments.dtype, increments.device
        else:
            self.K, self.W = int(steps), None
            self._size, self._dtype = tuple(size), dtype or torch.float32
            self._device = torch.device(device or "cpu")
        self.h = float(T) / self.K
        self.seed = int(seed)

    @classmethod
    def seeded(cls, T: float, steps: int, size: Sequence[int], seed: int, dtype=torch.float32,
               device=None) -> "GridBrownian":
        return cls(None, T, steps, size, seed, dtype, device)

    def _increment(self, i: int) -> torch.Tensor:
        gen = torch.Generator(device=self._device).manual_seed((self.seed * _MIX + i) % (2 ** 63))
        return math.sqrt(self.h) * torch.randn(self._size, generator=gen, dtype=self._dtype, device=self._device)

    def _index(self, t) -> int:
        x = float(t) / self.h
        k = round(x)
        if abs(x - k) > self.tolerance or not 0 <= k <= self.K:
            raise ValueError(f"GridBrownian was queried at t = {float(t)}, off its grid of step {self.h}")
        return k

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_U or return_A:
            raise ValueError("GridBrownian answers increments bm(ta, tb) only (no Levy area)")
        a, b = self._index(ta), self._index(tb)
        if self.W is not None:
            return self.W[b] - self.W[a]
        lo, hi = min(a, b), max(a, b)
        total = torch.zeros(self._size, dtype=self._dtype, device=self._device)
        for i in range(lo, hi):
            total = total + self._increment(i)
        return total if b >= a else -total

    def __repr__(self) -> str:
        return f"GridBrownian(h={self.h}, steps={self.K}, size={self._size})"

    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._device)
    shape = property(lambda self: torch.Size(self._size))
    levy_area_approximation = property(lambda self: "none")
