r"""Annealed importance sampling and sequential Monte Carlo on a geometric path, with unbiased Z.

Both move particles along the tempered path from a Gaussian :math:`p_0 = \mathcal N(\mu_0, \sigma_0^2 I)`
(normalised) to the unnormalised target :math:`\tilde\pi`,

.. math:: \gamma_\beta(x) = p_0(x)^{1-\beta}\,\tilde\pi(x)^{\beta}, \qquad 0 = \beta_0 < \dots < \beta_K = 1,

so :math:`Z_{\beta_0} = 1` and :math:`Z_{\beta_K} = Z`. At temperature :math:`\beta_k` each particle's
unnormalised weight is multiplied by the incremental weight

.. math:: w_k(x) = \gamma_{\beta_k}(x)/\gamma_{\beta_{k-1}}(x)
          = \exp\{(\beta_k - \beta_{k-1})(\log\tilde\pi(x) - \log p_0(x))\},

evaluated before the particle moves by ``n_mcmc`` steps of an MCMC kernel targeting
:math:`\gamma_{\beta_k}` (``kernel``: MALA by default, :mod:`.mala`, which leaves it invariant). The mean
of the weights estimates :math:`Z` at every stage. The weight arithmetic (ESS, conditional ESS,
systematic resampling, log-mean-exp) is :mod:`controlsamp.weights`; the target is evaluated, counted and
checked by a :class:`~controlsamp.targets.TargetEvaluator`.

* **AIS** (Neal 2001, "Annealed importance sampling", Statistics and Computing 11): a fixed schedule,
  no resampling; with fixed MCMC kernels :math:`\mathbb E[\frac1N\sum_i w_i] = Z` exactly.
* **SMC** (Del Moral, Doucet & Jasra 2006, "Sequential Monte Carlo samplers", JRSS B 68) with
  adaptive tempering: the next :math:`\beta` is the one whose incremental weights have conditional
  ESS (Zhou, Johansen & Aston 2016, "Towards automatic model comparison: an adaptive sequential Monte
  Carlo approach", JCGS 25) equal to ``target_ess`` times ``N``, found by bisection; systematic
  resampling (Carpenter, Clifford & Fearnhead 1999) whenever the ESS falls below
  ``resample_threshold`` :math:`\cdot N`. Resampling keeps the estimator unbiased by giving every
  offspring the mean weight: :math:`\hat Z = \prod_k \frac1N\sum_i w_k(x_i)` between resamplings.

Unbiasedness holds for a schedule and :math:`\gamma_\beta`-invariant MCMC kernels fixed in advance:
ULA (``kernel="ula"``) is not invariant (its stationary law is off by :math:`O(\epsilon)`), so with it
the estimate carries that discretisation bias too. Adaptive tempering, and the step size and diagonal
preconditioner tuned on the particle population (``adapt=True``), make the estimator consistent with
an :math:`O(1/N)` bias instead (Beskos, Jasra, Kantas & Thiery 2016, "On the
convergence of adaptive sequential Monte Carlo methods", Ann. Appl. Probab.); run once adaptively,
then rerun with ``schedule=result.betas`` and ``adapt=False`` for an unbiased estimate.
"""
from __future__ import annotations

import math
from typing import Callable, List, NamedTuple, Union

import torch

from .._validate import (as_tensor, check_count, check_device, check_dim, check_dtype, check_int, check_nonnegative,
                         check_positive, check_seed, check_vector)
from ..targets.evaluation import TargetEvaluator
from ..weights import conditional_ess, ess, logmeanexp, systematic_resample
from . import mala
from .chains import resolve_kernel
from .proposal import LangevinState, Preconditioner

Tensor = torch.Tensor

# systematic_resample and conditional_ess live in controlsamp.weights; they stay importable from here.
__all__ = ["SMCResult", "tempered_smc", "check_options", "systematic_resample", "conditional_ess", "next_temperature",
           "annealing_schedule"]


class SMCResult(NamedTuple):
    """Particles (N, d) with log weights (N,) whose log-mean-exp is the log Z estimate; the temperatures
    used; the ESS (normalised) before each resampling decision; the mean kernel acceptance
    (``info.acceptance_rate``) per stage; the number of resampling events; and the target evaluations."""
    x: Tensor
    log_w: Tensor
    log_Z: float
    betas: Tensor
    ess: List[float]
    accept: List[float]
    n_resample: int
    target_evals: int

    def __repr__(self) -> str:
        acc = [a for a in self.accept if a == a]
        acc_txt = f"{min(acc):.3g}..{max(acc):.3g}" if acc else "n/a"
        ess_txt = f"{min(self.ess):.3g}" if self.ess else "n/a"
        return (f"SMCResult(log_Z={self.log_Z:.6g}, x={tuple(self.x.shape)}, log_w={tuple(self.log_w.shape)}, "
                f"temperatures={len(self.betas) - 1}, min_ess={ess_txt}, accept={acc_txt}, "
                f"n_resample={self.n_resample}, target_evals={self.target_evals})")


def next_temperature(beta: float, log_w: Tensor, delta: Tensor, target_ess: float, tol: float = 1e-10) -> float:
    r"""The largest :math:`\beta' \in (\beta, 1]` whose incremental weights :math:`e^{(\beta'-\beta)\delta}`
    have conditional ESS :math:`\ge` ``target_ess`` (bisection; the CESS decreases in :math:`\beta'`).

    ``tol`` (default 1e-10) is the width of the bracket at which the bisection stops, and the least
    advance :math:`\beta' - \beta`, so a schedule cannot stall.
    """
    if conditional_ess(log_w, (1.0 - beta) * delta) >= target_ess:
        return 1.0
    lo, hi = beta, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if conditional_ess(log_w, (mid - beta) * delta) >= target_ess:
            lo = mid
        else:
            hi = mid
    return max(lo, beta + tol)  # always advance


def annealing_schedule(n_temps: int, kind: str = "geometric", beta_min: float = 1e-4) -> Tensor:
    r"""Temperatures :math:`0 = \beta_0 < \dots < \beta_K = 1` (K = ``n_temps``), float64.

    ``"linear"``: :math:`k/K`; ``"geometric"``: 0 then :math:`K` log-spaced values from ``beta_min`` to 1.
    """
    n_temps = check_dim(n_temps, "n_temps")
    if kind == "linear":
        return torch.linspace(0.0, 1.0, n_temps + 1, dtype=torch.float64)
    if kind == "geometric":
        check_positive(beta_min, "beta_min")
        if n_temps == 1:
            return torch.tensor([0.0, 1.0], dtype=torch.float64)
        tail = torch.logspace(math.log10(beta_min), 0.0, n_temps, dtype=torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), tail])
    raise ValueError(f"schedule must be 'linear', 'geometric' or a sequence of temperatures; got {kind!r}")


def _check_schedule(schedule) -> Tensor:
    b = as_tensor(schedule, "schedule").reshape(-1)
    if b.numel() < 2 or float(b[0]) != 0.0 or float(b[-1]) != 1.0 or not bool((b[1:] > b[:-1]).all()):
        raise ValueError("schedule must increase strictly from 0 to 1 (at least two temperatures)")
    return b


class _Tempered:
    r"""Particles with the prior and target log-densities kept apart, so reweighting costs nothing.

    A particle's parts are ``(x, log p0, grad log p0, log pi~, grad log pi~)``; :meth:`at` combines them
    into the :class:`LangevinState` of :math:`\gamma_\beta` that a kernel moves.
    """

    def __init__(self, target, mean: Tensor, std: float):
        self.mean, self.std, self.d = mean, std, target.dim
        self.evaluator = TargetEvaluator(target)
        self.parts = None  # (x, lp0, sc0, lpt, sct)

    def evaluate(self, x: Tensor):
        r = (x - self.mean) / self.std
        lp0 = -0.5 * (r * r).sum(-1) - self.d * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        sc0 = -r / self.std
        lpt, sct = self.evaluator.value_and_score(x)
        return x, lp0, sc0, lpt, sct

    @staticmethod
    def at(parts, beta: float) -> LangevinState:
        x, lp0, sc0, lpt, sct = parts
        lp = torch.where(torch.isfinite(lpt), (1 - beta) * lp0 + beta * lpt, lpt)  # -inf stays -inf
        return LangevinState(x, lp, (1 - beta) * sc0 + beta * torch.nan_to_num(sct))

    @staticmethod
    def _select(rows: Tensor, new, old):
        return tuple(torch.where(rows.unsqueeze(-1) if a.dim() == 2 else rows, b, a) for a, b in zip(old, new))

    def move(self, parts, beta: float, step, precond: Preconditioner, generator, kernel: Callable):
        """One ``kernel`` step targeting gamma_beta; returns the new parts and ``info.acceptance_rate``.

        The parts of the new positions come from the kernel's own evaluations: a particle that ends at
        its old position keeps its parts, one that ends at the last point the kernel evaluated takes
        that point's parts (MALA and ULA evaluate once, at the proposal), and any other (a kernel with
        several inner evaluations) is evaluated again, and counted.
        """
        last = {}

        def log_density(y):
            last["parts"] = self.evaluate(y)
            s = self.at(last["parts"], beta)
            return s.log_prob, s.score

        new_state, info = kernel(self.at(parts, beta), log_density, step, generator, precond)
        x_new = new_state.x
        if "parts" in last:
            proposed = last["parts"]
            at_proposal = (x_new == proposed[0]).all(-1)
            new = self._select(at_proposal, proposed, parts)
        else:
            new = parts
        elsewhere = ~(x_new == new[0]).all(-1)
        if elsewhere.any():
            idx = elsewhere.nonzero().squeeze(-1)
            fresh = self.evaluate(x_new[idx])
            new = tuple(a.index_copy(0, idx, b) for a, b in zip(new, fresh))
        return new, info.acceptance_rate


def check_options(n=2, schedule="adaptive", n_temps: int = 100, n_mcmc: int = 10, prior_std: float = 1.0,
                  step_size: float = 0.1, target_accept: float = 0.574, target_ess: float = 0.99,
                  resample_threshold: float = 0.5, step_decades: float = 2.0, max_temps: int = 10_000, seed: int = 0,
                  device="cpu", dtype=torch.float64, kernel="mala", adapt_rate: float = 0.5,
                  tempering_tol: float = 1e-10, beta_min: float = 1e-4, precond_min_var: float = 1e-12,
                  **unused) -> dict:
    """The options of :func:`tempered_smc` checked and normalised (a ValueError naming the first bad one), so
    that :class:`~controlsamp.samplers.SMC` and :class:`~controlsamp.samplers.AIS` refuse bad options when built,
    not at their first run."""
    out = dict(n=check_int(n, "n", minimum=2), n_mcmc=check_count(n_mcmc, "n_mcmc"),
               prior_std=check_positive(prior_std, "prior_std"), step_size=check_positive(step_size, "step_size"),
               step_decades=check_nonnegative(step_decades, "step_decades"),
               max_temps=check_dim(max_temps, "max_temps"), seed=check_seed(seed),
               device=check_device(device), dtype=check_dtype(dtype), kernel=resolve_kernel(kernel),
               adapt_rate=check_positive(adapt_rate, "adapt_rate"),
               tempering_tol=check_positive(tempering_tol, "tempering_tol"),
               precond_min_var=check_positive(precond_min_var, "precond_min_var"))
    for name, v in (("target_accept", target_accept), ("target_ess", target_ess)):
        if not 0.0 < check_positive(v, name) < 1.0:
            raise ValueError(f"{name} must be in (0, 1); got {v}")
        out[name] = float(v)
    if not 0.0 <= check_nonnegative(resample_threshold, "resample_threshold") <= 1.0:
        raise ValueError(f"resample_threshold must be in [0, 1]; got {resample_threshold}")
    out["resample_threshold"] = float(resample_threshold)
    if isinstance(schedule, str):
        if schedule != "adaptive":
            annealing_schedule(check_dim(n_temps, "n_temps"), schedule, beta_min)
    else:
        _check_schedule(schedule)
    return out


def tempered_smc(target, n: int, schedule: Union[str, Tensor, list] = "adaptive", n_temps: int = 100,
                 n_mcmc: int = 10, prior_mean=None, prior_std: float = 1.0, step_size: float = 0.1,
                 adapt: bool = True, target_accept: float = 0.574, target_ess: float = 0.99,
                 resample_threshold: float = 0.5, per_particle_step: bool = False, step_decades: float = 2.0,
                 precondition: bool = False, max_temps: int = 10_000, seed: int = 0, device="cpu",
                 dtype=torch.float64, kernel: Union[str, Callable] = "mala", adapt_rate: float = 0.5,
                 tempering_tol: float = 1e-10, beta_min: float = 1e-4, precond_min_var: float = 1e-12) -> SMCResult:
    r"""Move ``n`` particles from :math:`\mathcal N(\mu_0, \sigma_0^2 I)` to ``target`` along the geometric path.

    Args:
        schedule: ``"adaptive"`` (SMC: the next temperature keeps the conditional ESS at
            ``target_ess``), ``"linear"`` or ``"geometric"`` with ``n_temps`` temperatures, or the
            temperatures themselves (from 0 to 1).
        n_mcmc: kernel moves per temperature.
        prior_mean, prior_std: :math:`\mu_0` (default 0) and :math:`\sigma_0`.
        step_size: the initial step :math:`\epsilon` of the kernel.
        adapt: tune the step toward ``target_accept`` after every move (consistent, not exactly
            unbiased; see the module).
        target_accept: the acceptance rate the adaptation aims at (default 0.574, MALA's optimal rate in
            high dimension, Roberts & Rosenthal 1998).
        target_ess: the conditional ESS each adaptive temperature keeps (closer to 1: more
            temperatures). On funnel10 (1000 particles, 10 moves) 0.99 leaves log Z 0.1-0.5 low and
            0.999 with 20 moves 0.1-0.24 low (measured): the particles rarely reach the neck.
        resample_threshold: resample when the normalised ESS (:func:`controlsamp.weights.ess`) falls
            below it (0 never resamples: AIS).
        per_particle_step: with ``adapt``, each particle adapts its own step to its own acceptance
            and passes it to its offspring. The step then depends on the particle's path, so the
            move is no longer exactly invariant: on gmm25 it biased log Z by +0.09 (measured); off by
            default, kept for comparison.
        step_decades: each particle draws its step for each move as
            :math:`\epsilon\,10^{-u\,\cdot\,\mathrm{decades}}`, :math:`u \sim U(0, 1)`, independently of
            its state, so every move is still :math:`\gamma_\beta`-invariant (a mixture of MALA
            kernels) while spanning scales (the funnel's neck and mouth differ by orders of magnitude).
        precondition: with ``adapt``, precondition the kernel by the particles' weighted per-coordinate
            variance at each stage.
        kernel: the MCMC kernel that moves the particles, ``"mala"`` (default; :func:`.mala.step`),
            ``"ula"`` (:func:`.ula.step`; not :math:`\gamma_\beta`-invariant, see the module) or any
            function ``kernel(state, log_density, step_size, generator, precond) -> (state, info)`` with
            ``info.acceptance_rate`` (n,) (:mod:`.chains`). ULA has no rejection to stop a step past its
            stability limit: give it a fixed step (``adapt=False``). With the default adaptation (toward
            MALA's would-be acceptance 0.574, ``step_decades`` 2) its largest steps grew to about 10 on a
            2-d Gaussian and the tempering stalled (measured); with a fixed step 0.05 and
            ``step_decades=0`` its log Z was 1.27 +- 0.06 (sd) against 1.3 (1000 particles, 5 seeds).
        adapt_rate: with ``adapt``, the Robbins–Monro gain on :math:`\log\epsilon` of
            :func:`.mala.adapt_step`, applied after every move (default 0.5).
        tempering_tol: the bisection tolerance of :func:`next_temperature` (default 1e-10), also the
            least increase of :math:`\beta` per adaptive stage.
        beta_min: the first nonzero temperature of a ``"geometric"`` schedule (default 1e-4;
            :func:`annealing_schedule`).
        precond_min_var: with ``precondition``, the floor on each coordinate's weighted variance
            (default 1e-12), so a collapsed coordinate cannot give a singular preconditioner.
        max_temps: a guard against a schedule that stalls.
        seed: seeds the initial draw, the moves and the resampling.
    """
    o = check_options(n=n, schedule=schedule, n_temps=n_temps, n_mcmc=n_mcmc, prior_std=prior_std,
                      step_size=step_size, target_accept=target_accept, target_ess=target_ess,
                      resample_threshold=resample_threshold, step_decades=step_decades, max_temps=max_temps,
                      seed=seed, device=device, dtype=dtype, kernel=kernel, adapt_rate=adapt_rate,
                      tempering_tol=tempering_tol, beta_min=beta_min, precond_min_var=precond_min_var)
    n, n_mcmc, prior_std, step, resample_threshold = (o[k] for k in ("n", "n_mcmc", "prior_std", "step_size",
                                                                      "resample_threshold"))
    step_decades, max_temps, seed, device, dtype = (o[k] for k in ("step_decades", "max_temps", "seed", "device",
                                                                   "dtype"))
    kernel, adapt_rate, tempering_tol = o["kernel"], o["adapt_rate"], o["tempering_tol"]
    precond_min_var, target_accept, target_ess = o["precond_min_var"], o["target_accept"], o["target_ess"]
    adaptive = isinstance(schedule, str) and schedule == "adaptive"
    betas = None if adaptive else (annealing_schedule(n_temps, schedule, beta_min) if isinstance(schedule, str)
                                   else _check_schedule(schedule))
    gen = torch.Generator(device=device).manual_seed(seed)
    d = target.dim
    mean = torch.zeros(d, device=device, dtype=dtype) if prior_mean is None else \
        check_vector(prior_mean, "prior_mean", d, dtype=dtype, device=device)
    path = _Tempered(target, mean, prior_std)
    x = mean + prior_std * torch.randn(n, d, generator=gen, device=device, dtype=dtype)
    per_particle_step = per_particle_step and adapt
    if per_particle_step:
        step = torch.full((n,), step, device=device, dtype=dtype)
    parts = path.evaluate(x)
    log_w = torch.zeros(n, device=device, dtype=torch.float64)
    beta, k, used, ess_hist, acc_hist, n_res = 0.0, 0, [0.0], [], [], 0
    while beta < 1.0:
        if k >= max_temps:
            raise RuntimeError(f"tempering did not reach beta = 1 within max_temps = {max_temps} temperatures "
                               f"(beta = {beta:.3g}); raise max_temps or lower target_ess")
        ess_now = ess(log_w)
        ess_hist.append(ess_now)
        if resample_threshold > 0 and ess_now < resample_threshold:
            idx = systematic_resample(log_w, gen)
            parts = tuple(p[idx] for p in parts)
            if per_particle_step:
                step = step[idx]
            log_w = torch.full_like(log_w, float(logmeanexp(log_w)))
            n_res += 1
        delta = (parts[3] - parts[1]).double()  # log pi~ - log p0, -inf outside the support
        new_beta = (next_temperature(beta, log_w, delta, target_ess, tempering_tol) if adaptive
                    else float(betas[k + 1]))
        inc = torch.where(torch.isfinite(delta), (new_beta - beta) * delta, delta)
        log_w = log_w + inc
        if not torch.isfinite(log_w).any():
            raise FloatingPointError(f"every particle has zero weight at beta = {new_beta:.3g}")
        beta, k = new_beta, k + 1
        used.append(beta)
        precond = Preconditioner()
        if adapt and precondition and n_mcmc > 0:
            W = torch.softmax(log_w, 0).to(dtype).unsqueeze(-1)
            m = (W * parts[0]).sum(0)
            var = (W * (parts[0] - m) ** 2).sum(0).double().clamp(min=precond_min_var)
            precond = Preconditioner(var, d)
        accs = []
        for _ in range(int(n_mcmc)):
            eps = step
            if step_decades > 0:  # a random step per particle and move, drawn independently of the state
                u = torch.rand(n, generator=gen, device=device, dtype=dtype)
                eps = step * torch.pow(10.0, -step_decades * u)
            parts, acc = path.move(parts, beta, eps, precond, gen, kernel)
            accs.append(float(acc.mean()))
            if adapt:
                step = mala.adapt_step(step, acc, target_accept, rate=adapt_rate)
        acc_hist.append(sum(accs) / len(accs) if accs else float("nan"))
    return SMCResult(parts[0], log_w, float(logmeanexp(log_w)), torch.tensor(used, dtype=torch.float64),
                     ess_hist, acc_hist, n_res, path.evaluator.evals)
