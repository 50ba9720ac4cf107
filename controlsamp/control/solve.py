"""`solve(problem, method=...)`: train a feedback policy, and the `Solution` it returns."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .._validate import check_dim, check_positive
from .loop import fit_loop, save_checkpoint
from .methods import METHODS
from .methods.common import rollout
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
        with torch.no_grad():
            return self.module(t, torch.as_tensor(x, dtype=p.dtype, device=p.device))

    def cost(self, n: int = 10_000, seed: int = 0, steps: Optional[int] = None,
             batch: int = 10_000) -> Tuple[float, float]:
        """Monte-Carlo estimate of J(policy): (mean, standard error), by Euler–Maruyama with ``steps`` time
        steps (default the problem's). Euler's O(1/steps) bias is in the estimate: evaluate on a finer grid
        than the training one to compare with a continuous-time optimum."""
        n = check_dim(n, "n")
        steps = self.problem.steps if steps is None else check_dim(steps, "steps")
        p = next(self.module.parameters())
        gen = torch.Generator(device=p.device).manual_seed(seed)
        costs = []
        for start in range(0, n, batch):
            m = min(batch, n - start)
            x0 = self.problem.sample_x0(m, gen, device=p.device, dtype=p.dtype)
            costs.append(rollout(self.problem, self.module, x0, gen, steps)[3].double())
        c = torch.cat(costs)
        return float(c.mean()), float(c.std() / math.sqrt(n))

    def save(self, path: str) -> None:
        kind, kwargs = self._spec
        payload = {"method": self.method, "history": self.history, "kind": kind, "kwargs": kwargs,
                   "state_dict": self.module.state_dict()}
        if kind is None:
            payload["module"] = self.module
        save_checkpoint(path, payload)

    @classmethod
    def load(cls, path: str, problem: ControlProblem) -> "Solution":
        """Load a saved solution; the problem (with its callables) is given again."""
        payload = torch.load(path, weights_only=False)
        if payload["kind"] is None:
            module = payload["module"]
        else:
            module = make_policy(payload["kind"], problem, **payload["kwargs"])
            module.load_state_dict(payload["state_dict"])
        return cls(problem, module, payload["history"], payload["method"], (payload["kind"], payload["kwargs"]))


def solve(problem: ControlProblem, method: str = "adjoint", policy="mlp", iters: int = 1000, batch: int = 256,
          lr: float = 1e-3, seed: int = 0, device: str = "cpu", solver: str = "euler",
          dtype: torch.dtype = torch.float32, checkpoint: Optional[str] = None, checkpoint_every: int = 100,
          resume: bool = False, progress: bool = True, grad_clip: Optional[float] = None,
          lr_schedule: Optional[str] = "cosine", policy_kwargs: Optional[dict] = None) -> Solution:
    r"""Train a feedback control for ``problem``.

    Methods (one module each in :mod:`controlsamp.control.methods`):

    * ``"adjoint"``: minimise the Monte-Carlo cost through ``torchsde.sdeint_adjoint`` (Li et al. 2020);
      ``solver="euler"`` or ``"reversible_heun"`` (Kidger et al. 2021; needs ``dtype=torch.float64``). The
      adjoint rebuilds the state backward in time, which diverges on strongly contracting drifts (a steep
      double well): training then stops with an error that says so.
    * ``"backprop"``: the same objective, backpropagating through ``torchsde.sdeint``.
    * ``"log_variance"``: the log-variance loss on detached paths (Nüsken & Richter 2021); needs
      B = sigma and R = (rho/2) I.
    * ``"adjoint_matching"``: regression onto the lean adjoint (Domingo-Enrich et al. 2024).

    Args:
        policy: "mlp", "mlp+grad" (adds the terminal-cost gradient feature), "affine", or an nn.Module
            ``(t, x) -> (n, m)``.
        iters, batch, lr: Adam iterations, paths per iteration, learning rate.
        lr_schedule: "cosine" (anneal lr to 0 over ``iters``) or None (constant).
        seed: seeds the initial states, the noise and the torchsde Brownian paths (entropy = seed, iteration).
        checkpoint, checkpoint_every, resume: a checkpoint file, written every ``checkpoint_every``
            iterations, at the end and on interruption; ``resume=True`` continues from it.
    """
    if not isinstance(problem, ControlProblem):
        raise ValueError(f"problem must be a controlsamp.ControlProblem; got {type(problem).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; got {method!r}")
    iters, batch = check_dim(iters, "iters"), check_dim(batch, "batch")
    lr = check_positive(lr, "lr")
    torch.manual_seed(seed)  # network initialisation
    kwargs = dict(policy_kwargs or {})
    module = make_policy(policy, problem, **kwargs).to(device=device, dtype=dtype)
    spec = (None, {}) if isinstance(policy, nn.Module) else (policy, kwargs)
    problem.check(module, device=device, dtype=dtype)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    if lr_schedule not in ("cosine", None):
        raise ValueError(f"lr_schedule must be 'cosine' or None; got {lr_schedule!r}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters) if lr_schedule == "cosine" else None
    gen = torch.Generator(device=device).manual_seed(seed)
    loss_fn = METHODS[method]
    history: Dict[str, List[float]] = {}

    rng_after_last_step = {"generator": gen.get_state()}  # what a checkpoint stores, even mid-step

    def step(it: int) -> Dict[str, float]:
        x0 = problem.sample_x0(batch, gen, device=device, dtype=dtype)
        opt.zero_grad(set_to_none=True)
        extra = {"solver": solver} if method in ("adjoint", "backprop") else {}
        loss, cost = loss_fn(problem, module, x0, gen, entropy=seed * 1_000_003 + it, **extra)
        loss.backward()
        params = [p for p in module.parameters() if p.grad is not None]
        gnorm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))) if params else 0.0
        if not math.isfinite(gnorm):
            hint = (" The adjoint reconstructs the state backward in time, which diverges on strongly contracting "
                    "drifts (e.g. a steep double well): use method='backprop', 'log_variance' or "
                    "'adjoint_matching' there." if method == "adjoint" else "")
            raise ValueError(f"the gradient became non-finite at iteration {it} (loss {float(loss.detach()):.4g}); "
                             f"the parameters were not updated.{hint}")
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        rng_after_last_step["generator"] = gen.get_state()
        return {"loss": float(loss.detach()), "cost": cost, "grad_norm": gnorm}

    modules = {"policy": module, "optimizer": opt}
    if sched is not None:
        modules["schedule"] = sched
    fit_loop(step, iters, modules, history, checkpoint, checkpoint_every, resume,
             progress, extra=lambda: dict(rng_after_last_step),
             restore_extra=lambda e: gen.set_state(e["generator"]) if "generator" in e else None,
             desc=f"solve[{method}]")
    return Solution(problem, module, history, method, spec)
