r"""The adjoint Schrödinger bridge sampler (Liu, Choi, Chen, Miller & Chen 2025, "Adjoint Schrödinger
bridge sampler", arXiv 2506.22565), which contains adjoint sampling (Havens et al. 2025) as its point-prior case.

The Schrödinger bridge from a prior mu = N(0, s_0^2 I) to the target pi = pi~ / Z, for the Brownian
reference dX = sigma dW on [0, T] (an isotropic linear reference in general), is the optimally controlled

.. math:: dX_t = \sigma u(t, X_t)\,dt + \sigma\,dW_t,\quad X_0\sim\mu,\qquad
          \min_u \mathbb E\Big[\int_0^T \tfrac12|u|^2 dt + g(X_T)\Big],\quad
          g = \log\hat\varphi_T - \log\tilde\pi,

where phi^_T is the SB's backward potential at T, whose score (the *corrector*) is
grad log phi^_T(x) = E_{P^*}[grad_{x_T} log p^ref(x_T | X_0) | X_T = x]. ASBS alternates two regressions:

* **adjoint matching** (Domingo-Enrich et al. 2025) for the control with the corrector held fixed: with
  the lean adjoint of a linear reference, a(t) = phi(t, T) grad g(X_T), and the reciprocal projection
  (X_t drawn from the reference bridge between the model's own (X_0, X_T), from a replay buffer),
  u(t, X_t) regresses onto -sigma(t) phi(t, T) (h(X_T) - grad log pi~(X_T));
* **corrector matching** for h with the control held fixed: h(X_T) regresses onto
  grad_{x_T} log p^ref(X_T | X_0) = -(X_T - phi(0, T) X_0) / q(0, T) on (X_0, X_T) of the current model
  (the first stage on the reference's own couplings, i.e. an IPF initialisation).

With a point prior (``prior_std=0``) the corrector is known in closed form, the reference's terminal score
-x / (sigma^2 T), and ASBS is adjoint sampling; ``corrector="reference"`` uses that closed form for any
prior (then the fixed point is not the SB but the importance weights below stay exact).

The sampler keeps the package's exact discrete importance weights: the target path law is
pi(X_T) / p^ref_T(X_T) times the reference from mu, so log w = log pi~(X_T) - log p^ref_T(X_T) - sum u.dW -
h/2 sum |u|^2 on the Euler grid and Z = E[w] whatever the training (:class:`DiffusionSampler`).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch

from .._validate import check_dim, check_grad_clip, check_nonnegative, check_positive, check_seed
from ..control import Batch, Paths, get_objective
from ..control.policies import MLPPolicy
from ..processes import Brownian, IsotropicLinearSDE
from ..sde import DiscretisedReference
from ..parallel import DataParallel
from ..training import descend, fit_loop, make_optimizer, shard_streams
from .base import DiffusionSampler, check_target

Tensor = torch.Tensor
CORRECTORS = ("learned", "reference")


class ASBS(DiffusionSampler):
    r"""``ASBS(target, prior_std=1.0, steps=100, sigma=1.0, T=1.0, corrector="learned", **network_options)``.

    Args:
        prior_std: the prior N(0, prior_std^2 I); 0 is the point prior of adjoint sampling.
        sigma, T, steps: the Brownian reference sigma dW on [0, T] and its grid.
        reference: any isotropic linear reference process of :mod:`controlsamp.processes` (e.g. an OU or VP
            process, of the target's dimension) instead of the Brownian one; sigma and T are then its own.
        scheme: the discretisation of the controlled chain, ``"euler"`` (default) or ``"exponential"``.
        corrector: ``"learned"`` (corrector matching, ASBS) or ``"reference"`` (the reference's terminal
            score, exact for the point prior: adjoint sampling).
        corrector_hidden: width of the corrector network h(x).
        other options: :class:`~controlsamp.samplers.base.DiffusionSampler` (the Langevin term is off by
            default here, as in the paper).

    ``fit(iters, batch, loss="am", ...)`` (see there), ``sample(n) -> (x, log w)``, ``log_Z(n)``, ``drift(t, x)``.
    """

    name = "asbs"
    LOSSES = ("am",)
    default_loss = "am"

    def __init__(self, target, prior_std: float = 1.0, steps: int = 100, sigma: float = 1.0, T: float = 1.0,
                 corrector: str = "learned", corrector_hidden: int = 64, langevin: bool = False,
                 reference: Optional[IsotropicLinearSDE] = None, scheme: str = "euler", **kwargs):
        check_target(target)
        sigma, T, steps = check_positive(sigma, "sigma"), check_positive(T, "T"), check_dim(steps, "steps")
        prior_std = check_nonnegative(prior_std, "prior_std")
        corrector_hidden = check_dim(corrector_hidden, "corrector_hidden")
        if corrector not in CORRECTORS:
            raise ValueError(f"corrector must be one of {CORRECTORS}; got {corrector!r}")
        if reference is None:
            reference = Brownian(target.dim, sigma=sigma, T=T)
        elif not isinstance(reference, IsotropicLinearSDE) or reference.dim != target.dim:
            raise ValueError("reference must be an isotropic linear process of controlsamp.processes with the "
                             f"target's dimension {target.dim}; got {reference!r}")
        ref_name = repr(reference)
        reference = DiscretisedReference(reference, steps, scheme=scheme, v0=prior_std ** 2)
        T = reference.T
        super().__init__(target, reference, langevin=langevin, **kwargs)
        self.sigma, self.prior_std, self.corrector_kind = sigma, prior_std, corrector
        if corrector == "learned" and prior_std == 0.0:
            self.corrector_kind = "reference"  # exact: the point prior's corrector is the reference score
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config["seed"] + 1)
            self.corrector = MLPPolicy(self.dim, self.dim, T, hidden=check_dim(corrector_hidden, "corrector_hidden"))
        self.corrector.to(device=self.device, dtype=self.dtype)
        self._phi0T, self._q0T = float(reference.phi0[-1]), float(reference.q0[-1])
        self.config.update(sampler="asbs", sigma=sigma, prior_std=prior_std, corrector=self.corrector_kind,
                           reference=ref_name)

    # ---------------------------------------------------------------- the corrector
    def corrector_score(self, x: Tensor) -> Tensor:
        """h(x) ~ grad log phi^_T(x): the network, or the reference's terminal score."""
        if self.corrector_kind == "reference":
            return self.reference.terminal_score(x).to(x.dtype)
        return self.corrector(self.T, x)

    def _terminal_grad(self, x1: Tensor) -> Tensor:
        """grad g(x) = h(x) - grad log pi~(x) (the target score is counted in ``target_evals``)."""
        with torch.no_grad():
            return self.corrector_score(x1) - self.problem.target_score(x1)

    # ---------------------------------------------------------------- training
    def fit(self, iters: int = 1000, batch: int = 300, loss: str = "am", lr: float = 1e-3, seed: int = 0,
            stages: int = 4, corrector_iters: int = 200, paths_per_refresh: Optional[int] = None,
            refresh_every: int = 20, buffer: int = 10000, grad_clip: Optional[float] = None,
            lr_schedule: Optional[str] = None, checkpoint: Optional[str] = None, checkpoint_every: int = 100,
            resume: bool = False, progress: bool = True, shards: Optional[int] = None, **unused) -> "ASBS":
        r"""Alternate corrector matching and adjoint matching: the objectives
        :mod:`~controlsamp.control.objectives.corrector_matching` and
        :mod:`~controlsamp.control.objectives.reciprocal_adjoint_matching`, on data this method keeps.

        ``iters`` adjoint-matching steps in all, split evenly over ``stages``; each stage starts with
        ``corrector_iters`` corrector-matching steps (skipped for ``corrector="reference"``; the first stage's
        on couplings of the reference itself), on a FIFO of (x_0, x_T) pairs refreshed like the buffer below
        and emptied when the stage starts. Every ``refresh_every`` adjoint steps, ``paths_per_refresh``
        (default ``batch``) new paths of the current model enter a replay buffer of ``buffer`` terminal
        pairs (x_0, x_T, grad g(x_T)); each step regresses the control at ``batch`` bridge points
        (X_{t_k} from the reference bridge, k uniform on the grid) onto -g_k phi(t_k, T) grad g(x_T).
        The loss per step is the mean squared error (summed over coordinates).

        Off-policy options of the other samplers (``explore``, ``buffer`` as a count of buffer samples for
        tb, local search) do not apply; passing them raises.

        ``shards``: the random shards of data-parallel training (:mod:`controlsamp.parallel`; None: one per
        process), as for the other samplers: each shard simulates ``paths_per_refresh / shards`` new paths per
        refresh from its own streams, every process's buffers receive every shard's pairs, and each shard
        regresses on ``batch / shards`` buffer points; both losses are means over points, averaged over the
        shards, with the gradients averaged over the processes."""
        if loss not in self.LOSSES:
            raise ValueError(f"ASBS trains with loss='am' (adjoint matching); got {loss!r}")
        bad = {k: v for k, v in unused.items() if v not in (None, 0, 0.0, False)}
        if bad:
            raise ValueError(f"options not used by ASBS: {sorted(bad)}")
        iters, batch = check_dim(iters, "iters"), check_dim(batch, "batch")
        seed, grad_clip = check_seed(seed), check_grad_clip(grad_clip)
        checkpoint_every = check_dim(checkpoint_every, "checkpoint_every")
        stages, refresh_every = check_dim(stages, "stages"), check_dim(refresh_every, "refresh_every")
        buffer = check_dim(buffer, "buffer")
        n_new = check_dim(paths_per_refresh or batch, "paths_per_refresh")
        lr = check_positive(lr, "lr")
        if lr_schedule not in (None, "cosine"):
            raise ValueError(f"lr_schedule must be None or 'cosine'; got {lr_schedule!r}")
        learn_h = self.corrector_kind == "learned"
        c_iters = check_dim(corrector_iters, "corrector_iters") if learn_h else 0
        per_stage = max(1, iters // stages)
        am_total = per_stage * stages
        total = am_total + stages * c_iters
        opt, sched = make_optimizer([{"params": list(self.policy.parameters()), "lr": lr}], am_total, lr_schedule)
        opt_h, _ = make_optimizer([{"params": list(self.corrector.parameters()), "lr": lr}], total)
        dp = DataParallel(shards)
        per_shard, new_per_shard = dp.split(batch, "batch"), dp.split(n_new, "paths_per_refresh")
        streams = shard_streams(dp, seed, self.device)
        adjoint_matching, corrector_matching = get_objective("reciprocal_adjoint_matching"), get_objective(
            "corrector_matching")
        buf: Dict[str, Optional[Tensor]] = {"x0": None, "x1": None, "grad": None}
        pairs: Dict[str, Optional[Tensor]] = {"x0": None, "x1": None}

        def shard_pairs(gen, reference: bool):
            with torch.no_grad():
                if reference:
                    x0 = self.reference.sample_x0(new_per_shard, gen, self.device, self.dtype)
                    x1 = self._phi0T * x0 + math.sqrt(self._q0T) * torch.randn(
                        x0.shape, generator=gen, device=self.device, dtype=self.dtype)
                else:
                    xs = self.simulate(new_per_shard, gen).xs  # starts from its own x0
                    x0, x1 = xs[:, 0], xs[:, -1]
            return x0, x1

        def refresh(store: Dict[str, Optional[Tensor]], reference: bool, with_grad: bool) -> None:
            """Every shard's new pairs (with their terminal gradients) into ``store``, the same in every process."""
            parts = [shard_pairs(st.device, reference) for st in streams]
            new = {"x0": [p[0] for p in parts], "x1": [p[1] for p in parts]}
            if with_grad:
                new["grad"] = [self._terminal_grad(p[1]) for p in parts]
            for key, v in new.items():
                v = dp.cat_rows(v)
                store[key] = v if store[key] is None else torch.cat([store[key], v])[-buffer:]

        def shard_ends(store: Dict[str, Optional[Tensor]], with_grad: bool) -> List[Batch]:
            out = []
            for st in streams:
                idx = torch.randint(store["x0"].shape[0], (per_shard,), generator=st.cpu).to(self.device)
                ends = Paths(torch.stack([store["x0"][idx], store["x1"][idx]], 1),
                             terminal_grad=store["grad"][idx] if with_grad else None)
                out.append(Batch(per_shard, st, paths=ends))
            return out

        def corrector_step(stage: int, j: int) -> Dict[str, float]:
            # the coupling of this stage (the reference's first, then the model's), refreshed like the buffer
            if j == 0:
                pairs["x0"] = pairs["x1"] = None
            before = self.target_evals
            if j % refresh_every == 0 or pairs["x0"] is None:
                refresh(pairs, reference=stage == 0, with_grad=False)
            loss, value, _ = corrector_matching.sharded(self.problem, self.corrector, shard_ends(pairs, False), dp)
            descend(loss, opt_h, self.corrector.parameters(), None, f"corrector step {j} of stage {stage} (loss "
                    f"{value:.4g})", None, dp)
            self.target_evals = dp.count_since(before, self.target_evals)  # every process's evaluations
            return {"loss": value, "corrector": 1.0}

        def am_step(a: int) -> Dict[str, float]:
            before = self.target_evals
            if a % refresh_every == 0 or buf["x0"] is None:
                refresh(buf, reference=False, with_grad=True)
            loss, value, _ = adjoint_matching.sharded(self.problem, self.policy, shard_ends(buf, True), dp)
            descend(loss, opt, self.policy.parameters(), grad_clip, f"adjoint-matching step {a} (loss {value:.4g})",
                    sched, dp)
            self.target_evals = dp.count_since(before, self.target_evals)  # every process's evaluations
            return {"loss": value, "corrector": 0.0}

        block = c_iters + per_stage

        def step(it: int) -> Dict[str, float]:
            stage, j = divmod(it, block)
            if j < c_iters:
                rec = corrector_step(stage, j)
            else:
                rec = am_step(stage * per_stage + j - c_iters)
            return rec

        def extra():
            return {"buffer": dict(buf), "pairs": dict(pairs), "evals": self.target_evals}

        def restore(ex):
            buf.update(ex["buffer"])
            pairs.update(ex["pairs"])
            self.target_evals = int(ex["evals"])

        modules = {"policy": self.policy, "corrector": self.corrector, "opt": opt, "opt_corrector": opt_h}
        if sched is not None:
            modules["sched"] = sched
        config = dict(self.config, batch=batch, seed=seed, stages=stages, corrector_iters=c_iters,
                      buffer=buffer, refresh_every=refresh_every, paths_per_refresh=n_new)
        fit_loop(step, total, modules, self.history, kind="ASBS", config=config, streams=streams,
                 checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                 progress=progress and dp.writer, extra=extra, restore_extra=restore, postfix=("loss",),
                 iters_name="iters + stages * corrector_iters", parallel=dp)
        return self

    # ---------------------------------------------------------------- persistence
    def _modules(self):
        return dict(super()._modules(), corrector=self.corrector)
