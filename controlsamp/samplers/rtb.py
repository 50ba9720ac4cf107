r"""Relative trajectory balance (Venkatraman et al. 2024, "Amortizing intractable inference in diffusion models for
vision, language, and control", NeurIPS): fine-tune a diffusion prior into the posterior :math:`p(x)\,r(x)/Z`.

The prior is a score source of :mod:`controlsamp.generative` (a trained :class:`~controlsamp.generative.DiffusionModel`
or the exact :class:`~controlsamp.generative.ExactScore`) sampled by its reverse-time SDE on a grid: the chain

.. math:: x_{i+1} = a_i x_i + b_i\,u^0_i(x_i) + \sqrt{v_i}\,\xi_i, \qquad u^0_i = g_i\,\nabla\log p_{T - s_i}(x_i),
          \qquad x_0 \sim p_T,

of :class:`~controlsamp.processes.Reversed` under the Euler or exponential scheme
(:func:`controlsamp.generative.reverse_sde`). The posterior policy adds a learned control,
:math:`x_{i+1} = a_i x_i + b_i (u^0_i + u_\theta(s_i, x_i)) + \sqrt{v_i}\xi_i`, starting at zero (the prior). The
target path law is the prior's times :math:`r(x_K)/Z`, so a path's log-weight is the discrete Girsanov formula
against the *prior chain*,

.. math:: \log w = \log r(x_K) + \sum_i \big[\log\mathcal N(x_{i+1}; m^0_i, v_i) - \log\mathcal N(x_{i+1}; m^\theta_i, v_i)\big],

and relative trajectory balance is trajectory balance on these weights,
:math:`\mathcal L = (\log Z_\theta - \log w)^2` (``loss="tb"``; ``"vargrad"`` replaces :math:`\log Z_\theta` by the
batch mean, ``"lv"`` is the log-variance loss), with every off-policy tool of the samplers (exploration noise, a
replay buffer whose backward paths are the reference's noising process, local search). ``langevin=True`` adds the
learned-gain term in :math:`\nabla\log r` (the Langevin-style parametrisation). ``E[w] = Z = E_{prior}[r]`` holds
exactly for the discrete chain, so ``log_Z`` estimates it without bias in Z.

This is the package's sampler with a different base chain (:class:`PosteriorProblem`): the same policy, objectives,
training loop and checkpoints.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .._validate import check_dim
from ..control import SamplingProblem
from ..control.objectives.base import LogWeightObjective
from ..control.problem import Paths
from ..processes import CLD, Reversed
from ..sde import DiscretisedReference, rollout
from ..targets import Target
from .base import DiffusionSampler

Tensor = torch.Tensor

__all__ = ["RTB", "PosteriorProblem"]


class PosteriorProblem(SamplingProblem):
    """A sampling problem whose base chain is a diffusion prior (see the module docstring): ``prior`` a score source
    on an isotropic reference, ``reward`` the Target of log r, ``reference`` the grid of the prior's reverse SDE."""

    def __init__(self, reward: Target, reference: DiscretisedReference, prior, score_clip: float = 1e2):
        super().__init__(reward, reference, score_clip)
        self.prior = prior
        T, g, t = prior.T, reference.floats("g"), reference.t
        self._times = [T - t[i] for i in range(reference.K)]

        def base(i: int, x: Tensor) -> Tensor:
            with torch.no_grad():
                return g[i] * prior.score(self._times[i], x).to(x.dtype)
        self.base_control = base

    def terminal_reference_log_prob(self, x: Tensor) -> Tensor:
        """Zero: the model and the prior start from the same law, and the target is the prior times r."""
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)

    def sample_x0(self, n: int, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return self.prior.prior_sample(n, generator=generator).to(device=device, dtype=dtype)

    def backward_paths(self, xK: Tensor, log_reward: Tensor, generator: Optional[torch.Generator] = None) -> Paths:
        """Behaviour paths ending at given samples: the reference's noising process run from them (exact kernels
        between the grid times), read backwards; any path law serves an objective of log w."""
        process, T, t = self.prior.reference, self.prior.T, self.reference.t
        times = [T - s for s in t]  # original times of the grid points, decreasing from T to t_min
        K = self.reference.K
        phis, stds = [], []
        for i in range(K):  # step i of the backward rollout goes from grid point i + 1 to i: time up
            phi, q = process.kernel(times[i + 1], times[i])
            phis.append(phi)
            stds.append(math.sqrt(q))
        with torch.no_grad():
            xs, _, _ = rollout(lambda i, x: phis[i] * x, lambda i, z: stds[i] * z, xK, K, generator=generator,
                               backward=True)
        return Paths(xs, log_reward=log_reward)

    def lean_adjoint(self, paths: Paths) -> Tensor:
        raise ValueError("adjoint matching needs the linear reference chain; a posterior under a diffusion prior is "
                         "trained with an objective of log w: loss='tb', 'vargrad' or 'lv'")


class RTB(DiffusionSampler):
    r"""``RTB(prior, log_reward, steps=100, scheme="exponential", langevin=False, **options)``: the posterior
    :math:`p_{prior}(x)\,r(x)/Z` of a diffusion prior (see the module docstring).

    Args:
        prior: a score source of :mod:`controlsamp.generative` on an isotropic reference (VP, VE, OU, ...), e.g. a
            trained ``DiffusionModel`` or ``ExactScore(NoisedMixture(...))``. Its ``t_min`` is where the chain ends.
        log_reward: log r as a :class:`~controlsamp.targets.Target` (its ``log_prob``) or a callable x -> (n,).
        steps, scheme: the grid of the prior's reverse SDE (``"euler"`` or ``"exponential"``).
        langevin: add a learned time gain times the clipped :math:`\nabla\log r` to the control.
        options: of :class:`~controlsamp.samplers.base.DiffusionSampler` (hidden, depth, n_freq, score_clip, seed,
            device, dtype).
    """

    name = "rtb"
    default_loss = "tb"

    def __init__(self, prior, log_reward, steps: int = 100, scheme: str = "exponential", langevin: bool = False,
                 **kwargs):
        if not (hasattr(prior, "score") and hasattr(prior, "reference") and hasattr(prior, "prior_sample")):
            raise ValueError("prior must be a score source of controlsamp.generative (a DiffusionModel or "
                             f"ExactScore); got {type(prior).__name__}")
        if isinstance(prior.reference, CLD):
            raise ValueError("RTB needs a prior on an isotropic reference (VP, VE, OU, Brownian): a CLD prior's "
                             "state carries a velocity the reward does not see")
        dim = int(prior.data_dim)
        if isinstance(log_reward, Target):
            reward = log_reward
        elif callable(log_reward):
            reward = Target.from_log_prob(log_reward, dim, name="log_reward")
        else:
            raise ValueError(f"log_reward must be a Target or a callable x -> (n,); got {type(log_reward).__name__}")
        if reward.dim != dim:
            raise ValueError(f"log_reward has dimension {reward.dim} but the prior {dim}: they must match")
        self.prior = prior
        reference = DiscretisedReference(Reversed(prior.reference, t_min=prior.t_min), check_dim(steps, "steps"),
                                         scheme=scheme)
        super().__init__(reward, reference, langevin=langevin, **kwargs)
        self.config.update(sampler="rtb", prior=repr(prior.reference), prior_t_min=float(prior.t_min),
                           scheme=repr(reference.scheme))

    def _make_problem(self, target: Target, reference: DiscretisedReference, score_clip: float) -> SamplingProblem:
        return PosteriorProblem(target, reference, self.prior, score_clip)

    def make_objective(self, loss, **options):
        objective = super().make_objective(loss, **options)
        if not isinstance(objective, LogWeightObjective):
            raise ValueError(f"RTB trains with an objective of the path log-weights against the prior chain: loss="
                             f"'tb' (relative trajectory balance), 'vargrad' or 'lv'; got {loss!r}")
        return objective

    def drift(self, t: float, x) -> Tensor:
        r"""The posterior's drift in the sampler's time s: :math:`k(s) x + g(s) (u^0 + u_\theta)` with
        :math:`u^0 = g\,\nabla\log p_{T - s}`, (n, d)."""
        out = super().drift(t, x)
        g = self.reference.g_at(float(t))
        with torch.no_grad():
            score = self.prior.score(self.prior.T - float(t), out.new_tensor(torch.as_tensor(x)))
        return out + g * g * score.to(out.dtype)
