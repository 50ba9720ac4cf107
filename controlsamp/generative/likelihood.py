r"""Log-likelihood through the probability-flow ODE, bits per dimension and uniform dequantisation.

**Instantaneous change of variables** (Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural ordinary differential
equations", NeurIPS, Thm. 1; Grathwohl et al. 2019, "FFJORD", ICLR; Song et al. 2021, ICLR, App. D.2). Along a
solution of :math:`\dot x_t = \tilde f(t, x_t)` (the probability-flow ODE of :mod:`.ode`, whose marginals are
:math:`p_t`), the density obeys :math:`\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot\tilde f(t, x_t)` (the continuity
equation :math:`\partial_t p = -\nabla\cdot(p\tilde f)` read along the flow). Integrating from :math:`t_{\min}` to T,

.. math:: \log p_{t_{\min}}(x) = \log p_T(x_T) + \int_{t_{\min}}^T \nabla\cdot\tilde f(t, x_t)\,dt,
          \qquad x_{t_{\min}} = x,

so :func:`log_likelihood` integrates the augmented ODE **forward** in t, from :math:`t_{\min}` to T,

.. math:: \frac{d}{dt}\begin{pmatrix} x_t \\ \delta_t\end{pmatrix}
          = \begin{pmatrix} \tilde f(t, x_t) \\ \nabla\cdot\tilde f(t, x_t)\end{pmatrix}, \qquad
          x_{t_{\min}} = x,\ \delta_{t_{\min}} = 0,

and returns :math:`\log p_T(x_T) + \delta_T` with :math:`p_T` the source's prior. With the exact score and the
exact prior this is the exact :math:`\log p_{t_{\min}}(x)`, up to the solver's tolerance; with a learned score it is
the exact log-density of the model defined by the ODE (not of the SDE's model; Song et al. 2021).

**Divergence.** ``"exact"``: :math:`\sum_i \partial\tilde f_i/\partial x_i` by ``state_dim`` vector-Jacobian
products per evaluation (autograd, one per coordinate; each point's drift depends on that point only).
``"hutchinson"``: the Skilling–Hutchinson estimator :math:`\nabla\cdot\tilde f = \mathbb E[\epsilon^\top
J\epsilon]` (Hutchinson 1989; Grathwohl et al. 2019) with one vector-Jacobian product :math:`\epsilon^\top J`
per probe, Rademacher or Gaussian probes drawn once per call and held fixed along the trajectory (so the
augmented ODE is deterministic and the adaptive solver sees a smooth field); averaged over
``hutchinson_samples`` probes. The estimate of the integral, hence of :math:`\log p`, is then unbiased.

**CLD.** The state is (x, v) and :func:`log_likelihood` gives the phase-space :math:`\log p_{t_{\min}}(x, v)`.
The data likelihood needs the velocity marginalised: :func:`cld_data_log_likelihood` returns the bound of
Dockhorn et al. 2022 for CLD with the initial velocity law :math:`q = \mathcal N(0, \gamma M I_d)`,
:math:`\log p(x) \ge \mathbb E_{v\sim q}[\log p(x, v) - \log q(v)] = \mathbb E_q[\log p(x, v)] + H(q)`, estimated
with the per-draw :math:`-\log q(v)` (the lower-variance form of the same expectation).

**Bits per dimension and dequantisation.** Discrete data :math:`x \in \{0, \dots, L-1\}^D` get a density through
uniform dequantisation (Theis, van den Oord & Bethge 2016; Ho et al. 2019, "Flow++"): with
:math:`u \sim U[0, 1)^D` and :math:`z = x + u`, the discrete probability is :math:`P(x) = \int_{[0,1)^D} p_z(x+u)\,du`
and Jensen's inequality gives :math:`\log P(x) \ge \mathbb E_u[\log p_z(x + u)]`. The model lives on
:math:`y = 2z/L - 1 \in [-1, 1)^D` (:func:`dequantise`), an affine map with Jacobian determinant
:math:`(2/L)^D`, so :math:`p_z(z) = p_y(y)\,(2/L)^D` and

.. math:: \log P(x) \ge \mathbb E_u[\log p_y(y)] + D\log(2/L).

:func:`bits_per_dim` returns :math:`-(\log p_y + \text{log\_scale})/(D\ln 2)` with ``log_scale`` :math:`= D\log(2/L)`
(:func:`dequantisation_log_scale`); for 8-bit data (:math:`L = 256`) this adds 7 bits to
:math:`-\log_2 p_y / D`, the constant of Song et al. 2021's code. The result is an upper bound on the true bits per
dimension of the discrete data (a lower bound on the likelihood).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from .._validate import as_points, check_dim, check_number, check_positive
from ..processes import CLD
from .ode import (_Counted, _dopri5, _scipy, check_method, check_source, source_device, source_dtype)

Tensor = torch.Tensor

__all__ = ["log_likelihood", "cld_data_log_likelihood", "bits_per_dim", "dequantise", "dequantisation_log_scale",
           "DIVERGENCES", "NOISES"]

DIVERGENCES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")


def _probes(shape, k: int, noise: str, generator, dtype, device) -> Tensor:
    """k probe vectors per point, (k, n, D), of unit covariance: drawn where ``generator`` lives (the CPU without
    one), then moved to ``device``."""
    where = torch.device("cpu") if generator is None else generator.device
    if noise == "gaussian":
        eps = torch.randn((k,) + tuple(shape), generator=generator, dtype=torch.float64, device=where)
    else:
        eps = torch.randint(0, 2, (k,) + tuple(shape), generator=generator, device=where).to(torch.float64) * 2.0 - 1.0
    return eps.to(dtype=dtype, device=device)


class _Augmented:
    r"""The augmented field :math:`(x, \delta) \mapsto (\tilde f, \nabla\cdot\tilde f)` on (n, D + 1) states."""

    def __init__(self, counted: _Counted, D: int, divergence: str, probes: Optional[Tensor]):
        self.counted, self.D, self.divergence, self.probes = counted, D, divergence, probes
        self.source = counted.source  # what the solvers of .ode read

    def __call__(self, t: float, y: Tensor) -> Tensor:
        D = self.D
        with torch.enable_grad():
            x = y[:, :D].detach().requires_grad_(True)
            f = self.counted(t, x)
            if not f.requires_grad:  # a drift that does not depend on x (e.g. a zero field)
                div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            elif self.divergence == "exact":
                cols = []
                for i in range(D):
                    g, = torch.autograd.grad(f[:, i].sum(), x, retain_graph=i < D - 1, allow_unused=True)
                    cols.append(torch.zeros_like(x[:, i]) if g is None else g[:, i])
                div = torch.stack(cols, 1).sum(1)
            else:
                k = self.probes.shape[0]
                div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
                for j in range(k):
                    eps = self.probes[j]
                    g, = torch.autograd.grad((f * eps).sum(), x, retain_graph=j < k - 1, allow_unused=True)
                    if g is not None:
                        div = div + (g * eps).sum(1)
                div = div / k
        return torch.cat([f.detach(), div.detach().unsqueeze(1)], 1)


def log_likelihood(source, x, divergence: str = "exact", method: str = "dopri5", rtol: float = 1e-5,
                   atol: float = 1e-5, hutchinson_samples: int = 1, noise: str = "rademacher",
                   generator: Optional[torch.Generator] = None,
                   prior_log_prob: Optional[Callable[[Tensor], Tensor]] = None, return_info: bool = False):
    r""":math:`\log p_{t_{\min}}(x)` in nats by the instantaneous change of variables along the probability-flow
    ODE, integrated forward from ``source.t_min`` to T (see the module docstring).

    Args:
        source: a score source (:class:`.source.ExactScore`, :class:`.model.DiffusionModel`); its score must be
            differentiable in x.
        x: states (n, state_dim) at ``t_min`` (for CLD phase-space states (x, v): see
            :func:`cld_data_log_likelihood` for the data likelihood).
        divergence: ``"exact"`` (autograd, ``state_dim`` products per evaluation) or ``"hutchinson"``.
        method: ``"dopri5"`` (torchdiffeq, in the source's dtype) or ``"scipy"`` (RK45, float64).
        rtol, atol: the adaptive solver's tolerances (on the augmented state).
        hutchinson_samples: probes per point averaged by the Hutchinson estimator.
        noise: the probes' law, ``"rademacher"`` or ``"gaussian"``.
        generator: for the probes.
        prior_log_prob: :math:`\log p_T` of a state (n, state_dim) -> (n,); default ``source.prior_log_prob``.
        return_info: also return ``{"nfe", "method", "divergence", "prior_log_prob", "delta"}`` (``delta`` the
            integral of the divergence, (n,) float64).

    Returns:
        (n,) float64 log-likelihoods (nats), and the info dict with ``return_info``.
    """
    check_source(source)
    method = check_method(method, ("dopri5", "scipy"))
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}; got {divergence!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}; got {noise!r}")
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    k = check_dim(hutchinson_samples, "hutchinson_samples")
    dtype, device = source_dtype(source), source_device(source)
    x = as_points(x, "x", source.state_dim, dtype=dtype, device=device).detach()
    if prior_log_prob is None:
        prior_log_prob = source.prior_log_prob
    elif not callable(prior_log_prob):
        raise ValueError(f"prior_log_prob must be a callable (n, state_dim) -> (n,); got "
                         f"{type(prior_log_prob).__name__}")
    D = source.state_dim
    probes = _probes(x.shape, k, noise, generator, dtype, device) if divergence == "hutchinson" else None
    counted = _Counted(source)
    field = _Augmented(counted, D, divergence, probes)
    y0 = torch.cat([x, torch.zeros(x.shape[0], 1, dtype=dtype, device=device)], 1)
    t0, T = float(source.t_min), float(source.T)
    if method == "dopri5":
        yT = _dopri5(field, y0, t0, T, rtol, atol)
    else:
        yT = _scipy(field, y0, t0, T, rtol, atol)
    xT, delta = yT[:, :D], yT[:, D].to(torch.float64).cpu()
    lp = torch.as_tensor(prior_log_prob(xT.detach())).to(torch.float64).cpu().reshape(-1)
    if lp.shape[0] != x.shape[0]:
        raise ValueError(f"prior_log_prob must return one value per state ({x.shape[0]}); got shape "
                         f"{tuple(lp.shape)}")
    out = lp + delta
    if return_info:
        return out, {"nfe": int(counted.nfe), "method": method, "divergence": divergence, "prior_log_prob": lp,
                     "delta": delta}
    return out


def cld_data_log_likelihood(source, x0, velocity_samples: int = 1, velocity_var: Optional[float] = None,
                            generator: Optional[torch.Generator] = None, return_info: bool = False, **kwargs):
    r"""A lower bound on the data log-likelihood :math:`\log p_{t_{\min}}(x)` of a CLD source (the bound of
    Dockhorn et al. 2022): :math:`\frac1K\sum_{k=1}^K [\log p_{t_{\min}}(x, v_k) - \log q(v_k)]`, :math:`v_k \sim q =
    \mathcal N(0, \gamma M I_d)`, an unbiased estimate of
    :math:`\mathbb E_q[\log p(x, v)] + H(q) \le \log p_{t_{\min}}(x)`. The gap is the relative entropy of q to the
    model's conditional :math:`p(v \mid x)`: zero for the exact model at :math:`t_{\min} = 0`, where the velocity
    is drawn independently of the data.

    Args:
        source: a score source on a CLD reference.
        x0: data points (n, data_dim).
        velocity_samples: K, the velocity draws per point.
        velocity_var: :math:`\gamma M`; default ``source.velocity_var`` (a :class:`.model.DiffusionModel` has one).
        generator: for the velocity draws (and the Hutchinson probes).
        return_info: also return :func:`log_likelihood`'s info of the phase-space solve (``nfe``, ...).
        **kwargs: passed to :func:`log_likelihood` (``divergence``, ``method``, ``rtol``, ``atol``, ...).

    Returns:
        (n,) float64 nats (and the info dict with ``return_info``).
    """
    check_source(source)
    if not isinstance(source.reference, CLD):
        raise ValueError(f"source must have a CLD reference (phase space (x, v)); got "
                         f"{type(source.reference).__name__}: use log_likelihood")
    if velocity_var is None:
        velocity_var = getattr(source, "velocity_var", None)
        if velocity_var is None:
            raise ValueError("velocity_var (gamma M, the initial velocity variance) is needed: this source has no "
                             "velocity_var attribute")
    velocity_var = check_positive(velocity_var, "velocity_var")
    K = check_dim(velocity_samples, "velocity_samples")
    d = source.data_dim
    x0 = as_points(x0, "x0", d, dtype=torch.float64)
    n = x0.shape[0]
    where = torch.device("cpu") if generator is None else generator.device  # the velocities: where the generator lives
    v = math.sqrt(velocity_var) * torch.randn(K * n, d, generator=generator, dtype=torch.float64, device=where)
    u = torch.cat([x0.repeat(K, 1), v.to(x0.device)], 1)
    lp, info = log_likelihood(source, u, generator=generator, return_info=True, **kwargs)
    log_q = (-0.5 * (v * v).sum(1) / velocity_var - 0.5 * d * math.log(2 * math.pi * velocity_var)).to(lp.device)
    out = (lp - log_q).reshape(K, n).mean(0)
    return (out, info) if return_info else out


# ---------------------------------------------------------------------------------------------- bits per dim
def dequantisation_log_scale(dim: int, levels: int) -> float:
    r"""``log_scale`` :math:`= D\log(2/L)`: the log-Jacobian of :math:`z \mapsto y = 2z/L - 1` from the integer
    scale :math:`z = x + u \in [0, L)^D` to the model's :math:`[-1, 1)^D` (see the module docstring)."""
    dim, levels = check_dim(dim, "dim"), check_dim(levels, "levels")
    return dim * math.log(2.0 / levels)


def bits_per_dim(log_lik_nats, dim: int, log_scale: float = 0.0):
    r"""Bits per dimension :math:`-(\log p + \text{log\_scale})/(D \ln 2)`.

    ``log_lik_nats`` is :math:`\log p_y` of the model's continuous variable (a number or a tensor of them);
    ``log_scale`` the log-Jacobian of the map from the discrete data's unit cells to the model's space, so that
    :math:`\log p_y + \text{log\_scale}` is the (dequantised) log-likelihood of the data on the integer scale:
    :math:`D\log(2/L)` for :math:`L` levels mapped to :math:`[-1, 1]` (:func:`dequantisation_log_scale`), 0 for data
    already on the integer scale. A tensor in gives a float64 tensor out; a number gives a float."""
    dim = check_dim(dim, "dim")
    log_scale = check_number(log_scale, "log_scale")
    if isinstance(log_lik_nats, torch.Tensor):
        return -(log_lik_nats.to(torch.float64) + log_scale) / (dim * math.log(2.0))
    try:
        val = float(log_lik_nats)
    except (TypeError, ValueError):
        arr = np.asarray(log_lik_nats, dtype=np.float64)
        return torch.as_tensor(-(arr + log_scale) / (dim * math.log(2.0)))
    return -(val + log_scale) / (dim * math.log(2.0))


def dequantise(x_int, levels: int, generator: Optional[torch.Generator] = None, dtype=torch.float64) -> Tensor:
    r"""Uniform dequantisation of integer data :math:`x \in \{0, \dots, L-1\}` to :math:`[-1, 1)`:
    :math:`y = 2(x + u)/L - 1`, :math:`u \sim U[0, 1)` per entry (Theis et al. 2016). Any shape; the model's
    log-likelihood of y plus :func:`dequantisation_log_scale` is a lower bound on the discrete log-likelihood (Ho et
    al. 2019; see the module docstring)."""
    levels = check_dim(levels, "levels")
    xt = torch.as_tensor(np.asarray(x_int) if not isinstance(x_int, torch.Tensor) else x_int)
    if xt.is_complex() or xt.dtype == torch.bool:
        raise ValueError(f"x_int must hold integers in {{0, ..., {levels - 1}}}; got dtype {xt.dtype}")
    xf = xt.to(torch.float64)
    if not bool(torch.isfinite(xf).all()) or not bool((xf == torch.round(xf)).all()):
        raise ValueError(f"x_int must hold integers in {{0, ..., {levels - 1}}} (the discrete levels); got a "
                         "non-integer or non-finite value")
    if xf.numel() and (float(xf.min()) < 0 or float(xf.max()) > levels - 1):
        raise ValueError(f"x_int must lie in {{0, ..., {levels - 1}}} (levels = {levels}); got values in "
                         f"[{float(xf.min()):g}, {float(xf.max()):g}]")
    u = torch.rand(xf.shape, generator=generator, dtype=torch.float64)
    return (2.0 * (xf.cpu() + u) / levels - 1.0).to(dtype)
