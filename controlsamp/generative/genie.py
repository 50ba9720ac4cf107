r"""GENIE: the second-order truncated Taylor step of the probability-flow ODE (Dockhorn, Vahdat & Kreis 2022,
"GENIE: Higher-order denoising diffusion solvers", NeurIPS, arXiv:2210.05475).

**The ODE in DDIM's variables.** For an isotropic linear reference with kernel :math:`x_t = \alpha_t x_0 +
\sigma_t\epsilon` (:mod:`.kernel`), write :math:`\gamma = \sigma_t/\alpha_t` and :math:`\bar x = x/\alpha_t`
(for VP, :math:`\bar x = x\sqrt{1 + \gamma^2}`). The probability-flow ODE (:mod:`.ode`) then reads

.. math:: \frac{d\bar x}{d\gamma} = \hat\epsilon(t, x), \qquad \hat\epsilon = -\sigma_t\,s(t, x),

(from :math:`\dot\alpha = k\alpha` and :math:`\dot{(\sigma^2)} = 2k\sigma^2 + g^2`; along the flow
:math:`d\gamma/dt = g^2/(2\sigma\alpha)`). DDIM is Euler's method in :math:`\gamma`,
:math:`\bar x' = \bar x + h\hat\epsilon`, :math:`h = \gamma' - \gamma`: order 1.

**TTM2** (their eq. 7): the Taylor expansion to second order,

.. math:: \bar x' = \bar x + h\,\hat\epsilon + \tfrac12 h^2\,\frac{d\hat\epsilon}{d\gamma}, \qquad
          \frac{d\hat\epsilon}{d\gamma} = \partial_x\hat\epsilon\,\frac{dx}{d\gamma}
          + \partial_t\hat\epsilon\,\frac{dt}{d\gamma},

the *total* derivative along the flow, with :math:`dx/d\gamma = \alpha\hat\epsilon + k\,x\,dt/d\gamma`,
:math:`dt/d\gamma = 2\sigma\alpha/g^2`: global order 2.

**The derivative** comes from one of two sources:

* ``"exact"``: a forward-mode automatic-differentiation Jacobian–vector product (:func:`torch.func.jvp`) of
  :math:`\hat\epsilon` in :math:`(t, x)` along the tangent :math:`(dt/d\gamma, dx/d\gamma)`, the time dependence
  included (the network's time input and :math:`\alpha_t, \sigma_t` through :math:`\dot\alpha, \dot\sigma`): the
  slow reference. Sources: a :class:`~.model.DiffusionModel` or an :class:`~.source.ExactScore` of a
  Gaussian mixture (its score as a function of :math:`(x, \alpha, \sigma^2)`,
  :meth:`~controlsamp.exact.NoisedMixture.isotropic_score`).
* a :class:`GenieHead`: a small network reading :math:`(t, x, \hat\epsilon)` trained to regress the exact JVP on
  noised data (:func:`fit_genie_head`), the paper's distillation of the derivative (theirs reads the score
  network's last features; ours reads its output, so the head costs a forward pass of its own, counted).

Costs (``info`` of :func:`genie_sample`): ``nfe`` plain score-network evaluations (one per step: the
:math:`\hat\epsilon` that the step and the JVP's tangent use), ``jvp`` forward-mode products (exact; each
re-evaluates the network with its tangent, about two to three forward passes) and ``head_evals``; compare
methods at equal wall time or state the ratio.
"""
from __future__ import annotations

import math
import time
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .._validate import as_points, check_count, check_dim, check_positive, check_seed
from ..control.policies import zero_output_mlp
from ..processes import IsotropicLinearSDE
from ..parallel import DataParallel
from ..training import Streams, descend, fit_loop, make_optimizer, shard_streams
from .model import DiffusionModel
from .ode import check_source, source_device, source_dtype, start_states, time_grid
from .parametrisation import eps_from_output
from .source import ExactScore

Tensor = torch.Tensor

__all__ = ["ddim_rates", "eps_and_derivative", "GenieHead", "fit_genie_head", "genie_sample"]


def ddim_rates(reference: IsotropicLinearSDE, t: Tensor) -> Dict[str, Tensor]:
    r"""Per time (a float64 tensor): :math:`\alpha, \sigma, \gamma = \sigma/\alpha`, :math:`\dot\alpha = k\alpha`,
    :math:`\dot{(\sigma^2)} = 2k\sigma^2 + g^2` and :math:`dt/d\gamma = 2\sigma\alpha/g^2` (see the module
    docstring)."""
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    a, q = reference.marginal_coefficients(t)
    k = torch.tensor([reference.k(float(v)) for v in t], dtype=torch.float64)
    g2 = torch.tensor([reference.g(float(v)) ** 2 for v in t], dtype=torch.float64)
    s = q.sqrt()
    return {"alpha": a, "sigma": s, "q": q, "gamma": s / a, "alpha_dot": k * a, "q_dot": 2 * k * q + g2, "k": k,
            "dt_dgamma": 2 * s * a / g2}


def _check_isotropic(source) -> None:
    check_source(source)
    if not isinstance(source.reference, IsotropicLinearSDE):
        raise ValueError(f"GENIE needs an isotropic reference (VP, VE, OU, Brownian): its variables x / alpha_t and "
                         f"sigma_t / alpha_t come from the kernel x_t = alpha_t x_0 + sigma_t eps, which a "
                         f"{type(source.reference).__name__} reference lacks")


def eps_and_derivative(source, t, x: Tensor, use_ema: bool = True) -> Tuple[Tensor, Tensor]:
    r""":math:`\hat\epsilon(t, x)` and its total derivative :math:`d\hat\epsilon/d\gamma` along the probability-flow
    ODE (module docstring) by one forward-mode JVP, at states ``x`` (n, d) and a time ``t`` (a float, or one per
    point). ``source``: a :class:`~.model.DiffusionModel` (``use_ema`` picks its EMA network) or an
    :class:`~.source.ExactScore` of a Gaussian mixture, on an isotropic reference. Returns two (n, d) tensors."""
    _check_isotropic(source)
    x = as_points(x, "x", source.state_dim, dtype=source_dtype(source), device=source_device(source)).detach()
    n, dt, dev = x.shape[0], x.dtype, x.device
    tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if tt.numel() == 1:
        tt = tt.expand(n)
    if tt.numel() != n:
        raise ValueError(f"t must be one time or one per point ({n}); got {tt.numel()} times")
    if bool(((tt < source.t_min) | (tt > source.T)).any()):
        raise ValueError(f"t must lie in [t_min, T] = [{source.t_min}, {source.T}]")
    uniq, inv = torch.unique(tt, return_inverse=True)
    rates = {k: v[inv].to(dt).to(dev)[:, None] for k, v in ddim_rates(source.reference, uniq).items()}
    a, s, q = rates["alpha"], rates["sigma"], rates["q"]
    if isinstance(source, DiffusionModel):
        net, param = source._net(use_ema), source.parametrisation
        eps, d_eps = torch.empty_like(x), torch.empty_like(x)
        # one JVP per distinct time (a network may group per-point times with torch.unique, which forward-mode AD
        # does not support; the package's MLP skips it when all times are equal)
        for j, tv in enumerate(uniq.tolist()):
            rows = inv == j
            xr, ar, sr = x[rows], a[rows], s[rows]
            r = {k: v[rows] for k, v in rates.items()}

            def eps_fn(tval, xv, av, sv):
                return eps_from_output(param, net(tval, xv), xv, av, sv)

            t0 = torch.full((len(xr),), tv, dtype=dt, device=dev)
            with torch.no_grad():
                e = eps_fn(t0, xr, ar, sr)
            tdot = r["dt_dgamma"]
            dx = ar * e + r["k"] * xr * tdot
            _, de = torch.func.jvp(eps_fn, (t0, xr, ar, sr),
                                   (tdot[:, 0].clone(), dx, r["alpha_dot"] * tdot, r["q_dot"] / (2 * sr) * tdot))
            eps[rows], d_eps[rows] = e, de.detach()
    elif isinstance(source, ExactScore):
        mixture = source.mixture

        def eps_fn(xv, av, qv):
            return -qv.sqrt() * mixture.isotropic_score(xv, av, qv)

        eps = eps_fn(x, a, q).detach()
        dx = a * eps + rates["k"] * x * rates["dt_dgamma"]
        tdot = rates["dt_dgamma"]
        _, d_eps = torch.func.jvp(eps_fn, (x, a, q), (dx, rates["alpha_dot"] * tdot, rates["q_dot"] * tdot))
    else:
        raise ValueError(f"GENIE's exact derivative needs a DiffusionModel or an ExactScore; got "
                         f"{type(source).__name__}")
    return eps, d_eps.detach()


class GenieHead(nn.Module):
    r"""The learned derivative, scaled: :math:`h_\phi(t, x, \hat\epsilon) \approx \gamma\,d\hat\epsilon/d\gamma`, a
    SiLU MLP on ``[x, eps, t / T, cos/sin(pi j t / T)_{j<=n_freq}]`` whose output layer starts at zero (so an untrained
    head makes GENIE's step DDIM's); the step uses :math:`h_\phi/\gamma`. The scaling makes the regression target
    of order one at every noise level (for Gaussian data :math:`\gamma\,d\hat\epsilon/d\gamma \to \hat\epsilon` as
    :math:`\gamma \to 0` and stays bounded as :math:`\gamma \to \infty`), where the raw derivative spans orders of
    magnitude and an unscaled squared loss neglects the large-:math:`\gamma` steps, whose :math:`h^2/2` is the
    largest. The half-period frequencies keep t = 0 and t = T apart."""

    def __init__(self, dim: int, T: float = 1.0, hidden: int = 64, depth: int = 2, n_freq: int = 4):
        super().__init__()
        self.dim, self.T, self.n_freq = check_dim(dim, "dim"), float(T), check_count(n_freq, "n_freq")
        self.net = zero_output_mlp(2 * self.dim + 2 * self.n_freq + 1, check_dim(hidden, "hidden"),
                                   check_count(depth, "depth"), self.dim)

    def forward(self, t: Tensor, x: Tensor, eps: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[0], 1)
        freqs = math.pi * torch.arange(1, self.n_freq + 1, dtype=x.dtype, device=x.device) * tt / self.T
        return self.net(torch.cat([x, eps, tt / self.T, torch.cos(freqs), torch.sin(freqs)], 1))


def fit_genie_head(model: DiffusionModel, data, head: Optional[GenieHead] = None, iters: int = 2000,
                   batch: int = 256, lr: float = 1e-3, seed: int = 0, hidden: int = 64, depth: int = 2,
                   checkpoint: Optional[str] = None, checkpoint_every: int = 200, resume: bool = False,
                   progress: bool = True, shards: Optional[int] = None) -> GenieHead:
    r"""Train a :class:`GenieHead` on a trained :class:`~.model.DiffusionModel` (its EMA network):
    :math:`\min_\phi \mathbb E\,|h_\phi(t, x_t, \hat\epsilon(t, x_t)) - \gamma\,d\hat\epsilon/d\gamma(t, x_t)|^2` with
    :math:`t \sim U[t_{\min}, T]` (stratified: 4 strata per batch, one uniform time in each, so 4 JVPs per step), :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon`, :math:`x_0` from ``data``
    (n, d) and the target the exact JVP (:func:`eps_and_derivative`). Through the package's training loop
    (``checkpoint``, ``resume``); the head's history (``loss``, relative error ``rel_err``) is ``head.history``.
    ``shards``: data-parallel training (:mod:`controlsamp.parallel`; None: one shard per process): each shard draws
    ``batch / shards`` points and its own stratified times from its own streams; the loss is the shards' mean."""
    _check_isotropic(model)
    if not isinstance(model, DiffusionModel):
        raise ValueError(f"model must be a DiffusionModel; got {type(model).__name__}")
    x0_all = model._data_batch(data)
    iters, batch = check_dim(iters, "iters"), check_dim(batch, "batch")
    lr, seed = check_positive(lr, "lr"), check_seed(seed)
    if head is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = GenieHead(model.data_dim, model.T, hidden, depth)
    head = head.to(device=model.device, dtype=model.dtype)
    opt, _ = make_optimizer([{"params": list(head.parameters()), "lr": lr}], iters)
    dp = DataParallel(shards)
    per_shard = dp.split(batch, "batch")
    streams = shard_streams(dp, seed, model.device)
    history: Dict[str, list] = getattr(head, "history", {})
    t_lo, t_hi = float(model.t_min), float(model.T)
    groups = min(per_shard, 4)

    def shard_terms(st: Streams):
        """(this shard's loss, its squared error, its squared target)."""
        idx = torch.randint(len(x0_all), (per_shard,), generator=st.cpu)
        # stratified times, G distinct values per shard (one JVP per distinct time)
        u = torch.rand(groups, generator=st.cpu, dtype=torch.float64)
        t = (t_lo + (t_hi - t_lo) * (torch.arange(groups, dtype=torch.float64) + u) / groups).repeat_interleave(
            -(-per_shard // groups))[:per_shard]
        x0 = x0_all[idx.to(x0_all.device)]
        a, s = model.kernel.coefficients(t, per_shard, x0)
        noise = torch.randn(x0.shape, generator=st.device, device=model.device, dtype=model.dtype)
        xt = a * x0 + s * noise
        eps, d_eps = eps_and_derivative(model, t, xt)
        gamma = ddim_rates(model.reference, t)["gamma"].to(model.dtype).to(model.device)[:, None]
        target = gamma * d_eps
        pred = head(t.to(model.dtype).to(model.device), xt, eps)
        err = (pred - target) ** 2
        return err.sum(-1).mean(), float(err.detach().sum()), float((target ** 2).sum())

    def step(it: int) -> Dict[str, float]:
        terms = [shard_terms(st) for st in streams]
        loss, value = dp.mean_loss([tm[0] for tm in terms])
        descend(loss, opt, head.parameters(), None, f"iteration {it} (GENIE head loss {value:.4g})", None, dp)
        rel = dp.sum(sum(tm[1] for tm in terms)) / max(dp.sum(sum(tm[2] for tm in terms)), 1e-30)
        return {"loss": value, "rel_err": math.sqrt(rel)}

    fit_loop(step, iters, {"head": head, "optimizer": opt}, history, kind="GenieHead",
             config=dict(model=model.config, iters=iters, batch=batch, lr=lr, seed=seed, hidden=hidden, depth=depth),
             streams=streams, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
             progress=progress and dp.writer, postfix=("loss", "rel_err"), parallel=dp)
    head.history = history
    return head


GRIDS = ("uniform", "quadratic")


def genie_grid(source, steps: int, grid: str = "uniform") -> Tensor:
    r"""The decreasing time grid from T to ``t_min``: ``"uniform"`` (:func:`.ode.time_grid`) or ``"quadratic"``
    (uniform in :math:`\sqrt t`, dense near ``t_min``: the "quadratic striding" of DDIM and GENIE), float64."""
    if grid == "uniform":
        return time_grid(source, steps)
    if grid != "quadratic":
        raise ValueError(f"grid must be one of {GRIDS}; got {grid!r}")
    hi, lo = math.sqrt(float(source.T)), math.sqrt(float(source.t_min))
    out = (hi - (hi - lo) * torch.arange(steps + 1, dtype=torch.float64) / steps) ** 2
    out[0], out[-1] = float(source.T), float(source.t_min)
    return out


def genie_sample(source, n: Optional[int] = None, x_T=None, steps: int = 10, head: Optional[GenieHead] = None,
                 order: int = 2, afs: bool = False, grid: str = "uniform",
                 generator: Optional[torch.Generator] = None) -> Tuple[Tensor, dict]:
    r"""Samples by GENIE's TTM2 step (module docstring), ``steps`` steps from T to ``source.t_min`` on ``grid``
    (:func:`genie_grid`), the derivative from ``head`` (a :class:`GenieHead`) or, without one, the exact JVP.
    ``order=1`` drops the second-order term: DDIM on the same grid (no derivative is computed). ``afs``: the
    *analytical first step* of the GENIE code: the first step takes :math:`\hat\epsilon` of standardised data
    :math:`\mathcal N(0, I)`, :math:`\sigma x/(\alpha^2 + \sigma^2)` (:math:`= x` at T for VP), and no derivative,
    saving one network evaluation and the step where a derivative error is multiplied by the largest
    :math:`h^2/2`. Starts from ``x_T`` (n, d) or ``n`` prior draws. Returns ``(x (n, d), info)`` with ``nfe``
    (score-network evaluations), ``jvp``, ``head_evals``, ``wall_s``."""
    _check_isotropic(source)
    steps = check_dim(steps, "steps")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (DDIM) or 2 (GENIE's TTM2); got {order!r}")
    dtype, device = source_dtype(source), source_device(source)
    x = start_states(source, n, x_T, generator)
    ts = genie_grid(source, steps, grid)
    rates = ddim_rates(source.reference, ts)
    name = "ddim" if order == 1 else "genie" + ("-head" if head is not None else "-exact")
    info = {"nfe": 0, "jvp": 0, "head_evals": 0, "method": name + ("+afs" if afs else "")}
    t0 = time.perf_counter()
    for i in range(steps):
        t = float(ts[i])
        a, g, sg = float(rates["alpha"][i]), float(rates["gamma"][i]), float(rates["sigma"][i])
        a2, g2 = float(rates["alpha"][i + 1]), float(rates["gamma"][i + 1])
        h = g2 - g
        d_eps = None
        if i == 0 and afs:
            eps = sg * x / (a * a + sg * sg)
        elif order == 1:
            with torch.no_grad():
                eps = -sg * source.score(t, x)
            info["nfe"] += 1
        elif head is None:
            eps, d_eps = eps_and_derivative(source, t, x)
            info["nfe"] += 1
            info["jvp"] += 1
        else:
            with torch.no_grad():
                eps = -sg * source.score(t, x)
                d_eps = head(torch.full((x.shape[0],), t, dtype=dtype, device=device), x, eps) / g
            info["nfe"] += 1
            info["head_evals"] += 1
        y = x / a + h * eps
        if d_eps is not None:
            y = y + 0.5 * h * h * d_eps
        x = a2 * y
    info["wall_s"] = time.perf_counter() - t0
    return x.detach(), info
