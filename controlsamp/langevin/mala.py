r"""The Metropolis-adjusted Langevin algorithm as pure init / step kernels, batched over chains.

MALA (Roberts & Tweedie 1996) proposes from the Euler step of the Langevin diffusion
:math:`dX = \nabla\log\pi(X)\,dt + \sqrt2\,dW`,

.. math:: y = x + \epsilon\,\nabla\log\tilde\pi(x) + \sqrt{2\epsilon}\,\xi,\qquad
          q(y \mid x) = \mathcal N\big(y;\ x + \epsilon\nabla\log\tilde\pi(x),\ 2\epsilon I\big),

and accepts with probability :math:`\min\{1, \tilde\pi(y) q(x\mid y) / (\tilde\pi(x) q(y\mid x))\}`, so
:math:`\pi` is invariant for any step :math:`\epsilon > 0`. The step may be a scalar or one per chain,
shape (n, 1); :func:`adapt_step` moves it toward a target acceptance rate (0.574 is optimal in high
dimension, Roberts & Rosenthal 1998).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Tuple, Union

import torch

Tensor = torch.Tensor
LogDensity = Callable[[Tensor], Tuple[Tensor, Tensor]]  # x -> (log pi~(x) (n,), grad log pi~(x) (n, d))


class MALAState(NamedTuple):
    x: Tensor
    log_prob: Tensor
    score: Tensor


def init(x: Tensor, log_density: LogDensity) -> MALAState:
    """The chain state at ``x``: the position with its log-density and score."""
    lp, sc = log_density(x)
    return MALAState(x, lp, sc)


def step(state: MALAState, log_density: LogDensity, step_size: Union[float, Tensor],
         generator=None) -> Tuple[MALAState, Tensor]:
    """One MALA transition for every chain. Returns the new state and the acceptance probabilities (n,)."""
    x, lp, sc = state
    eps = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    y = x + eps * sc + torch.sqrt(2 * eps) * noise
    lp_y, sc_y = log_density(y)

    def log_q(to, frm, sc_frm):  # log q(to | frm) up to the constant that cancels
        return -((to - frm - eps * sc_frm) ** 2).sum(-1, keepdim=True) / (4 * eps)

    log_alpha = (lp_y - lp) + (log_q(x, y, sc_y) - log_q(y, x, sc)).squeeze(-1)
    log_alpha = torch.nan_to_num(log_alpha, nan=-float("inf"))
    accept_prob = torch.exp(torch.clamp(log_alpha, max=0.0))
    u = torch.rand(accept_prob.shape, generator=generator, device=x.device, dtype=x.dtype)
    acc = u < accept_prob
    keep = acc.unsqueeze(-1)
    new = MALAState(torch.where(keep, y, x), torch.where(acc, lp_y, lp), torch.where(keep, sc_y, sc))
    return new, accept_prob


def adapt_step(step_size: Union[float, Tensor], accept_prob: Tensor, target: float = 0.574,
               rate: float = 0.05) -> Union[float, Tensor]:
    """Robbins–Monro update on log epsilon: up when the mean acceptance exceeds ``target``, down otherwise."""
    return step_size * math.exp(rate * (float(accept_prob.mean()) - target))
