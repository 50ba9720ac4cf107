r"""The probability-flow ODE of a score source, and its solvers.

For a forward (noising) process :math:`dX_t = f(t, X_t)\,dt + G(t)\,dW_t` with marginals :math:`p_t`, the ODE

.. math:: \frac{dx}{dt} = \tilde f(t, x) := f(t, x) - \tfrac12\,G(t) G(t)^\top \nabla_x \log p_t(x)

has the same marginals :math:`p_t` (Song et al. 2021, "Score-based generative modeling through stochastic
differential equations", ICLR, eq. 13 and App. D.1): integrating it from :math:`x_T \sim p_T` down to
:math:`t_{\min}` gives a draw of :math:`p_{t_{\min}}`, and the map :math:`x_T \mapsto x_{t_{\min}}` is a
deterministic, invertible transport (the basis of the likelihood in :mod:`.likelihood`). With a learned score
:math:`s_\theta \approx \nabla\log p_t` the ODE is the model's.

* Isotropic references (VP, VE, OU, Brownian): :math:`f = k(t)\,x`, :math:`GG^\top = g(t)^2 I`, so
  :math:`\tilde f = k(t)\,x - \tfrac12 g(t)^2\, s(t, x)`.
* CLD (Dockhorn, Vahdat & Kreis 2022), state :math:`u = (x, v)`: :math:`f(t, u)` is ``reference.drift`` and the
  noise acts on v only, :math:`GG^\top = \mathrm{diag}(0, 2\Gamma\beta(t) I)`, so
  :math:`\tilde f(t, u) = f(t, u) - (0,\ \Gamma\beta(t)\, s_v(t, u))` with :math:`s_v = \nabla_v\log p_t` the
  velocity score (the only one the source provides; the ODE needs no other).

**Time runs backward here**, from T down to ``source.t_min``. That is the ODE's own time t, not a reversal
written forward in :math:`s = T - t` as the package's SDE rollouts do: an ODE can be integrated in either
direction, and the fixed-step grids below are decreasing, :math:`t_i = T - i\,(T - t_{\min})/K`, step
:math:`h_i = t_{i+1} - t_i < 0`.

Solvers (``method``), writing :math:`F = \tilde f` and :math:`h = t_{i+1} - t_i`:

* ``"euler"``: :math:`x_{i+1} = x_i + h\,F(t_i, x_i)`; order 1, one evaluation per step.
* ``"heun"``: Heun's trapezoidal predictor–corrector (Karras, Aittala, Aila & Laine 2022, "Elucidating the design
  space of diffusion-based generative models", NeurIPS, Alg. 1):
  :math:`\hat x = x_i + h F(t_i, x_i)`, :math:`x_{i+1} = x_i + \tfrac h2 [F(t_i, x_i) + F(t_{i+1}, \hat x)]`;
  order 2. Karras et al. take a plain Euler last step because their last time is :math:`\sigma = 0`, where the
  ODE is singular; here the grid ends at ``t_min``, where the score is defined, so **every step, the last
  included, is a full Heun step**: :math:`2K` evaluations.
* ``"ddim"``: the deterministic DDIM step (Song, Meng & Ermon 2021, "Denoising diffusion implicit models", ICLR,
  eq. 12 with :math:`\sigma = 0`), isotropic references only. With the perturbation kernel
  :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` (:math:`(\alpha_t, \sigma_t^2)` =
  ``reference.marginal_coefficients(t)``), :math:`\hat\epsilon = -\sigma_t\, s(t, x)` and
  :math:`\hat x_0 = (x - \sigma_t\hat\epsilon)/\alpha_t`,
  :math:`x_{t'} = \alpha_{t'}\hat x_0 + \sigma_{t'}\hat\epsilon`. In the variables :math:`y = x/\alpha`,
  :math:`\lambda = \sigma/\alpha` the PF-ODE of every isotropic linear reference reads
  :math:`dy/d\lambda = \hat\epsilon(t, x)` (from :math:`\dot\alpha = k\alpha`,
  :math:`\dot{(\sigma^2)} = 2k\sigma^2 + g^2`), so the DDIM step is the exact solution with :math:`\hat\epsilon`
  frozen over the step: Euler in :math:`\lambda`, order 1, one evaluation per step, and exact when the data are a
  point (:math:`\hat\epsilon` constant along the flow).
* ``"dopri5"``: the adaptive Dormand–Prince 5(4) Runge–Kutta pair (Dormand & Prince 1980, "A family of embedded
  Runge-Kutta formulae", J. Comput. Appl. Math. 6) through ``torchdiffeq.odeint`` (Chen et al. 2018), on the
  state in the source's dtype (float64 for a float64 source), on the source's device.
* ``"scipy"``: ``scipy.integrate.solve_ivp`` with ``RK45`` (the same Dormand–Prince pair) on the flattened
  state, in float64 on the CPU: an independent implementation to cross-check ``"dopri5"``.

Both adaptive solvers control one error norm over the whole batch (one step size shared by every point), with
``rtol`` and ``atol``, and every stage stays in :math:`[t_{\min}, T]` (torchdiffeq, which otherwise steps past
the end time and interpolates back, is told to end a step on ``t_min``). The number of evaluations of the score
(one call on the whole batch is one evaluation, whatever the batch size, the step-size selection of the adaptive
solvers included) is returned as ``nfe``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .._validate import as_points, check_dim, check_generator, check_positive
from ..processes import CLD, IsotropicLinearSDE

Tensor = torch.Tensor

__all__ = ["pf_drift", "pf_ode_sample", "time_grid", "ORDERS", "EVALS_PER_STEP", "ADAPTIVE", "ODE_METHODS"]

#: Global order of each fixed-step method (the error at ``t_min`` is :math:`O(h^p)`, h the step).
ORDERS: Dict[str, int] = {"euler": 1, "ddim": 1, "heun": 2}
#: Evaluations of the score per step of each fixed-step method.
EVALS_PER_STEP: Dict[str, int] = {"euler": 1, "ddim": 1, "heun": 2}
#: The adaptive methods (order 5 with an embedded order-4 error estimate).
ADAPTIVE = ("dopri5", "scipy")
ODE_METHODS = tuple(ORDERS) + ADAPTIVE


# ---------------------------------------------------------------------------------------------- checks
def check_source(source) -> None:
    """A ValueError naming ``source`` unless it looks like a score source (:class:`.source.ScoreSource`)."""
    missing = [a for a in ("reference", "score", "state_dim", "data_dim", "t_min", "prior_sample", "prior_log_prob")
               if not hasattr(source, a)]
    if missing:
        raise ValueError(f"source must be a score source (ExactScore, DiffusionModel or another ScoreSource); "
                         f"{type(source).__name__} lacks {missing}")
    if not isinstance(source.reference, (IsotropicLinearSDE, CLD)):
        raise ValueError(f"source.reference must be an isotropic linear SDE (VP, VE, OU, Brownian) or CLD; got "
                         f"{type(source.reference).__name__}")


def check_method(method, allowed=ODE_METHODS) -> str:
    if not isinstance(method, str) or method not in allowed:
        raise ValueError(f"method must be one of {allowed}; got {method!r}")
    return method


def source_dtype(source) -> torch.dtype:
    return getattr(source, "dtype", torch.float64)


def source_device(source) -> torch.device:
    return torch.device(getattr(source, "device", "cpu"))


# ---------------------------------------------------------------------------------------------- drift
def _drift(source, t: float, x: Tensor) -> Tensor:
    """:math:`\\tilde f(t, x)` without checks (x already (n, state_dim) in the source's dtype); differentiable in x
    when the score is."""
    ref = source.reference
    s = source.score(t, x)
    if isinstance(ref, CLD):
        d = source.data_dim
        f = ref.drift(t, x)
        corr = (ref.Gamma * ref.beta_at(t)) * s
        return torch.cat([f[:, :d], f[:, d:] - corr], 1)
    return ref.k(t) * x - (0.5 * ref.g(t) ** 2) * s


def pf_drift(source, t, x) -> Tensor:
    r"""The probability-flow drift :math:`\tilde f(t, x) = f(t, x) - \tfrac12 GG^\top\nabla\log p_t(x)` (see the
    module docstring) at states ``x`` (n, state_dim) and one time ``t`` in :math:`[0, T]`; returns
    (n, state_dim) in the source's dtype, differentiable in x when the score is."""
    check_source(source)
    x = as_points(x, "x", source.state_dim, dtype=source_dtype(source), device=source_device(source))
    t = _scalar_time(t, source)
    return _drift(source, t, x)


def _scalar_time(t, source) -> float:
    try:
        if isinstance(t, (str, bytes, bool)):
            raise TypeError
        tv = float(t)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"t must be one scalar time in [0, {source.T}]; got {t!r}") from exc
    if not 0.0 <= tv <= source.T:
        raise ValueError(f"t must lie in [0, T] = [0, {source.T}]; got {tv}")
    return tv


class _Counted:
    """The drift with a count of its evaluations (one per call on the batch)."""

    def __init__(self, source):
        self.source = source
        self.nfe = 0

    def __call__(self, t: float, x: Tensor) -> Tensor:
        self.nfe += 1
        return _drift(self.source, t, x)


# ---------------------------------------------------------------------------------------------- sampling
def start_states(source, n: Optional[int], x_T, generator: Optional[torch.Generator]) -> Tensor:
    """The start states at T: ``x_T`` (n, state_dim) checked, or ``n`` prior draws; in the source's dtype and device,
    detached."""
    if x_T is None:
        if n is None:
            raise ValueError("pass n (the number of samples, drawn from the prior) or x_T (the start states at T)")
        x = source.prior_sample(check_dim(n, "n"), check_generator(generator, source_device(source)))
    else:
        x = as_points(x_T, "x_T", source.state_dim)
        if n is not None and check_dim(n, "n") != x.shape[0]:
            raise ValueError(f"n must equal the number of start states x_T ({x.shape[0]}); got {n}")
    return x.detach().to(dtype=source_dtype(source), device=source_device(source))


def time_grid(source, steps: int) -> Tensor:
    r"""The decreasing uniform grid :math:`t_i = T - i (T - t_{\min})/K`, i = 0..K, float64 (ends exactly at
    ``t_min``)."""
    T, t0 = float(source.T), float(source.t_min)
    grid = T - (T - t0) * torch.arange(steps + 1, dtype=torch.float64) / steps
    grid[-1] = t0
    return grid


def _ddim_coefficients(source, t: float) -> Tuple[float, float]:
    a, q = source.reference.marginal_coefficients(torch.tensor([t], dtype=torch.float64))
    return float(a[0]), float(q[0].clamp_min(0.0).sqrt())


def _eps_hat(source, t: float, x: Tensor, sigma: float) -> Tensor:
    r""":math:`\hat\epsilon = -\sigma_t s(t, x)`."""
    return -sigma * source.score(t, x)


def _fixed_step(source, method: str, x: Tensor, steps: int, counted: _Counted) -> Tensor:
    grid = [float(v) for v in time_grid(source, steps)]
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        h = t_next - t
        if method == "euler":
            x = x + h * counted(t, x)
        elif method == "heun":
            F0 = counted(t, x)
            x_pred = x + h * F0
            x = x + (0.5 * h) * (F0 + counted(t_next, x_pred))
        else:  # ddim
            a, s = _ddim_coefficients(source, t)
            a2, s2 = _ddim_coefficients(source, t_next)
            counted.nfe += 1
            eps = _eps_hat(source, t, x, s)
            x0 = (x - s * eps) / a
            x = a2 * x0 + s2 * eps
    return x


def _dopri5(counted: _Counted, x: Tensor, t_from: float, t_to: float, rtol: float, atol: float) -> Tensor:
    from torchdiffeq import odeint

    tdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    ts = torch.tensor([t_from, t_to], dtype=tdtype, device=x.device)
    lo, hi = min(t_from, t_to), max(t_from, t_to)

    def func(t, y):
        return counted(min(max(float(t), lo), hi), y)

    # torchdiffeq steps past the end time and interpolates back; step_t makes the last step end on t_to, so that no
    # stage evaluates the score outside [t_min, T] (below t_min it is not trusted, at 0 it may be undefined)
    return odeint(func, x, ts, method="dopri5", rtol=rtol, atol=atol,
                  options={"step_t": torch.tensor([t_to], dtype=tdtype, device=x.device)})[-1]


def _scipy(counted: _Counted, x: Tensor, t_from: float, t_to: float, rtol: float, atol: float) -> Tensor:
    from scipy.integrate import solve_ivp

    shape, dtype, device = x.shape, x.dtype, x.device
    lo, hi = min(t_from, t_to), max(t_from, t_to)

    def fun(t, y):
        xt = torch.from_numpy(y.reshape(shape)).to(dtype=dtype, device=device)
        return counted(min(max(float(t), lo), hi), xt).detach().to(torch.float64).cpu().numpy().reshape(-1)

    y0 = x.detach().to(torch.float64).cpu().numpy().reshape(-1)
    sol = solve_ivp(fun, (t_from, t_to), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"scipy's solve_ivp failed to integrate the probability-flow ODE: {sol.message}")
    return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1]).reshape(shape)).to(dtype=dtype, device=device)


def pf_ode_sample(source, n: Optional[int] = None, x_T=None, method: str = "dopri5", steps: int = 100,
                  rtol: float = 1e-5, atol: float = 1e-5, generator: Optional[torch.Generator] = None,
                  return_state: bool = False) -> Tuple[Tensor, dict]:
    r"""Samples by integrating the probability-flow ODE :math:`\dot x = \tilde f(t, x)` from T down to
    ``source.t_min`` (see the module docstring for the ODE and the methods).

    Args:
        source: a score source (:class:`.source.ExactScore`, :class:`.model.DiffusionModel`).
        n: the number of samples, started from ``source.prior_sample(n, generator)``; or
        x_T: the start states at T, (n, state_dim) (then ``n`` may be omitted; if given it must match).
        method: ``"euler"``, ``"heun"``, ``"ddim"`` (isotropic references only), ``"dopri5"`` or ``"scipy"``.
        steps: the number of steps of the fixed-step methods (a uniform grid in t); unused by the adaptive ones.
        rtol, atol: tolerances of the adaptive methods.
        generator: for the prior draws.
        return_state: return the whole state (n, state_dim) (for CLD the position and the velocity) instead of the
            data part.

    Returns:
        ``(x, info)``: ``x`` (n, data_dim) at ``t_min`` in the source's dtype (the position part for CLD, or the
        whole state with ``return_state``) and ``info = {"nfe": int, "method": str}``, ``nfe`` the number of score
        evaluations on the batch.
    """
    check_source(source)
    method = check_method(method)
    if method == "ddim" and not isinstance(source.reference, IsotropicLinearSDE):
        raise ValueError(f"method 'ddim' needs an isotropic reference (VP, VE, OU, Brownian): its step uses the "
                         f"kernel x_t = alpha_t x_0 + sigma_t eps, which a {type(source.reference).__name__} "
                         f"reference lacks; use 'euler', 'heun', 'dopri5' or 'scipy'")
    x = start_states(source, n, x_T, generator)
    if method in ADAPTIVE:
        rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    else:
        steps = check_dim(steps, "steps")
    counted = _Counted(source)
    T, t0 = float(source.T), float(source.t_min)
    with torch.no_grad():
        if method == "dopri5":
            x = _dopri5(counted, x, T, t0, rtol, atol)
        elif method == "scipy":
            x = _scipy(counted, x, T, t0, rtol, atol)
        else:
            x = _fixed_step(source, method, x, steps, counted)
    info = {"nfe": int(counted.nfe), "method": method}
    if not return_state and source.state_dim != source.data_dim:
        x = x[:, :source.data_dim]
    return x, info
