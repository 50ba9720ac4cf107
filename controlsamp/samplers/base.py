r"""`DiffusionSampler`: a controlled diffusion trained to carry a reference law to an unnormalised target.

The sampler is the control problem of DESIGN.md with B = sigma, R = I/2, q = 0 and terminal cost
g = log p^ref_T - log pi~: on the grid t_i = i h of a :class:`~controlsamp.sde.grid.ReferenceGrid`,

.. math:: x_{i+1} = a_i x_i + b_i\,u_\theta(t_i, x_i) + \sqrt{v_i}\,\xi_i,\qquad x_0 \sim \mathcal N(0, v_0 I),

and every path carries the importance weight of the target path measure (the target at T, the reference's
time reversal before it) against the model's,

.. math:: \log w = \log\tilde\pi(x_K) - \log p^{ref}_T(x_K)
          + \sum_i \big[\log\mathcal N(x_{i+1}; \phi_i x_i, q_i) - \log\mathcal N(x_{i+1}; a_i x_i + b_i u_i, v_i)\big],

the discrete Girsanov formula (for the Brownian reference it is exactly
:math:`-\sum_i u_i\cdot\Delta W_i - \tfrac h2\sum_i |u_i|^2`). Hence Z = E[w] exactly in discrete time,
ELBO = E[log w] <= log Z, and the losses of :mod:`controlsamp.samplers.losses` are functions of log w.

The control is the path integral sampler's network (Zhang & Chen 2022): an MLP in (x, Fourier features of
t) plus, with ``langevin=True``, a learned time gain times the clipped target score (the "Langevin
parametrisation" that Sendera et al. 2024 find essential on hard targets).
"""
from __future__ import annotations

import math
import os
import time
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .._validate import check_dim, check_positive
from ..control.loop import clip_gradient, fit_loop, save_checkpoint
from ..control.policies import MLPPolicy
from ..sde.grid import ReferenceGrid
from ..targets import Target
from . import losses
from .offpolicy import ReplayBuffer, local_search

Tensor = torch.Tensor
LOSSES = ("kl", "lv", "tb", "vargrad")


def check_target(target) -> Target:
    """``target`` if it is a :class:`~controlsamp.targets.Target`, else a ValueError that says how to make one."""
    if not isinstance(target, Target):
        raise ValueError(f"target must be a controlsamp.targets.Target; got {type(target).__name__} "
                         "(wrap a function with Target.from_log_prob(fn, dim))")
    return target


class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))


class DiffusionSampler:
    """Base class of PIS, DDS and DIS: a target, a reference grid and a control network.

    Args:
        target: a :class:`~controlsamp.targets.Target` (``log_prob`` batched over the first axis).
        grid: the discretised reference (see the subclasses).
        hidden, depth, n_freq: width and depth of the MLP and the number of Fourier time frequencies.
        langevin: add the learned-gain score term to the control.
        score_clip: the target score is clipped to [-score_clip, score_clip] elementwise in that term.
        parametrisation: ``"control"`` (the network is u) or ``"score"`` (DIS: the network is the score of
            the time-reversed noising process; u = -2k x / g + g s).
        policy: an nn.Module ``(t, x) -> u`` to use instead of the MLP (e.g. an exact control).
        seed: seeds the network initialisation.
        device, dtype: where and in what precision the network and the paths live (log-weights are
            accumulated in float64).
    """

    name = "sampler"
    default_loss = "tb"

    def __init__(self, target: Target, grid: ReferenceGrid, hidden: int = 64, depth: int = 2, n_freq: int = 4,
                 langevin: bool = True, score_clip: float = 1e2, parametrisation: str = "control",
                 policy: Optional[nn.Module] = None, seed: int = 0, device="cpu", dtype=torch.float32):
        check_target(target)
        if grid.dim != target.dim:
            raise ValueError(f"the reference has dimension {grid.dim} but the target {target.dim}")
        if parametrisation not in ("control", "score"):
            raise ValueError(f"parametrisation must be 'control' or 'score'; got {parametrisation!r}")
        self.target, self.grid, self.dim = target, grid, target.dim
        self.steps, self.T = grid.K, grid.T
        self.device, self.dtype = torch.device(device), dtype
        self.score_clip = check_positive(score_clip, "score_clip")
        self.parametrisation, self.langevin = parametrisation, bool(langevin) and policy is None
        self.config = dict(hidden=hidden, depth=depth, n_freq=n_freq, langevin=langevin, score_clip=score_clip,
                           parametrisation=parametrisation, seed=seed, steps=self.steps, T=self.T)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = policy if policy is not None else MLPPolicy(
                self.dim, self.dim, self.T, hidden=hidden, depth=depth, n_freq=n_freq,
                feature=self._feature if self.langevin else None)
        self.policy.to(device=self.device, dtype=dtype)
        self._log_Z = _Scalar().to(device=self.device, dtype=torch.float64)
        self.target_evals = 0
        self.history: Dict[str, List[float]] = {}
        g = grid.g.clamp(min=1e-12)
        self._c1 = (-2.0 * grid.k / g).to(self.device, dtype)  # score parametrisation, per step
        self._c2 = grid.g.to(self.device, dtype)

    # ------------------------------------------------------------------ target with bookkeeping
    def log_reward(self, x: Tensor) -> Tensor:
        """log pi~(x), (n,), counted in ``target_evals``; NaN or +inf is reported, not propagated."""
        out = self.target.log_prob(x)
        self.target_evals += x.shape[0]
        bad = torch.isnan(out) | (out == float("inf"))
        if bad.any():
            raise ValueError(f"the target {getattr(self.target, 'name', '')!r} returned NaN or +inf log_prob at "
                             f"{int(bad.sum())} of {len(out)} points (first: {x[bad.nonzero()[0, 0]].tolist()})")
        return out

    def target_score(self, x: Tensor, graph: bool = False) -> Tensor:
        """grad log pi~(x), counted; with ``graph`` differentiable in x (for the adjoint)."""
        self.target_evals += x.shape[0]
        if not graph:
            s = self.target.score(x.detach())
        elif type(self.target).score is Target.score:
            with torch.enable_grad():
                xg = x if x.requires_grad else x.detach().requires_grad_(True)
                (s,) = torch.autograd.grad(self.target.log_prob(xg).sum(), xg, create_graph=True)
        else:
            s = self.target.score(x)
        if not torch.isfinite(s).all():
            raise ValueError(f"the target {getattr(self.target, 'name', '')!r} returned a non-finite score")
        return s.to(x.dtype)

    def _feature(self, x: Tensor, graph: bool = False) -> Tensor:
        return self.target_score(x, graph).clamp(-self.score_clip, self.score_clip)

    def _log_density(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.log_reward(x), self.target_score(x)

    # ------------------------------------------------------------------ the control
    def control(self, idx, x: Tensor, features: Optional[Tensor] = None, detach_params: bool = False) -> Tensor:
        """u at grid step(s) ``idx`` (an int, or a (n,) long tensor with one step per row of x).

        ``detach_params=True`` evaluates the network with its parameters cut from the graph (the gradient
        still flows through x): the "sticking the landing" term of the ``kl`` loss needs it."""
        t = idx * self.grid.h if isinstance(idx, int) else idx.to(x.dtype) * self.grid.h
        args = (t, x, features) if isinstance(self.policy, MLPPolicy) else (t, x)
        if detach_params:
            params = {k: v.detach() for k, v in self.policy.named_parameters()}
            out = torch.func.functional_call(self.policy, params, args)
        else:
            out = self.policy(*args)
        if self.parametrisation == "score":
            c1, c2 = (self._c1[idx], self._c2[idx]) if isinstance(idx, int) else \
                (self._c1[idx].unsqueeze(1), self._c2[idx].unsqueeze(1))
            out = c1 * x + c2 * out
        return out

    def drift(self, t: float, x) -> Tensor:
        r"""The learned drift k(t) x + g(t) u(t, x) of dX = (k X + g u) dt + g dW, (n, d)."""
        t = float(t)
        if not 0.0 <= t <= self.T:
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]; got {t}")
        x = torch.as_tensor(x, device=self.device, dtype=self.dtype)
        k, g = self.grid.k_at(t), self.grid.g_at(t)
        with torch.no_grad():
            tt = torch.tensor(t, dtype=x.dtype, device=x.device)
            u = self.policy(tt, x)
            if self.parametrisation == "score":
                u = (-2.0 * k / g) * x + g * u
        return k * x + g * u

    # ------------------------------------------------------------------ paths and weights
    def simulate(self, n: int, generator=None, explore: float = 0.0, noise: Optional[Tensor] = None):
        """Detached forward paths. Returns xs (n, K+1, d), the model means (n, K, d), the standard normal
        noise (n, K, d) and the Langevin features along the path (or None)."""
        feats: List[Tensor] = []

        def ctrl(i, t, x):
            f = self._feature(x) if self.langevin else None
            if f is not None:
                feats.append(f)
            return self.control(i, x, f)

        with torch.no_grad():
            x0 = self.grid.sample_x0(n, generator, self.device, self.dtype)
            xs, means, xi = self.grid.simulate(ctrl, x0, generator, noise, explore)
        return xs, means, xi, (torch.stack(feats, 1) if feats else None)

    def log_weights(self, xs: Tensor, log_r: Tensor, features: Optional[Tensor] = None,
                    means: Optional[Tensor] = None) -> Tensor:
        """log w of the paths ``xs`` (n, K+1, d) under the current control, (n,) float64; differentiable in
        the network's parameters unless ``means`` (the model step means) are given."""
        n, K, d = xs.shape[0], self.steps, self.dim
        steps = torch.arange(K, device=xs.device)
        if means is None:
            idx = steps.repeat(n)
            flat = xs[:, :-1].reshape(n * K, d)
            if self.langevin and features is None:
                features = self._feature(flat).reshape(n, K, d)
            f = features.reshape(n * K, d) if features is not None else None
            u = self.control(idx, flat, f).reshape(n, K, d)
            means = self.grid.mean(steps, xs[:, :-1], u)
        ratio = self.grid.step_log_ratio(steps, xs[:, :-1], xs[:, 1:], means)
        return ratio.sum(1) + log_r.double() - self.grid.terminal_log_prob(xs[:, -1])

    def sample(self, n: int, seed: int = 0, batch: int = 10_000) -> Tuple[Tensor, Tensor]:
        """n samples x (n, d) with their log importance weights log w (n,) (float64)."""
        n = check_dim(n, "n")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        xs_out, lw_out = [], []
        for start in range(0, n, batch):
            m = min(batch, n - start)
            xs, means, _, _ = self.simulate(m, gen)
            with torch.no_grad():
                log_r = self.log_reward(xs[:, -1])
                lw_out.append(self.log_weights(xs, log_r, means=means))
            xs_out.append(xs[:, -1])
        return torch.cat(xs_out), torch.cat(lw_out)

    def log_Z(self, n: int = 10_000, seed: int = 0) -> float:
        """The importance-sampling estimate log mean w over n paths (unbiased for Z in discrete time)."""
        _, lw = self.sample(n, seed)
        return float(torch.logsumexp(lw, 0) - math.log(lw.shape[0]))

    # ------------------------------------------------------------------ training
    def fit(self, iters: int = 1000, batch: int = 300, loss: str = "tb", lr: float = 1e-3, lr_log_Z: float = 1e-1,
            seed: int = 0, explore: float = 0.0, explore_decay: bool = True, buffer: int = 0,
            rank_weight: float = 1e-2, local_search_every: int = 0, local_search_steps: int = 20,
            local_search_step: float = 1e-2, grad_clip: Optional[float] = None,
            lr_schedule: Optional[str] = None, checkpoint: Optional[str] = None, checkpoint_every: int = 100,
            resume: bool = False, progress: bool = True, stl: bool = False,
            adjoint: bool = True) -> "DiffusionSampler":
        r"""Train the control.

        Losses (:mod:`controlsamp.samplers.losses`): ``"kl"`` (relative entropy through torchsde's adjoint),
        ``"lv"`` (log-variance), ``"tb"`` (trajectory balance, learned log Z), ``"vargrad"``.

        Off-policy options (Sendera et al. 2024; for ``lv``, ``tb``, ``vargrad``):
            explore: extra noise std (per unit time) on the behaviour paths, decayed linearly to zero over
                the run with ``explore_decay``.
            buffer: capacity of a replay buffer of terminal samples (0: none). With a buffer, every other
                iteration trains on backward paths (the reference's time reversal) from buffer samples.
            rank_weight: the buffer's rank-priority parameter.
            local_search_every, local_search_steps, local_search_step: every so many iterations, run MALA
                from buffer samples and add the results (0: never).

        Args:
            stl: with ``loss="kl"``, add the "sticking the landing" term (the Itô integral of the control
                with its parameters held fixed) to the path cost: same loss in expectation, gradient variance
                vanishing at the optimum (see :class:`controlsamp.samplers.losses._SamplerSDE`).
            adjoint: with ``loss="kl"``, the gradient by torchsde's stochastic adjoint (memory constant in
                the number of steps) or, with ``False``, by backpropagation through torchsde's Euler solve
                (memory linear in the steps; the exact gradient of the discretised loss, and about 3x
                faster than the adjoint with ``stl``, whose general-noise adjoint needs second derivatives).
            lr, lr_log_Z: Adam learning rates of the network and of the learned log Z (tb).
            lr_schedule: None or "cosine".
            seed: seeds the paths, the buffer sampling and the Brownian paths of the adjoint.
            checkpoint, checkpoint_every, resume: a checkpoint file; ``resume=True`` continues from it
                (the network, optimiser, buffer, generator and counters are restored).
        """
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
        iters, batch = check_dim(iters, "iters"), check_dim(batch, "batch")
        lr = check_positive(lr, "lr")
        if explore < 0:
            raise ValueError(f"explore must be >= 0; got {explore}")
        if loss == "kl" and (explore > 0 or buffer > 0 or local_search_every > 0):
            raise ValueError("loss='kl' is on-policy (it differentiates through the paths); exploration, a buffer "
                             "and local search need an off-policy loss: 'lv', 'tb' or 'vargrad'")
        if stl and loss != "kl":
            raise ValueError(f"stl=True is the sticking-the-landing estimator of loss='kl'; got loss={loss!r}")
        if local_search_every > 0 and buffer <= 0:
            raise ValueError("local_search_every needs a replay buffer (buffer > 0)")
        if lr_schedule not in (None, "cosine"):
            raise ValueError(f"lr_schedule must be None or 'cosine'; got {lr_schedule!r}")
        groups = [{"params": list(self.policy.parameters()), "lr": lr}]
        if loss == "tb":
            groups.append({"params": list(self._log_Z.parameters()), "lr": check_positive(lr_log_Z, "lr_log_Z")})
        opt = torch.optim.Adam(groups)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters) if lr_schedule == "cosine" else None
        gen = torch.Generator(device=self.device).manual_seed(seed)
        cpu_gen = torch.Generator().manual_seed(seed + 1)  # the buffer lives on the CPU
        buf = ReplayBuffer(buffer, self.dim, rank_weight) if buffer > 0 else None
        state = {"generator": gen.get_state(), "cpu_generator": cpu_gen.get_state(),
                 "ls_step": float(local_search_step), "evals": self.target_evals}
        history = self.history

        def step(it: int) -> Dict[str, float]:
            rec: Dict[str, float] = {}
            opt.zero_grad(set_to_none=True)
            if loss == "kl":
                value, lw = losses.kl(self, batch, entropy=seed * 1_000_003 + it, stl=stl,
                                       adjoint=adjoint)
            else:
                backward = buf is not None and it % 2 == 1 and len(buf) >= batch
                if backward:
                    xK, log_r = buf.sample(batch, cpu_gen)
                    xK = xK.to(self.device, self.dtype)
                    xs = self.grid.backward_sample(xK, gen)
                    lw = self.log_weights(xs, log_r.to(self.device))
                else:
                    eps = explore * (1 - it / iters) if explore_decay else explore
                    xs, _, _, feats = self.simulate(batch, gen, explore=eps)
                    log_r = self.log_reward(xs[:, -1])
                    if buf is not None:
                        buf.add(xs[:, -1], log_r)
                    lw = self.log_weights(xs, log_r, feats)
                value = losses.LOSSES[loss](lw, self._log_Z.value)
                rec["backward"] = float(backward)
            value.backward()
            clip_gradient(self.policy.parameters(), grad_clip, f"iteration {it} (loss {float(value.detach()):.4g})")
            opt.step()
            if sched is not None:
                sched.step()
            if buf is not None and local_search_every and (it + 1) % local_search_every == 0 and len(buf) >= batch:
                x, _ = buf.sample(batch, cpu_gen)
                x, lr_x, state["ls_step"] = local_search(self._log_density, x.to(self.device, self.dtype),
                                                         local_search_steps, state["ls_step"], gen)
                buf.add(x, lr_x)
            lwd = lw.detach()
            rec.update(loss=float(value.detach()), elbo=float(lwd.mean()),
                       log_Z=float(torch.logsumexp(lwd, 0) - math.log(len(lwd))), log_Z_param=float(self._log_Z.value.detach()),
                       target_evals=float(self.target_evals))
            state["generator"], state["cpu_generator"] = gen.get_state(), cpu_gen.get_state()
            state["evals"] = self.target_evals
            return rec

        def restore(extra: dict) -> None:
            if "generator" in extra:
                gen.set_state(extra["generator"])
                cpu_gen.set_state(extra["cpu_generator"])
                state["ls_step"] = extra["ls_step"]
                self.target_evals = extra["evals"]

        modules = {"policy": self.policy, "log_Z": self._log_Z, "optimizer": opt}
        if sched is not None:
            modules["schedule"] = sched
        if buf is not None:
            modules["buffer"] = buf
        t0 = time.perf_counter()
        fit_loop(step, iters, modules, history, checkpoint, checkpoint_every, resume, progress,
                 extra=lambda: dict(state), restore_extra=restore, desc=f"{self.name}[{loss}]")
        self.wall_time_s = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """Write the network, the learned log Z, the history and the configuration."""
        save_checkpoint(path, {"class": type(self).__name__, "config": self.config, "dim": self.dim,
                               "policy": self.policy.state_dict(), "log_Z": self._log_Z.state_dict(),
                               "history": self.history, "target_evals": self.target_evals,
                               "extra": self._extra_state()})

    def _extra_state(self) -> dict:
        """Further modules a subclass saves with the policy (e.g. ASBS's corrector)."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`_extra_state` saved."""

    def load(self, path: str) -> "DiffusionSampler":
        """Load a file written by :meth:`save` into this sampler (built with the same arguments)."""
        if not os.path.exists(path):
            raise ValueError(f"path {path!r} does not exist")
        payload = torch.load(path, weights_only=False, map_location=self.device)
        if payload["class"] != type(self).__name__ or payload["dim"] != self.dim or payload["config"] != self.config:
            raise ValueError(f"{path!r} holds a {payload['class']} with config {payload['config']} (dim "
                             f"{payload['dim']}); this sampler is a {type(self).__name__} with {self.config}")
        self.policy.load_state_dict(payload["policy"])
        self._log_Z.load_state_dict(payload["log_Z"])
        self.history = payload["history"]
        self.target_evals = payload["target_evals"]
        self._load_extra_state(payload.get("extra", {}))
        return self
