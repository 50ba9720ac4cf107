r"""Denoising score matching (DSM) and, for CLD, hybrid score matching (HSM): the training objective of a
:class:`~controlsamp.generative.DiffusionModel`, with its weightings and time sampling.

Objective (Vincent 2011; Song et al. 2021, eq. 7), time-averaged over :math:`[t_{\min}, T]`:

.. math:: \mathcal L(\theta) = \frac{1}{T - t_{\min}}\int_{t_{\min}}^T \lambda(t)\,
          \mathbb E_{x_0, \epsilon}\big|s_\theta(t, x_t) - \nabla_{x_t}\log p(x_t \mid x_0)\big|^2\,dt
          = \mathbb E\Big[\frac{\lambda(t)}{\sigma_t^2}\,|\hat\epsilon_\theta(t, x_t) - \epsilon|^2\Big],

with the perturbation and its conditional score :math:`-\epsilon/\sigma_t` of :mod:`.kernel`. It differs from the
score-matching loss :math:`\int\lambda\,\mathbb E|s_\theta - \nabla\log p_t|^2` by a constant, so its
minimiser is the score of the noised data law :math:`p_t`. For Gaussian data :math:`\mathcal N(m, S)` that
constant (the loss of the exact score) is
:math:`\frac{1}{T-t_{\min}}\int \frac{\lambda(t)}{\sigma_t^2}\big(d - \sigma_t^2\,\mathrm{tr}\,C_t^{-1}\big)dt`,
:math:`C_t = \alpha_t^2 S + \sigma_t^2 I`.

HSM (Dockhorn, Vahdat & Kreis 2022, §3.2): for CLD the initial velocity is marginalised, the target is the
velocity component :math:`-\epsilon_v/\ell_{vv}` of the conditional score given :math:`x_0` alone, and the same
formula holds with :math:`\sigma_t \to \ell_{vv}(t)`, :math:`\epsilon \to \epsilon_v`.

Weightings :math:`\lambda(t)`:

* ``"simple"``: :math:`\lambda = \sigma_t^2` (:math:`\ell_{vv}^2` for CLD), the noise-prediction loss
  :math:`\mathbb E|\hat\epsilon - \epsilon|^2` of Ho et al. 2020;
* ``"likelihood"``: :math:`\lambda = g(t)^2` (:math:`2\Gamma\beta(t)` for CLD), for which the loss bounds the
  negative log-likelihood (Song, Durkan, Murray & Ermon 2021, "Maximum likelihood training of score-based
  diffusion models", Thm. 1).

Time sampling: ``"uniform"`` on :math:`[t_{\min}, T]`, or ``"importance"`` (isotropic references): t with
density :math:`p(t) \propto g^2/\sigma_t^2 = -\frac{d}{dt}\log\mathrm{SNR}(t)`, i.e. uniform in log-SNR, the
variance reduction of Song et al. 2021 (likelihood weighting then puts the same weight on every draw). It is
drawn by inverting a table of :math:`\log\mathrm{SNR}` with linear interpolation, and the weight
:math:`\lambda/(p\,(T - t_{\min}))` uses the density of that interpolated inverse exactly, so the estimate stays
unbiased for the objective above.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .kernel import IsotropicKernel

Tensor = torch.Tensor

__all__ = ["WEIGHTINGS", "T_SAMPLINGS", "TimeSampler", "score_matching_loss"]

WEIGHTINGS = ("simple", "likelihood")
T_SAMPLINGS = ("uniform", "importance")


class TimeSampler:
    """Draws training times on [t_min, T] and the factor that makes each draw estimate the time average."""

    def __init__(self, kernel, t_min: float, T: float, sampling: str = "uniform", table: int = 4096):
        if sampling not in T_SAMPLINGS:
            raise ValueError(f"t_sampling must be one of {T_SAMPLINGS}; got {sampling!r}")
        if sampling == "importance" and not isinstance(kernel, IsotropicKernel):
            raise ValueError("t_sampling='importance' (uniform in log-SNR) needs an isotropic reference (VP, VE, OU, "
                             "Brownian); use t_sampling='uniform' with CLD")
        self.t_min, self.T, self.sampling = float(t_min), float(T), sampling
        if sampling == "importance":
            ts = torch.linspace(self.t_min, self.T, table + 1, dtype=torch.float64)
            u = -kernel.log_snr(ts)  # increasing in t
            if not bool(torch.isfinite(u).all()) or not bool((u[1:] > u[:-1]).all()):
                raise ValueError("t_sampling='importance' needs a log-SNR that is finite and strictly decreasing on "
                                 f"[t_min, T] = [{self.t_min}, {self.T}] (raise t_min above 0)")
            self._ts, self._u = ts, u
            self._Z = float(u[-1] - u[0])

    def sample(self, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """(t (n,), factor (n,)), float64 on the CPU: E[factor * f(t)] = mean of f over [t_min, T]."""
        r = torch.rand(n, dtype=torch.float64, generator=generator)
        if self.sampling == "uniform":
            return self.t_min + (self.T - self.t_min) * r, torch.ones(n, dtype=torch.float64)
        target = self._u[0] + r * self._Z
        j = torch.searchsorted(self._u, target, right=True).clamp(1, self._u.numel() - 1)
        u0, u1, t0, t1 = self._u[j - 1], self._u[j], self._ts[j - 1], self._ts[j]
        t = t0 + (target - u0) / (u1 - u0) * (t1 - t0)
        density = (u1 - u0) / (self._Z * (t1 - t0))  # the piecewise-constant density actually drawn from
        return t, 1.0 / (density * (self.T - self.t_min))


def score_matching_loss(model, x0: Tensor, generator: torch.Generator, weighting: str, times: TimeSampler,
                        use_ema: bool = False, teacher=None) -> Tuple[Tensor, Dict[str, float]]:
    r"""One Monte-Carlo estimate of the DSM (HSM for CLD) objective on a data batch ``x0`` (n, data_dim): a time
    and a noise per point from ``generator``, :math:`\frac{\lambda}{\sigma_t^2}|\hat\epsilon - \epsilon|^2` times the
    time-sampling factor, averaged. Returns (loss, info).

    ``teacher`` (a score source on the same reference, e.g. a larger trained model or an exact score): the target
    is the teacher's noise estimate :math:`\hat\epsilon_{\rm T}(t, x_t) = -\sigma_t\,s_{\rm T}(t, x_t)` at the
    same noised point instead of the drawn noise (distillation, :mod:`.distill`): the objective
    :math:`\mathbb E\frac{\lambda}{\sigma_t^2}|\hat\epsilon - \hat\epsilon_{\rm T}|^2` is zero at the teacher, with
    no irreducible part."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
    n = x0.shape[0]
    kernel = model.kernel
    t, factor = times.sample(n, generator)
    # the noise comes from the same stream as the times (a CPU generator in every trainer): drawn where the
    # generator lives, then moved to the data's device
    where = x0.device if generator is None else generator.device
    eps = torch.randn(n, kernel.state_dim, generator=generator, dtype=x0.dtype, device=where).to(x0.device)
    xt = kernel.perturb(t, x0, eps)
    tt = t.to(device=x0.device, dtype=x0.dtype)
    eps_hat, scale = model.eps_hat(tt, xt, use_ema=use_ema, return_scale=True)
    if teacher is None:
        target = eps[:, kernel.data_dim:] if kernel.velocity else eps
    else:
        with torch.no_grad():
            target = -scale * teacher.score(tt, xt).to(dtype=x0.dtype, device=x0.device)
    per_point = ((eps_hat - target) ** 2).sum(1)
    if weighting == "likelihood":
        w = kernel.g2(t).to(device=x0.device, dtype=x0.dtype) / (scale.squeeze(1) ** 2)
    else:
        w = torch.ones_like(per_point)
    loss = (w * factor.to(device=x0.device, dtype=x0.dtype) * per_point).mean()
    return loss, {"eps_mse": float(per_point.detach().mean())}
