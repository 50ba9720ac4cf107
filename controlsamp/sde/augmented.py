r"""The one torchsde wrapper: a controlled SDE augmented with its running cost, for the stochastic adjoint.

For a control problem (:class:`controlsamp.ControlProblem`, of which the samplers' problem is a case)

.. math:: dX = \big(f(t, X) + B(t) u\big)\,dt + \sigma(t)\,dW,\qquad
          dc = \big(q(t, X) + u^\top R u\big)\,dt\ \big[+\ \rho\,u_{sg(\theta)}^\top dW\big],

the state (X, c) is integrated by torchsde, and :math:`c_T + g(X_T)` is the path cost whose mean is J(u).
Its gradient in the control's parameters comes from the stochastic adjoint (Li, Wong, Chen & Duvenaud 2020,
"Scalable gradients for stochastic differential equations") or from backpropagation through the solve.

The bracket is the "sticking the landing" term (Roeder, Wu & Duvenaud 2017; for path measures Xu et al.
2021, Vargas et al. 2023), offered for relative-entropy problems (B = sigma, R = (rho/2) I): the Itô
integral of the control with its parameters held fixed has mean zero, so the loss is unchanged in
expectation, and its pathwise gradient cancels the part of the relative-entropy gradient whose variance
does not vanish at the optimum. The noise is then "general" (the cost has its own diffusion row).

The Brownian path is a :class:`GridBrownian` on the problem's grid seeded by an entropy, so the same
entropy gives the same path in the forward and adjoint passes.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torchsde
from torch import nn

from .brownian import GridBrownian
from .schemes import Scheme, get_scheme

Tensor = torch.Tensor
Control = Callable[[Tensor, Tensor], Tensor]


class AugmentedSDE(nn.Module):
    """(X, c) of the module docstring as a torchsde module (Itô for Euler, Stratonovich for reversible Heun;
    with additive noise the two coincide)."""

    def __init__(self, problem, control: Control, sde_type: str = "ito", stl_control: Optional[Control] = None,
                 device=None, dtype=torch.float32):
        super().__init__()
        self.problem, self.control, self.sde_type, self.stl_control = problem, control, sde_type, stl_control
        self.noise_type = "general" if stl_control is not None else "additive"
        self.d, self.k = problem.dim, problem.noise_dim
        self.device, self.dtype = device, dtype
        self.R = problem.R.to(device=device, dtype=dtype)
        # constant coefficients (a plain ControlProblem) are converted once; the samplers' vary by step
        self._B = None if problem.time_varying else problem.control_matrix_at(0.0).to(device=device, dtype=dtype)
        self._S = None if problem.time_varying else problem.sigma_at(0.0).to(device=device, dtype=dtype)
        self.rho = problem.kl_scale() if stl_control is not None else None
        if stl_control is not None and self.rho is None:
            raise ValueError("stl=True needs a relative-entropy problem (control_matrix = sigma, control_cost = "
                             "(rho/2) I): the sticking-the-landing term is the Itô integral rho u.dW of that case")

    def f(self, t, y):
        x = y[:, : self.d]
        u = self.control(t, x)
        B = self._B if self._B is not None else self.problem.control_matrix_at(t).to(device=x.device, dtype=x.dtype)
        dx = self.problem.f(t, x) + u @ B.T
        dc = self.problem.q(t, x) + ((u @ self.R) * u).sum(1)
        return torch.cat([dx, dc.unsqueeze(1)], 1)

    def g(self, t, y):
        S = self._S if self._S is not None else self.problem.sigma_at(t).to(device=y.device, dtype=y.dtype)
        G = torch.cat([S, S.new_zeros(1, self.k)], 0).expand(y.shape[0], -1, -1)
        if self.stl_control is None:
            return G
        x = y[:, : self.d]
        u = self.rho * self.stl_control(t, x)
        return torch.cat([G[:, : self.d], u.unsqueeze(1)], 1)


def path_costs(problem, control: Control, x0: Tensor, entropy: int, params: Sequence[Tensor],
               scheme="euler", adjoint: bool = True, stl_control: Optional[Control] = None,
               bm: Optional[GridBrownian] = None) -> Tensor:
    r"""Per-path costs :math:`c_T + g(X_T)`, (n,), differentiable in ``params`` (the control's parameters),
    by torchsde's solver for ``scheme`` on the problem's grid (``problem.steps`` steps of ``problem.dt``).

    ``scheme``: ``"euler"`` or ``"reversible_heun"`` (its adjoint rebuilds the forward states algebraically,
    which needs float64). The exponential integrator has no torchsde solver: a ValueError says so. ``bm``: a
    Brownian path to use instead of the one seeded by ``entropy`` (e.g. given increments, to compare paths)."""
    scheme: Scheme = get_scheme(scheme)
    if scheme.torchsde_method is None:
        raise ValueError(f"scheme {scheme.name!r} is not a torchsde solver, so the stochastic adjoint cannot "
                         "differentiate its path law: use scheme='euler' or adjoint=False (backpropagation "
                         "through the scheme's own rollout)")
    if scheme.name == "reversible_heun" and adjoint and x0.dtype != torch.float64:
        raise ValueError("scheme 'reversible_heun' with the adjoint needs dtype=torch.float64: its backward pass "
                         "rebuilds the states algebraically, and in float32 the round-off it amplifies corrupts "
                         "the gradient (relative error of order 1 measured on a 5-d LQR)")
    sde = AugmentedSDE(problem, control, scheme.sde_type, stl_control, x0.device, x0.dtype)
    y0 = torch.cat([x0, x0.new_zeros(x0.shape[0], 1)], 1)
    ts = torch.tensor([0.0, problem.T], device=x0.device, dtype=x0.dtype)
    if bm is None:
        bm = GridBrownian.seeded(problem.T, problem.steps, (x0.shape[0], problem.noise_dim), seed=entropy,
                                 dtype=x0.dtype, device=x0.device)
    if adjoint:
        ys = torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, dt=problem.dt, method=scheme.torchsde_method,
                                     adjoint_method=scheme.torchsde_adjoint_method, adjoint_params=tuple(params))
    else:
        ys = torchsde.sdeint(sde, y0, ts, bm=bm, dt=problem.dt, method=scheme.torchsde_method)
    yT = ys[-1]
    return yT[:, -1] + problem.g(yT[:, : problem.dim])
