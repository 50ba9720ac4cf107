r"""The relative entropy / expected cost, minimised by differentiating through the paths.

For a control problem, :math:`J(u) = \mathbb E[\int_0^T (q + u^\top R u)\,dt + g(X_T)]`; for a sampling problem
(R = I/2, q = 0, :math:`g = \log p^{ref}_K - \log\tilde\pi`) this is :math:`\mathbb E_{P^u}[-\log w] =
\mathrm{KL}(P^u \,\|\, P^*) - \log Z`, the objective of the path integral sampler (Zhang & Chen 2022) and of
DDS (Vargas, Grathwohl & Doucet 2023). Two gradients:

* ``adjoint=None`` (default): the adjoint where torchsde takes the scheme's steps, else backpropagation.
* ``adjoint=True``: torchsde's stochastic adjoint (Li, Wong, Chen & Duvenaud 2020) through the augmented SDE
  of :mod:`controlsamp.sde.augmented` (memory constant in the number of steps). torchsde's Euler takes the
  Euler scheme's steps, so on a sampling problem it differentiates that scheme's path law; the exponential
  integrator has no torchsde solver and is refused with an error that says so.
* ``adjoint=False``: backpropagation. On a sampling problem through the scheme's own reparametrised rollout
  (:meth:`~controlsamp.control.sampling.SamplingProblem.reparametrised_log_weights`): the exact gradient of
  E[-log w] for the very path law ``sample()`` weights, for every scheme. On a general control problem
  through torchsde's ``sdeint`` with ``scheme`` ("euler" or "reversible_heun").

``stl=True`` adds the "sticking the landing" estimator (Roeder, Wu & Duvenaud 2017; Xu et al. 2021; Vargas et
al. 2023): the same loss in expectation, a gradient whose variance vanishes at the optimum. On-policy only.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...sde import path_costs
from ..sampling import SamplingProblem
from .base import Batch, Objective


class RelativeEntropy(Objective):
    name = "relative_entropy"
    aliases = ("kl",)
    off_policy = False

    def __init__(self, adjoint: Optional[bool] = None, stl: bool = False, scheme: str = "euler"):
        super().__init__()
        self.adjoint = None if adjoint is None else bool(adjoint)
        self.stl, self.scheme = bool(stl), scheme

    def _scheme(self, problem):
        return problem.reference.scheme if isinstance(problem, SamplingProblem) else self.scheme

    def _use_adjoint(self, problem) -> bool:
        """``adjoint=None`` (the default): the adjoint where torchsde takes the scheme's own steps (Euler,
        reversible Heun), else backpropagation through the scheme's rollout (exact for the exponential
        integrator)."""
        if self.adjoint is not None:
            return self.adjoint
        return not isinstance(problem, SamplingProblem) or problem.reference.scheme.torchsde_method is not None

    def check(self, problem) -> None:
        if self.stl and problem.kl_scale() is None:
            raise ValueError("stl=True needs a relative-entropy problem (control_matrix = sigma, control_cost = "
                             "(rho/2) I): the sticking-the-landing term is the Itô integral of that case")
        if (isinstance(problem, SamplingProblem) and self._use_adjoint(problem)
                and problem.reference.scheme.torchsde_method is None):
            raise ValueError(f"the relative entropy through torchsde's adjoint differentiates the Euler scheme, but "
                             f"this sampler's weights use the {problem.reference.scheme.name!r} scheme; use "
                             "adjoint=False (backpropagation through that scheme's rollout, exact for it) or "
                             "scheme='euler'")

    def forward(self, problem, policy, batch: Batch) -> Tuple[torch.Tensor, dict]:
        gen = batch.streams.device
        adjoint = self._use_adjoint(problem)
        if isinstance(problem, SamplingProblem) and not adjoint:
            log_w = problem.reparametrised_log_weights(policy, batch.n, gen, self.stl, batch.device, batch.dtype)
            return -log_w.mean(), {"log_w": log_w.detach()}
        x0 = problem.sample_x0(batch.n, gen, device=batch.device, dtype=batch.dtype)
        stl_control = problem.control_fn(policy, frozen=True) if self.stl else None
        cost = path_costs(problem, problem.control_fn(policy), x0, batch.entropy, list(policy.parameters()),
                          self._scheme(problem), adjoint, stl_control)
        if isinstance(problem, SamplingProblem):
            return cost.double().mean(), {"log_w": -cost.detach().double()}
        return cost.mean(), {"cost": cost.detach()}
