r"""Reverse diffusive KL (He, Chen, Zhang, Barber & Hernández-Lobato 2024, "Training neural samplers with reverse
diffusive KL divergence", arXiv:2410.12456): a one-step generator :math:`x = g_\theta(z)`, :math:`z\sim\mathcal N(0, I)`,
trained on an unnormalised target :math:`\tilde\pi = e^{-E}`.

**Objective.** Both laws are noised by the kernel of a VP reference (:class:`~controlsamp.processes.VP`),
:math:`x_t = \alpha_t x + \sigma_t\epsilon`, at the levels :math:`t_1 < \dots < t_L` (a uniform grid on
:math:`[t_{\min}, t_{\max}]`); with :math:`q_t` the generator's noised law and :math:`p_t` the target's,

.. math:: \mathcal D(\theta) = \frac1L\sum_{k=1}^L w_k\,\mathrm{KL}(q_{t_k}\,\|\,p_{t_k}), \qquad
          w_k = \sigma_{t_k}^2\ (\text{default}),\ 1\ (\texttt{"uniform"})\text{ or }1/\alpha_{t_k}\ (\texttt{"1/alpha"}).

Each step estimates it either at every level for each latent (``level_sampling="all"``) or at one level drawn
uniformly per latent (``"random"``, as the authors' code does: :math:`L` times fewer target evaluations per latent,
the same expectation).

**Gradient.** With :math:`x_t = \alpha_t g_\theta(z) + \sigma_t\epsilon` (the :math:`\theta`-score term of
:math:`q_t` has mean zero),

.. math:: \nabla_\theta\mathcal D = \frac1L\sum_k w_k\,\mathbb E_{z,\epsilon}\Big[\big(\nabla\log q_{t_k}(x_{t_k})
          - \nabla\log p_{t_k}(x_{t_k})\big)^\top \frac{\partial x_{t_k}}{\partial\theta}\Big],

so the generator descends the surrogate :math:`\mathrm{mean}_{(i, k)}\,w_k\,[\mathrm{sg}(s_q - s_p)\cdot
x_{t_k}]` over the drawn (latent, level) pairs (its value is not the divergence; its gradient is the divergence's).

* :math:`s_q \approx \nabla\log q_t`: a :class:`~controlsamp.generative.DiffusionModel` on the same VP reference,
  trained by denoising score matching (:func:`~controlsamp.generative.score_matching.score_matching_loss`) on
  stop-gradient generator samples, ``inner_steps`` Adam steps per generator step. The generator loss uses its raw
  network (the freshest fit to the current generator); the EMA copy is kept for :meth:`DiKL.score_q`.
* :math:`s_p \approx \nabla\log p_t`: per noised point, the posterior
  :math:`p(x_0\mid x_t)\propto\tilde\pi(x_0)\,\mathcal N(x_t;\alpha x_0,\sigma^2 I)` is sampled
  (:func:`posterior_score`): importance sampling from :math:`\mathcal N(x_t/\alpha, (\sigma/\alpha)^2 I)` (the
  Gaussian factor cancels, the weights are :math:`\tilde\pi`), resampled to M particles, then MALA
  (:mod:`controlsamp.langevin.mala`) on :math:`\log\tilde\pi(x_0) - |x_t - \alpha x_0|^2/(2\sigma^2)` whose step
  is adapted toward acceptance 0.574 during the first half of the steps and frozen in the second, over which the
  iterates are averaged. The **mixed score identity** combines Tweedie's formula
  :math:`\sigma^2\nabla\log p_t = \alpha\,\mathbb E[x_0\mid x_t] - x_t` and the target score identity
  :math:`\alpha\nabla\log p_t = \mathbb E[\nabla\log\tilde\pi(x_0)\mid x_t]` with weights :math:`\sigma^2`,
  :math:`\alpha^2`:

  .. math:: \nabla\log p_t(x_t) = \frac{\alpha\,\big(\mathbb E[x_0\mid x_t] + \mathbb E[\nabla\log\tilde\pi(x_0)
            \mid x_t]\big) - x_t}{\alpha^2 + \sigma^2}\quad(\alpha^2 + \sigma^2 = 1\text{ for VP}).

  For :math:`\tilde\pi = \mathcal N(0, I)` every sample has :math:`x_0 + \nabla\log\tilde\pi(x_0) = 0`, so the
  estimate is :math:`-x_t` exactly. The target is evaluated through one
  :class:`~controlsamp.targets.TargetEvaluator` (counted, NaN / inf reported).

**Cost**: one generator step evaluates the target (value and score together) rows x M x (1 + MALA steps) times,
with rows = batch x L for ``"all"`` and batch for ``"random"``.

The generator has no tractable density, so :meth:`DiKL.sample` returns log-weights of NaN (unknown), not zeros
(which would report log Z = 0 and a perfect ESS); :attr:`DiKL.weighted` is False (samples are used as drawn).
Training goes through :func:`controlsamp.training.fit_loop` and its checkpoint schema.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from .._validate import (check_count, check_device, check_dim, check_dtype, check_grad_clip,
                         check_positive, check_seed)
from ..control.policies import zero_output_mlp
from ..generative.model import DiffusionModel
from ..generative.score_matching import TimeSampler, score_matching_loss
from ..langevin import mala
from ..processes import VP
from ..targets import Target, TargetEvaluator
from ..parallel import DataParallel
from ..training import (Streams, descend, fit_loop, load_checkpoint, load_modules, make_optimizer, save_model,
                        shard_streams)
from .base import check_target

Tensor = torch.Tensor

__all__ = ["DiKL", "ResidualGenerator", "posterior_score"]

ACCEPT = 0.574
WEIGHTINGS = ("sigma2", "uniform", "1/alpha")


def _finite_samples(x: Tensor) -> Tensor:
    """x, or a ValueError if the generator returned NaN or inf (fit_loop adds the iteration)."""
    bad = ~torch.isfinite(x.detach()).all(-1)
    if bad.any():
        raise ValueError(f"the generator returned {int(bad.sum())} non-finite samples of {len(x)}")
    return x


class ResidualGenerator(nn.Module):
    r""":math:`g(z) = z + \mathrm{MLP}(z)` (SiLU MLP, output layer at zero): it starts as the identity, a spread map
    whose law is :math:`\mathcal N(0, I)` (a zero map would collapse every sample to one point)."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.net = zero_output_mlp(dim, hidden, depth, dim)

    def forward(self, z: Tensor) -> Tensor:
        return z + self.net(z)


def posterior_score(log_density: Callable[[Tensor], Tuple[Tensor, Tensor]], x_t: Tensor, alpha, sigma2,
                    particles: int = 16, mala_steps: int = 20, generator: Optional[torch.Generator] = None,
                    step=None, adapt_rate: float = 0.5) -> Tuple[Tensor, Dict[str, object]]:
    r"""An estimate of the noised target score :math:`\nabla\log p_t(x_t)` at each row of ``x_t`` (n, d) (see the
    module docstring): importance sampling of the posterior from :math:`\mathcal N(x_t/\alpha, \sigma^2/\alpha^2)`,
    resampled to ``particles`` per point, ``mala_steps`` MALA steps (step adapted per point toward acceptance 0.574
    over the first half, frozen and averaged over the second half; with ``mala_steps=0`` the resampled
    particles), and the mixed score identity.

    Args:
        log_density: ``x -> (log pi~(x), grad log pi~(x))``, e.g. a :class:`~controlsamp.targets.TargetEvaluator`.
        alpha, sigma2: the kernel's :math:`\alpha_t` and :math:`\sigma_t^2`, scalars or one per row (n,).
        step: initial MALA steps, a scalar or one per row (default :math:`0.5/(\alpha^2/\sigma^2 + 1)`).

    Returns ``(score (n, d), info)`` with ``info["step"]`` the adapted steps (n,) and ``info["accept"]`` the mean
    acceptance over the averaged steps.
    """
    n, d = x_t.shape
    M = check_dim(particles, "posterior_particles")
    mala_steps = check_count(mala_steps, "mala_steps")
    dt, dev = x_t.dtype, x_t.device
    a = torch.as_tensor(alpha, dtype=dt, device=dev).reshape(-1).expand(n)
    s2 = torch.as_tensor(sigma2, dtype=dt, device=dev).reshape(-1).expand(n)
    if step is None:
        step = 0.5 / (a * a / s2 + 1.0)
    log_eps = torch.as_tensor(step, dtype=dt, device=dev).reshape(-1).expand(n).log().clone()
    # importance sampling: y ~ N(x_t / a, s2 / a^2); weight pi~(y) N(x_t; a y, s2) / proposal = pi~(y) (up to a const)
    xi = torch.randn(n, M, d, generator=generator, dtype=dt, device=dev)
    y = (x_t / a[:, None]).unsqueeze(1) + (s2.sqrt() / a)[:, None, None] * xi
    lp, sc = log_density(y.reshape(n * M, d))
    lw = lp.reshape(n, M)
    lw = torch.where(torch.isfinite(lw).any(1, keepdim=True), lw, torch.zeros_like(lw))  # no mass: uniform
    idx = torch.multinomial(torch.softmax(lw, 1), M, replacement=True, generator=generator)
    rows = (idx + M * torch.arange(n, device=dev)[:, None]).reshape(-1)
    x0, lp0, sc0 = y.reshape(n * M, d)[rows], lp[rows], sc[rows]  # the resampled particles, already evaluated
    # MALA on the posterior, one chain per particle
    xt_r = x_t.repeat_interleave(M, 0)
    a_r, s2_r = a.repeat_interleave(M)[:, None], s2.repeat_interleave(M)[:, None]

    def post(x: Tensor) -> Tuple[Tensor, Tensor]:
        lp, sc = log_density(x)
        r = xt_r - a_r * x
        return lp - (r * r).sum(-1) / (2 * s2_r[:, 0]), sc + a_r * r / s2_r

    def target_part(state) -> Tensor:  # grad log pi~ = posterior score minus the Gaussian factor's
        return state.score - a_r * (xt_r - a_r * state.x) / s2_r

    r0 = xt_r - a_r * x0
    state = mala.MALAState(x0, lp0 - (r0 * r0).sum(-1) / (2 * s2_r[:, 0]), sc0 + a_r * r0 / s2_r)
    burn = mala_steps // 2
    sum_x, sum_g, count, acc_sum = torch.zeros_like(x0), torch.zeros_like(x0), 0, 0.0
    for j in range(mala_steps):
        state, info = mala.step(state, post, log_eps.exp().repeat_interleave(M), generator)
        acc = info.acceptance_rate.reshape(n, M).mean(1)
        if j < burn:
            log_eps = log_eps + adapt_rate * (acc - ACCEPT)
        else:
            sum_x, sum_g, count = sum_x + state.x, sum_g + target_part(state), count + 1
            acc_sum += float(acc.mean())
    if count == 0:
        sum_x, sum_g, count = state.x, target_part(state), 1
    mean_x = (sum_x / count).reshape(n, M, d).mean(1)
    mean_g = (sum_g / count).reshape(n, M, d).mean(1)
    score = (a[:, None] * (mean_x + mean_g) - x_t) / (a * a + s2)[:, None]
    return score, {"step": log_eps.exp(), "accept": acc_sum / max(mala_steps - burn, 1) if mala_steps else float("nan")}


class DiKL:
    r"""``DiKL(target, generator=None, ...)``: a one-step generator trained by the reverse diffusive KL (see the
    module docstring).

    Args:
        target: a :class:`~controlsamp.targets.Target`.
        generator: an ``nn.Module`` z (n, latent_dim) -> x (n, target.dim); default :class:`ResidualGenerator`
            (identity plus an MLP of width ``hidden`` and depth ``depth``, starting as the identity).
        latent_dim: the dimension of z (default the target's).
        levels, t_min, t_max: the noise levels, a uniform grid of ``levels`` times on ``[t_min, t_max]`` of
            ``VP(dim, beta_min=beta_min, beta_max=beta_max)`` (linear rate from beta_min at t = 0 to beta_max at
            t = 1; the default [0.1, 20] is Song et al.'s; per target, He et al. choose the schedule's end points).
        weighting: the level weights :math:`w_k`: ``"sigma2"`` (:math:`\sigma_{t_k}^2`), ``"uniform"`` (1) or
            ``"1/alpha"`` (:math:`1/\alpha_{t_k}`; He et al.'s code uses "1/alpha" on MoG-40 and MW-32, "uniform"
            on DW-4 and LJ-13).
        level_sampling: ``"all"`` (every level for every latent) or ``"random"`` (one uniform level per latent).
        inner_steps: DSM Adam steps of the score model :math:`s_q` per generator step.
        score_hidden, score_depth, score_ema: the score model's MLP and EMA decay.
        posterior_particles, mala_steps: M and the MALA steps of the posterior sampler of :math:`s_p`.
        seed: seeds the networks' initialisation. device, dtype: of the networks and samples.
    """

    name = "dikl"
    trainable = True
    weighted = False  # samples are used as drawn; their log-weights are unknown (NaN)
    default_loss = None

    def __init__(self, target: Target, generator: Optional[nn.Module] = None, latent_dim: Optional[int] = None,
                 hidden: int = 128, depth: int = 3, levels: int = 30, t_min: float = 0.01, t_max: float = 1.0,
                 inner_steps: int = 10, score_hidden: int = 128, score_depth: int = 3, score_ema: float = 0.99,
                 posterior_particles: int = 16, mala_steps: int = 20, beta_min: float = 0.1, beta_max: float = 20.0,
                 weighting: str = "sigma2", level_sampling: str = "all", seed: int = 0, device="cpu", dtype=None):
        self.target = check_target(target)
        self.dim = dim = target.dim
        self.latent_dim = dim if latent_dim is None else check_dim(latent_dim, "latent_dim")
        hidden, depth = check_dim(hidden, "hidden"), check_count(depth, "depth")
        self.levels = check_dim(levels, "levels")
        t_min, t_max = check_positive(t_min, "t_min"), check_positive(t_max, "t_max")
        self.reference = VP(dim, beta_min=beta_min, beta_max=beta_max)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
        if level_sampling not in ("all", "random"):
            raise ValueError(f"level_sampling must be 'all' or 'random'; got {level_sampling!r}")
        self.weighting, self.level_sampling = weighting, level_sampling
        if not t_min < self.reference.T:
            raise ValueError(f"t_min must lie in (0, T) = (0, {self.reference.T}); got {t_min}")
        if not t_min <= t_max <= self.reference.T:
            raise ValueError(f"t_max must lie in [t_min, T] = [{t_min}, {self.reference.T}]; got {t_max}")
        self.t_min, self.t_max = t_min, t_max
        self.inner_steps = check_dim(inner_steps, "inner_steps")
        self.particles = check_dim(posterior_particles, "posterior_particles")
        self.mala_steps = check_count(mala_steps, "mala_steps")
        seed = check_seed(seed)
        self.device, self.dtype = check_device(device), check_dtype(dtype)
        if generator is None:
            if self.latent_dim != dim:
                raise ValueError(f"latent_dim must equal the target's dimension {dim} for the default (residual) "
                                 f"generator; got {self.latent_dim}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                generator = ResidualGenerator(dim, hidden, depth)
            gen_desc = dict(generator="residual-MLP", hidden=hidden, depth=depth)
        elif not isinstance(generator, nn.Module):
            raise ValueError(f"generator must be an nn.Module z (n, latent_dim) -> x (n, {dim}); got "
                             f"{type(generator).__name__}")
        else:
            gen_desc = dict(generator=type(generator).__name__)
        self.generator = generator.to(device=self.device, dtype=self.dtype)
        try:
            with torch.no_grad():
                out = self.generator(torch.zeros(2, self.latent_dim, device=self.device, dtype=self.dtype))
        except (RuntimeError, ValueError, IndexError) as exc:
            raise ValueError(f"the generator fails on latents z of shape (n, {self.latent_dim}) (the latent dimension: "
                             f"the target's {dim} unless latent_dim is given): {str(exc).splitlines()[0]}") from None
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[1] != dim:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the generator maps z (n, {self.latent_dim}) to {shape}, but the target has dimension "
                             f"{dim}: they must match (pass latent_dim if the latent dimension differs)")
        self.score_model = DiffusionModel(self.reference, hidden=score_hidden, depth=score_depth, t_min=t_min,
                                          ema=score_ema, seed=seed + 1, device=self.device, dtype=self.dtype)
        self.times = torch.linspace(t_min, t_max, self.levels, dtype=torch.float64)
        alpha, sigma2 = self.reference.marginal_coefficients(self.times)
        self.alpha, self.sigma2 = alpha, sigma2
        self.weights = {"sigma2": sigma2.clone(), "uniform": torch.ones_like(sigma2), "1/alpha": 1.0 / alpha}[weighting]
        self.evaluator = TargetEvaluator(target)
        self.mala_step = (0.5 / (alpha ** 2 / sigma2 + 1.0)).clone()  # per level, adapted while training
        self.config = dict(dim=dim, latent_dim=self.latent_dim, levels=self.levels, t_min=t_min, t_max=t_max,
                           inner_steps=self.inner_steps, score=self.score_model.config,
                           posterior_particles=self.particles, mala_steps=self.mala_steps, seed=seed,
                           weighting=weighting, level_sampling=level_sampling, reference=repr(self.reference),
                           **gen_desc)
        self.history: Dict[str, List[float]] = {}

    # ------------------------------------------------------------------ counting
    @property
    def target_evals(self) -> int:
        """Target evaluations so far (one per point, value and score together)."""
        return self.evaluator.evals

    @target_evals.setter
    def target_evals(self, value: int) -> None:
        self.evaluator.evals = int(value)

    # ------------------------------------------------------------------ scores
    def score_q(self, t: float, x, use_ema: bool = True) -> Tensor:
        """The learned score of the generator's noised law at time t (the EMA network by default)."""
        return self.score_model.score(float(t), torch.as_tensor(x, dtype=self.dtype, device=self.device),
                                      use_ema=use_ema)

    def score_p(self, t: float, x, generator: Optional[torch.Generator] = None,
                particles: Optional[int] = None, mala_steps: Optional[int] = None) -> Tensor:
        """The estimated noised target score at time t (:func:`posterior_score`), (n, d)."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        alpha, sigma2 = self.reference.marginal_coefficients(torch.tensor(float(t)))
        s, _ = posterior_score(self.evaluator, x, float(alpha), float(sigma2),
                               self.particles if particles is None else particles,
                               self.mala_steps if mala_steps is None else mala_steps, generator)
        return s

    # ------------------------------------------------------------------ the generator's loss
    def surrogate_loss(self, n: int, generator: torch.Generator, score_q=None, score_p=None
                       ) -> Tuple[Tensor, Dict[str, float]]:
        r"""The surrogate whose gradient in the generator's parameters is the diffusive KL's: ``n`` latents, each at
        every level (``level_sampling="all"``) or at one uniformly drawn level (``"random"``), one noise each.
        ``score_q`` / ``score_p``: callables ``(t, x_t) -> (m, d)`` replacing the learned :math:`s_q` (raw network)
        and the posterior estimate of :math:`s_p` (e.g. exact scores). The posterior MALA's per-level steps adapt
        (each level's step becomes the geometric mean of its rows' adapted steps)."""
        loss, info, step_logs = self._surrogate_terms(n, generator, score_q, score_p)
        if step_logs is not None:
            self._adapt_mala_steps(*step_logs)
        return loss, info

    def _adapt_mala_steps(self, log_sums: Tensor, counts: Tensor) -> None:
        """Each level's MALA step: the geometric mean of its rows' adapted steps (levels not drawn keep theirs)."""
        self.mala_step = torch.where(counts > 0, (log_sums / counts.clamp(min=1)).exp(), self.mala_step)

    def _surrogate_terms(self, n: int, generator: torch.Generator, score_q=None, score_p=None):
        """(the surrogate, its info, (per-level sums of the log adapted steps, per-level row counts) or None);
        the steps are not changed here."""
        L, d, dev, dt = self.levels, self.dim, self.device, self.dtype
        z = torch.randn(n, self.latent_dim, generator=generator, device=dev, dtype=dt)
        x = _finite_samples(self.generator(z))
        if self.level_sampling == "all":  # level-major rows: row j is latent j % n at level j // n
            lev = torch.arange(L, device=dev).repeat_interleave(n)
            x = x.repeat(L, 1)
        else:
            lev = torch.randint(L, (n,), generator=generator, device=dev)
        eps = torch.randn(len(lev), d, generator=generator, device=dev, dtype=dt)
        a = self.alpha.to(dev, dt)[lev]
        s2 = self.sigma2.to(dev, dt)[lev]
        xt = a[:, None] * x + s2.sqrt()[:, None] * eps
        xd = xt.detach()
        levels = lev.unique().tolist()
        with torch.no_grad():
            if score_q is None:
                sq = self.score_model.score(self.times.to(dev, dt)[lev], xd, use_ema=False)
            else:
                sq = torch.empty_like(xd)
                for k in levels:
                    rows = lev == k
                    sq[rows] = score_q(float(self.times[k]), xd[rows])
            info: Dict[str, float] = {}
            step_logs = None
            if score_p is None:
                steps = self.mala_step.to(dev, dt)[lev]
                sp, pinfo = posterior_score(self.evaluator, xd, a, s2, self.particles, self.mala_steps, generator,
                                            step=steps)
                lev_c = lev.cpu()
                sums = torch.zeros(L, dtype=torch.float64).index_add_(0, lev_c, pinfo["step"].double().log().cpu())
                step_logs = (sums, torch.bincount(lev_c, minlength=L))
                info["accept"] = pinfo["accept"]
            else:
                sp = torch.empty_like(xd)
                for k in levels:
                    rows = lev == k
                    sp[rows] = score_p(float(self.times[k]), xd[rows])
            diff = sq - sp
            w = self.weights.to(dev, dt)[lev]
            info["fisher"] = float((w * (diff * diff).sum(-1)).mean())
        loss = (w * (diff * xt).sum(-1)).mean()
        return loss, info, step_logs

    # ------------------------------------------------------------------ training
    def fit(self, iters: int = 1000, batch: int = 64, lr: float = 1e-3, lr_score: float = 1e-3, seed: int = 0,
            score_warmup: int = 200, grad_clip: Optional[float] = None, score_grad_clip: Optional[float] = 1.0,
            checkpoint: Optional[str] = None, checkpoint_every: int = 100, resume: bool = False,
            progress: bool = True, shards: Optional[int] = None) -> "DiKL":
        r"""Train: each of ``iters`` steps takes ``inner_steps`` DSM steps of :math:`s_q` on ``batch`` fresh
        generator samples (``score_warmup`` more at the first step), then one Adam step of the generator on the
        surrogate (:meth:`surrogate_loss`). History: ``loss`` (the surrogate), ``fisher`` (the weighted
        :math:`|s_q - s_p|^2`, a monitor), ``score_loss``, ``accept`` (posterior MALA), ``target_evals``.
        ``checkpoint``, ``checkpoint_every``, ``resume``: the package's exact resume. ``shards``: data-parallel
        training (:mod:`controlsamp.parallel`; None: one shard per process): each shard draws ``batch / shards``
        latents for each score step and for the surrogate from its own streams, losses are the shards' means,
        gradients are averaged over the processes and the MALA steps adapt on every shard's rows."""
        iters, batch = check_dim(iters, "iters"), check_dim(batch, "batch")
        lr, lr_score = check_positive(lr, "lr"), check_positive(lr_score, "lr_score")
        seed, score_warmup = check_seed(seed), check_count(score_warmup, "score_warmup")
        grad_clip, score_grad_clip = check_grad_clip(grad_clip), check_grad_clip(score_grad_clip, "score_grad_clip")
        gen_params = list(self.generator.parameters())
        net = self.score_model.network
        opt, _ = make_optimizer([{"params": gen_params, "lr": lr}], iters)
        score_opt, _ = make_optimizer([{"params": list(net.parameters()), "lr": lr_score}], iters)
        dp = DataParallel(shards)
        per_shard = dp.split(batch, "batch")
        streams = shard_streams(dp, seed, self.device)
        times = TimeSampler(self.score_model.kernel, self.t_min, self.reference.T, "uniform")

        def shard_score_loss(st: Streams) -> Tensor:
            with torch.no_grad():
                z = torch.randn(per_shard, self.latent_dim, generator=st.device, device=self.device, dtype=self.dtype)
                x0 = _finite_samples(self.generator(z))
            return score_matching_loss(self.score_model, x0, st.cpu, "simple", times)[0]

        def train_score(k: int, it: int) -> float:
            total = 0.0
            for _ in range(k):
                sm, value = dp.mean_loss([shard_score_loss(st) for st in streams])
                descend(sm, score_opt, net.parameters(), score_grad_clip, f"iteration {it} (score loss {value:.4g})",
                        None, dp)
                self.score_model.ema.update_parameters(net)
                total += value
            return total / max(k, 1)

        def step(it: int) -> Dict[str, float]:
            evals_before = self.target_evals
            sm = train_score(self.inner_steps + (score_warmup if it == 0 else 0), it)
            terms = [self._surrogate_terms(per_shard, st.device) for st in streams]
            loss, value = dp.mean_loss([tm[0] for tm in terms])
            info = {k: dp.mean(sum(tm[1][k] for tm in terms) / len(terms)) for k in terms[0][1]}
            if terms[0][2] is not None:  # every shard's adapted steps, in every process
                sums = dp.cat_rows([tm[2][0][None] for tm in terms]).sum(0)
                counts = dp.cat_rows([tm[2][1][None] for tm in terms]).sum(0)
                self._adapt_mala_steps(sums, counts)
            descend(loss, opt, gen_params, grad_clip, f"iteration {it} (loss {value:.4g})", None, dp)
            self.target_evals = dp.count_since(evals_before, self.target_evals)  # every process's energy evaluations
            return {"loss": value, "score_loss": sm, "target_evals": float(self.target_evals), **info}

        def extra() -> dict:
            return {"mala_step": self.mala_step.clone(), "evals": int(self.target_evals)}

        def restore(saved: dict) -> None:
            self.mala_step = saved["mala_step"].double().cpu()
            self.target_evals = int(saved["evals"])

        modules = {"generator": self.generator, "score_network": net, "score_ema": self.score_model.ema,
                   "optimizer": opt, "score_optimizer": score_opt}
        config = dict(self.config, sampler="DiKL", batch=batch, lr=lr, lr_score=lr_score, fit_seed=seed,
                      score_warmup=score_warmup, grad_clip=grad_clip, score_grad_clip=score_grad_clip)
        t0 = time.perf_counter()
        fit_loop(step, iters, modules, self.history, kind="DiKL", config=config, streams=streams,
                 checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                 progress=progress and dp.writer, extra=extra, restore_extra=restore, postfix=("loss", "fisher"),
                 parallel=dp)
        self.score_model.trained = True
        self.wall_time_s = time.perf_counter() - t0
        return self

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, seed: int = 0, batch: int = 100_000) -> Tuple[Tensor, Tensor]:
        """n generator samples (n, d) and their log-weights (n,) float64, all NaN: a one-step generator has no
        tractable density, so no importance weight is known (see the module docstring)."""
        n, batch = check_dim(n, "n"), check_dim(batch, "batch")
        gen = torch.Generator(device=self.device).manual_seed(check_seed(seed))
        out = []
        with torch.no_grad():
            for start in range(0, n, batch):
                z = torch.randn(min(batch, n - start), self.latent_dim, generator=gen, device=self.device,
                                dtype=self.dtype)
                out.append(self.generator(z))
        return torch.cat(out), torch.full((n,), float("nan"), dtype=torch.float64, device=self.device)

    def log_Z(self, n: int = 10_000, seed: int = 0) -> float:
        raise ValueError("DiKL's one-step generator has no tractable density, so it gives no importance weights "
                         "and no estimate of log Z")

    def eubo_log_weights(self, x: Tensor, generator: Optional[torch.Generator] = None) -> None:
        """None: the generator has no path law to weigh target samples under."""
        return None

    # ------------------------------------------------------------------ persistence
    def _modules(self) -> Dict[str, nn.Module]:
        return {"generator": self.generator, "score_network": self.score_model.network,
                "score_ema": self.score_model.ema}

    def save(self, path: str) -> None:
        """Write the generator, the score model (network and EMA), the history and the configuration."""
        save_model(path, "DiKL", self.config, self._modules(), self.history,
                   {"target_evals": self.target_evals, "mala_step": self.mala_step})

    def load(self, path: str) -> "DiKL":
        """Load a file written by :meth:`save` into a DiKL built with the same arguments."""
        payload = load_checkpoint(path, "DiKL", self.config, map_location=self.device)
        load_modules(payload, self._modules())
        self.history = payload["history"]
        self.target_evals = payload["extra"]["target_evals"]
        self.mala_step = payload["extra"]["mala_step"].double().cpu()
        return self
