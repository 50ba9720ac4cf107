r"""`SamplingProblem`: sampling from an unnormalised density posed as a control problem (docs/architecture.md).

With a discretised isotropic reference (:class:`controlsamp.sde.DiscretisedReference`: a process, a
number of steps and a Gaussian scheme), the controlled chain is

.. math:: x_{i+1} = a_i x_i + b_i\,u(t_i, x_i) + \sqrt{v_i}\,\xi_i,\qquad x_0 \sim \mathcal N(0, v_0 I),

i.e. the control problem :math:`dX = (k X + g u)\,dt + g\,dW` (B = sigma = g I, R = I/2, q = 0) with terminal
cost :math:`g(x) = \log p^{ref}_K(x) - \log\tilde\pi(x)`. The target path law is
:math:`\tilde\pi(x_K)/Z` times the discrete reference's time reversal, and a path's importance weight is the
discrete Girsanov formula

.. math:: \log w = \log\tilde\pi(x_K) - \log p^{ref}_K(x_K)
          + \sum_i \big[\log\mathcal N(x_{i+1}; a_i x_i, v_i) - \log\mathcal N(x_{i+1}; a_i x_i + b_i u_i, v_i)\big],

so :math:`Z = \mathbb E[w]` exactly in discrete time and ELBO = E[log w] <= log Z. Every objective (relative
entropy, log-variance, trajectory balance, VarGrad, adjoint matching, ...) sees these same weights:
:meth:`log_weights` on given paths, :meth:`reparametrised_log_weights` on paths differentiable in the
control (the relative entropy by backpropagation), and through torchsde's Euler scheme (the adjoint) the
same Euler path law (Zhang & Chen 2022, PIS; Vargas et al. 2023, DDS; Richter & Berner 2024).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..sde import (DiscretisedReference, controlled_paths, log_ratio_control_derivative, path_log_ratio,
                   reference_reversal)
from ..targets import Target, TargetEvaluator
from .policies import SamplerControl, frozen as frozen_policy
from .problem import ControlProblem, Paths

Tensor = torch.Tensor


def check_target(target) -> Target:
    """``target`` if it is a :class:`~controlsamp.targets.Target`, else a ValueError that says how to make one."""
    if not isinstance(target, Target):
        raise ValueError(f"target must be a controlsamp.targets.Target; got {type(target).__name__} "
                         "(wrap a function with Target.from_log_prob(fn, dim))")
    return target


class SamplingProblem(ControlProblem):
    """A target, a discretised reference and its scheme, as a :class:`ControlProblem` that knows its discrete
    path law (see the module docstring).

    Args:
        target: a :class:`~controlsamp.targets.Target`.
        reference: a :class:`~controlsamp.sde.DiscretisedReference` of the target's dimension.
        score_clip: the Langevin feature (the target score) is clipped to [-score_clip, score_clip].

    ``target_evals`` counts the energy evaluations (one point's log-density or score, or both in one pass).
    """

    def __init__(self, target: Target, reference: DiscretisedReference, score_clip: float = 1e2):
        check_target(target)
        if not isinstance(reference, DiscretisedReference):
            raise ValueError(f"reference must be a controlsamp.sde.DiscretisedReference; got {type(reference).__name__}")
        if reference.dim != target.dim:
            raise ValueError(f"the reference has dimension {reference.dim} but the target {target.dim}")
        self.target, self.reference = target, reference
        super().__init__(target.dim, self._reference_drift, 1.0, self._terminal_cost, T=reference.T,
                         steps=reference.K, x0=lambda n, gen: reference.sample_x0(n, gen, dtype=torch.float64))
        self.score_clip = float(score_clip)
        self.evaluator = TargetEvaluator(target)
        self._eye = torch.eye(self.dim, dtype=torch.float64)

    # ------------------------------------------------------------------ the control problem
    time_varying = True
    #: a fixed control u0(i, x) of the chain the weights compare against (None: the reference itself); a posterior
    #: problem under a pretrained diffusion sets it (controlsamp.samplers.RTB)
    base_control: Optional[Callable[[int, Tensor], Tensor]] = None

    def terminal_reference_log_prob(self, x: Tensor) -> Tensor:
        """The log-density at x_K of the chain the weights compare against, (n,) float64: log p^ref_K."""
        return self.reference.terminal_log_prob(x)

    def _reference_drift(self, t, x: Tensor) -> Tensor:
        return self.reference.floats("k")[self.reference.step_index(t)] * x

    def sigma_at(self, t) -> Tensor:
        return self.reference.floats("g")[self.reference.step_index(t)] * self._eye

    control_matrix_at = sigma_at

    def _terminal_cost(self, x: Tensor) -> Tensor:
        return (self.reference.terminal_log_prob(x) - self.log_reward(x).double()).to(x.dtype)

    def sample_x0(self, n: int, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return self.reference.sample_x0(n, generator, device, dtype)

    # ------------------------------------------------------------------ the target, counted
    @property
    def target_evals(self) -> int:
        """Energy evaluations so far (:class:`~controlsamp.targets.TargetEvaluator`: one point's log-density,
        score, or both in one pass, counts once)."""
        return self.evaluator.evals

    @target_evals.setter
    def target_evals(self, value: int) -> None:
        self.evaluator.evals = int(value)

    def log_reward(self, x: Tensor) -> Tensor:
        """log pi~(x), (n,), counted; NaN or +inf is reported with the point, not propagated."""
        return self.evaluator.log_prob(x)

    def target_score(self, x: Tensor, graph: bool = False) -> Tensor:
        """grad log pi~(x), counted; with ``graph`` differentiable in x."""
        return self.evaluator.score(x, create_graph=graph)

    def value_and_score(self, x: Tensor):
        """(log pi~(x), grad log pi~(x)) in one pass, counted once: the log-density of the Langevin kernels."""
        return self.evaluator.value_and_score(x)

    def langevin_feature(self, x: Tensor, graph: bool = False) -> Tensor:
        """The clipped target score, the feature of the Langevin parametrisation."""
        return self.target_score(x, graph).clamp(-self.score_clip, self.score_clip)

    # ------------------------------------------------------------------ paths and weights
    def _grid_times(self, device=None, dtype=torch.float32) -> Tensor:
        """The step times t_0..t_{K-1} of the grid, (K,)."""
        return torch.tensor(self.reference.t[:-1], device=device, dtype=dtype)

    def _recording_control(self, policy, features: list, graph: bool = False, device=None,
                           dtype=torch.float32, recorder=None) -> Callable[[int, Tensor], Tensor]:
        """``control(i, x)`` for a rollout: the policy at t_i (through ``recorder``, a
        :class:`~controlsamp.control.grid_mlp.GridRecorder`, when given; else through its ``on_grid`` evaluator
        when it has one: the time-only terms computed once for the whole grid), recording the Langevin
        features."""
        h = self.reference.h
        langevin = getattr(policy, "uses_features", False)
        if recorder is not None or isinstance(policy, SamplerControl):
            grid_u = recorder if recorder is not None else policy.on_grid(self._grid_times(device, dtype))
            u = (lambda i, x, f: grid_u(i, x, f)) if langevin else (lambda i, x, f: grid_u(i, x))
        else:
            u = (lambda i, x, f: policy(i * h, x, f)) if langevin else (lambda i, x, f: policy(i * h, x))

        def control(i: int, x: Tensor) -> Tensor:
            f = self.langevin_feature(x, graph) if langevin else None
            if f is not None:
                features.append(f)
            return u(i, x, f)
        return control

    def simulate(self, policy, n: int, generator: Optional[torch.Generator] = None, explore: float = 0.0,
                 noise: Optional[Tensor] = None, device=None, dtype=torch.float32,
                 differentiable: bool = False) -> Paths:
        """Detached paths of the controlled chain from x_0 ~ N(0, v0 I) (``explore``: wider behaviour noise),
        with their discrete Girsanov log-ratio under the model (accumulated step by step), the Langevin
        features along them and the log-rewards at x_K.

        ``differentiable``: the log-ratio is differentiable in the policy's parameters (the states stay
        detached), so :meth:`log_weights` of these paths needs no second evaluation of the policy along them:
        what an objective of log w trains on, in one pass. For the package's MLP control the path is drawn
        without autograd and the K steps are differentiated afterwards in blocks
        (:mod:`controlsamp.control.grid_mlp`); any other policy is differentiated by autograd step by step."""
        feats: list = []
        ref = self.reference
        rec = policy.grid_recorder(self._grid_times(device, dtype)) \
            if differentiable and isinstance(policy, SamplerControl) else None
        control = self._recording_control(policy, feats, False, device, dtype, rec)
        with torch.set_grad_enabled(differentiable and rec is None):
            x0 = self.sample_x0(n, generator, device, dtype)
            xs, _, noise, log_ratio = controlled_paths(ref, control, x0, noise, generator, explore,
                                                       detach_states=True, keep_means=False, log_ratio=True,
                                                       base=self.base_control)
            log_r = self.log_reward(xs[:, -1]).detach()
        if rec is not None:
            log_ratio = rec.functional(log_ratio, log_ratio_control_derivative(ref, noise, explore))
        return Paths(xs, noise=noise, log_reward=log_r, features=torch.stack(feats, 1) if feats else None,
                     log_ratio=log_ratio)

    def backward_paths(self, xK: Tensor, log_reward: Tensor, generator: Optional[torch.Generator] = None) -> Paths:
        """Paths of the reference's time reversal ending at given terminal samples (off-policy training)."""
        with torch.no_grad():
            xs = reference_reversal(self.reference, xK, generator)
        return Paths(xs, log_reward=log_reward)

    def on_policy_paths(self, policy, n: int, generator=None, device=None, dtype=torch.float32) -> Paths:
        return self.simulate(policy, n, generator, device=device, dtype=dtype)

    def control_fn(self, policy, frozen: bool = False):
        """u(t, x) of ``policy`` as a callable (with the Langevin feature, differentiable in x, when the policy
        takes it); ``frozen``: the parameters cut from the graph."""
        call = frozen_policy(policy) if frozen else policy
        langevin = getattr(policy, "uses_features", False)

        def control(t, x):
            return call(t, x, self.langevin_feature(x, graph=True)) if langevin else call(t, x)
        return control

    def controls_along(self, policy, paths: Paths) -> Tensor:
        """u(t_i, x_i) along the paths, (n, K, d), in one batched call (the recorded Langevin features reused)."""
        xs = paths.xs
        n, K, d = xs.shape[0], self.steps, self.dim
        langevin = getattr(policy, "uses_features", False)
        f = None
        if langevin:
            f = paths.features if paths.features is not None else \
                self.langevin_feature(xs[:, :-1].reshape(n * K, d)).reshape(n, K, d)
        if isinstance(policy, SamplerControl):  # the time-only terms once per step, broadcast over the paths
            return policy.on_grid(self._grid_times(xs.device, xs.dtype))(slice(None), xs[:, :-1], f)
        flat = xs[:, :-1].reshape(n * K, d)
        t = (torch.arange(K, device=xs.device).to(xs.dtype) * self.reference.h).repeat(n)
        if langevin:
            return policy(t, flat, f.reshape(n * K, d)).reshape(n, K, d)
        return policy(t, flat).reshape(n, K, d)

    def lean_adjoint(self, paths: Paths) -> Tensor:
        r"""The lean adjoint of the scheme's chain: :math:`a_K = \nabla g(x_K) = -x_K / w_K - \nabla\log\tilde\pi(x_K)`,
        :math:`a_i = a\text{-coef}_i\,a_{i+1}` (the reference is linear), (n, K+1, d)."""
        xK = paths.xs[:, -1]
        aK = (self.reference.terminal_score(xK) - self.target_score(xK)).to(xK.dtype)
        coef = self.reference.floats("a")
        out = [aK]
        for i in reversed(range(self.steps)):
            out.append(coef[i] * out[-1])
        return torch.stack(out[::-1], 1)

    def adjoint_matching_targets(self, adjoint: Tensor) -> Tensor:
        r"""u_i = -(v_i / b_i) a_{i+1} (the step's KL cost is b_i^2 |u_i|^2 / (2 v_i)), (n, K, d)."""
        r = (self.reference.coef("v", adjoint.device, adjoint.dtype)
             / self.reference.coef("b", adjoint.device, adjoint.dtype)).reshape(1, -1, 1)
        return -r * adjoint[:, 1:]

    def log_weights(self, policy, paths: Paths) -> Tensor:
        """log w of ``paths`` (n,) float64 under ``policy``: from the log-ratio (or else the model means) the
        paths carry (differentiable when :meth:`simulate` drew them with ``differentiable=True``), else by
        evaluating the policy along the paths (differentiable in its parameters)."""
        xs = paths.xs
        if paths.log_ratio is not None:
            log_ratio = paths.log_ratio
        else:
            means, base = paths.means, self.base_means(xs)
            if means is None:
                a = self.reference.coef("a", xs.device, xs.dtype).unsqueeze(-1)
                b = self.reference.coef("b", xs.device, xs.dtype).unsqueeze(-1)
                means = a * xs[:, :-1] + b * self.controls_along(policy, paths)
                if base is not None:
                    means = means + (base - a * xs[:, :-1])
            log_ratio = path_log_ratio(self.reference, xs, means, base)
        return log_ratio + paths.log_reward.double() - self.terminal_reference_log_prob(xs[:, -1])

    def base_means(self, xs: Tensor) -> Optional[Tensor]:
        """The step means a_i x_i + b_i u0(i, x_i) of the base chain along paths (n, K, d), without gradient (None
        without a base control)."""
        if self.base_control is None:
            return None
        a, b = self.reference.floats("a"), self.reference.floats("b")
        with torch.no_grad():
            return torch.stack([a[i] * xs[:, i] + b[i] * self.base_control(i, xs[:, i]) for i in range(self.steps)], 1)

    def reparametrised_log_weights(self, policy, n: int, generator: Optional[torch.Generator] = None,
                                   stl: bool = False, device=None, dtype=torch.float32) -> Tensor:
        r"""log w of n fresh paths drawn with gradients through the path (reparametrisation): the exact
        discrete path law of :meth:`simulate`, so -E[log w] = KL(P^u | P^*) - log Z of the scheme's chain.

        ``stl`` ("sticking the landing", Roeder et al. 2017): the step densities are evaluated with the
        control's parameters held fixed (their values are unchanged; the score-function part of the gradient,
        zero in expectation and not vanishing at the optimum, is dropped). (n,) float64."""
        feats: list = []
        ref = self.reference
        x0 = self.sample_x0(n, generator, device, dtype)
        xs, _, _, log_ratio = controlled_paths(ref, self._recording_control(policy, feats, True, device, dtype), x0,
                                               generator=generator, keep_means=False, log_ratio=not stl,
                                               base=self.base_control)
        K = ref.K
        if stl:
            call = frozen_policy(policy)
            langevin = getattr(policy, "uses_features", False)
            a, b = ref.floats("a"), ref.floats("b")
            us = []
            for i in range(K):
                args = (i * ref.h, xs[:, i], feats[i]) if langevin else (i * ref.h, xs[:, i])
                us.append(call(*args))
            base = self.base_means(xs)
            means = torch.stack([a[i] * xs[:, i] + b[i] * us[i] for i in range(K)], 1)
            if base is not None:
                means = means + (base - torch.stack([a[i] * xs[:, i] for i in range(K)], 1))
            log_ratio = path_log_ratio(ref, xs, means, base)
        log_r = self.log_reward(xs[:, -1])
        return log_ratio + log_r.double() - self.terminal_reference_log_prob(xs[:, -1])
