r"""`DiffusionModel`: a score-based generative model learned from data on a reference process of the package.

The forward (noising) process is a reference of :mod:`controlsamp.processes` started at the data,
:math:`dX_t = f(t, X_t)\,dt + G(t)\,dW_t`, :math:`X_0 \sim p_{\text{data}}`; a network learns the score
:math:`\nabla\log p_t` of its marginals by denoising score matching (:mod:`.score_matching`; hybrid score
matching for CLD) and the samplers (:mod:`.sampling`, :mod:`.ode`) run the reverse-time SDE
:math:`dY = [-f + GG^\top\nabla\log p_{T-s}]\,ds + G\,dW` or the probability-flow ODE
:math:`\dot x = f - \tfrac12 GG^\top\nabla\log p_t` from the prior at T (Song et al. 2021, "Score-based generative
modeling through stochastic differential equations", ICLR; Dockhorn, Vahdat & Kreis 2022 for CLD).

Training composes the package's engine: the references and their exact kernels, the one training loop
(:func:`controlsamp.training.fit_loop`: optimiser, schedule, progress, non-finite reports), its checkpoint schema
(exact resume) and the EMA of :func:`controlsamp.training.ema_copy`.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
from torch import nn

from .._validate import (check_count, check_device, check_dim, check_dtype, check_grad_clip, check_nonnegative,
                         check_positive, check_seed)
from ..control.policies import MLPPolicy
from ..targets.sources import as_sampler
from ..parallel import DataParallel
from ..training import (descend, ema_copy, fit_loop, load_checkpoint, load_modules, make_optimizer, shard_streams,
                        save_model)
from .kernel import make_kernel
from .parametrisation import check_parametrisation, eps_from_output
from .score_matching import WEIGHTINGS, TimeSampler, score_matching_loss
from .source import ScoreSource

Tensor = torch.Tensor

__all__ = ["DiffusionModel"]


def check_teacher(teacher, student) -> None:
    """A ValueError unless ``teacher`` is a score source on the student's reference (the same process, by repr) and
    data dimension, trusted down to the student's t_min."""
    if not isinstance(teacher, ScoreSource):
        raise ValueError(f"teacher must be a score source (DiffusionModel, ExactScore or another ScoreSource); got "
                         f"{type(teacher).__name__}")
    if repr(teacher.reference) != repr(student.reference) or teacher.data_dim != student.data_dim:
        raise ValueError(f"teacher must be on the student's reference {student.reference!r} (data dimension "
                         f"{student.data_dim}); got {teacher.reference!r} (data dimension {teacher.data_dim})")
    if teacher.t_min > student.t_min:
        raise ValueError(f"the teacher is trusted from t_min = {teacher.t_min}, above the student's t_min = "
                         f"{student.t_min}: give the student a t_min of at least {teacher.t_min}")


class NetworkWithEMA:
    """What every trained score model shares (:class:`DiffusionModel`,
    :class:`~controlsamp.generative.riemannian.RiemannianDiffusionModel`): a ``network`` with an EMA copy
    ``ema``, a ``history``, a ``kind`` and a ``config`` naming the checkpoint, the fit's call of the package's one
    training loop, and save / load in the one checkpoint schema."""

    network: nn.Module
    kind: str
    config: dict

    def _fit_start(self, checkpoint, resume: bool, config: dict) -> int:
        """The iteration this fit starts from: the steps of earlier fits, or, when resuming a checkpoint, where the
        fit being resumed started (its ``fit_start``)."""
        if resume and checkpoint is not None and os.path.exists(checkpoint):
            ex = load_checkpoint(checkpoint, self.kind, config, training_state=True)["extra"]
            if not isinstance(ex.get("fit_start"), int):
                raise ValueError(f"{checkpoint!r} lacks the model's training offset (fit_start)")
            return ex["fit_start"]
        return len(self.history.get("loss", []))

    def _run_fit(self, step, total: int, opt, sched, config: dict, streams, checkpoint, checkpoint_every: int,
                 resume: bool, progress: bool, n_done: int, parallel: Optional[DataParallel] = None):
        """``step`` through :func:`controlsamp.training.fit_loop` for iterations n_done..total-1, checkpointing the
        network, its EMA, the optimiser (and schedule) with the random streams."""
        modules = {"network": self.network, "ema": self.ema, "optimizer": opt}
        if sched is not None:
            modules["schedule"] = sched
        self.trained = True
        fit_loop(step, total, modules, self.history, kind=self.kind, config=config, streams=streams,
                 checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                 progress=progress and (parallel is None or parallel.writer), extra=lambda: {"fit_start": n_done},
                 postfix=("loss",), start=n_done, iters_name="the earlier fits' steps + iters", parallel=parallel)
        return self

    def save(self, path: str) -> None:
        """Write the network, its EMA copy and the history in the package's checkpoint schema."""
        save_model(path, self.kind, self.config, {"network": self.network, "ema": self.ema}, self.history,
                   {"trained": self.trained})

    def load(self, path: str):
        """Load a file written by :meth:`save` into this model (built with the same arguments; a file of another
        kind or configuration is refused)."""
        payload = load_checkpoint(path, self.kind, self.config, map_location=self.device)
        load_modules(payload, {"network": self.network, "ema": self.ema})
        self.history = payload["history"]
        self.trained = bool(payload["extra"].get("trained", True))
        return self


class DiffusionModel(NetworkWithEMA, ScoreSource):
    r"""A score model :math:`s_\theta(t, x) \approx \nabla_x\log p_t(x)` on a reference process (see the module
    docstring), with an EMA copy of its weights used for sampling.

    Args:
        reference: ``VP``, ``VE``, ``OU``, ``Brownian`` (isotropic; the data live in the whole state) or ``CLD``
            (phase space (x, v); the data live on x and only the velocity score is learned).
        network: an ``nn.Module`` ``(t, x) -> (n, data_dim)``, t a scalar or one time per point and x the state
            (n, state_dim); default an MLP on x and Fourier features of t
            (:class:`~controlsamp.control.policies.MLPPolicy`, ``hidden``, ``depth``, ``n_freq``).
        parametrisation: what the network predicts, ``"eps"``, ``"score"``, ``"x0"`` or ``"v"``
            (:mod:`.parametrisation`; ``"eps"`` or ``"score"`` for CLD).
        t_min: the smallest time trained on and the time samplers stop at (``0 < t_min < T``; Song et al. use
            1e-3 for VP sampling and 1e-5 for likelihoods).
        velocity_var: CLD's initial velocity variance :math:`\gamma M` (default :math:`0.04 M`, Dockhorn et al.).
        ema, ema_warmup: EMA decay of the weights (and its warm-up, see :func:`controlsamp.training.ema_copy`).
        seed: seeds the network initialisation.
        device, dtype: where and in what precision the network runs (``dtype=None``: torch's default).
    """

    def __init__(self, reference, network: Optional[nn.Module] = None, parametrisation: str = "eps",
                 hidden: int = 128, depth: int = 3, n_freq: int = 8, t_min: float = 1e-3,
                 velocity_var: Optional[float] = None, ema: float = 0.999, ema_warmup: float = 10.0,
                 seed: int = 0, device="cpu", dtype=None):
        self.kernel = make_kernel(reference, velocity_var)
        self.reference = reference
        self.velocity_var = getattr(self.kernel, "velocity_var", None)
        self.data_dim, self.state_dim = self.kernel.data_dim, self.kernel.state_dim
        self.parametrisation = check_parametrisation(parametrisation, self.kernel.velocity)
        t_min = check_positive(t_min, "t_min")
        if not t_min < self.T:
            raise ValueError(f"t_min must be below the reference's horizon T = {self.T}; got {t_min}")
        self.t_min = t_min
        self.device, self.dtype = check_device(device), check_dtype(dtype)
        seed = check_seed(seed)
        if network is None:
            hidden, depth, n_freq = check_dim(hidden, "hidden"), check_count(depth, "depth"), check_count(n_freq, "n_freq")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = MLPPolicy(self.state_dim, self.data_dim, self.T, hidden=hidden, depth=depth, n_freq=n_freq)
            net_desc = dict(network="MLP", hidden=hidden, depth=depth, n_freq=n_freq)
        else:
            if not isinstance(network, nn.Module):
                raise ValueError(f"network must be an nn.Module (t, x) -> (n, {self.data_dim}); got "
                                 f"{type(network).__name__}")
            net_desc = dict(network=type(network).__name__)
        self.network = network.to(device=self.device, dtype=self.dtype)
        self.ema = ema_copy(self.network, check_nonnegative(ema, "ema"), check_nonnegative(ema_warmup, "ema_warmup"))
        self._check_network()
        self.config = dict(reference=repr(reference), parametrisation=self.parametrisation, t_min=self.t_min,
                           velocity_var=self.velocity_var, ema=float(ema), ema_warmup=float(ema_warmup),
                           seed=int(seed), **net_desc)
        self.history: Dict[str, list] = {}
        self.trained = False

    def _check_network(self) -> None:
        x = torch.zeros(2, self.state_dim, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            out = self.network(torch.full((2,), 0.5 * self.T, device=self.device, dtype=self.dtype), x)
        if not isinstance(out, Tensor) or tuple(out.shape) != (2, self.data_dim):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"network(t, x) must return (n, {self.data_dim}) for x of shape (n, {self.state_dim}) "
                             f"(the {'velocity score' if self.velocity else 'score'} dimension); got {shape}")

    # ------------------------------------------------------------------ the score
    def _net(self, use_ema: bool) -> nn.Module:
        return self.ema.module if use_ema else self.network

    def eps_hat(self, t, x: Tensor, use_ema: bool = True, return_scale: bool = False):
        r"""The noise estimate :math:`\hat\epsilon(t, x)` (n, data_dim) (and the column :math:`\sigma_t`, or
        :math:`\ell_{vv}` for CLD, with ``return_scale``). ``t`` is a float or one time per point."""
        n = x.shape[0]
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if tt.ndim == 0:
            tt = tt.expand(n)
        out = self._net(use_ema)(tt, x)
        if self.kernel.velocity:
            scale = self.kernel.noise_scale(tt.detach().double().cpu(), n, x)
            eps = eps_from_output(self.parametrisation, out, x, scale, scale)
        else:
            alpha, scale = self.kernel.coefficients(tt.detach().double().cpu(), n, x)
            eps = eps_from_output(self.parametrisation, out, x, alpha, scale)
        return (eps, scale) if return_scale else eps

    def score(self, t, x, use_ema: bool = True) -> Tensor:
        r"""The learned score :math:`-\hat\epsilon/\sigma_t` at states ``x`` (n, state_dim), (n, data_dim); for CLD the
        velocity score :math:`\nabla_v\log p_t`. Differentiable in x (no gradient to the weights is needed here)."""
        x = self.points(x)
        eps, scale = self.eps_hat(t, x, use_ema=use_ema, return_scale=True)
        return -eps / scale

    # ------------------------------------------------------------------ training
    def loss(self, x0, generator: Optional[torch.Generator] = None, weighting: str = "simple",
             t_sampling: str = "uniform", use_ema: bool = False) -> Tensor:
        """One estimate of the training objective (:mod:`.score_matching`) on data ``x0`` (n, data_dim)."""
        x0 = self._data_batch(x0)
        times = TimeSampler(self.kernel, self.t_min, self.T, t_sampling)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        return score_matching_loss(self, x0, gen, weighting, times, use_ema=use_ema)[0]

    def _data_batch(self, x0) -> Tensor:
        x0 = torch.as_tensor(x0)
        if x0.ndim != 2 or x0.shape[1] != self.data_dim:
            raise ValueError(f"data must be points of shape (n, {self.data_dim}) (the model's data dimension); "
                             f"got {tuple(x0.shape)}")
        if not bool(torch.isfinite(x0).all()):
            bad = int((~torch.isfinite(x0)).any(1).nonzero()[0])
            raise ValueError(f"data holds a non-finite value (row {bad}: {x0[bad].tolist()})")
        return x0.to(device=self.device, dtype=self.dtype)

    def fit(self, data, iters: int = 2000, batch: int = 256, lr: float = 1e-3, weighting: str = "simple",
            t_sampling: str = "uniform", grad_clip: Optional[float] = 1.0, lr_schedule: Optional[str] = None,
            seed: int = 0, checkpoint: Optional[str] = None, checkpoint_every: int = 500, resume: bool = False,
            progress: bool = True, teacher=None, shards: Optional[int] = None) -> "DiffusionModel":
        r"""Train by denoising (hybrid, for CLD) score matching on ``data``: an (N, data_dim) array or tensor (rows
        drawn with replacement), a target or law with ``sample(n)`` and ``dim``, or a callable ``fn(n, generator)``.

        Each of ``iters`` Adam steps draws ``batch`` data points, a time (``t_sampling``) and a noise per point and
        minimises the ``weighting``-weighted objective; the EMA copy follows the weights. ``grad_clip`` (None: off)
        bounds the gradient norm. The run goes through the package's training loop, so ``checkpoint``,
        ``checkpoint_every`` and ``resume`` give an exact resume (a checkpoint of another configuration is
        refused) and a non-finite loss or gradient stops training with the iteration named. History: ``loss``,
        ``eps_mse``, ``seconds``.

        ``teacher``: a score source on the same reference (:func:`.distill.distill`); the regression target becomes
        its noise estimate at each noised point (:func:`.score_matching.score_matching_loss`).

        ``shards``: data-parallel training (:mod:`controlsamp.parallel`; None: one shard per process). Each shard
        draws ``batch / shards`` data points, times and noises from its own streams, the loss is their mean and the
        gradients are averaged over the processes; the result depends on the seed and ``shards``, not on the number
        of processes."""
        sample = as_sampler(data, "data")
        if sample.dim != self.data_dim:
            raise ValueError(f"data must have dimension {self.data_dim} (the model's); got {sample.dim}")
        iters, batch, lr = check_dim(iters, "iters"), check_dim(batch, "batch"), check_positive(lr, "lr")
        seed, grad_clip = check_seed(seed), check_grad_clip(grad_clip)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
        times = TimeSampler(self.kernel, self.t_min, self.T, t_sampling)
        if teacher is not None:
            check_teacher(teacher, self)
        config = dict(self.config, iters=iters, batch=batch, lr=float(lr), weighting=weighting, t_sampling=t_sampling,
                      grad_clip=grad_clip, lr_schedule=lr_schedule, fit_seed=int(seed),
                      **({} if teacher is None else {"teacher": type(teacher).__name__}))
        dp = DataParallel(shards)
        per_shard = dp.split(batch, "batch")
        n_done = self._fit_start(checkpoint, resume, config)
        total = n_done + iters
        opt, sched = make_optimizer([{"params": self.network.parameters(), "lr": lr}], iters, lr_schedule)
        streams = shard_streams(dp, seed, self.device)

        def step(it: int) -> Dict[str, float]:
            parts = [score_matching_loss(self, self._data_batch(sample(per_shard, st.cpu)), st.cpu, weighting, times,
                                         teacher=teacher) for st in streams]
            loss, value = dp.mean_loss([p[0] for p in parts])
            descend(loss, opt, self.network.parameters(), grad_clip, f"iteration {it} (loss {value:.4g})", sched, dp)
            self.ema.update_parameters(self.network)
            return {"loss": value, **{k: dp.mean(sum(p[1][k] for p in parts) / len(parts)) for k in parts[0][1]}}

        return self._run_fit(step, total, opt, sched, config, streams, checkpoint, checkpoint_every, resume, progress,
                             n_done, dp)

    # ------------------------------------------------------------------ persistence
    @property
    def kind(self) -> str:
        return f"DiffusionModel[{type(self.reference).__name__},{self.parametrisation}]"

    def __repr__(self) -> str:
        return f"DiffusionModel({self.reference!r}, parametrisation={self.parametrisation!r}, t_min={self.t_min})"
