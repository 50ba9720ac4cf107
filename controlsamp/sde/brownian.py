"""A Brownian motion stored as its increments on a uniform grid, for torchsde solvers with a fixed step."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torchsde


class GridBrownian(torchsde.BaseBrownian):
    r"""W on the grid t_i = i h, i = 0..K, h = T / K, from fixed increments: ``bm(ta, tb) = W(tb) - W(ta)``.

    A fixed-step torchsde solver (Euler, reversible Heun) and its adjoint only query grid times, where this
    is exact; it is much cheaper than ``BrownianInterval`` for 10^3+ paths, and the path is a function of
    the seed alone. Querying a time off the grid raises a ValueError (use ``BrownianInterval`` for
    adaptive or off-grid solvers).
    """

    def __init__(self, increments: torch.Tensor, T: float):
        super().__init__()
        self.K = increments.shape[0]
        self.h = float(T) / self.K
        self.W = torch.cat([torch.zeros_like(increments[:1]), increments.cumsum(0)])

    @classmethod
    def sample(cls, T: float, steps: int, size: Sequence[int], seed: int, dtype=torch.float32, device=None,
               generator: Optional[torch.Generator] = None) -> "GridBrownian":
        """Increments N(0, h I) of shape ``(steps, *size)`` drawn from ``generator`` or from ``seed``."""
        gen = generator if generator is not None else torch.Generator(device=device or "cpu").manual_seed(int(seed))
        dW = math.sqrt(T / steps) * torch.randn(steps, *size, generator=gen, dtype=dtype, device=device)
        return cls(dW, T)

    def _index(self, t) -> int:
        x = float(t) / self.h
        k = round(x)
        if abs(x - k) > 1e-4 or not 0 <= k <= self.K:
            raise ValueError(f"GridBrownian was queried at t = {float(t)}, off its grid of step {self.h}")
        return k

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_U or return_A:
            raise ValueError("GridBrownian answers increments bm(ta, tb) only (no Levy area)")
        return self.W[self._index(tb)] - self.W[self._index(ta)]

    def __repr__(self) -> str:
        return f"GridBrownian(h={self.h}, steps={self.K}, size={tuple(self.W.shape[1:])})"

    dtype = property(lambda self: self.W.dtype)
    device = property(lambda self: self.W.device)
    shape = property(lambda self: self.W.shape[1:])
    levy_area_approximation = property(lambda self: "none")
