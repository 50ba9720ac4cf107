r"""Relative-entropy / cost minimisation by differentiating through the SDE solver: the stochastic
adjoint method of Li et al. 2020 ("Scalable gradients for SDEs", torchsde ``sdeint_adjoint``), or plain
backpropagation through ``sdeint``.

The running cost is integrated as an extra state c: dc = (q(t, X) + u'Ru) dt, and the loss is the
Monte-Carlo estimate of J(u) = E[c_T + g(X_T)]. Its gradient is exact for the discretised SDE on a fixed
Brownian path (``BrownianInterval`` with an entropy seed). Euler (Itô, strong order 1 for additive noise)
or reversible Heun (Stratonovich, Kidger et al. 2021, with ``adjoint_reversible_heun``, whose backward pass
reconstructs the forward states exactly); with additive noise the Itô and Stratonovich SDEs coincide.
The Brownian path is a :class:`~controlsamp.sde.GridBrownian` on the solver's grid, seeded by the
iteration's entropy.
"""
from __future__ import annotations

import torch
import torchsde
from torch import nn

from ...sde import GridBrownian
from .common import consts

SOLVERS = {"euler": ("ito", "euler"), "reversible_heun": ("stratonovich", "adjoint_reversible_heun")}


class ControlledSDE(nn.Module):
    """The state (X, c) with dX = (f + B u) dt + sigma dW and dc = (q + u'Ru) dt, as a torchsde module."""

    noise_type = "additive"

    def __init__(self, problem, policy, sde_type: str, device, dtype):
        super().__init__()
        self.problem, self.policy, self.sde_type = problem, policy, sde_type
        sigma, self.B, self.R = consts(problem, device, dtype)
        self.d = problem.dim
        self.G = torch.cat([sigma, torch.zeros(1, sigma.shape[1], device=device, dtype=dtype)], 0)

    def f(self, t, y):
        x = y[:, : self.d]
        u = self.policy(t, x)
        dx = self.problem.f(t, x) + u @ self.B.T
        dc = self.problem.q(t, x) + ((u @ self.R) * u).sum(1)
        return torch.cat([dx, dc.unsqueeze(1)], 1)

    def g(self, t, y):
        return self.G.expand(y.shape[0], *self.G.shape)


def brownian(problem, n: int, entropy: int, device, dtype):
    """The Brownian path of one iteration: increments on the solver's grid, a function of ``entropy``."""
    return GridBrownian.seeded(problem.T, problem.steps, (n, problem.noise_dim), seed=entropy, dtype=dtype,
                               device=device)


def cost_through_solver(problem, policy, x0, entropy: int, solver: str = "euler", adjoint: bool = True):
    """Per-path costs c_T + g(X_T), (n,), differentiable in the policy's parameters."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}; got {solver!r}")
    if solver == "reversible_heun" and adjoint and x0.dtype != torch.float64:
        raise ValueError("solver='reversible_heun' with the adjoint needs dtype=torch.float64: its backward pass "
                         "rebuilds the states algebraically, and in float32 the round-off it amplifies corrupts "
                         "the gradient (relative error of order 1 measured on a 5-d LQR)")
    sde_type, adjoint_method = SOLVERS[solver]
    sde = ControlledSDE(problem, policy, sde_type, x0.device, x0.dtype)
    y0 = torch.cat([x0, x0.new_zeros(x0.shape[0], 1)], 1)
    ts = torch.tensor([0.0, problem.T], device=x0.device, dtype=x0.dtype)
    bm = brownian(problem, x0.shape[0], entropy, x0.device, x0.dtype)
    if adjoint:
        ys = torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, dt=problem.dt, method=solver, adjoint_method=adjoint_method,
                                     adjoint_params=tuple(policy.parameters()))
    else:
        ys = torchsde.sdeint(sde, y0, ts, bm=bm, dt=problem.dt, method=solver)
    yT = ys[-1]
    return yT[:, -1] + problem.g(yT[:, : problem.dim])


def loss(problem, policy, x0, generator, entropy: int, solver: str = "euler", adjoint: bool = True):
    """(loss, cost estimate): both the Monte-Carlo mean of the path costs."""
    c = cost_through_solver(problem, policy, x0, entropy, solver, adjoint)
    m = c.mean()
    return m, float(m.detach())
