"""Exact sampling of a linear reference process pinned at both ends (its bridge) on a time grid.

Both the Gaussian Schrödinger bridge and the Schrödinger–Föllmer process are mixtures of reference
bridges over their endpoint laws, so path sampling reduces to this one routine.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._linalg import sym_sqrt, symmetrize
from .._validate import as_tensor


def _as_grid(ts, T: float) -> torch.Tensor:
    grid = as_tensor(ts, "ts").reshape(-1)  # numeric, finite
    if grid.numel() < 1:
        raise ValueError("ts must hold at least one time")
    if (grid < 0).any() or (grid > T).any():
        raise ValueError(f"ts must lie in [0, T] = [0, {T}]")
    if (grid[1:] <= grid[:-1]).any():
        raise ValueError("ts must be strictly increasing")
    return grid


def sample_reference_bridge(reference, ts, x0: torch.Tensor, xT: torch.Tensor,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""Paths of the reference bridge from x0 at time 0 to xT at time T, at the times ``ts``.

    Sequentially, X_{k+1} | X_k = x, X_T = y is Gaussian (the reference is Markov and linear):
    with X_{k+1} | x ~ N(Phi_1 x + c_1, Q_1) and X_T | X_{k+1} = z ~ N(Phi_2 z + c_2, Q_2),

    .. math:: \mathbb{E} = m + Q_1\Phi_2^\top K^{-1}(y - \Phi_2 m - c_2),\quad
       \mathrm{Cov} = Q_1 - Q_1\Phi_2^\top K^{-1}\Phi_2 Q_1,\quad K = \Phi_2 Q_1\Phi_2^\top + Q_2,

    where m = Phi_1 x + c_1. Returns (n, len(ts), dim) in float64.
    """
    T = float(reference.T)
    grid = _as_grid(ts, T)
    x = x0.to(torch.float64)
    y = xT.to(torch.float64)
    n, d = x.shape
    out = []
    t_prev = 0.0
    for t in grid.tolist():
        if t > t_prev:
            P1, c1, Q1 = reference.transition(t_prev, t)
            P2, c2, Q2 = reference.transition(t, T)
            m = x @ P1.T + c1
            K = symmetrize(P2 @ Q1 @ P2.T + Q2)
            gain = torch.linalg.lstsq(K, P2 @ Q1).solution.T  # Q1 P2^T K^{-1}
            mean = m + (y - m @ P2.T - c2) @ gain.T
            cov = symmetrize(Q1 - gain @ P2 @ Q1)
            z = torch.randn(n, d, dtype=torch.float64, generator=generator)
            x = mean + z @ sym_sqrt(cov).T
            t_prev = t
        out.append(x)
    return torch.stack(out, dim=1)


def isotropic_bridge_point(phi0, q0, phiT, qT, x0: torch.Tensor, xT: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r"""X_t given X_0 = x0 and X_T = xT for an isotropic linear reference with kernels N(phi0 x, q0 I) from
    0 to t and N(phiT x, qT I) from t to T (scalars or (n, 1) columns, one time per row):

    .. math:: \mathbb E = \phi_0 x_0 + \frac{q_0\phi_T}{\phi_T^2 q_0 + q_T}(x_T - \phi_T\phi_0 x_0),\qquad
       \mathrm{Var} = q_0 - \frac{(q_0\phi_T)^2}{\phi_T^2 q_0 + q_T},

    returned as mean + sqrt(Var) * noise (``noise`` standard normal, the shape of x0)."""
    gain = q0 * phiT / (phiT ** 2 * q0 + qT)
    mean = phi0 * x0 + gain * (xT - phiT * phi0 * x0)
    var = q0 - gain * phiT * q0
    var = var.clamp_min(0.0) if isinstance(var, torch.Tensor) else max(var, 0.0)
    return mean + var ** 0.5 * noise
