r"""The Metropolis-adjusted Langevin algorithm as pure init / step kernels, batched over chains.

MALA (Roberts & Tweedie 1996, "Exponential convergence of Langevin distributions and their discrete
approximations", Bernoulli 2(4)) proposes from the Euler step of the (preconditioned) Langevin
diffusion :math:`dX = P\nabla\log\pi(X)\,dt + \sqrt2 P^{1/2}dW`,

.. math:: y = x + \epsilon P\nabla\log\tilde\pi(x) + \sqrt{2\epsilon}\,P^{1/2}\xi,\qquad
          q(y \mid x) = \mathcal N\big(y;\ x + \epsilon P\nabla\log\tilde\pi(x),\ 2\epsilon P\big),

and accepts with probability :math:`\min\{1, \tilde\pi(y) q(x\mid y) / (\tilde\pi(x) q(y\mid x))\}`, so
:math:`\pi` is invariant for any step :math:`\epsilon > 0` and any fixed SPD :math:`P`
(:mod:`.proposal`). The step may be a scalar or one per chain, shape (n,) or (n, 1);
:func:`adapt_step` moves it toward a target acceptance rate (0.574 is optimal in high dimension,
Roberts & Rosenthal 1998). Adapt during warm-up only: an adapted kernel is invariant only once frozen.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple, Union

import torch

from .proposal import LangevinState, LogDensity, Preconditioner, init, log_accept_ratio, propose

Tensor = torch.Tensor
MALAState = LangevinState

__all__ = ["MALAState", "MALAInfo", "init", "step", "adapt_step"]


class MALAInfo(NamedTuple):
    r"""What one MALA transition reports, per chain (blackjax style).

    Attributes:
        acceptance_rate: the Metropolis–Hastings acceptance probability
            :math:`\alpha = \min\{1, \tilde\pi(y)q(x\mid y) / (\tilde\pi(x)q(y\mid x))\}`, shape (n,);
            :func:`adapt_step` and :func:`controlsamp.langevin.diagnostics.acceptance_rate` take it.
        is_accepted: whether the chain moved to its proposal :math:`y` (:math:`u < \alpha`), bool (n,).
        proposal_log_ratio: :math:`\log[\tilde\pi(y)q(x\mid y)] - \log[\tilde\pi(x)q(y\mid x)]`, shape (n,)
            (:math:`-\infty` for a NaN ratio), before the clipping at 0.
    """
    acceptance_rate: Tensor
    is_accepted: Tensor
    proposal_log_ratio: Tensor


def step(state: LangevinState, log_density: LogDensity, step_size: Union[float, Tensor],
         generator=None, precond: Optional[Preconditioner] = None) -> Tuple[LangevinState, MALAInfo]:
    r"""One MALA transition for every chain: propose :math:`y` (:func:`.proposal.propose`), accept it
    when :math:`u < \alpha` with :math:`u \sim U[0, 1)` drawn from ``generator`` after the proposal noise.

    Returns the new state and a :class:`MALAInfo`.
    """
    y = propose(state, log_density, step_size, precond, generator)
    log_alpha = log_accept_ratio(state, y, step_size, precond)
    accept_prob = torch.exp(torch.clamp(log_alpha, max=0.0))
    x = state.x
    u = torch.rand(accept_prob.shape, generator=generator, device=x.device, dtype=x.dtype)
    acc = u < accept_prob
    keep = acc.unsqueeze(-1)
    new = LangevinState(torch.where(keep, y.x, x), torch.where(acc, y.log_prob, state.log_prob),
                        torch.where(keep, y.score, state.score))
    return new, MALAInfo(accept_prob, acc, log_alpha)


def adapt_step(step_size: Union[float, Tensor], accept_prob: Tensor, target: float = 0.574,
               rate: float = 0.05) -> Union[float, Tensor]:
    r"""Robbins–Monro update on :math:`\log\epsilon`: up when the acceptance exceeds ``target``, down otherwise,

    .. math:: \log\epsilon \leftarrow \log\epsilon + \mathrm{rate}\,(\alpha - \mathrm{target}),

    with :math:`\alpha` a kernel's ``info.acceptance_rate`` (:class:`MALAInfo`, or ULA's would-be MALA
    acceptance). A scalar step follows the mean acceptance over chains; a per-chain step (a tensor) follows each
    chain's own acceptance probability.
    """
    if isinstance(step_size, Tensor) and step_size.numel() > 1:
        return step_size * torch.exp(rate * (accept_prob.reshape(step_size.shape).to(step_size.dtype) - target))
    return step_size * math.exp(rate * (float(accept_prob.mean()) - target))
