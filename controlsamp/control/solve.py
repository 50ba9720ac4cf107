"""`solve(problem, method=...)`: train a feedback policy, and the `Solution` it returns."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .._validate import (as_points, check_device, check_dim, check_dtype, check_grad_clip, check_positive, check_seed,
                         check_time)
from ..parallel import DataParallel
from ..training import descend, fit_loop, load_checkpoint, load_modules, make_optimizer, save_model, shard_streams
from .objectives import REGISTRY, Batch, Objective, get_objective
from .policies import make_policy
from .problem import ControlProblem


class Solution:
    """A trained policy with its problem: ``policy(t, x)``, ``cost(n)``, ``history``, ``save`` / ``load``."""

    def __init__(self, problem: ControlProblem, policy: nn.Module, history: Dict[str, List[float]],
                 method: str, policy_spec):
        self.problem, self.module, self.history, self.method = problem, policy, history, method
        self._spec = policy_spec

    def policy(self, t, x) -> torch.Tensor:
        """u(t, x), (n, m)."""
        p = next(self.module.parameters())
        t = check_time(t, self.problem.T)
        x = as_points(x, "x", self.problem.dim, dtype=p.dtype, device=p.device, single=True)
        with torch.no_grad():
            return self.module(t, x)

    def cost(self, n: int = 10_000, seed: int = 0, steps: Optional[int] = None,
             batch: int = 10_000) -> Tuple[float, float]:
        """Monte-Carlo estimate of J(policy): (mean, standard error), by Euler–Maruyama with ``steps`` time
        steps (default the problem's). Euler's O(1/steps) bias is in the estimate: evaluate on a finer grid
        than the training one to compare with a continuous-time optimum."""
        n, batch = check_dim(n, "n"), check_dim(batch, "batch")
        steps = self.problem.steps if steps is None else check_dim(steps, "steps")
        p = next(self.module.parameters())
        gen = torch.Generator(device=p.device).manual_seed(check_seed(seed))
        costs = []
        for start in range(0, n, batch):
            m = min(batch, n - start)
            x0 = self.problem.sample_x0(m, gen, device=p.device, dtype=p.dtype)
            costs.append(self.problem.simulate(self.module, x0, gen, steps, record=False).cost.double())
        c = torch.cat(costs)
        return float(c.mean()), float(c.std() / math.sqrt(n))

    def save(self, path: str) -> None:
        """Write the policy's weights, how to rebuild it (its name and options, or for an nn.Module given to
        :func:`solve` its class name) and the history, atomically in the checkpoint schema of
        :mod:`controlsamp.training` (tensors and plain data only: loading it runs no code)."""
        kind, kwargs = self._spec
        extra = {"method": self.method, "policy_kind": kind, "policy_kwargs": kwargs,
                 "policy_class": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
                 "dtype": str(next(self.module.parameters()).dtype).replace("torch.", "")}
        save_model(path, "Solution", {}, {"policy": self.module}, self.history, extra)

    @classmethod
    def load(cls, path: str, problem: ControlProblem, policy: Optional[nn.Module] = None) -> "Solution":
        """Load a saved solution; the problem (with its callables) is given again. A solution whose policy was
        an nn.Module of your own needs ``policy``: a module of the same architecture, into which the saved
        weights are loaded (the file holds weights only, never code)."""
        if not isinstance(problem, ControlProblem):
            raise ValueError(f"problem must be a controlsamp.ControlProblem; got {type(problem).__name__}")
        if policy is not None and not isinstance(policy, nn.Module):
            raise ValueError(f"policy must be an nn.Module or None; got {type(policy).__name__}")
        payload = load_checkpoint(path, "Solution", {})
        ex = payload["extra"]
        if not isinstance(ex.get("method"), str) or not isinstance(ex.get("policy_kwargs"), dict) or not (
                ex.get("policy_kind") is None or isinstance(ex.get("policy_kind"), str)):
            raise ValueError(f"{path!r} is not a saved Solution (its method or policy description is missing)")
        if ex["policy_kind"] is None:
            if policy is None:
                raise ValueError(f"{path!r} holds the weights of a policy of your own ({ex.get('policy_class')}): "
                                 "pass policy=<a module of that architecture> to load them into")
            module = policy
        else:
            if policy is not None:
                raise ValueError(f"{path!r} holds a {ex['policy_kind']!r} policy, which load() rebuilds itself; "
                                 "policy must be None")
            module = make_policy(ex["policy_kind"], problem, **ex["policy_kwargs"])
            if ex.get("dtype") in ("float16", "bfloat16", "float32", "float64"):  # as trained
                module = module.to(dtype=getattr(torch, ex["dtype"]))
        load_modules(payload, {"policy": module})
        return cls(problem, module, payload["history"], ex["method"], (ex["policy_kind"], ex["policy_kwargs"]))


METHODS = {"adjoint": dict(objective="relative_entropy", adjoint=True),
           "backprop": dict(objective="relative_entropy", adjoint=False)}


def make_objective(method, solver: str = "euler") -> Objective:
    """The objective of a ``method`` name: "adjoint" / "backprop" (the relative entropy through torchsde's
    adjoint / by backpropagation, with ``solver``), any name of
    :data:`controlsamp.control.objectives.REGISTRY` ("log_variance", "adjoint_matching", "trajectory_balance",
    "vargrad", ...), or an :class:`~controlsamp.control.objectives.Objective` instance."""
    if isinstance(method, Objective):
        return method
    if method in METHODS:
        spec = dict(METHODS[method])
        return get_objective(spec.pop("objective"), scheme=solver, **spec)
    if method in ("relative_entropy", "kl"):
        return get_objective(method, scheme=solver)
    return get_objective(method)


def solve(problem: ControlProblem, method="adjoint", policy="mlp", iters: int = 1000, batch: int = 256,
          lr: float = 1e-3, seed: int = 0, device: str = "cpu", solver: str = "euler",
          dtype: Optional[torch.dtype] = None, checkpoint: Optional[str] = None, checkpoint_every: int = 100,
          resume: bool = False, progress: bool = True, grad_clip: Optional[float] = None,
          lr_schedule: Optional[str] = "cosine", policy_kwargs: Optional[dict] = None,
          shards: Optional[int] = None) -> Solution:
    r"""Train a feedback control for ``problem`` with one objective of :mod:`controlsamp.control.objectives`.

    Methods:

    * ``"adjoint"``: minimise the Monte-Carlo cost through ``torchsde.sdeint_adjoint`` (Li et al. 2020);
      ``solver="euler"`` or ``"reversible_heun"`` (Kidger et al. 2021; needs ``dtype=torch.float64``). The
      adjoint rebuilds the state backward in time, which diverges on strongly contracting drifts (a steep
      double well): training then stops with an error that says so.
    * ``"backprop"``: the same objective, backpropagating through ``torchsde.sdeint``.
    * ``"log_variance"`` (Nüsken & Richter 2021), ``"trajectory_balance"``, ``"vargrad"``, ...: functions of
      the path log-weights; they need B = sigma and R = (rho/2) I.
    * ``"adjoint_matching"``: regression onto the lean adjoint (Domingo-Enrich et al. 2024).
    * an :class:`~controlsamp.control.objectives.Objective` instance.

    Args:
        policy: "mlp", "mlp+grad" (adds the terminal-cost gradient feature), "affine", or an nn.Module
            ``(t, x) -> (n, m)``.
        iters, batch, lr: Adam iterations, paths per iteration, learning rate.
        lr_schedule: "cosine" (anneal lr to 0 over ``iters``) or None (constant).
        seed: seeds the network initialisation, the initial states, the noise and the torchsde Brownian
            paths (entropy = (seed, iteration)).
        checkpoint, checkpoint_every, resume: a checkpoint file, written every ``checkpoint_every``
            iterations, at the end and on interruption; ``resume=True`` continues from it.
        device, dtype: where and in what precision the policy and the paths live; ``dtype=None`` is torch's
            default dtype (float32 unless ``torch.set_default_dtype`` changed it).
        grad_clip: None (no clipping) or the largest gradient norm (> 0).
        shards: the random shards of data-parallel training (:mod:`controlsamp.parallel`; None: one per
            process): inside a ``torch.distributed`` group (``torchrun``) each shard draws ``batch / shards``
            paths from its own streams and the gradient is that of the whole batch. A run depends on ``seed``
            and ``shards``, not on the number of processes.
    """
    if not isinstance(problem, ControlProblem):
        raise ValueError(f"problem must be a controlsamp.ControlProblem; got {type(problem).__name__}")
    if not isinstance(method, (str, Objective)) or (isinstance(method, str) and method not in METHODS
                                                    and method not in REGISTRY):
        raise ValueError(f"method must be one of {sorted(set(METHODS) | set(REGISTRY))} or an Objective; "
                         f"got {method!r}")
    iters, batch = check_dim(iters, "iters"), check_dim(batch, "batch")
    lr, seed = check_positive(lr, "lr"), check_seed(seed)
    device, dtype = check_device(device), check_dtype(dtype)
    grad_clip, checkpoint_every = check_grad_clip(grad_clip), check_dim(checkpoint_every, "checkpoint_every")
    if lr_schedule not in (None, "cosine"):
        raise ValueError(f"lr_schedule must be None or 'cosine'; got {lr_schedule!r}")
    if policy_kwargs is not None and not isinstance(policy_kwargs, dict):
        raise ValueError(f"policy_kwargs must be a dict of options of the policy or None; got "
                         f"{type(policy_kwargs).__name__}")
    if not isinstance(policy, nn.Module) and policy not in ("mlp", "mlp+grad", "affine"):
        raise ValueError(f"policy must be 'mlp', 'mlp+grad', 'affine' or an nn.Module; got {policy!r}")
    objective = make_objective(method, solver)
    objective.check(problem)
    if objective.differentiates_state:  # a drift or cost written through numpy would give a wrong gradient
        problem.check_differentiable(device=device, dtype=dtype)
    if objective.needs_data:
        raise ValueError(f"method={method!r} regresses on data a method supplies (ASBS's endpoint pairs), not on "
                         "paths solve() can draw; use 'adjoint', 'backprop', 'log_variance' or 'adjoint_matching'")
    kwargs = dict(policy_kwargs or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # network initialisation, without touching the caller's global stream
        module = make_policy(policy, problem, **kwargs).to(device=device, dtype=dtype)
    spec = (None, {}) if isinstance(policy, nn.Module) else (policy, kwargs)
    problem.check(module, device=device, dtype=dtype)
    objective.to(device=device)
    groups = [{"params": list(module.parameters()), "lr": lr}, {"params": list(objective.parameters()), "lr": lr}]
    opt, sched = make_optimizer(groups, iters, lr_schedule)
    dp = DataParallel(shards)
    per_shard = dp.split(batch, "batch")
    streams = shard_streams(dp, seed, device)
    history: Dict[str, List[float]] = {}
    name = method if isinstance(method, str) else objective.name
    hint = (" The adjoint reconstructs the state backward in time, which diverges on strongly contracting drifts "
            "(e.g. a steep double well): use method='backprop', 'log_variance' or 'adjoint_matching' there."
            if method == "adjoint" else "")

    def step(it: int) -> Dict[str, float]:
        batches = [Batch(per_shard, st, st.entropy(it), device, dtype) for st in streams]
        loss, value, info = objective.sharded(problem, module, batches, dp)
        gnorm = descend(loss, opt, list(module.parameters()) + list(objective.parameters()), grad_clip,
                        f"iteration {it} (loss {value:.4g}).{hint}", sched, dp)
        cost = float(info["cost"].mean()) if "cost" in info else float(-info["log_w"].mean())
        return {"loss": value, "cost": cost, "grad_norm": gnorm}

    modules = {"policy": module, "objective": objective, "optimizer": opt}
    if sched is not None:
        modules["schedule"] = sched
    config = dict(method=name, solver=solver, batch=batch, seed=seed, policy=str(spec[0]))
    fit_loop(step, iters, modules, history, kind=f"solve[{name}]", config=config, streams=streams,
             checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, progress=progress and dp.writer,
             postfix=("loss", "cost"), parallel=dp)
    return Solution(problem, module, history, name, spec)
