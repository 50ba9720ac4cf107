r"""The unadjusted Langevin algorithm (ULA) as pure init / step kernels, batched over chains.

ULA (Roberts & Tweedie 1996; Durmus & Moulines 2017, "Nonasymptotic convergence analysis for the
unadjusted Langevin algorithm", Ann. Appl. Probab.) is the Euler–Maruyama discretisation of the
(preconditioned) Langevin diffusion :math:`dX = P\nabla\log\pi(X)\,dt + \sqrt2 P^{1/2}dW`:

.. math:: x_{k+1} = x_k + \epsilon P\nabla\log\tilde\pi(x_k) + \sqrt{2\epsilon}\,P^{1/2}\xi_k .

There is no accept/reject step, so its invariant law is biased at order :math:`\epsilon`: on
:math:`\mathcal N(0, s)` (with :math:`P = 1`) the invariant variance is :math:`s / (1 - \epsilon/(2s))`
(derived in ``theory/ula.py``). :func:`step` also returns, in a :class:`ULAInfo`, the
Metropolis–Hastings acceptance probability MALA would have had for the same move; it costs nothing
extra (the proposal's log-density is computed with its score) and lets
:func:`controlsamp.langevin.mala.adapt_step` tune a ULA step to a target acceptance rate, which bounds
the discretisation error in practice.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch

from .proposal import LangevinState, LogDensity, Preconditioner, init, log_accept_ratio, propose

Tensor = torch.Tensor
ULAState = LangevinState

__all__ = ["ULAState", "ULAInfo", "init", "step"]


class ULAInfo(NamedTuple):
    r"""What one ULA move reports, per chain (blackjax style). ULA always moves to its proposal :math:`y`;
    the fields describe the Metropolis–Hastings test it skipped.

    Attributes:
        acceptance_rate: the acceptance probability MALA would have had for the same move,
            :math:`\min\{1, \tilde\pi(y)q(x\mid y) / (\tilde\pi(x)q(y\mid x))\}`, shape (n,): the field that
            step adaptation (:func:`controlsamp.langevin.mala.adapt_step`) reads from every kernel.
        proposal_log_ratio: the log of that ratio before clipping at 0, shape (n,); its distance from 0
            measures ULA's local discretisation error.
    """
    acceptance_rate: Tensor
    proposal_log_ratio: Tensor


def step(state: LangevinState, log_density: LogDensity, step_size: Union[float, Tensor],
         generator=None, precond: Optional[Preconditioner] = None) -> Tuple[LangevinState, ULAInfo]:
    """One ULA move for every chain. Returns the new state (the proposal) and a :class:`ULAInfo`; it draws
    only the proposal noise from ``generator``."""
    y = propose(state, log_density, step_size, precond, generator)
    with torch.no_grad():
        log_alpha = log_accept_ratio(state, y, step_size, precond)
        accept_prob = torch.exp(torch.clamp(log_alpha, max=0.0))
    return y, ULAInfo(accept_prob, log_alpha)
