r"""AIS and SMC behind the sampler API: ``.sample(n) -> (x, log_w)`` and ``.log_Z(n)``, nothing to train.

Both run :func:`controlsamp.langevin.smc.tempered_smc` from :math:`\mathcal N(0, \sigma_0^2 I)` along the
geometric path :math:`p_0^{1-\beta}\tilde\pi^{\beta}` with MALA moves (or another ``kernel``); the
returned log weights satisfy
:math:`\widehat Z = \frac1n\sum_i w_i` (see that module for the estimator and when it is exactly
unbiased). They are the Monte Carlo baselines of the diffusion samplers:

* :class:`AIS` (Neal 2001): a fixed schedule of ``steps`` temperatures, independent particles.
* :class:`SMC` (Del Moral, Doucet & Jasra 2006): adaptive tempering, systematic resampling.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Tuple, Union

import torch

from .._validate import check_count, check_device, check_dim, check_dtype, check_int, check_positive, check_seed
from ..training import load_checkpoint, save_model
from ..langevin.smc import SMCResult, check_options, tempered_smc
from .base import check_target

Tensor = torch.Tensor

__all__ = ["AIS", "SMC", "MonteCarloSampler"]


def _with_defaults(options: dict) -> dict:
    """``options`` completed by :func:`tempered_smc`'s defaults, so that a checkpoint written before an
    option existed compares equal to a sampler that leaves it at its default."""
    defaults = {k: p.default for k, p in inspect.signature(tempered_smc).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **options}


class MonteCarloSampler:
    """Shared by :class:`AIS` and :class:`SMC`: options, bookkeeping, the sampler API."""

    name = "mc"
    trainable = False  # controlsamp.train runs no fit for it
    weighted = True  # weighted particles: resampled before sample-based metrics
    default_loss = None

    def __init__(self, target, prior_std: float = 1.0, n_mcmc: int = 10, step_size: float = 0.1,
                 adapt: bool = True, n_particles: int = 2000, device="cpu", dtype=torch.float64, seed: int = 0,
                 **options):
        self.target = check_target(target)
        self.dim = target.dim
        self.n_particles = check_int(n_particles, "n_particles", minimum=2)
        self.device, self.dtype, self.seed = check_device(device), check_dtype(dtype), check_seed(seed)
        self.options = dict(prior_std=check_positive(prior_std, "prior_std"), n_mcmc=check_count(n_mcmc, "n_mcmc"),
                            step_size=check_positive(step_size, "step_size"), adapt=bool(adapt), **options)
        check_options(n=self.n_particles, device=self.device, dtype=self.dtype, **self.options)
        self.target_evals = 0
        self.history = {}
        self.last: Optional[SMCResult] = None

    def run(self, n: Optional[int] = None, seed: Optional[int] = None) -> SMCResult:
        """One run with ``n`` particles (default ``n_particles``); its result is kept as ``.last``."""
        n = self.n_particles if n is None else check_int(n, "n", minimum=2)
        res = tempered_smc(self.target, n, seed=self.seed if seed is None else check_seed(seed), device=self.device,
                           dtype=self.dtype, **self.options)
        self.target_evals += res.target_evals
        self.last = res
        return res

    def sample(self, n: Optional[int] = None, seed: int = 0) -> Tuple[Tensor, Tensor]:
        """``n`` particles (n, d) and their log weights (n,) (float64); log-mean-exp of the weights is log Z-hat."""
        res = self.run(n, seed)
        return res.x, res.log_w

    def log_Z(self, n: Optional[int] = None, seed: int = 0) -> float:
        r"""The estimate :math:`\log\widehat Z` of one run with ``n`` particles."""
        return self.run(n, seed).log_Z

    def fit(self, *args, **kwargs) -> "MonteCarloSampler":
        """Nothing to train: AIS and SMC adapt within each run. Returns ``self``."""
        return self

    def eubo_log_weights(self, x: Tensor, generator=None) -> None:
        """None: a tempered particle system has no path law to weigh paths from target samples under."""
        return None

    def _config(self) -> dict:
        return {"dim": self.dim, "options": _with_defaults(self.options)}

    def save(self, path: str) -> None:
        """Write the configuration and, if run, the temperatures of the last run (the package's checkpoint
        schema, :mod:`controlsamp.training`)."""
        save_model(path, type(self).__name__, self._config(), {}, {},
                   {"n_particles": self.n_particles, "seed": self.seed, "target_evals": self.target_evals,
                    "betas": None if self.last is None else self.last.betas})

    def load(self, path: str) -> "MonteCarloSampler":
        """Restore what :meth:`save` wrote (a file of another sampler or with other options is refused)."""
        payload = load_checkpoint(path, type(self).__name__, self._config(),
                                  normalise=lambda c: dict(c, options=_with_defaults(c["options"])))
        self.target_evals = payload["extra"]["target_evals"]
        return self


class AIS(MonteCarloSampler):
    r"""Annealed importance sampling (Neal 2001) with MALA moves.

    .. math:: \log w = \sum_{k=1}^{K} (\beta_k - \beta_{k-1})\,(\log\tilde\pi - \log p_0)(x_{k-1}),
              \qquad x_k \sim M_{\beta_k}(x_{k-1}, \cdot),

    :math:`M_\beta` ``n_mcmc`` MALA steps leaving :math:`\gamma_\beta \propto p_0^{1-\beta}\tilde\pi^\beta`
    invariant. :math:`\mathbb E[w] = Z` exactly when ``adapt=False`` (fixed steps).

    Args:
        target: a :class:`~controlsamp.targets.Target`.
        steps: the number of temperatures K (the CLI's ``--steps``).
        schedule: ``"geometric"``, ``"linear"`` or the temperatures themselves.
        sigma: :math:`\sigma_0`, the standard deviation of the Gaussian start (alias ``prior_std``).
        n_mcmc, step_size, adapt: MALA moves per temperature, the (initial) step, whether it adapts
            (one step for all particles, from their mean acceptance).
        n_particles: the default number of particles of :meth:`sample` / :meth:`log_Z`.
        target_accept: the acceptance rate the step adapts to (default 0.574).
        adapt_rate: the adaptation's gain on :math:`\log\epsilon` (default 0.5).
        beta_min: the first nonzero temperature of the geometric schedule (default 1e-4).
        kernel: the MCMC kernel, ``"mala"`` (default), ``"ula"`` or a kernel function.
        See :func:`controlsamp.langevin.smc.tempered_smc` for each option's meaning.
    """

    name = "ais"

    def __init__(self, target, steps: int = 100, schedule="geometric", sigma: Optional[float] = None,
                 prior_std: float = 1.0, n_mcmc: int = 10, step_size: float = 0.1, adapt: bool = True,
                 n_particles: int = 2000, device="cpu", dtype=torch.float64, seed: int = 0,
                 target_accept: float = 0.574, adapt_rate: float = 0.5, beta_min: float = 1e-4,
                 kernel: Union[str, Callable] = "mala"):
        steps = check_dim(steps, "steps")
        super().__init__(target, prior_std=sigma if sigma is not None else prior_std, n_mcmc=n_mcmc,
                         step_size=step_size, adapt=adapt, n_particles=n_particles, device=device, dtype=dtype,
                         seed=seed, schedule=schedule, n_temps=steps, resample_threshold=0.0,
                         per_particle_step=False, step_decades=0.0, precondition=False,
                         target_accept=target_accept, adapt_rate=adapt_rate, beta_min=beta_min, kernel=kernel)


class SMC(MonteCarloSampler):
    r"""Sequential Monte Carlo with adaptive tempering (Del Moral, Doucet & Jasra 2006; Zhou, Johansen &
    Aston 2016), systematic resampling and MALA moves.

    The next temperature keeps the conditional ESS of the incremental weights at ``target_ess``; the
    particles resample systematically when their ESS falls below ``resample_threshold``; the MALA step
    adapts to the particles' mean acceptance and each move draws a random fraction of it per particle
    (``step_decades``).

    Args:
        target: a :class:`~controlsamp.targets.Target`.
        n_particles: the default number of particles of :meth:`sample` / :meth:`log_Z`.
        steps: MALA moves per temperature (the CLI's ``--steps``; alias ``n_mcmc``).
        sigma: :math:`\sigma_0`, the standard deviation of the Gaussian start (alias ``prior_std``).
        target_ess, resample_threshold, per_particle_step, step_decades, precondition, step_size, adapt: see
            :func:`controlsamp.langevin.smc.tempered_smc`.
        schedule: ``"adaptive"``, or fixed temperatures (with ``adapt=False``: exactly unbiased).
        target_accept: the acceptance rate the step adapts to (default 0.574).
        adapt_rate: the adaptation's gain on :math:`\log\epsilon` (default 0.5).
        tempering_tol: the bisection tolerance of the adaptive tempering (default 1e-10).
        precond_min_var: with ``precondition``, the floor on the weighted variances (default 1e-12).
        kernel: the MCMC kernel, ``"mala"`` (default), ``"ula"`` or a kernel function.
        max_temps: the most temperatures before the run stops with an error (default 10000).
        See :func:`controlsamp.langevin.smc.tempered_smc` for each option's meaning.
    """

    name = "smc"

    def __init__(self, target, n_particles: int = 2000, steps: Optional[int] = None, sigma: Optional[float] = None,
                 prior_std: float = 1.0, n_mcmc: int = 10, target_ess: float = 0.99, resample_threshold: float = 0.5,
                 step_size: float = 0.1, adapt: bool = True, per_particle_step: bool = False,
                 step_decades: float = 2.0, precondition: bool = False, schedule="adaptive", max_temps: int = 10_000,
                 device="cpu", dtype=torch.float64, seed: int = 0, target_accept: float = 0.574,
                 adapt_rate: float = 0.5, tempering_tol: float = 1e-10, precond_min_var: float = 1e-12,
                 kernel: Union[str, Callable] = "mala"):
        super().__init__(target, prior_std=sigma if sigma is not None else prior_std,
                         n_mcmc=check_count(steps, "steps") if steps is not None else n_mcmc, step_size=step_size,
                         adapt=adapt,
                         n_particles=n_particles, device=device, dtype=dtype, seed=seed, schedule=schedule,
                         target_ess=target_ess, resample_threshold=resample_threshold,
                         per_particle_step=per_particle_step, step_decades=step_decades, precondition=precondition,
                         max_temps=max_temps, target_accept=target_accept, adapt_rate=adapt_rate,
                         tempering_tol=tempering_tol, precond_min_var=precond_min_var, kernel=kernel)
