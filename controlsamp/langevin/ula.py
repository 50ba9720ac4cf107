r"""The unadjusted Langevin algorithm (ULA) as pure init / step kernels, batched over chains.

ULA (Roberts & Tweedie 1996; Durmus & Moulines 2017, "Nonasymptotic convergence analysis for the
unadjusted Langevin algorithm", Ann. Appl. Probab.) is the Euler–Maruyama discretisation of the
(preconditioned) Langevin diffusion :math:`dX = P\nabla\log\pi(X)\,dt + \sqrt2 P^{1/2}dW`:

.. math:: x_{k+1} = x_k + \epsilon P\nabla\log\tilde\pi(x_k) + \sqrt{2\epsilon}\,P^{1/2}\xi_k .

There is no accept/reject step, so its invariant law is biased at order :math:`\epsilon`: on
:math:`\mathcal N(0, s)` (with :math:`P = 1`) the invariant variance is :math:`s / (1 - \epsilon/(2s))`
(derived in ``theory/ula.py``). :func:`step` also returns the Metropolis–Hastings acceptance
probability MALA would have had for the same move; it costs nothing extra (the proposal's
log-density is computed with its score) and lets :func:`controlsamp.langevin.mala.adapt_step` tune a
ULA step to a target acceptance rate, which bounds the discretisation error in practice.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .proposal import LangevinState, LogDensity, Preconditioner, init, log_accept_ratio, propose

Tensor = torch.Tensor
ULAState = LangevinState

__all__ = ["ULAState", "init", "step"]


def step(state: LangevinState, log_density: LogDensity, step_size: Union[float, Tensor],
         generator=None, precond: Optional[Preconditioner] = None) -> Tuple[LangevinState, Tensor]:
    """One ULA move for every chain. Returns the new state and MALA's would-be acceptance probabilities (n,)."""
    y = propose(state, log_density, step_size, precond, generator)
    with torch.no_grad():
        accept_prob = torch.exp(torch.clamp(log_accept_ratio(state, y, step_size, precond), max=0.0))
    return y, accept_prob
