r"""`DiffusionSampler`: a controlled diffusion trained to carry a reference law to an unnormalised target.

The sampler is the control problem of docs/architecture.md with B = sigma, R = I/2, q = 0 and terminal cost
g = log p^ref_T - log pi~: on the grid t_i = i h of a :class:`~controlsamp.sde.DiscretisedReference` (a process, K steps, a scheme),

.. math:: x_{i+1} = a_i x_i + b_i\,u_\theta(t_i, x_i) + \sqrt{v_i}\,\xi_i,\qquad x_0 \sim \mathcal N(0, v_0 I),

and every path carries the importance weight of the target path measure (the target at T, the reference's
time reversal before it) against the model's,

.. math:: \log w = \log\tilde\pi(x_K) - \log p^{ref}_T(x_K)
          + \sum_i \big[\log\mathcal N(x_{i+1}; \phi_i x_i, q_i) - \log\mathcal N(x_{i+1}; a_i x_i + b_i u_i, v_i)\big],

the discrete Girsanov formula (for the Brownian reference it is exactly
:math:`-\sum_i u_i\cdot\Delta W_i - \tfrac h2\sum_i |u_i|^2`). Hence Z = E[w] exactly in discrete time,
ELBO = E[log w] <= log Z. The sampler is a composition: the control problem
(:class:`~controlsamp.control.SamplingProblem`, which knows this path law and its weights), a policy
(:class:`~controlsamp.control.SamplerControl`), an objective (:mod:`controlsamp.control.objectives`: every
objective sees the weights ``sample()`` reports), the off-policy tools (:mod:`.offpolicy`) and the one
training loop (:mod:`controlsamp.training`).

The control is the path integral sampler's network (Zhang & Chen 2022): an MLP in (x, Fourier features of
t) plus, with ``langevin=True``, a learned time gain times the clipped target score (the "Langevin
parametrisation" that Sendera et al. 2024 find essential on hard targets).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .._validate import (as_points, check_count, check_device, check_dim, check_dtype, check_generator,
                         check_grad_clip, check_nonnegative, check_positive, check_seed, check_time)
from ..control import Batch, Objective, Paths, SamplerControl, SamplingProblem, check_target, get_objective
from ..control.objectives import REGISTRY
from ..sde import DiscretisedReference
from ..targets import Target
from ..weights import logmeanexp
from ..parallel import DataParallel
from ..training import descend, fit_loop, load_checkpoint, load_modules, make_optimizer, save_model, shard_streams
from .offpolicy import ReplayBuffer, local_search

Tensor = torch.Tensor
LOSSES = tuple(sorted(REGISTRY))

__all__ = ["DiffusionSampler", "LOSSES", "check_target"]


class DiffusionSampler:
    """Base class of PIS, DDS, DIS and ASBS: a :class:`~controlsamp.control.SamplingProblem` (target + discretised
    reference), a control network and the objective it is trained with.

    Args:
        target: a :class:`~controlsamp.targets.Target` (``log_prob`` batched over the first axis).
        reference: the :class:`~controlsamp.sde.DiscretisedReference` (see the subclasses).
        hidden, depth, n_freq: width and depth of the MLP and the number of Fourier time frequencies.
        langevin: add the learned-gain score term to the control.
        score_clip: the target score is clipped to [-score_clip, score_clip] elementwise in that term.
        parametrisation: ``"control"`` (the network is u) or ``"score"`` (DIS: the network is the score of
            the time-reversed noising process; u = -2k x / g + g s).
        policy: an nn.Module ``(t, x) -> u`` to use instead of the MLP (e.g. an exact control).
        seed: seeds the network initialisation.
        device, dtype: where and in what precision the network and the paths live (log-weights are
            accumulated in float64); ``dtype=None`` is torch's default dtype (float32 unless
            ``torch.set_default_dtype`` changed it).
    """

    name = "sampler"
    default_loss = "tb"
    trainable = True
    weighted = False

    def __init__(self, target: Target, reference: DiscretisedReference, hidden: int = 64, depth: int = 2,
                 n_freq: int = 4, langevin: bool = True, score_clip: float = 1e2, parametrisation: str = "control",
                 policy: Optional[nn.Module] = None, seed: int = 0, device="cpu", dtype=None):
        check_target(target)
        if parametrisation not in ("control", "score"):
            raise ValueError(f"parametrisation must be 'control' or 'score'; got {parametrisation!r}")
        hidden, depth = check_dim(hidden, "hidden"), check_count(depth, "depth")
        n_freq, seed = check_count(n_freq, "n_freq"), check_seed(seed)
        if policy is not None and not isinstance(policy, nn.Module):
            raise ValueError(f"policy must be a torch.nn.Module (t, x) -> u or None; got {type(policy).__name__}")
        device, dtype = check_device(device), check_dtype(dtype)
        self.problem = self._make_problem(target, reference, check_positive(score_clip, "score_clip"))
        self.target, self.reference, self.dim = target, reference, target.dim
        self.steps, self.T = reference.K, reference.T
        self.device, self.dtype = device, dtype
        self.langevin = bool(langevin) and policy is None
        self.config = dict(hidden=hidden, depth=depth, n_freq=n_freq, langevin=langevin, score_clip=score_clip,
                           parametrisation=parametrisation, seed=seed, steps=self.steps, T=self.T,
                           scheme=repr(reference.scheme))
        if policy is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                policy = SamplerControl(reference, self.problem.langevin_feature if self.langevin else None,
                                        hidden=hidden, depth=depth, n_freq=n_freq, parametrisation=parametrisation)
        self.policy = policy.to(device=self.device, dtype=dtype)
        self.objective: Optional[Objective] = None
        self.history: Dict[str, List[float]] = {}

    def _make_problem(self, target: Target, reference: DiscretisedReference, score_clip: float) -> SamplingProblem:
        """The sampling problem this sampler trains on (a subclass may pose another, e.g. a posterior)."""
        return SamplingProblem(target, reference, score_clip)

    @property
    def target_evals(self) -> int:
        """Energy evaluations so far (one point's log-density or score counts once)."""
        return self.problem.target_evals

    @target_evals.setter
    def target_evals(self, value: int) -> None:
        self.problem.target_evals = int(value)

    # ------------------------------------------------------------------ the learned process
    def drift(self, t: float, x) -> Tensor:
        r"""The learned drift k(t) x + g(t) u(t, x) of dX = (k X + g u) dt + g dW, (n, d)."""
        t = check_time(t, self.T)
        x = as_points(x, "x", self.dim, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            u = self.policy(t, x)
        return self.reference.k_at(t) * x + self.reference.g_at(t) * u

    def simulate(self, n: int, generator=None, explore: float = 0.0, noise: Optional[Tensor] = None,
                 differentiable: bool = False) -> Paths:
        """Detached paths of the current control (see :meth:`SamplingProblem.simulate`). ``generator`` (None or a
        torch.Generator) must live on the sampler's device type."""
        generator = check_generator(generator, self.device)
        return self.problem.simulate(self.policy, n, generator, explore, noise, self.device, self.dtype,
                                     differentiable)

    def log_weights(self, paths: Paths) -> Tensor:
        """log w (n,) float64 of ``paths`` under the current control."""
        return self.problem.log_weights(self.policy, paths)

    def sample(self, n: int, seed: int = 0, batch: int = 10_000) -> Tuple[Tensor, Tensor]:
        """n samples x (n, d) with their log importance weights log w (n,) (float64)."""
        n, batch = check_dim(n, "n"), check_dim(batch, "batch")
        gen = torch.Generator(device=self.device).manual_seed(check_seed(seed))
        xs_out, lw_out = [], []
        for start in range(0, n, batch):
            paths = self.simulate(min(batch, n - start), gen)
            with torch.no_grad():
                lw_out.append(self.log_weights(paths))
            xs_out.append(paths.xs[:, -1])
        return torch.cat(xs_out), torch.cat(lw_out)

    def log_Z(self, n: int = 10_000, seed: int = 0) -> float:
        """The importance-sampling estimate log mean w over n paths (unbiased for Z in discrete time)."""
        _, lw = self.sample(n, seed)
        return float(logmeanexp(lw))

    def eubo_log_weights(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """log w of the reference's time-reversed paths ending at target samples x (their mean is the EUBO)."""
        x = as_points(x, "x", self.dim, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            return self.log_weights(self.problem.backward_paths(x, self.problem.log_reward(x), generator))

    # ------------------------------------------------------------------ training
    def make_objective(self, loss, **options) -> Objective:
        """The objective ``loss`` (a name of :data:`LOSSES` or an Objective) with ``options``."""
        if isinstance(loss, Objective):
            return loss
        if not isinstance(loss, str) or loss not in REGISTRY:
            raise ValueError(f"loss must be one of {LOSSES} or an Objective; got {loss!r}")
        return get_objective(loss, **options)

    def fit(self, iters: int = 1000, batch: int = 300, loss=None, lr: float = 1e-3, lr_log_Z: float = 1e-1,
            seed: int = 0, explore: float = 0.0, explore_decay: bool = True, buffer: int = 0,
            rank_weight: float = 1e-2, local_search_every: int = 0, local_search_steps: int = 20,
            local_search_step: float = 1e-2, local_search_accept: float = 0.574,
            local_search_adapt_rate: float = 0.05, local_search_burn_in: Optional[int] = None,
            local_search_buffer: int = 0, grad_clip: Optional[float] = None,
            lr_schedule: Optional[str] = None, checkpoint: Optional[str] = None, checkpoint_every: int = 100,
            resume: bool = False, progress: bool = True, stl: bool = False, adjoint: Optional[bool] = None,
            backward_every: int = 2, shards: Optional[int] = None) -> "DiffusionSampler":
        r"""Train the control with one objective of :mod:`controlsamp.control.objectives`.

        ``loss``: ``"kl"`` / ``"relative_entropy"`` (through torchsde's adjoint, or by backpropagation through
        the scheme's rollout with ``adjoint=False``), ``"lv"`` / ``"log_variance"``, ``"tb"`` /
        ``"trajectory_balance"`` (learned log Z), ``"vargrad"``, ``"am"`` / ``"adjoint_matching"``,
        ``"known_log_Z"``, any other registered name, or an Objective instance. Default: the sampler's
        ``default_loss``.

        Off-policy options (Sendera et al. 2024; for objectives of log w):
            explore: extra noise std (per unit time) on the behaviour paths, decayed linearly to zero over
                the run with ``explore_decay``.
            buffer: capacity of a replay buffer of terminal samples (0: none). With a buffer, every
                ``backward_every``-th iteration trains on backward paths (the reference's time reversal)
                from buffer samples.
            rank_weight: the buffer's rank-priority parameter.
            local_search_every, local_search_steps, local_search_step, local_search_accept,
            local_search_adapt_rate: every so many iterations, run MALA from buffer samples with its step
                adapted toward acceptance ``local_search_accept`` at rate ``local_search_adapt_rate`` (see
                :func:`~controlsamp.samplers.offpolicy.local_search`) and add the results (0: never).
            local_search_burn_in: None (default): a search adds its chains' final states. An integer b: it
                adds every state after the first b steps (``batch (local_search_steps - b)`` samples).
            local_search_buffer: 0 (default): the search's samples join the replay buffer. A capacity: they
                fill a second, rank-prioritised buffer of that size, and the backward paths start from it alone,
                while the first buffer holds the model's samples and gives the searches their starts.
                Sendera et al.'s manywell configuration: ``buffer=600_000, local_search_buffer=600_000,
                local_search_every=100, local_search_steps=200, local_search_burn_in=100`` (their
                ``buffer_ls``, ``ls_cycle``, ``max_iter_ls`` and ``burn_in``).

        Args:
            stl, adjoint: options of the relative entropy (see
                :mod:`controlsamp.control.objectives.relative_entropy`).
            lr, lr_log_Z: Adam learning rates of the network and of the objective's parameters (TB's log Z).
            lr_schedule: None or "cosine".
            seed: seeds the paths, the buffer sampling and the Brownian paths of the adjoint.
            checkpoint, checkpoint_every, resume: a checkpoint file; ``resume=True`` continues from it (the
                network, objective, optimiser, buffer, random streams and counters are restored; a checkpoint
                of another configuration is refused).
            shards: the random shards of data-parallel training (:mod:`controlsamp.parallel`; None: one per
                process). Each shard draws ``batch / shards`` paths from its own streams, the loss is that of the
                whole batch, the replay buffer takes every shard's samples and the local-search step is the
                shards' mean; run in a ``torch.distributed`` group (``torchrun``, ``controlsamp run --nproc``)
                the processes share the shards. The result depends on the seed and ``shards``, not on the
                number of processes. Only the checkpoint's writer (rank 0) writes it.
            grad_clip: None (no clipping) or the norm the gradient is clipped to before each step.

        Each iteration appends to ``self.history``: ``loss``, ``backward`` (1 for a backward-path iteration),
        ``grad_norm`` (the gradient's norm before clipping), ``target_evals`` (cumulative), ``seconds``, and
        where the objective gives them ``elbo`` and ``log_Z`` of the batch and TB's ``log_Z_param``.
        """
        loss = self.default_loss if loss is None else loss
        if not isinstance(loss, (str, Objective)):
            raise ValueError(f"loss must be one of {LOSSES} or an Objective; got {loss!r}")
        options = {"adjoint": adjoint, "stl": stl} if loss in ("kl", "relative_entropy") else {}
        if loss not in ("kl", "relative_entropy") and stl:
            raise ValueError(f"stl=True is the sticking-the-landing estimator of loss='kl'; got loss={loss!r}")
        objective = self.make_objective(loss, **options)
        objective.check(self.problem)
        if objective.needs_data:
            raise ValueError(f"loss={loss!r} regresses on data a method supplies (ASBS trains it on its endpoint "
                             "pairs: cs.samplers.ASBS); for this sampler use one of 'kl', 'lv', 'tb', 'vargrad', "
                             "'am', 'known_log_Z'")
        iters, batch = check_dim(iters, "iters"), check_dim(batch, "batch")
        lr = check_positive(lr, "lr")
        backward_every = check_dim(backward_every, "backward_every")
        seed, explore = check_seed(seed), check_nonnegative(explore, "explore")
        buffer = check_count(buffer, "buffer")
        local_search_every = check_count(local_search_every, "local_search_every")
        local_search_steps = check_count(local_search_steps, "local_search_steps")
        local_search_step = check_positive(local_search_step, "local_search_step")
        local_search_adapt_rate = check_nonnegative(local_search_adapt_rate, "local_search_adapt_rate")
        local_search_buffer = check_count(local_search_buffer, "local_search_buffer")
        if local_search_burn_in is not None:
            local_search_burn_in = check_count(local_search_burn_in, "local_search_burn_in")
            if local_search_burn_in >= local_search_steps:
                raise ValueError("local_search_burn_in must be None or an integer in [0, local_search_steps) = "
                                 f"[0, {local_search_steps}); got {local_search_burn_in}")
        rank_weight = check_nonnegative(rank_weight, "rank_weight")
        if not 0.0 < check_positive(local_search_accept, "local_search_accept") < 1.0:
            raise ValueError(f"local_search_accept must lie in (0, 1); got {local_search_accept}")
        grad_clip = check_grad_clip(grad_clip)
        checkpoint_every = check_dim(checkpoint_every, "checkpoint_every")
        if lr_schedule not in (None, "cosine"):
            raise ValueError(f"lr_schedule must be None or 'cosine'; got {lr_schedule!r}")
        if not objective.off_policy and (explore > 0 or buffer > 0 or local_search_every > 0):
            raise ValueError(f"loss={loss!r} is on-policy (it differentiates through or regresses along the model's "
                             "own paths); exploration, a buffer and local search need an objective of log w: "
                             "'lv', 'tb' or 'vargrad'")
        if local_search_every > 0 and buffer <= 0:
            raise ValueError("local_search_every needs a replay buffer (buffer > 0)")
        if (local_search_buffer > 0 or local_search_burn_in is not None) and local_search_every <= 0:
            raise ValueError("local_search_buffer and local_search_burn_in shape the local search: they need "
                             "local_search_every > 0")
        if self.objective is not None and type(self.objective) is type(objective):
            objective = self.objective  # continue with the learned parameters (e.g. TB's log Z)
        self.objective = objective.to(self.device)
        groups = [{"params": list(self.policy.parameters()), "lr": lr},
                  {"params": list(objective.parameters()), "lr": check_positive(lr_log_Z, "lr_log_Z")}]
        opt, sched = make_optimizer(groups, iters, lr_schedule)
        dp = DataParallel(shards)
        per_shard = dp.split(batch, "batch")
        streams = shard_streams(dp, seed, self.device)
        buf = ReplayBuffer(buffer, self.dim, rank_weight) if buffer > 0 else None
        found_buf = ReplayBuffer(local_search_buffer, self.dim, rank_weight) if local_search_buffer > 0 else None
        replay = found_buf if found_buf is not None else buf  # where the backward paths start
        state = {"ls_step": float(local_search_step), "evals": self.target_evals}
        problem, policy = self.problem, self.policy

        def behaviour(it: int) -> Tuple[List[Optional[Paths]], bool]:
            """One shard's paths per own shard, and whether they are backward paths from the buffer."""
            if not objective.off_policy:
                return [None] * len(streams), False
            if replay is not None and it % backward_every == backward_every - 1 and len(replay) >= batch:
                out = []
                for st in streams:
                    xK, log_r = replay.sample(per_shard, st.cpu)
                    out.append(problem.backward_paths(xK.to(self.device, self.dtype), log_r.to(self.device),
                                                      st.device))
                return out, True
            eps = explore * (1 - it / iters) if explore_decay else explore
            # the model means carry the graph: log w is differentiable without a second pass over the paths
            out = [self.simulate(per_shard, st.device, explore=eps, differentiable=True) for st in streams]
            if buf is not None:  # every shard's samples, in every process
                buf.add(dp.cat_rows([p.xs[:, -1].detach() for p in out]),
                        dp.cat_rows([p.log_reward.detach() for p in out]))
            return out, False

        def search() -> None:
            """MALA local search from buffer samples, per shard; the step is the shards' mean."""
            found = [local_search(self.problem.value_and_score, buf.sample(per_shard, st.cpu)[0].to(self.device,
                                  self.dtype), local_search_steps, state["ls_step"], st.device, local_search_accept,
                                  local_search_adapt_rate, local_search_burn_in) for st in streams]
            (buf if found_buf is None else found_buf).add(dp.cat_rows([f[0].detach() for f in found]),
                                                          dp.cat_rows([f[1].detach() for f in found]))
            steps = [s for part in dp.gather_objects([f[2] for f in found]) for s in part]
            state["ls_step"] = steps[0] if len(steps) == 1 else float(sum(steps) / len(steps))

        def step(it: int) -> Dict[str, float]:
            evals_before = self.target_evals
            paths, backward = behaviour(it)
            batches = [Batch(per_shard, st, st.entropy(it), self.device, self.dtype, p)
                       for st, p in zip(streams, paths)]
            value, loss_value, info = objective.sharded(problem, policy, batches, dp)
            gnorm = descend(value, opt, list(policy.parameters()) + list(objective.parameters()), grad_clip,
                            f"iteration {it} (loss {loss_value:.4g})", sched, dp)
            if buf is not None and local_search_every and (it + 1) % local_search_every == 0 and len(buf) >= batch:
                search()
            self.target_evals = dp.count_since(evals_before, self.target_evals)  # every process's energy evaluations
            rec = {"loss": loss_value, "backward": float(backward), "grad_norm": gnorm,
                   "target_evals": float(self.target_evals)}
            if "log_w" in info:
                lw = info["log_w"]
                rec.update(elbo=float(lw.mean()), log_Z=float(logmeanexp(lw)))
            if hasattr(objective, "log_Z"):
                rec["log_Z_param"] = float(objective.log_Z.detach())
            state["evals"] = self.target_evals
            return rec

        def extra() -> dict:  # read at step boundaries: the live counter is the boundary's
            return {"ls_step": float(state["ls_step"]), "evals": int(self.target_evals)}

        def restore(saved: dict) -> None:
            state["ls_step"] = float(saved["ls_step"])
            self.target_evals = int(saved["evals"])

        modules = {"policy": policy, "objective": objective, "optimizer": opt}
        if sched is not None:
            modules["schedule"] = sched
        if buf is not None:
            modules["buffer"] = buf
        if found_buf is not None:
            modules["local_search_buffer"] = found_buf
        config = dict(self.config, sampler=type(self).__name__, loss=objective.name, batch=batch,
                      seed=seed, explore=explore, buffer=buffer, local_search_every=local_search_every)
        if local_search_buffer > 0 or local_search_burn_in is not None:
            config.update(local_search_buffer=local_search_buffer, local_search_burn_in=local_search_burn_in)
        t0 = time.perf_counter()
        fit_loop(step, iters, modules, self.history, kind=type(self).__name__, config=config, streams=streams,
                 checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                 progress=progress and dp.writer, extra=extra, restore_extra=restore, parallel=dp)
        self.wall_time_s = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ persistence
    def _modules(self) -> Dict[str, nn.Module]:
        """The modules a saved sampler holds (a subclass adds its own, e.g. ASBS's corrector)."""
        modules = {"policy": self.policy}
        if self.objective is not None:
            modules["objective"] = self.objective
        return modules

    def save(self, path: str) -> None:
        """Write the network, the objective (e.g. TB's learned log Z), the history and the configuration."""
        save_model(path, type(self).__name__, self.config, self._modules(), self.history,
                   {"target_evals": self.target_evals, "objective": getattr(self.objective, "name", None)})

    def load(self, path: str) -> "DiffusionSampler":
        """Load a file written by :meth:`save` into this sampler (built with the same arguments)."""
        payload = load_checkpoint(path, type(self).__name__, self.config, map_location=self.device)
        name = payload["extra"].get("objective")
        if name is not None and (self.objective is None or self.objective.name != name):
            self.objective = get_objective(name).to(self.device)
        load_modules(payload, self._modules())
        self.history = payload["history"]
        self.target_evals = payload["extra"]["target_evals"]
        return self
