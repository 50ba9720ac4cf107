"""What the neural bridge solvers (DSB, DSBM) share: the endpoints, the discretised reference, a forward and a
backward drift network with EMA copies, the alternating half-bridge training (through the package's one
training loop, :func:`controlsamp.training.fit_loop`) and sampling.

A subclass says how a half-bridge gets its regression data (``_simulate_cache`` and ``_batch``); one on another
state space (:class:`~controlsamp.bridges.RiemannianDSB`) also replaces the drift networks (``_drift_net``) and the
simulator (``_simulate``)."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .._validate import (as_points, check_device, check_dim, check_dtype, check_grad_clip, check_nonnegative,
                         check_positive, check_seed, check_time)
from ..sde import DiscretisedReference
from ..parallel import DataParallel
from ..training import (Streams, descend, fit_loop, load_checkpoint, load_modules, make_optimizer, save_model,
                        shard_streams)
from ..targets.sources import as_sampler
from .halfbridge import DIRECTIONS, DriftNet, make_reference, simulate

Tensor = torch.Tensor


class NeuralBridge(ABC):
    """Base of :class:`~controlsamp.bridges.DSB` and :class:`~controlsamp.bridges.DSBM` (see there)."""

    def __init__(self, source, target, sigma: float = 1.0, T: float = 1.0, steps: int = 20, reference=None,
                 hidden: int = 128, depth: int = 3, ema: float = 0.999, ema_warmup: float = 10.0,
                 cache_size: int = 4096, cache_refresh: int = 200, device="cpu", dtype=None,
                 seed: int = 0):
        self.source, self.target = as_sampler(source, "source"), as_sampler(target, "target")
        if self.source.dim != self.target.dim:
            raise ValueError(f"source and target must have the same dimension; got {self.source.dim} and "
                             f"{self.target.dim}")
        self.dim = self.source.dim
        self.T = check_positive(T, "T")
        self.sigma = check_positive(sigma, "sigma")
        process = make_reference(self.dim, self.sigma, self.T, reference)
        self.reference = DiscretisedReference(process, check_dim(steps, "steps"), scheme="euler")
        self.steps = self.reference.K
        if not 0.0 <= check_nonnegative(ema, "ema") < 1.0:
            raise ValueError(f"ema must be in [0, 1); got {ema}")
        ema_warmup = check_nonnegative(ema_warmup, "ema_warmup")
        self.cache_size = check_dim(cache_size, "cache_size")
        self.cache_refresh = check_dim(cache_refresh, "cache_refresh")
        self.device, self.dtype = check_device(device), check_dtype(dtype)
        hidden, depth, seed = check_dim(hidden, "hidden"), check_dim(depth, "depth"), check_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the networks' initialisation, without touching the caller's global stream
            self.nets = nn.ModuleDict({d + "_drift": self._drift_net(hidden, depth, ema, ema_warmup)
                                       for d in DIRECTIONS})
        self.nets.to(device=self.device, dtype=dtype)
        self.config = dict(reference=type(process).__name__, steps=self.steps, sigma=self.sigma, T=self.T,
                           hidden=hidden, depth=depth, ema=float(ema), ema_warmup=float(ema_warmup),
                           cache_size=self.cache_size, cache_refresh=self.cache_refresh, seed=int(seed))
        self.history: Dict[str, list] = {}
        self._cache = None

    # ---------------------------------------------------------------- hooks
    def _drift_net(self, hidden: int, depth: int, ema: float, ema_warmup: float) -> DriftNet:
        """A new drift network (called once per direction, forward first, inside the seeded ``fork_rng`` of
        ``__init__``): an MLP of (t, x) on R^d. A subclass on another state space (e.g. a manifold) returns a
        :class:`DriftNet` around its own network."""
        return DriftNet(self.dim, self.T, hidden, depth, ema, ema_warmup)

    def _simulate(self, drift, x_start: Tensor, direction: str, generator: torch.Generator,
                  record: bool = True) -> Tensor:
        """Paths of the process with grid drift ``drift(k, x)`` from ``x_start`` in forward-time order
        (n, K + 1, d), or the far end only with ``record=False``: the Euler–Maruyama scheme of the reference
        (:func:`~controlsamp.bridges.halfbridge.simulate`); a subclass on another state space overrides it."""
        return simulate(drift, x_start, self.reference, direction, generator, record=record)

    # ---------------------------------------------------------------- drifts
    def net(self, direction: str) -> DriftNet:
        """The drift network of ``direction`` ("forward" or "backward")."""
        return self.nets[direction + "_drift"]

    def _grid_drift(self, direction: str, use_ema: bool = True):
        """drift(k, x) at grid index k (an int or an (n,) long tensor) for the simulator and the targets;
        the forward drift is the reference's k(t_k) x until a forward network has been trained."""
        net = self.net(direction)
        if direction == "forward" and not net.trained:
            def f(k, x):
                if isinstance(k, int):
                    return self.reference.floats("k")[k] * x
                return self.reference.coef("k", x.device, x.dtype)[k].unsqueeze(1) * x
            return f
        if not net.trained:
            raise RuntimeError("the backward drift is not trained yet: call fit() first")

        def b(k, x):
            t = k * self.reference.h if isinstance(k, int) else k.to(x.dtype) * self.reference.h
            return net(t if direction == "forward" else self.T - t, x, use_ema)
        return b

    def _points(self, x, direction: str) -> Tensor:
        """Check ``direction`` and turn ``x`` into an (n, d) tensor on the bridge's device and dtype."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
        return as_points(x, "x", self.dim, dtype=self.dtype, device=self.device)

    def drift(self, t, x, direction: str = "forward") -> Tensor:
        """The learned drift at time t of the given direction (the backward process runs in s = T - t from
        the target law), (n, d); the EMA weights."""
        x = self._points(x, direction)
        t = check_time(t, self.T)
        net = self.net(direction)
        with torch.no_grad():
            if direction == "forward" and not net.trained:
                return self.reference.k_at(t) * x
            if not net.trained:
                raise RuntimeError("the backward drift is not trained yet: call fit() first")
            return net(t, x)

    # ---------------------------------------------------------------- sampling
    def _start(self, direction: str, n: int, gen: torch.Generator) -> Tensor:
        law = self.source if direction == "forward" else self.target
        return law(n, gen).to(self.device, self.dtype)

    def sample_paths(self, n: int, direction: str = "forward", seed: int = 0) -> Tensor:
        """(n, K + 1, d) paths in forward-time order: forward from the source, or backward from the target."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
        streams = Streams(seed, self.device)
        x = self._start(direction, check_dim(n, "n"), streams.cpu)
        return self._simulate(self._grid_drift(direction), x, direction, streams.device)

    def transport(self, x, direction: str = "forward", seed: int = 0) -> Tensor:
        """Run the learned process from given points: X_T for X_0 = x (forward), or X_0 for X_T = x
        (backward), (n, d). Repeating a row gives samples of the learned conditional law."""
        x = self._points(x, direction)
        return self._simulate(self._grid_drift(direction), x, direction, Streams(seed, self.device).device,
                              record=False)

    def sample(self, n: int, seed: int = 0) -> Tuple[Tensor, Tensor]:
        """(x_0, x_T): the learned forward process from source samples."""
        p = self.sample_paths(n, "forward", seed)
        return p[:, 0], p[:, -1]

    def sample_backward(self, n: int, seed: int = 0) -> Tuple[Tensor, Tensor]:
        """(x_0, x_T): the learned backward process from target samples."""
        p = self.sample_paths(n, "backward", seed)
        return p[:, 0], p[:, -1]

    # ---------------------------------------------------------------- training
    @abstractmethod
    def _simulate_cache(self, fit: str, n: int, streams: Streams) -> Union[Tensor, Tuple[Tensor, ...]]:
        """``n`` rows of the data a half-bridge fitting the ``fit`` direction regresses on (a tensor or a tuple of
        tensors, rows first): endpoint draws from ``streams.cpu``, path noise from ``streams.device``."""

    @abstractmethod
    def _batch(self, fit: str, batch: int, streams: Streams):
        """(grid indices (n,), states (n, d), regression targets (n, d)) from ``_cache`` (indices from
        ``streams.cpu``, bridge noise from ``streams.device``)."""

    def _refresh_cache(self, fit: str, streams: List[Streams], dp: DataParallel) -> None:
        """The cache of every shard (``cache_size / shards`` rows each, from its own streams), in shard order and
        the same in every process."""
        n = dp.split(self.cache_size, "cache_size")
        parts = [self._simulate_cache(fit, n, st) for st in streams]
        if isinstance(parts[0], tuple):
            self._cache = tuple(dp.cat_rows([p[i] for p in parts]) for i in range(len(parts[0])))
        else:
            self._cache = dp.cat_rows(parts)

    def fit(self, ipf_iters: int = 10, iters_per_half: int = 1000, batch: int = 256, lr: float = 1e-3,
            seed: int = 0, grad_clip: Optional[float] = None, checkpoint: Optional[str] = None,
            checkpoint_every: int = 500, resume: bool = False, progress: bool = True, shards: Optional[int] = None):
        """Alternate half-bridges: each of the ``ipf_iters`` iterations fits the backward drift (on the
        current forward process from the source) and then the forward drift (on the new backward process
        from the target), ``iters_per_half`` Adam steps of ``batch`` regression points each. The data of a
        half-bridge is simulated with the other direction's EMA network and refreshed every
        ``cache_refresh`` steps. History: ``loss`` per step and ``half`` (0, 1, 2, ...). A checkpoint
        (:mod:`controlsamp.training`'s schema) holds the networks, optimisers, cache and random streams, so an
        interrupted run resumes exactly; one written by another configuration is refused.

        ``shards``: the random shards of data-parallel training (:mod:`controlsamp.parallel`; None: one per
        process): each shard simulates ``cache_size / shards`` of every cache from its own streams (every process
        holds the whole cache) and regresses on ``batch / shards`` points; the loss is the mean over the shards,
        the gradient averaged over the processes."""
        ipf_iters, iters_per_half = check_dim(ipf_iters, "ipf_iters"), check_dim(iters_per_half, "iters_per_half")
        batch, lr = check_dim(batch, "batch"), check_positive(lr, "lr")
        seed, grad_clip = check_seed(seed), check_grad_clip(grad_clip)
        checkpoint_every = check_dim(checkpoint_every, "checkpoint_every")
        config = dict(self.config, ipf_iters=ipf_iters, iters_per_half=iters_per_half, batch=batch, lr=float(lr),
                      fit_seed=int(seed), grad_clip=grad_clip)
        # steps of earlier fits (the iteration counter continues) and the half-bridges they did
        n_done = len(self.history.get("loss", []))
        half_offset = int(self.history["half"][-1]) + 1 if self.history.get("half") else 0
        if resume and checkpoint is not None and os.path.exists(checkpoint):
            # the fit being resumed started where its checkpoint says, whatever this object did since
            ex = load_checkpoint(checkpoint, type(self).__name__, config, training_state=True)["extra"]
            if not all(isinstance(ex.get(k), int) for k in ("fit_start", "half_offset")):
                raise ValueError(f"{checkpoint!r} lacks the bridge's training offsets (fit_start, half_offset)")
            n_done, half_offset = ex["fit_start"], ex["half_offset"]
        total = n_done + 2 * ipf_iters * iters_per_half
        opts = {d: make_optimizer([{"params": list(self.net(d).net.parameters()), "lr": lr}], total)[0]
                for d in DIRECTIONS}
        dp = DataParallel(shards)
        per_shard = dp.split(batch, "batch")
        dp.split(self.cache_size, "cache_size")
        streams = shard_streams(dp, seed, self.device)

        def shard_loss(fit_dir: str, st: Streams) -> Tensor:
            t_idx, x, target = self._batch(fit_dir, per_shard, st)
            t = t_idx.to(x.dtype) * self.reference.h
            pred = self.net(fit_dir).net(t if fit_dir == "forward" else self.T - t, x)
            return ((pred - target) ** 2).sum(1).mean()

        def step(it: int) -> Dict[str, float]:
            half, inner = divmod(it - n_done, iters_per_half)
            fit_dir = DIRECTIONS[1 - half % 2]  # backward first: the first forward process is the reference
            if inner % self.cache_refresh == 0 or self._cache is None:
                self._refresh_cache(fit_dir, streams, dp)
            loss, value = dp.mean_loss([shard_loss(fit_dir, st) for st in streams])
            dn = self.net(fit_dir)
            descend(loss, opts[fit_dir], dn.net.parameters(), grad_clip, f"step {it} ({fit_dir} half-bridge {half})",
                    None, dp)
            dn.ema.update_parameters(dn.net)
            if inner == iters_per_half - 1:
                dn.trained = True
                self._cache = None
            return {"loss": value, "half": float(half_offset + half)}

        def extra():
            return {"cache": self._cache, "trained": self._trained(), "fit_start": n_done,
                    "half_offset": half_offset}

        def restore(ex):
            self._cache = ex["cache"]
            self._set_trained(ex["trained"])

        modules = {"nets": self.nets, "opt_forward": opts["forward"], "opt_backward": opts["backward"]}
        fit_loop(step, total, modules, self.history, kind=type(self).__name__, config=config, streams=streams,
                 checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                 progress=progress and dp.writer, extra=extra, restore_extra=restore, postfix=("loss", "half"),
                 start=n_done, iters_name="the earlier fits' steps + 2 * ipf_iters * iters_per_half", parallel=dp)
        return self

    # ---------------------------------------------------------------- persistence
    def _trained(self) -> Dict[str, bool]:
        return {d: self.net(d).trained for d in DIRECTIONS}

    def _set_trained(self, trained: Dict[str, bool]) -> None:
        for d in DIRECTIONS:
            self.net(d).trained = bool(trained[d])

    def save(self, path: str) -> None:
        """Write the networks (with their EMA copies), which directions are trained, and the history, in the
        checkpoint schema of :mod:`controlsamp.training` with this bridge's configuration."""
        save_model(path, type(self).__name__, self.config, {"nets": self.nets}, self.history,
                   {"trained": self._trained()})

    def load(self, path: str):
        """Load a file written by :meth:`save` into this bridge (built with the same arguments; a file of
        another kind or configuration is refused)."""
        payload = load_checkpoint(path, type(self).__name__, self.config, map_location=self.device)
        load_modules(payload, {"nets": self.nets})
        self._set_trained(payload["extra"]["trained"])
        self.history = payload["history"]
        return self
