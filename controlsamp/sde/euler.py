"""A fixed-step Euler–Maruyama integrator that keeps the whole path and its Brownian increments."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

Tensor = torch.Tensor


def euler_maruyama(drift: Callable[[float, Tensor], Tensor], sigma: Tensor, x0: Tensor, T: float, steps: int,
                   generator: Optional[torch.Generator] = None, noise: Optional[Tensor] = None
                   ) -> Tuple[Tensor, Tensor]:
    r"""Euler–Maruyama for dX = b(t, X) dt + sigma dW with additive noise (strong order 1 for additive
    noise, weak order 1; Kloeden & Platen 1992, ch. 10):

    .. math:: X_{i+1} = X_i + b(t_i, X_i)\,h + \sigma\,\Delta W_i,\qquad \Delta W_i \sim N(0, h I),\ h = T/K.

    Args:
        drift: b(t, x) -> (n, d), called with a float t.
        sigma: (d, k) matrix.
        x0: (n, d) initial states.
        noise: optional Brownian increments (n, K, k) to reuse (same noise, same path); otherwise drawn
            from ``generator``.
    Returns:
        xs (n, K + 1, d) and the increments dW (n, K, k).
    """
    n, d = x0.shape
    k = sigma.shape[1]
    h = T / steps
    sig = sigma.to(device=x0.device, dtype=x0.dtype)
    if noise is None:
        noise = math.sqrt(h) * torch.randn(n, steps, k, generator=generator, device=x0.device, dtype=x0.dtype)
    elif noise.shape != (n, steps, k):
        raise ValueError(f"noise must have shape ({n}, {steps}, {k}); got {tuple(noise.shape)}")
    xs = [x0]
    x = x0
    for i in range(steps):
        x = x + drift(i * h, x) * h + noise[:, i] @ sig.T
        xs.append(x)
    return torch.stack(xs, dim=1), noise
