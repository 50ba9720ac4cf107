r"""Riemannian score-based generative models: a score network on a compact manifold (the sphere :math:`S^d`, the
flat torus :math:`T^d` of :mod:`controlsamp.manifolds`), trained by denoising or implicit score matching, sampled
by the reverse geodesic random walk or the probability-flow ODE, with the ODE's exact log-likelihood (De Bortoli,
Mathieu, Hutchinson, Thornton, Teh & Doucet 2022, "Riemannian score-based generative modelling", NeurIPS; Huang,
Aghajohari, Bose, Panangaden & Courville 2022, "Riemannian diffusion models", NeurIPS, for the implicit objective
and the likelihood).

**Reference (noising) process.** Brownian motion on M (generator :math:`\tfrac12\Delta_M`) run at the rate
:math:`\beta(t)`,

.. math:: dX_t = \sqrt{\beta(t)}\, dB^M_t, \quad X_0 \sim p_{\text{data}}, \quad t \in [0, T], \qquad
          \beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min})\, t / T,

is a time-changed Brownian motion: :math:`X_t = B^M_{\tau(t)}` with the heat time
:math:`\tau(t) = \int_0^t \beta = \beta_{\min} t + (\beta_{\max} - \beta_{\min}) t^2 / (2T)`, so
:math:`X_t \mid X_0 = x_0` has the heat-kernel law :math:`p_{\tau(t)}(x_0, \cdot)` of
:mod:`controlsamp.manifolds.heat` and the marginal :math:`p_t` is the data law run through the heat semigroup for
heat time :math:`\tau(t)`. **Prior**: the uniform law :math:`1/|M|`. Its error is the mixing of the heat semigroup:
the first non-constant eigenfunction of :math:`\tfrac12\Delta_M` decays as :math:`e^{-\lambda_1\tau}`, with
:math:`\lambda_1 = d/2` on :math:`S^d` (:math:`e^{-\tau}` on :math:`S^2`: the degree-1 spherical harmonics,
:math:`-\Delta Y_1 = 2 Y_1`) and :math:`\lambda_1 = 1/2` on :math:`T^d` (:math:`\cos\theta_j`), so
:math:`|p_T/p_{\text{unif}} - 1| = O(e^{-\lambda_1\tau(T)})` (:meth:`ManifoldScoreSource.mixing_error`).
**Defaults**: :math:`\beta_{\min} = 10^{-3}` (as De Bortoli et al.) and :math:`\beta_{\max} = 20 / (\lambda_1 T)`
(20 on :math:`S^2`, 40 on :math:`T^d` for T = 1), so that :math:`\lambda_1\tau(T) \approx 10` and the prior's
relative error is about :math:`e^{-10} \approx 4.5\times 10^{-5}` (De Bortoli et al. used :math:`\beta_{\max}` of
order 2 to 5 on :math:`S^2`, whose prior error :math:`e^{-\tau(T)} \ge e^{-2.5} \approx 0.08` is visible in a
likelihood).

**Time reversal and probability flow** (De Bortoli et al. 2022). Written forward in
:math:`s = T - t`, the reverse process is

.. math:: dY_s = \beta(T - s)\, \nabla\log p_{T-s}(Y_s)\, ds + \sqrt{\beta(T - s)}\, dB^M_s,

(:math:`\nabla` the Riemannian gradient), and the probability-flow ODE, whose marginals are also :math:`p_t`, is the
tangent flow

.. math:: \frac{dx}{dt} = -\tfrac12\, \beta(t)\, \nabla\log p_t(x).

**Score model.** :math:`s_\theta(t, x) = P_x\, \mathrm{NN}_\theta(t, \phi(x)) / \sigma(t)` with
:math:`\sigma(t)^2 = 1 - e^{-\tau(t)}` and :math:`P_x` the projection onto :math:`T_x M`. The network sees ambient
coordinates :math:`\phi(x) = x` on the sphere and :math:`(\cos\theta, \sin\theta)` on the torus (so it is
periodic), and Fourier features of t (the package's MLP, :class:`~controlsamp.control.policies.MLPPolicy`, whose
output layer starts at zero: an untrained model is the uniform law). Dividing by :math:`\sigma(t)`, the manifold
analogue of the noise parametrisation, keeps the network's output O(1): for small :math:`\tau` the heat kernel is
close to a Gaussian of variance :math:`\tau \approx \sigma^2` in a chart, whose score is of size
:math:`\sqrt{d/\tau}`.

**Objectives**, with t uniform on :math:`[t_{\min}, T]`, :math:`x_0 \sim p_{\text{data}}`,
:math:`x_t \sim p_{\tau(t)}(x_0, \cdot)` and a weighting :math:`\lambda(t)`:

* ``"dsm"``, denoising score matching (De Bortoli et al. 2022):
  :math:`L(\theta) = \mathbb E\,\lambda(t)\,|s_\theta(t, x_t) - \nabla_{x_t}\log p_{\tau(t)}(x_0, x_t)|^2`, the
  target the heat kernel's score (:func:`controlsamp.manifolds.heat.heat_kernel_score`). Since
  :math:`\mathbb E[\nabla\log p_{\tau}(x_0, x_t) \mid x_t] = \nabla\log p_t(x_t)`, it equals the explicit
  :math:`\mathbb E\,\lambda\,|s_\theta - \nabla\log p_t|^2` plus a constant.
* ``"ism"``, implicit score matching (Hyvärinen 2005, carried to M by Huang et al. 2022 and De Bortoli et al.
  2022): :math:`L(\theta) = \mathbb E\,\lambda(t)\,[|s_\theta(t, x_t)|^2 + 2\operatorname{div}_M s_\theta(t,
  x_t)]`, by integration by parts on M (compact, no boundary) the same explicit loss up to another constant: no
  heat-kernel score is needed, only draws of :math:`x_t`. The divergence is the Hutchinson estimator in the tangent
  space, :math:`\operatorname{div}_M s = \operatorname{tr}(P\,\partial_x s) = \mathbb E[z^\top \partial_x s\, z]`
  with :math:`z = P_x\epsilon`, :math:`\epsilon` Rademacher or Gaussian in the ambient space
  (:math:`\mathbb E[zz^\top] = P_x`), or exact (:meth:`controlsamp.manifolds.Manifold.divergence`).

The two differ by a constant independent of :math:`\theta` (tested). Weightings: ``"variance"`` (default)
:math:`\lambda = \sigma(t)^2 = 1 - e^{-\tau(t)}`, under which the loss is the O(1) regression
:math:`|\mathrm{NN} - \sigma\,\text{target}|^2` (Song et al. 2021's :math:`\lambda = \sigma^2`, which for small
:math:`\tau` it matches); ``"likelihood"`` :math:`\lambda = \beta(t)`, under which the explicit loss
:math:`\tfrac12\int_0^T \beta\, \mathbb E|s_\theta - \nabla\log p_t|^2 dt` is the relative entropy of the data's
path law to the model SDE's, up to the prior's term (Song, Durkan, Murray & Ermon 2021, "Maximum likelihood
training of score-based diffusion models", NeurIPS, in R^d; Huang et al. 2022 on manifolds). Draws :math:`x_t`:
exact on the torus (the wrapped normal), a geodesic random walk of ``heat_steps`` steps on the sphere
(:func:`controlsamp.manifolds.heat.sample_heat_kernel`; its weak error is :math:`O(\tau/\text{heat\_steps})`, and
the DSM target is the exact kernel's score, so the sphere's DSM carries this small bias, as De Bortoli et al.'s).

**Samplers.** :func:`sample`, the reverse geodesic random walk (De Bortoli et al. 2022, Alg. 1 (GRW)) on the grid
:math:`t_k = T - k (T - t_{\min}) / K`, from :math:`Y_0 \sim` the uniform law,

.. math:: Y_{k+1} = \exp_{Y_k}\big(\Delta\tau_k\, s(t_k, Y_k) + \sqrt{\Delta\tau_k}\, Z_k\big), \qquad
          \Delta\tau_k = \tau(t_k) - \tau(t_{k+1}),\ Z_k \sim N(0, I_{T_{Y_k}M}),

Alg. 1's :math:`\beta(t_k) h` replaced by the exact heat-time increment (equal to first order; the Brownian part
then has the reference's exact variance), through :meth:`controlsamp.manifolds.Manifold.random_walk`; weak order 1.
:func:`pf_ode_sample`: the probability-flow ODE from T down to :math:`t_{\min}` by the classical 4th-order
Runge–Kutta method in ambient coordinates, each stage and step projected back onto M (``manifold.projection``; on
the sphere the ambient field :math:`F(t, \pi(y))` is tangent, so the exact flow stays on M and the projection only
removes the scheme's :math:`O(h^5)` drift off it).

**Likelihood** (:func:`log_likelihood`; Huang et al. 2022; Chen, Rubanova, Bettencourt & Duvenaud 2018's
instantaneous change of variables with the Riemannian divergence, Mathieu & Nickel 2020, "Riemannian continuous
normalizing flows", NeurIPS). Along the ODE's solution from :math:`x_{t_{\min}}
= x`, :math:`\tfrac{d}{dt}\log p_t(x_t) = -\operatorname{div}_M F(t, x_t)` with
:math:`F = -\tfrac12\beta\, s`, so

.. math:: \log p_{t_{\min}}(x) = \log p_T(x_T) + \int_{t_{\min}}^T \operatorname{div}_M F(t, x_t)\, dt,
          \qquad \log p_T = -\log|M|,

integrated forward with the same RK4 on the augmented state :math:`(x, \delta)`; the divergence exact
(:meth:`~controlsamp.manifolds.Manifold.divergence`, one backward pass per ambient coordinate) or Hutchinson's with
tangent probes :math:`P_x\epsilon` (:math:`\epsilon` drawn once and held along the path: the augmented ODE stays
deterministic and the estimate of :math:`\log p` unbiased).

Exact scores: :class:`ExactManifoldScore` plugs the closed-form noised score of a von Mises–Fisher or
wrapped-normal mixture (:mod:`controlsamp.manifolds.mixtures`) into the samplers and the likelihood.

Training composes the package's engine: :func:`controlsamp.training.fit_loop` (optimiser, schedule, progress,
non-finite reports), its checkpoint schema (exact resume) and :func:`controlsamp.training.ema_copy`.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .._validate import (check_count, check_device, check_dim, check_dtype, check_grad_clip,
                         check_nonnegative, check_positive, check_seed)
from ..control.policies import MLPPolicy
from ..manifolds import Manifold, Sphere, Torus
from ..manifolds.heat import heat_kernel_score, sample_heat_kernel
from ..targets.sources import as_sampler
from ..parallel import DataParallel
from ..training import Streams, descend, ema_copy, make_optimizer, shard_streams
from .model import NetworkWithEMA

Tensor = torch.Tensor

__all__ = ["BetaSchedule", "ManifoldScoreSource", "ExactManifoldScore", "RiemannianDiffusionModel", "ManifoldScoreNet",
           "spectral_gap", "default_beta_max", "perturb", "dsm_terms", "ism_terms", "sample", "pf_ode_sample",
           "log_likelihood", "LOSSES", "WEIGHTINGS", "DIVERGENCES", "NOISES", "PRIORS"]

LOSSES = ("dsm", "ism")
WEIGHTINGS = ("variance", "likelihood")
DIVERGENCES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
PRIORS = ("uniform", "exact")

#: the default beta_max puts lambda_1 * tau(T) at this value (mixing error about e^{-10})
MIXING = 10.0


# ---------------------------------------------------------------------------------------------- the schedule
def check_manifold(manifold, name: str = "manifold") -> Manifold:
    """A ValueError naming ``name`` unless ``manifold`` is a :class:`~controlsamp.manifolds.Sphere` or
    :class:`~controlsamp.manifolds.Torus` (the manifolds with a heat kernel and a known spectral gap)."""
    if not isinstance(manifold, (Sphere, Torus)):
        raise ValueError(f"{name} must be a controlsamp.manifolds.Sphere or Torus; got {type(manifold).__name__}")
    return manifold


def spectral_gap(manifold) -> float:
    r""":math:`\lambda_1`, the smallest non-zero eigenvalue of :math:`-\tfrac12\Delta_M`: the rate at which the heat
    semigroup forgets its start. :math:`d/2` on :math:`S^d` (:math:`-\Delta Y_1 = d\,Y_1`), :math:`1/2` on
    :math:`T^d` (:math:`-\Delta\cos\theta_j = \cos\theta_j`)."""
    check_manifold(manifold)
    return manifold.dim / 2.0 if isinstance(manifold, Sphere) else 0.5


def default_beta_max(manifold, T: float = 1.0) -> float:
    r"""The default :math:`\beta_{\max} = 2\cdot 10 / (\lambda_1 T)`: with :math:`\beta_{\min} \ll \beta_{\max}`,
    :math:`\lambda_1\tau(T) \approx 10` (20 on :math:`S^2`, 40 on :math:`T^d`, for T = 1)."""
    return 2.0 * MIXING / (spectral_gap(manifold) * check_positive(T, "T"))


class BetaSchedule:
    r"""The linear rate :math:`\beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min})\,t/T` on :math:`[0, T]`, its
    heat time :math:`\tau(t) = \int_0^t\beta`, the parametrisation scale :math:`\sigma(t) = \sqrt{1 - e^{-\tau(t)}}`
    and the loss weightings (module docstring). ``t`` a float or a tensor (elementwise)."""

    def __init__(self, beta_min: float = 1e-3, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = check_positive(beta_min, "beta_min")
        self.beta_max = check_positive(beta_max, "beta_max")
        self.T = check_positive(T, "T")
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be at least beta_min = {self.beta_min}; got {self.beta_max}")

    def beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def tau(self, t):
        return self.beta_min * t + (self.beta_max - self.beta_min) * t * t / (2.0 * self.T)

    def sigma(self, t):
        tau = self.tau(t)
        if isinstance(tau, Tensor):
            return torch.sqrt(-torch.expm1(-tau))
        return math.sqrt(-math.expm1(-tau))

    def weight(self, t: Tensor, weighting: str) -> Tensor:
        r""":math:`\lambda(t)`: ``"variance"`` :math:`\sigma(t)^2 = 1 - e^{-\tau(t)}`, ``"likelihood"``
        :math:`\beta(t)`."""
        if weighting == "variance":
            return -torch.expm1(-self.tau(t))
        if weighting == "likelihood":
            return self.beta(t)
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")

    def __repr__(self) -> str:
        return f"BetaSchedule(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"


# ---------------------------------------------------------------------------------------------- score sources
class ManifoldScoreSource(ABC):
    r"""What the samplers and the likelihood of this module need: ``manifold``, ``schedule``
    (:class:`BetaSchedule`), ``t_min`` (where samplers stop), ``score(t, x)`` the Riemannian score
    :math:`\nabla\log p_t(x)` (n, ambient_dim), tangent at x, differentiable in x, for one time t (a float) or one per
    point; the prior at T (the uniform law of M unless a subclass says otherwise), ``dtype`` and ``device``."""

    manifold: Manifold
    schedule: BetaSchedule
    t_min: float = 0.0
    dtype = torch.float64
    device = torch.device("cpu")

    @property
    def T(self) -> float:
        return self.schedule.T

    def beta(self, t):
        return self.schedule.beta(t)

    def tau(self, t):
        return self.schedule.tau(t)

    @abstractmethod
    def score(self, t, x: Tensor) -> Tensor:
        r""":math:`\nabla\log p_t(x)` (n, ambient_dim)."""

    def mixing_error(self) -> float:
        r""":math:`e^{-\lambda_1\tau(T)}`: the decay of the first non-constant eigenmode of the heat semigroup by
        time T, the order of the relative error :math:`|p_T/p_{\text{unif}} - 1|` of the uniform prior."""
        return math.exp(-spectral_gap(self.manifold) * self.schedule.tau(self.T))

    def points(self, x, name: str = "x") -> Tensor:
        """``x`` as (n, ambient_dim) points of the manifold in the source's dtype and device (ValueError naming
        ``name`` if off M, non-finite or of the wrong shape)."""
        return self.manifold.points(x, name, dtype=self.dtype, device=self.device)

    def prior_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n draws of the uniform law of M, (n, ambient_dim), in the source's device and dtype (drawn in float64 on the
        ``generator``'s device)."""
        where = generator.device if generator is not None else self.device
        return self.manifold.random_uniform(check_dim(n, "n"), generator, device=where).to(self.device, self.dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """(n,) float64: -log|M|."""
        return torch.full(x.shape[:1], -self.manifold.log_volume, dtype=torch.float64)


class ExactManifoldScore(ManifoldScoreSource):
    r"""The exact score of mixture data on a manifold as a score source: :math:`s(t, x) =`
    ``mixture.noised_score(tau(t), x)``, the score of the data law run through the heat semigroup for heat time
    :math:`\tau(t)` (a :class:`~controlsamp.manifolds.mixtures.VonMisesFisherMixture` on a sphere or a
    :class:`~controlsamp.manifolds.mixtures.WrappedNormalMixture` on a torus), so the samplers and the likelihood run
    with no learning error.

    Args:
        mixture: with ``manifold``, ``noised_score(t, x)`` and ``noised_log_prob(t, x)`` (t a heat time >= 0 or one
            per point; differentiable in x for the likelihood) and ``sample(n, generator)``.
        beta_min, beta_max, T: the schedule (``beta_max=None``: :func:`default_beta_max`).
        t_min: where samplers stop (default 0: the closed form holds down to the data).
        prior: ``"uniform"`` (the model's prior, default) or ``"exact"`` (the noised mixture at :math:`\tau(T)`:
            no prior error; its draws by :func:`~controlsamp.manifolds.heat.sample_heat_kernel` with ``heat_steps``
            geodesic-random-walk steps on the sphere, exact on the torus).
        dtype: the dtype of the prior draws (the scores keep the dtype of x; the closed forms compute in float64).
        device: where the prior draws go, and so the samplers' states (the closed forms compute on the CPU, see
            :mod:`controlsamp.manifolds.mixtures`; the scores return on the device of x).
    """

    def __init__(self, mixture, beta_min: float = 1e-3, beta_max: Optional[float] = None, T: float = 1.0,
                 t_min: float = 0.0, prior: str = "uniform", heat_steps: int = 100, dtype=torch.float64,
                 device="cpu"):
        missing = [a for a in ("manifold", "noised_score", "noised_log_prob", "sample") if not hasattr(mixture, a)]
        if missing:
            raise ValueError(f"mixture must be a manifold mixture (VonMisesFisherMixture, WrappedNormalMixture); "
                             f"{type(mixture).__name__} lacks {missing}")
        self.mixture = mixture
        self.manifold = check_manifold(mixture.manifold, "mixture.manifold")
        T = check_positive(T, "T")
        self.schedule = BetaSchedule(beta_min, default_beta_max(self.manifold, T) if beta_max is None else beta_max, T)
        t_min = check_nonnegative(t_min, "t_min")
        if not t_min < T:
            raise ValueError(f"t_min must lie in [0, T) = [0, {T}); got {t_min}")
        self.t_min = t_min
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}; got {prior!r}")
        self.prior = prior
        self.heat_steps = check_dim(heat_steps, "heat_steps")
        self.dtype, self.device = check_dtype(dtype), check_device(device)

    def score(self, t, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        tau = float(self.tau(float(tt))) if tt.numel() == 1 else self.tau(tt)
        return self.mixture.noised_score(tau, x.to(torch.float64)).to(x.dtype)

    def log_prob(self, t: float, x: Tensor) -> Tensor:
        r"""The exact :math:`\log p_t(x)` (n,) float64 (with respect to the volume measure)."""
        return self.mixture.noised_log_prob(float(self.tau(float(t))), torch.as_tensor(x).to(torch.float64))

    def prior_sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        if self.prior == "uniform":
            return super().prior_sample(n, generator)
        x0 = self.mixture.sample(check_dim(n, "n"), generator=generator).to(torch.float64)
        return sample_heat_kernel(self.manifold, x0, float(self.tau(self.T)), generator=generator,
                                  steps=self.heat_steps).to(self.device, self.dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        if self.prior == "uniform":
            return super().prior_log_prob(x)
        return self.log_prob(self.T, x).to(torch.float64).cpu()

    def __repr__(self) -> str:
        return f"ExactManifoldScore({type(self.mixture).__name__} on {self.manifold!r}, {self.schedule!r})"


class ManifoldScoreNet(nn.Module):
    r""":math:`P_x\,\mathrm{MLP}(t, \phi(x))`: the package's MLP (Fourier time features, zero output layer) on the
    ambient coordinates :math:`\phi(x) = x` of a sphere or :math:`(\cos\theta, \sin\theta)` of a torus (periodic),
    projected onto the tangent space at x. ``(t, x) -> (n, ambient_dim)``, t a scalar or one time per point."""

    def __init__(self, manifold, T: float = 1.0, hidden: int = 128, depth: int = 3, n_freq: int = 8):
        super().__init__()
        self.manifold = check_manifold(manifold)
        self.torus = isinstance(manifold, Torus)
        width = 2 * manifold.dim if self.torus else manifold.ambient_dim
        self.mlp = MLPPolicy(width, manifold.ambient_dim, T, hidden=hidden, depth=depth, n_freq=n_freq)

    def features(self, x: Tensor) -> Tensor:
        return torch.cat([torch.cos(x), torch.sin(x)], 1) if self.torus else x

    def forward(self, t, x: Tensor) -> Tensor:
        return self.manifold.proj(x, self.mlp(t, self.features(x)))


# ---------------------------------------------------------------------------------------------- objectives
def perturb(manifold, schedule: BetaSchedule, x0: Tensor, t_min: float, generator: Optional[torch.Generator] = None,
            heat_steps: int = 20):
    r"""One draw per data point of :math:`t \sim U[t_{\min}, T]` and :math:`x_t \sim p_{\tau(t)}(x_0, \cdot)` (the
    heat kernel: exact on the torus, a geodesic random walk of ``heat_steps`` steps on the sphere). Returns
    (t (n,), x_t (n, ambient_dim)) in float64."""
    x0 = torch.as_tensor(x0).to(torch.float64)
    n = x0.shape[0]
    t = t_min + (schedule.T - t_min) * torch.rand(n, generator=generator, dtype=torch.float64)
    xt = sample_heat_kernel(manifold, x0, schedule.tau(t), generator=generator, steps=heat_steps)
    return t, torch.as_tensor(xt).to(torch.float64)


def _as_time(t, n: int, like: Tensor) -> Tensor:
    tt = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return tt.expand(n) if tt.ndim == 0 else tt.reshape(n)


def dsm_terms(score: Callable[[Tensor, Tensor], Tensor], manifold, schedule: BetaSchedule, x0: Tensor, t: Tensor,
              xt: Tensor, weighting: str = "variance", target: Optional[Tensor] = None) -> Tensor:
    r"""(n,) the denoising score-matching terms :math:`\lambda(t)\,|s(t, x_t) - \nabla_{x_t}\log p_{\tau(t)}(x_0,
    x_t)|^2` (their mean is the ``"dsm"`` loss). ``score(t, x)`` is evaluated at ``xt`` in its dtype; the heat-kernel
    score target (float64; ``target`` when the caller has it) is cast to it."""
    if target is None:
        target = heat_kernel_score(manifold, torch.as_tensor(x0).to(torch.float64), xt.to(torch.float64),
                                   schedule.tau(t.to(torch.float64)))
    s = score(t.to(xt.dtype), xt)
    lam = schedule.weight(t.to(xt.dtype), weighting)
    return lam * ((s - target.to(device=s.device, dtype=s.dtype)) ** 2).sum(1)


def _probes(shape, k: int, noise: str, generator, dtype, device) -> Tensor:
    """k ambient probe vectors per point, (k, n, D), of unit covariance: drawn where ``generator`` lives (the CPU
    without one), then moved to ``device``."""
    where = torch.device("cpu") if generator is None else generator.device
    if noise == "gaussian":
        eps = torch.randn((k,) + tuple(shape), generator=generator, dtype=torch.float64, device=where)
    elif noise == "rademacher":
        eps = torch.randint(0, 2, (k,) + tuple(shape), generator=generator, device=where).to(torch.float64) * 2.0 - 1.0
    else:
        raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")
    return eps.to(dtype=dtype, device=device)


def ism_terms(score: Callable[[Tensor, Tensor], Tensor], manifold, schedule: BetaSchedule, t: Tensor, xt: Tensor,
              weighting: str = "variance", divergence: str = "hutchinson", probes: Optional[Tensor] = None,
              generator: Optional[torch.Generator] = None, noise: str = "rademacher") -> Tensor:
    r"""(n,) the implicit score-matching terms :math:`\lambda(t)\,[|s(t, x_t)|^2 + 2\operatorname{div}_M s(t, x_t)]`
    (their mean is the ``"ism"`` loss), differentiable in the score's parameters. ``divergence``: ``"hutchinson"``
    (:math:`z^\top\partial_x s\,z`, :math:`z = P_x\epsilon`, with ``probes`` :math:`\epsilon` (k, n, D) or one
    ``noise`` probe per point drawn from ``generator``; averaged over k) or ``"exact"``
    (:meth:`~controlsamp.manifolds.Manifold.divergence`)."""
    n = xt.shape[0]
    tt = t.to(xt.dtype)
    lam = schedule.weight(tt, weighting)
    with torch.enable_grad():
        x = xt.detach().requires_grad_(True)
        s = score(tt, x)
        if divergence == "exact":
            div = manifold.divergence(lambda y: score(tt, y), x, create_graph=True)
        elif divergence == "hutchinson":
            if probes is None:
                probes = _probes(x.shape, 1, noise, generator, x.dtype, x.device)
            k = probes.shape[0]
            div = torch.zeros(n, dtype=x.dtype, device=x.device)
            for j in range(k):
                z = manifold.proj(x.detach(), probes[j].to(x.dtype))
                g, = torch.autograd.grad((s * z).sum(), x, create_graph=True)
                div = div + (g * z).sum(1)
            div = div / k
        else:
            raise ValueError(f"divergence must be one of {DIVERGENCES}; got {divergence!r}")
    return lam * ((s * s).sum(1) + 2.0 * div)


# ---------------------------------------------------------------------------------------------- the model
class RiemannianDiffusionModel(NetworkWithEMA, ManifoldScoreSource):
    r"""A Riemannian score-based generative model (module docstring): a score network
    :math:`s_\theta(t, x) = P_x\mathrm{NN}_\theta(t, \phi(x))/\sigma(t)` on a sphere or torus, on the reference
    :math:`dX = \sqrt{\beta(t)}\,dB^M`, with an EMA copy of its weights used for sampling and likelihoods.

    Args:
        manifold: a :class:`~controlsamp.manifolds.Sphere` or :class:`~controlsamp.manifolds.Torus`.
        network: an ``nn.Module`` ``(t, x) -> (n, ambient_dim)`` predicting :math:`\sigma(t)` times the score (it is
            projected onto the tangent space here); default :class:`ManifoldScoreNet` (``hidden``, ``depth``,
            ``n_freq``).
        beta_min, beta_max, T: the rate :math:`\beta` on :math:`[0, T]` (``beta_max=None``: :func:`default_beta_max`,
            20 on :math:`S^2` and 40 on :math:`T^d` for T = 1).
        t_min: the smallest time trained on and the time samplers stop at (``0 < t_min < T``).
        loss: ``"dsm"`` (denoising, heat-kernel target) or ``"ism"`` (implicit, Hutchinson divergence).
        weighting: ``"variance"`` (:math:`1 - e^{-\tau}`) or ``"likelihood"`` (:math:`\beta`).
        heat_steps: geodesic-random-walk steps per draw of :math:`x_t` on the sphere (exact on the torus).
        ism_divergence, ism_noise, ism_probes: the divergence of ``"ism"`` (``"hutchinson"`` or ``"exact"``), the
            Hutchinson probes' law and their number per point.
        ema, ema_warmup: EMA decay of the weights (see :func:`controlsamp.training.ema_copy`).
        seed: seeds the network initialisation.
        device, dtype: where and in what precision the network runs (``dtype=None``: torch's default).
    """

    def __init__(self, manifold, network: Optional[nn.Module] = None, hidden: int = 128, depth: int = 3,
                 n_freq: int = 8, beta_min: float = 1e-3, beta_max: Optional[float] = None, T: float = 1.0,
                 t_min: float = 1e-3, loss: str = "dsm", weighting: str = "variance", heat_steps: int = 20,
                 ism_divergence: str = "hutchinson", ism_noise: str = "rademacher", ism_probes: int = 1,
                 ema: float = 0.999, ema_warmup: float = 10.0, seed: int = 0, device="cpu", dtype=None):
        self.manifold = check_manifold(manifold)
        T = check_positive(T, "T")
        self.schedule = BetaSchedule(beta_min, default_beta_max(manifold, T) if beta_max is None else beta_max, T)
        t_min = check_positive(t_min, "t_min")
        if not t_min < T:
            raise ValueError(f"t_min must be below T = {T}; got {t_min}")
        self.t_min = t_min
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
        if ism_divergence not in DIVERGENCES:
            raise ValueError(f"ism_divergence must be one of {DIVERGENCES}; got {ism_divergence!r}")
        if ism_noise not in NOISES:
            raise ValueError(f"ism_noise must be one of {NOISES}; got {ism_noise!r}")
        self.loss_name, self.weighting, self.ism_divergence, self.ism_noise = loss, weighting, ism_divergence, ism_noise
        self.heat_steps, self.ism_probes = check_dim(heat_steps, "heat_steps"), check_dim(ism_probes, "ism_probes")
        self.device, self.dtype = check_device(device), check_dtype(dtype)
        seed = check_seed(seed)
        if network is None:
            hidden, depth = check_dim(hidden, "hidden"), check_count(depth, "depth")
            n_freq = check_count(n_freq, "n_freq")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = ManifoldScoreNet(manifold, T, hidden=hidden, depth=depth, n_freq=n_freq)
            net_desc = dict(network="MLP", hidden=hidden, depth=depth, n_freq=n_freq)
        else:
            if not isinstance(network, nn.Module):
                raise ValueError(f"network must be an nn.Module (t, x) -> (n, {manifold.ambient_dim}); got "
                                 f"{type(network).__name__}")
            net_desc = dict(network=type(network).__name__)
        self.network = network.to(device=self.device, dtype=self.dtype)
        self.ema = ema_copy(self.network, check_nonnegative(ema, "ema"), check_nonnegative(ema_warmup, "ema_warmup"))
        self._check_network()
        self.config = dict(manifold=repr(manifold), beta_min=self.schedule.beta_min, beta_max=self.schedule.beta_max,
                           T=T, t_min=t_min, loss=loss, weighting=weighting, heat_steps=self.heat_steps,
                           ism_divergence=ism_divergence, ism_noise=ism_noise, ism_probes=self.ism_probes,
                           ema=float(ema), ema_warmup=float(ema_warmup), seed=int(seed), **net_desc)
        self.history: Dict[str, list] = {}
        self.trained = False

    def _check_network(self) -> None:
        D = self.manifold.ambient_dim
        x = self.manifold.random_uniform(2, torch.Generator().manual_seed(0)).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            out = self.network(torch.full((2,), 0.5 * self.T, device=self.device, dtype=self.dtype), x)
        if not isinstance(out, Tensor) or tuple(out.shape) != (2, D):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"network(t, x) must return (n, {D}) for points x of shape (n, {D}); got {shape}")

    # ------------------------------------------------------------------ the score
    def _score(self, t, x: Tensor, use_ema: bool = True) -> Tensor:
        tt = _as_time(t, x.shape[0], x)
        net = self.ema.module if use_ema else self.network
        return self.manifold.proj(x, net(tt, x)) / self.schedule.sigma(tt)[:, None]

    def score(self, t, x, use_ema: bool = True) -> Tensor:
        r""":math:`s_\theta(t, x)` (n, ambient_dim) at points x of M, tangent; t a float or one time per point (in
        :math:`(0, T]`). Differentiable in x. ``use_ema``: the EMA weights (default) or the trained ones."""
        return self._score(t, self.points(x), use_ema)

    # ------------------------------------------------------------------ training
    def loss_terms(self, x0: Tensor, t: Tensor, xt: Tensor, loss: Optional[str] = None,
                   generator: Optional[torch.Generator] = None, use_ema: bool = False) -> Tensor:
        """(n,) the terms of the objective (``loss``, default the model's) at data ``x0``, times ``t`` and noised
        points ``xt`` (float64, from :func:`perturb`); ``generator`` for ISM's probes."""
        loss = self.loss_name if loss is None else loss
        xt_m = xt.to(device=self.device, dtype=self.dtype)
        t_m = t.to(device=self.device, dtype=self.dtype)

        def score(tt, x):
            return self._score(tt, x, use_ema)
        if loss == "dsm":
            return dsm_terms(score, self.manifold, self.schedule, x0, t_m, xt_m, self.weighting)
        if loss == "ism":
            probes = _probes(xt_m.shape, self.ism_probes, self.ism_noise, generator, self.dtype, self.device) \
                if self.ism_divergence == "hutchinson" else None
            return ism_terms(score, self.manifold, self.schedule, t_m, xt_m, self.weighting, self.ism_divergence,
                             probes)
        raise ValueError(f"loss must be one of {LOSSES}; got {loss!r}")

    def loss(self, x0, generator: Optional[torch.Generator] = None, loss: Optional[str] = None,
             use_ema: bool = False) -> Tensor:
        """One estimate of the training objective on data ``x0`` (n, ambient_dim): draws (t, x_t) by
        :func:`perturb`, then the mean of :meth:`loss_terms`."""
        x0 = self.manifold.points(x0, "x0", dtype=torch.float64)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        t, xt = perturb(self.manifold, self.schedule, x0, self.t_min, gen, self.heat_steps)
        return self.loss_terms(x0, t, xt, loss, gen, use_ema).mean()

    def _data(self, data):
        """data as a function (n, generator) -> (n, ambient_dim) float64 points of M (checked per batch)."""
        D = self.manifold.ambient_dim
        if isinstance(data, (list, tuple)):
            data = torch.as_tensor(data, dtype=torch.float64)
        if hasattr(data, "shape") and not callable(data):
            pts = self.manifold.points(data, "data", dtype=torch.float64).cpu()
            return as_sampler(pts, "data")
        if hasattr(data, "sample") and not isinstance(data, Tensor):
            def fn(n, generator):
                return data.sample(n, generator=generator)
        elif callable(data):
            fn = data
        else:
            raise ValueError(f"data must be an (N, {D}) array of points of {self.manifold!r}, a law with "
                             f"sample(n, generator) or a callable fn(n, generator); got {type(data).__name__}")

        def sample(n, generator):
            return self.manifold.points(fn(n, generator), "data", dtype=torch.float64).cpu()
        return sample

    def fit(self, data, iters: int = 2000, batch: int = 256, lr: float = 1e-3, grad_clip: Optional[float] = 1.0,
            lr_schedule: Optional[str] = None, seed: int = 0, checkpoint: Optional[str] = None,
            checkpoint_every: int = 500, resume: bool = False, progress: bool = True,
            shards: Optional[int] = None) -> "RiemannianDiffusionModel":
        r"""Train by the model's objective (``loss``: DSM or ISM) on ``data``: an (N, ambient_dim) array or tensor of
        points of M (rows drawn with replacement), a law with ``sample(n, generator)`` (e.g. a mixture of
        :mod:`controlsamp.manifolds.mixtures`) or a callable ``fn(n, generator)``; every batch is checked to lie on M.

        Each of ``iters`` Adam steps (learning rate ``lr``, ``lr_schedule`` None or "cosine", gradient norm clipped
        to ``grad_clip``) draws ``batch`` data points, a time and a noised point per data point (:func:`perturb`)
        and descends the objective; the EMA copy follows the weights. The run goes through the package's training
        loop, so ``checkpoint``, ``checkpoint_every`` and ``resume`` give an exact resume (a checkpoint of another
        configuration is refused) and a non-finite loss or gradient stops training with the iteration named.
        History: ``loss``, ``seconds``.

        ``shards``: data-parallel training (:mod:`controlsamp.parallel`; None: one shard per process), as for
        :meth:`DiffusionModel.fit`: each shard draws ``batch / shards`` points, times and noised points from its
        own streams, the loss is the shards' mean and the gradients are averaged over the processes."""
        sample = self._data(data)
        iters, batch, lr = check_dim(iters, "iters"), check_dim(batch, "batch"), check_positive(lr, "lr")
        seed, grad_clip = check_seed(seed), check_grad_clip(grad_clip)
        config = dict(self.config, iters=iters, batch=batch, lr=float(lr), grad_clip=grad_clip,
                      lr_schedule=lr_schedule, fit_seed=int(seed))
        dp = DataParallel(shards)
        per_shard = dp.split(batch, "batch")
        n_done = self._fit_start(checkpoint, resume, config)
        total = n_done + iters
        opt, sched = make_optimizer([{"params": self.network.parameters(), "lr": lr}], iters, lr_schedule)
        streams = shard_streams(dp, seed, self.device)

        def shard_loss(st: Streams) -> Tensor:
            x0 = sample(per_shard, st.cpu)
            t, xt = perturb(self.manifold, self.schedule, x0, self.t_min, st.cpu, self.heat_steps)
            return self.loss_terms(x0, t, xt, generator=st.cpu).mean()

        def step(it: int) -> Dict[str, float]:
            loss, value = dp.mean_loss([shard_loss(st) for st in streams])
            descend(loss, opt, self.network.parameters(), grad_clip, f"iteration {it} (loss {value:.4g})", sched, dp)
            self.ema.update_parameters(self.network)
            return {"loss": value}

        return self._run_fit(step, total, opt, sched, config, streams, checkpoint, checkpoint_every, resume, progress,
                             n_done, dp)

    # ------------------------------------------------------------------ persistence
    @property
    def kind(self) -> str:
        return f"RiemannianDiffusionModel[{self.manifold!r},{self.loss_name}]"

    def __repr__(self) -> str:
        return (f"RiemannianDiffusionModel({self.manifold!r}, loss={self.loss_name!r}, {self.schedule!r}, "
                f"t_min={self.t_min})")


# ---------------------------------------------------------------------------------------------- samplers
def check_source(source, name: str = "source") -> None:
    """A ValueError naming ``name`` unless ``source`` is a manifold score source (:class:`ManifoldScoreSource`:
    a :class:`RiemannianDiffusionModel` or an :class:`ExactManifoldScore`)."""
    if not isinstance(source, ManifoldScoreSource):
        raise ValueError(f"{name} must be a RiemannianDiffusionModel, an ExactManifoldScore or another "
                         f"ManifoldScoreSource; got {type(source).__name__}")


def _time_grid(source, steps: int):
    """The decreasing grid t_k = T - k (T - t_min) / K, k = 0..K (floats; ends exactly at t_min)."""
    T, t0 = float(source.T), float(source.t_min)
    grid = [T - (T - t0) * k / steps for k in range(steps + 1)]
    grid[-1] = t0
    return grid


def sample(source, n: int, steps: int = 100, generator: Optional[torch.Generator] = None, record: bool = False,
           x_T=None) -> Tensor:
    r"""Draws of :math:`p_{t_{\min}}` by the reverse geodesic random walk (De Bortoli et al. 2022, Alg. 1; module
    docstring): K = ``steps`` steps :math:`Y_{k+1} = \exp_{Y_k}(\Delta\tau_k s(t_k, Y_k) + \sqrt{\Delta\tau_k} Z_k)`
    from the prior at T (the uniform law; ``x_T`` (n, ambient_dim) to start elsewhere), through
    :meth:`~controlsamp.manifolds.Manifold.random_walk`. ``generator`` (of the source's device) draws the prior
    and the walk's noise. Returns (n, ambient_dim) in the source's dtype, or the path (n, K + 1, ambient_dim) with
    ``record`` (index k at time :math:`t_k`)."""
    check_source(source)
    n, steps = check_dim(n, "n"), check_dim(steps, "steps")
    grid = _time_grid(source, steps)
    taus = [float(source.tau(t)) for t in grid]
    dtau = [taus[k] - taus[k + 1] for k in range(steps)]
    if x_T is None:
        y = source.prior_sample(n, generator)
    else:
        y = source.points(x_T, "x_T")
        if y.shape[0] != n:
            raise ValueError(f"n must equal the number of start points x_T ({y.shape[0]}); got {n}")
    y = y.to(dtype=source.dtype, device=source.device)

    def drift(k: int, x: Tensor) -> Tensor:
        return source.score(grid[k], x)
    with torch.no_grad():
        return source.manifold.random_walk(y, steps, dtau, drift=drift, generator=generator, record=record)


def _pf_field(source, t: float, x: Tensor) -> Tensor:
    r""":math:`F(t, x) = -\tfrac12\beta(t)\,s(t, x)`, projected onto the tangent space at x."""
    return source.manifold.proj(x, (-0.5 * float(source.beta(t))) * source.score(t, x))


def _rk4(source, x: Tensor, grid, stage: Callable[[float, Tensor], tuple]):
    r"""The classical RK4 along ``grid`` of :math:`\dot x = F(t, x)` and :math:`\dot\delta = D(t, x)`, with
    ``stage(t, y) = (F(t, y), D(t, y) or None)``; each stage point and step projected onto M. Returns (x, delta (n,)
    float64 or None, nfe)."""
    proj = source.manifold.projection
    delta, nfe = None, 0
    for i in range(len(grid) - 1):
        t0, t1 = grid[i], grid[i + 1]
        h, tm = t1 - t0, 0.5 * (grid[i] + grid[i + 1])
        k1, d1 = stage(t0, x)
        k2, d2 = stage(tm, proj(x + (0.5 * h) * k1))
        k3, d3 = stage(tm, proj(x + (0.5 * h) * k2))
        k4, d4 = stage(t1, proj(x + h * k3))
        nfe += 4
        if d1 is not None:
            inc = (h / 6.0) * (d1.double() + 2.0 * d2.double() + 2.0 * d3.double() + d4.double())
            delta = inc if delta is None else delta + inc
        x = proj(x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4))
    return x, delta, nfe


def pf_ode_sample(source, n: Optional[int] = None, steps: int = 100, generator: Optional[torch.Generator] = None,
                  x_T=None) -> Tensor:
    r"""Draws of :math:`p_{t_{\min}}` by the probability-flow ODE :math:`\dot x = -\tfrac12\beta(t)s(t, x)`
    integrated from T down to ``source.t_min`` by ``steps`` RK4 steps (module docstring), from ``n`` prior draws or
    the points ``x_T``. Returns (n, ambient_dim) in the source's dtype."""
    check_source(source)
    steps = check_dim(steps, "steps")
    if x_T is None:
        if n is None:
            raise ValueError("pass n (the number of samples, drawn from the prior) or x_T (the start points at T)")
        x = source.prior_sample(check_dim(n, "n"), generator)
    else:
        x = source.points(x_T, "x_T")
        if n is not None and check_dim(n, "n") != x.shape[0]:
            raise ValueError(f"n must equal the number of start points x_T ({x.shape[0]}); got {n}")
    x = x.detach().to(dtype=source.dtype, device=source.device)
    with torch.no_grad():
        x, _, _ = _rk4(source, x, _time_grid(source, steps), lambda t, y: (_pf_field(source, t, y), None))
    return x


def log_likelihood(source, x, steps: int = 100, divergence: str = "exact", hutchinson_samples: int = 1,
                   noise: str = "rademacher", generator: Optional[torch.Generator] = None,
                   prior_log_prob: Optional[Callable[[Tensor], Tensor]] = None, return_info: bool = False):
    r""":math:`\log p_{t_{\min}}(x)` in nats (with respect to the Riemannian volume of M) by the probability-flow ODE
    and the instantaneous change of variables (module docstring), integrated forward from ``source.t_min`` to T by
    ``steps`` RK4 steps.

    Args:
        source: a :class:`RiemannianDiffusionModel` or :class:`ExactManifoldScore`.
        x: points of M (n, ambient_dim) (a point off M is a ValueError).
        steps: the RK4 steps on the uniform grid in t (4 evaluations of the score and of the divergence each). The
            flow is stiff where the density has a deep, narrow valley (between the wrapped modes of a concentrated
            mixture on the torus): with the exact score of the tests' wrapped-normal mixture, 40 steps give 1e-4 nats
            at the data and 0.16 at a valley point of log-density -11.7, 100 steps 2e-3 there.
        divergence: ``"exact"`` (:meth:`~controlsamp.manifolds.Manifold.divergence`) or ``"hutchinson"`` (tangent
            probes :math:`P_x\epsilon`, :math:`\epsilon` drawn once per call from ``generator`` and held along the
            path, averaged over ``hutchinson_samples``; ``noise`` ``"rademacher"`` or ``"gaussian"``).
        prior_log_prob: :math:`\log p_T` (n, ambient_dim) -> (n,); default ``source.prior_log_prob`` (-log|M|).
        return_info: also return ``{"nfe", "prior_log_prob", "delta", "x_T"}``.

    Returns:
        (n,) float64 log-likelihoods (and the info dict with ``return_info``).
    """
    check_source(source)
    steps = check_dim(steps, "steps")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}; got {divergence!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")
    k = check_dim(hutchinson_samples, "hutchinson_samples")
    if prior_log_prob is None:
        prior_log_prob = source.prior_log_prob
    elif not callable(prior_log_prob):
        raise ValueError(f"prior_log_prob must be a callable (n, ambient_dim) -> (n,); got "
                         f"{type(prior_log_prob).__name__}")
    M = source.manifold
    x = source.points(x, "x").detach()
    probes = _probes(x.shape, k, noise, generator, x.dtype, x.device) if divergence == "hutchinson" else None

    def stage(t: float, y: Tensor):
        """(F(t, y), div_M F(t, y)): one evaluation of the field, inside the divergence's autograd pass."""
        seen = {}

        def field(z: Tensor) -> Tensor:
            seen["f"] = _pf_field(source, t, z)
            return seen["f"]
        if divergence == "exact":
            div = M.divergence(field, y)
            return seen["f"].detach(), div
        with torch.enable_grad():
            yy = y.detach().requires_grad_(True)
            f = field(yy)
            div = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
            for j in range(k):
                z = M.proj(y, probes[j])
                g, = torch.autograd.grad((f * z).sum(), yy, retain_graph=j < k - 1)
                div = div + (g * z).sum(1)
        return f.detach(), div.detach() / k

    xT, delta, nfe = _rk4(source, x, _time_grid(source, steps)[::-1], stage)
    lp = torch.as_tensor(prior_log_prob(xT.detach())).to(torch.float64).cpu().reshape(-1)
    if lp.shape[0] != x.shape[0]:
        raise ValueError(f"prior_log_prob must return one value per point ({x.shape[0]}); got shape {tuple(lp.shape)}")
    out = lp + delta.cpu()
    if return_info:
        return out, {"nfe": nfe, "prior_log_prob": lp, "delta": delta.cpu(), "x_T": xT.detach()}
    return out
