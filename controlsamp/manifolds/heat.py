r"""Exact heat kernels of the torus and the sphere, the zonal series they share with the manifold mixtures, and
draws from the kernels.

Brownian motion on M has generator :math:`\tfrac12\Delta_M` (:mod:`controlsamp.manifolds.base`); its heat kernel
:math:`p_t(x_0, x)` is the transition density with respect to the Riemannian volume, the solution of
:math:`\partial_t p = \tfrac12\Delta_M p` with :math:`p_0 = \delta_{x_0}`. Its Riemannian gradient in x,
:math:`\nabla_x \log p_t(x_0, x)` (tangent at x), is the regression target of denoising score matching on M
(De Bortoli et al. 2022, "Riemannian score-based generative modelling", Sec. 3 and App. F).

**Torus** :math:`T^d`. The kernel is the product over coordinates of wrapped normals of variance t,

.. math:: p_t(x_0, x) = \prod_{i=1}^d \sum_{k \in \mathbb Z} \mathcal N(x_i - x_{0,i} + 2\pi k;\ 0, t),

summed by :func:`wrapped_normal_log_prob` (images for small variance, the dual Fourier series for large).

**Sphere** :math:`S^d`. The kernel is zonal, a function of :math:`u = x_0 \cdot x = \cos\theta` only:

.. math::
    p_t(u) = \sum_{l \ge 0} e^{-\lambda_l t}\, Z_l(u), \qquad \lambda_l = \tfrac12 l(l + d - 1), \qquad
    Z_l(u) = \frac{N(d, l)}{|S^d|}\, \bar P_l(u),

with :math:`\bar P_l = C_l^{(\nu)} / C_l^{(\nu)}(1)` the Gegenbauer polynomial of index :math:`\nu = (d-1)/2`
normalised to 1 at u = 1 (Legendre on :math:`S^2`, Chebyshev :math:`\cos(l\theta)` on :math:`S^1`) and
:math:`N(d, l) = (2l + d - 1)(l + d - 2)! / (l!\,(d-1)!)` the dimension of the degree-l spherical harmonics, so that
:math:`Z_l(x\cdot y) = \sum_m Y_{lm}(x) Y_{lm}(y)` (on :math:`S^2`: :math:`(2l+1) P_l(u) / 4\pi`; on :math:`S^d`:
:math:`\frac{2l + d - 1}{d - 1} C_l^{(\nu)}(u) / |S^d|`). Every zonal function :math:`f(x\cdot\mu)` expands as
:math:`\sum_l c_l Z_l`, :math:`c_l = \int f\, \bar P_l(x\cdot\mu)\,dx` (Funk–Hecke), and the heat semigroup multiplies
:math:`c_l` by :math:`e^{-\lambda_l t}`; :func:`zonal_series` evaluates such a series and its u-derivative for any
coefficients (the heat kernel's here, the noised von Mises–Fisher's in :mod:`controlsamp.manifolds.mixtures`).

For small t the series needs :math:`O(t^{-1/2})` terms and, worse, its terms are of size :math:`O(t^{-d/2})` while
far from :math:`x_0` the kernel is :math:`O(e^{-\theta^2/2t})`, so the sum cancels to round-off there. Below
``t_switch`` a short-time form is used instead:

- :math:`S^1`: the wrapped normal in :math:`\theta` (exact for every t).
- :math:`S^2`: the Mehler–Dirichlet (McKean) integral, obtained by inserting
  :math:`P_l(\cos\theta) = \frac{\sqrt2}{\pi}\int_\theta^\pi \frac{\sin((l+\frac12)\phi)}{\sqrt{\cos\theta - \cos\phi}}d\phi`
  into the series and summing the resulting theta function by Poisson summation (images):

  .. math:: p_t(\theta) = \frac{\sqrt 2\, e^{t/8}}{(2\pi t)^{3/2}} \sum_{m \ge 0} (-1)^m
            \int_{2\pi m + \theta}^{2\pi(m+1) - \theta} \frac{\psi\, e^{-\psi^2/2t}}{\sqrt{\cos\theta - \cos\psi}}\,d\psi,

  exact; the arc m contributes at most about :math:`e^{-2\pi^2 m^2/t}` relative to m = 0 (4e-22 at t = 0.4; only
  m = 0 is kept, for t < 0.5), and the arc
  integral is computed by Gauss–Legendre quadrature after a substitution that removes the inverse square-root
  end-point singularities (``nodes`` points; see :func:`_arc_integral`).
- :math:`S^3`: the closed form by images (exact),
  :math:`p_t(\theta) = \frac{e^{t/2}}{(2\pi t)^{3/2}} \sum_{k\in\mathbb Z}\frac{\theta + 2\pi k}{\sin\theta}
  e^{-(\theta + 2\pi k)^2/2t}` (the Varadhan form is exact on :math:`S^3` up to :math:`e^{t/2}` and the images),
  summed in pairs that cancel the :math:`1/\sin\theta` at :math:`\theta = 0` and :math:`\pi` analytically.
- :math:`S^d`, d >= 4 (or ``short_time="varadhan"``): the Varadhan / Minakshisundaram–Pleijel leading term
  (De Bortoli et al. 2022, Eq. (8); Hsu 2002, "Stochastic analysis on manifolds", Ch. 5)

  .. math:: p_t(\theta) \approx (2\pi t)^{-d/2}\, e^{-\theta^2/2t} \Big(\frac{\theta}{\sin\theta}\Big)^{(d-1)/2},

  whose relative error is :math:`t\,d(d-1)/12 + O(t^2)` at :math:`\theta = 0` (the next parametrix term: scalar
  curvature d(d-1) over 12, at time t/2 for the generator :math:`\Delta/2`; exactly :math:`e^{t/2} - 1` on
  :math:`S^3`) and which is not uniform at the cut locus :math:`\theta = \pi`, where :math:`\theta/\sin\theta`
  diverges: there :math:`\sin\theta` is floored at :math:`t/2\pi`, where on :math:`S^3` the Varadhan amplitude meets
  the exact antipodal one, :math:`2\pi^2/t - 2`. It is an approximation, measured against the series in the tests
  (0.067 in log p at t = 0.4 on :math:`S^2`, 1e-3 at t = 1e-3 on :math:`S^4`).

**Switch.** With the exact short-time forms (:math:`S^1, S^2, S^3`) the default ``t_switch`` is 0.4 (``T_SWITCH``):
the series is used where it is accurate everywhere on the sphere (its cancellation costs at most a factor
:math:`e^{\pi^2/2t} \approx 2\cdot 10^5` of round-off at the antipode; measured 2.4e-12 in log p) and the exact forms
below it (measured 1e-13 against a 1000-digit evaluation of the series), so these kernels are exact to about 1e-11 in
log p for every t and every pair of points. The :math:`S^2` form keeps one arc and is used for t < 0.5 only (above
it, the series). With the Varadhan form (d >= 4) the default ``t_switch`` is 1e-3 (``T_SWITCH_VARADHAN``): the series
is used down to t = 1e-3 (about 370 terms there) and the Varadhan form below. Wherever the series is used, a value
below :math:`10^{-7}` of :math:`\sum_l c_l Z_l(1)` (its round-off is about :math:`\epsilon` times that) is replaced by
the short-time form at that point: exact on :math:`S^1, S^2, S^3`, the Varadhan approximation (far tails only) for
d >= 4.

**Scores.** For a zonal :math:`f(x\cdot x_0)` the Riemannian gradient is
:math:`\nabla_x \log f = \frac{f'(u)}{f(u)}\, P_x x_0` with :math:`P_x x_0 = x_0 - u\,x` (of norm
:math:`\sin\theta`); the series gives :math:`f'` by the differentiated three-term recurrence, the short-time forms
give :math:`\partial_\theta \log p` (by autograd through the torch expression) and
:math:`f'/f = -\partial_\theta\log p / \sin\theta`, evaluated with :math:`\theta` kept in
:math:`[10^{-6}, \pi - 10^{-6}]` (where :math:`|P_x x_0| \le 10^{-6}`; :math:`f'/f` is smooth in u, so this moves it
by :math:`O(10^{-12}/t)` relatively).

Everything is batch-first and float64 inside; rows of ``x0`` and ``x`` are paired (one row of ``x0`` is broadcast),
``t`` is a float or an (n,) tensor of positive times; results are returned in the dtype of ``x``.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch

from .._validate import as_points, as_tensor, check_count, check_dim, check_int, check_positive
from .base import Manifold
from .sphere import Sphere
from .torus import Torus, wrap

Tensor = torch.Tensor
Times = Union[float, Tensor]

__all__ = ["TOL", "T_SWITCH", "T_SWITCH_VARADHAN", "NODES", "wrapped_normal_log_prob", "wrapped_normal_score", "wrapped_normal_terms",
           "harmonic_dimension", "heat_eigenvalues", "zonal_series", "zonal_terms", "heat_kernel_terms",
           "heat_kernel_log_prob", "heat_kernel_score", "sample_heat_kernel"]

#: default relative truncation tolerance of every series here
TOL = 1e-15
#: default heat time below which the sphere's kernel uses its exact short-time form (S^1, S^2, S^3)
T_SWITCH = 0.4
#: default heat time below which the sphere's kernel uses the Varadhan form (S^d, d >= 4, or short_time="varadhan")
T_SWITCH_VARADHAN = 1e-3
#: default Gauss–Legendre nodes of the S^2 short-time (Mehler–Dirichlet) quadrature
NODES = 64
#: variance from which the wrapped normal is summed by its Fourier series instead of images
_V_FOURIER = 2 * math.pi
#: the S^2 short-time form keeps one arc (the others are below 1e3 e^{-2 pi^2/t} < 1e-14 relative) for t below this
_T_S2_MAX = 0.5
#: the S^2 arc integrals are cut at s = _S_CUT (the integrand carries e^{-s}; e^{-50} ~ 2e-22)
_S_CUT = 50.0
#: angle kept from 0 and pi when f'/f is formed from d log p / d theta
_THETA_EDGE = 1e-6
#: the sphere's series is trusted where f >= _SERIES_FLOOR * sum_l c_l Z_l(1) (its round-off, about eps times that
#: sum, is then below 1e-9 relative; below it the short-time form is used)
_SERIES_FLOOR = 1e-7
#: largest number of series terms chosen automatically
_MAX_TERMS = 200_000
_F64 = torch.float64
_EPS = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------------------------------- helpers
def _times(t, n: int, name: str = "t", allow_zero: bool = False, device=None) -> Tensor:
    """``t`` as an (n,) float64 tensor of finite times > 0 (>= 0 with ``allow_zero``); a float, a 0-d or one-element
    tensor is broadcast."""
    kind = "non-negative" if allow_zero else "positive"
    if isinstance(t, (bool, str, bytes)):
        raise ValueError(f"{name} must be a {kind} time or an (n,) tensor of them; got {t!r}")
    tt = as_tensor(t, name, dtype=_F64, device=device).reshape(-1)
    if tt.numel() == 1:
        tt = tt.expand(n)
    elif tt.numel() != n:
        raise ValueError(f"{name} must be a number or hold one time per row ({n}); got {tt.numel()} values")
    bad = (tt < 0) if allow_zero else (tt <= 0)
    if bool(bad.any()):
        raise ValueError(f"{name} must be {kind}; got {float(tt[bad][0])}")
    return tt.contiguous()


def _tol(tol) -> float:
    v = check_positive(tol, "tol")
    if v >= 1:
        raise ValueError(f"tol must lie in (0, 1); got {v}")
    return v


def _terms(terms, name: str = "terms") -> Optional[int]:
    return None if terms is None else check_int(terms, name, minimum=1)


def _paired(manifold: Manifold, x0, x) -> Tuple[Tensor, Tensor, torch.dtype]:
    """x0 and x as float64 (n, ambient) points of the manifold, x0 broadcast from one row; and x's dtype."""
    x = manifold.points(x, "x")
    dtype = x.dtype
    x0 = manifold.points(x0, "x0").to(dtype=_F64, device=x.device)
    x = x.to(_F64)
    if x0.shape[0] == 1 and x.shape[0] != 1:
        x0 = x0.expand(x.shape[0], -1)
    elif x0.shape[0] != x.shape[0]:
        raise ValueError(f"x0 must hold one point or one point per row of x ({x.shape[0]}); got {x0.shape[0]}")
    return x0, x, dtype


def _check_manifold(manifold) -> Manifold:
    if not isinstance(manifold, (Sphere, Torus)):
        raise ValueError(f"manifold must be a Sphere or a Torus of controlsamp.manifolds; got {manifold!r}")
    return manifold


def _safe_ratio_expm1(y: Tensor) -> Tensor:
    """(1 - e^{-y}) / y for y >= 0, continuous at 0."""
    small = y < 1e-8
    ys = torch.where(small, torch.ones_like(y), y)
    return torch.where(small, 1 - 0.5 * y, -torch.expm1(-ys) / ys)


def _theta_over_sin(th: Tensor) -> Tensor:
    """theta / sin(theta) for theta in [0, pi), with its series near 0."""
    small = th < 1e-4
    ts = torch.where(small, torch.ones_like(th), th)
    return torch.where(small, 1 + th * th / 6 + 7 * th ** 4 / 360, ts / torch.sin(ts))


# ---------------------------------------------------------------------------------------------- wrapped normal
def wrapped_normal_terms(var: float, tol: float = TOL) -> int:
    r"""The number K of terms on each side that the wrapped normal of variance ``var`` needs for relative truncation
    error below ``tol`` (per coordinate).

    For ``var`` < :math:`2\pi` the images :math:`k = -K..K` of :math:`\delta = \mathrm{wrap}(x - m) \in [-\pi, \pi)`
    are summed. The k = 0 term is at least :math:`e^{-\pi^2/2v}`, an omitted image :math:`|k| > K` at most
    :math:`e^{-\pi^2 (2|k|-1)^2/2v}`, so the omitted mass relative to the sum is at most

    .. math:: 2 \sum_{k > K} e^{-2\pi^2 k(k-1)/v} \le \frac{2\, e^{-2\pi^2 K(K+1)/v}}{1 - e^{-4\pi^2 (K+1)/v}}.

    For ``var`` >= :math:`2\pi` the Fourier series :math:`\frac1{2\pi}(1 + 2\sum_{n\ge1} e^{-n^2 v/2}\cos n\delta)` is
    summed to n = K; its sum is at least :math:`(1 - 2\sum_n e^{-n^2 v/2})/2\pi \ge 0.9/2\pi` and the omitted part at
    most :math:`2 e^{-(K+1)^2 v/2} / (1 - e^{-(2K+3) v/2})` times :math:`1/2\pi`."""
    v = check_positive(var, "var")
    tol = _tol(tol)
    K = 1
    if v < _V_FOURIER:
        while 2 * math.exp(-2 * math.pi ** 2 * K * (K + 1) / v) / -math.expm1(-4 * math.pi ** 2 * (K + 1) / v) > tol:
            K += 1
    else:
        while 2 * math.exp(-(K + 1) ** 2 * v / 2) / -math.expm1(-(2 * K + 3) * v / 2) > 0.9 * tol:
            K += 1
    return K


def _wrapped_parts(delta: Tensor, var: Tensor, terms: Optional[int], tol: float) -> Tuple[Tensor, Tensor]:
    """Elementwise log-density and its derivative of the 1-d wrapped normal N(0, var) at delta in [-pi, pi)."""
    lp = torch.zeros_like(delta)
    g = torch.zeros_like(delta)
    small = var < _V_FOURIER
    idx = small.nonzero(as_tuple=True)
    if idx[0].numel():
        dv, vv = delta[idx], var[idx]
        K = terms or wrapped_normal_terms(float(vv.max()), tol)
        k = torch.arange(-K, K + 1, dtype=delta.dtype, device=delta.device)
        z = dv.unsqueeze(-1) + 2 * math.pi * k
        e = -z * z / (2 * vv.unsqueeze(-1))
        lse = torch.logsumexp(e, -1)
        lp = lp.index_put(idx, lse - 0.5 * torch.log(2 * math.pi * vv))
        w = torch.softmax(e, -1)
        g = g.index_put(idx, -(w * z).sum(-1) / vv)
    idx = (~small).nonzero(as_tuple=True)
    if idx[0].numel():
        dv, vv = delta[idx], var[idx]
        N = terms or wrapped_normal_terms(float(vv.min()), tol)
        nn = torch.arange(1, N + 1, dtype=delta.dtype, device=delta.device)
        a = torch.exp(-nn * nn * vv.unsqueeze(-1) / 2)
        arg = nn * dv.unsqueeze(-1)
        s = 1 + 2 * (a * torch.cos(arg)).sum(-1)
        lp = lp.index_put(idx, torch.log(s) - math.log(2 * math.pi))
        g = g.index_put(idx, -2 * (a * nn * torch.sin(arg)).sum(-1) / s)
    return lp, g


def _wrapped_inputs(x, mean, var) -> Tuple[Tensor, Tensor, Tensor, torch.dtype]:
    x = as_points(x, "x", single=True)
    dtype = x.dtype
    x = x.to(_F64)
    n, d = x.shape
    m = as_tensor(mean, "mean", device=x.device)
    v = as_tensor(var, "var", device=x.device)
    try:
        m = torch.broadcast_to(m, (n, d))
    except RuntimeError as exc:
        raise ValueError(f"mean must broadcast to the shape of x {(n, d)}; got {tuple(m.shape)}") from exc
    try:
        v = torch.broadcast_to(v, (n, d))
    except RuntimeError as exc:
        raise ValueError(f"var must broadcast to the shape of x {(n, d)}; got {tuple(v.shape)}") from exc
    if v.numel() and bool((v <= 0).any()):
        raise ValueError(f"var must be positive; got {float(v.min())}")
    return wrap(x - m), v.contiguous(), x, dtype


def wrapped_normal_log_prob(x, mean, var, terms: Optional[int] = None, tol: float = TOL) -> Tensor:
    r"""(n,) log-density on :math:`T^d` (angles; w.r.t. the volume :math:`dx_1\cdots dx_d`) of the wrapped normal

    .. math:: \log \prod_{i=1}^d \sum_{k \in \mathbb Z} \mathcal N(x_i - m_i + 2\pi k;\ 0, v_i),

    summed by images :math:`k = -K..K` (log-sum-exp, stable for any small variance) for :math:`v_i < 2\pi`, by the
    Fourier series to :math:`n = K` otherwise. ``terms`` = K, or None to choose it from ``var`` so that the relative
    truncation error per coordinate is below ``tol`` (bound in :func:`wrapped_normal_terms`). ``x`` (n, d) angles;
    ``mean`` and ``var`` broadcast to (n, d). Differentiable in x by autograd. Mardia & Jupp (2000), "Directional
    statistics", Sec. 3.5.7."""
    delta, v, _, dtype = _wrapped_inputs(x, mean, var)
    lp, _ = _wrapped_parts(delta.reshape(-1), v.reshape(-1), _terms(terms), _tol(tol))
    return lp.reshape(delta.shape).sum(-1).to(dtype)


def wrapped_normal_score(x, mean, var, terms: Optional[int] = None, tol: float = TOL) -> Tensor:
    r"""(n, d) the gradient in x of :func:`wrapped_normal_log_prob`: per coordinate the responsibility-weighted
    image scores :math:`-\sum_k r_k (\delta + 2\pi k)/v` (or the Fourier series' :math:`p'/p`)."""
    delta, v, _, dtype = _wrapped_inputs(x, mean, var)
    _, g = _wrapped_parts(delta.reshape(-1), v.reshape(-1), _terms(terms), _tol(tol))
    return g.reshape(delta.shape).to(dtype)


# ---------------------------------------------------------------------------------------------- zonal series
def harmonic_dimension(dim: int, l: int) -> int:
    r""":math:`N(d, l)`, the dimension of the degree-l spherical harmonics on :math:`S^d`:
    :math:`(2l + d - 1)(l + d - 2)!/(l!(d-1)!)`, 1 for l = 0 and 2 for l >= 1 on :math:`S^1`."""
    d = check_dim(dim, "dim")
    l = check_int(l, "l", minimum=0)
    if l == 0:
        return 1
    if d == 1:
        return 2
    return (2 * l + d - 1) * math.comb(l + d - 2, l) // (d - 1)


def _log_harmonic_dimensions(d: int, ls: np.ndarray) -> np.ndarray:
    ls = np.asarray(ls, dtype=np.float64)
    if d == 1:
        return np.where(ls == 0, 0.0, math.log(2.0))
    from scipy.special import gammaln
    return np.log(2 * ls + d - 1) + gammaln(ls + d - 1) - gammaln(ls + 1) - gammaln(d)


def heat_eigenvalues(dim: int, L: int, dtype=_F64, device=None) -> Tensor:
    r"""(L + 1,) the eigenvalues :math:`\lambda_l = l(l + d - 1)/2` of :math:`-\tfrac12\Delta` on :math:`S^d`,
    l = 0..L."""
    d = check_dim(dim, "dim")
    ls = torch.arange(check_count(L, "L") + 1, dtype=dtype, device=device)
    return 0.5 * ls * (ls + d - 1)


@lru_cache(maxsize=64)
def _zonal_weights(d: int, L: int) -> Tensor:
    """(L + 1,) N(d, l) / |S^d|, float64 on the CPU."""
    logvol = Sphere(d).log_volume
    ls = np.arange(L + 1)
    return torch.as_tensor(np.exp(_log_harmonic_dimensions(d, ls) - logvol), dtype=_F64)


def zonal_series(u, coefficients, dim: int) -> Tuple[Tensor, Tensor]:
    r"""The zonal series on :math:`S^d` and its derivative in u:

    .. math:: f(u) = \sum_{l=0}^{L} c_l\, Z_l(u), \qquad Z_l(u) = \frac{N(d, l)}{|S^d|}\,\bar P_l(u),

    with :math:`\bar P_l` the Gegenbauer polynomial of index :math:`\nu = (d-1)/2` normalised to
    :math:`\bar P_l(1) = 1` (module docstring), computed with its three-term recurrence

    .. math:: (l + 2\nu)\,\bar P_{l+1} = 2(l + \nu)\,u\,\bar P_l - l\,\bar P_{l-1}, \qquad \bar P_0 = 1,\ \bar P_1 = u,

    and :math:`\bar P'_l` with the recurrence differentiated in u (Chebyshev :math:`T_l` for d = 1, Legendre for
    d = 2; Abramowitz & Stegun 22.7). ``u``: a tensor of cosines in [-1, 1], any shape S; ``coefficients``: (..., L + 1),
    broadcastable to S + (L + 1,) (the Funk–Hecke coefficients :math:`c_l = \int f\,\bar P_l(x\cdot\mu)\,dx`; all ones
    times :math:`e^{-\lambda_l t}` for the heat kernel). Returns (f(u), f'(u)), each of shape S, in float64.
    Torch throughout (differentiable in u and the coefficients). Since :math:`|\bar P_l| \le 1` on [-1, 1], the
    round-off of the sum is about :math:`\epsilon \sum_l |c_l| N(d,l)/|S^d|` (see :func:`zonal_terms`)."""
    d = check_dim(dim, "dim")
    u = as_tensor(u, "u") if not isinstance(u, torch.Tensor) else u.to(_F64)
    c = as_tensor(coefficients, "coefficients", device=u.device) if not isinstance(coefficients, torch.Tensor) \
        else coefficients.to(dtype=_F64, device=u.device)
    if c.ndim == 0 or c.shape[-1] == 0:
        raise ValueError("coefficients must have a last axis of length L + 1 >= 1")
    L = c.shape[-1] - 1
    w = c * _zonal_weights(d, L).to(u.device)
    nu = 0.5 * (d - 1)
    f = w[..., 0] * torch.ones_like(u)
    df = torch.zeros_like(f)
    if L == 0:
        return f, df
    p_prev, p = torch.ones_like(u), u
    dp_prev, dp = torch.zeros_like(u), torch.ones_like(u)
    f = f + w[..., 1] * p
    df = df + w[..., 1] * dp
    for l in range(1, L):
        a, b, den = 2 * (l + nu), float(l), l + 2 * nu
        p_next = (a * u * p - b * p_prev) / den
        dp_next = (a * (p + u * dp) - b * dp_prev) / den
        f = f + w[..., l + 1] * p_next
        df = df + w[..., l + 1] * dp_next
        p_prev, p, dp_prev, dp = p, p_next, dp, dp_next
    return f, df


def zonal_terms(log_coefficient: Callable[[np.ndarray], np.ndarray], dim: int, log_tol: float,
                max_terms: int = _MAX_TERMS) -> int:
    r"""The smallest L with :math:`\sum_{l > L} N(d, l)\,|c_l| \le e^{\text{log\_tol}}`: the truncation error of
    :func:`zonal_series` at L is then at most :math:`e^{\text{log\_tol}} / |S^d|` uniformly in u (since
    :math:`|\bar P_l| \le 1`). ``log_coefficient(ls)`` returns :math:`\log|c_l|` for an array of degrees; the terms
    must eventually decrease (they do, super-exponentially, for the heat and von Mises–Fisher coefficients). The tail is
    summed exactly in log space up to where its terms are 1e-40 times the target."""
    d = check_dim(dim, "dim")
    chunk, start, logs = 256, 0, []
    while True:
        ls = np.arange(start, start + chunk)
        g = _log_harmonic_dimensions(d, ls) + np.asarray(log_coefficient(ls), dtype=np.float64)
        logs.append(g)
        start += chunk
        last = logs[-1]
        if start > max_terms:
            raise ValueError(f"the series needs more than {max_terms} terms (the kernel is too concentrated: "
                             "raise t or t_switch, or pass terms)")
        clean = np.where(np.isfinite(last), last, -1e300)
        if clean.max() < log_tol - 92 and np.all(np.diff(clean) <= 0):
            break
        chunk *= 2
    g = np.concatenate(logs)
    g = np.where(np.isfinite(g), g, -np.inf)
    # tail[L] = log sum_{l > L} exp(g_l)
    rev = np.logaddexp.accumulate(g[::-1])[::-1]
    tail = np.append(rev[1:], -np.inf)
    ok = np.nonzero(tail <= log_tol)[0]
    return int(max(ok[0], 1))


def heat_kernel_terms(dim: int, t: float, tol: float = TOL) -> int:
    r"""The number of degrees L that the heat kernel's series on :math:`S^d` needs at time t: the smallest L with
    :math:`\sum_{l>L} N(d, l) e^{-\lambda_l t} \le \mathrm{tol}\cdot\max(e^{-\pi^2/2t}, 64\epsilon)`
    (:func:`zonal_terms`; :math:`\epsilon` the float64 epsilon). Since :math:`|S^d|\, p_t \ge e^{-\pi^2/2t}` on the whole
    sphere (the kernel at the antipode, from the short-time forms; and :math:`|S^d| p_t \to 1` for large t), and the
    series is only trusted where :math:`|S^d| f \ge 64\epsilon` (below that its round-off dominates and the short-time
    form is used), the truncation error is below ``tol`` relative wherever the series is used."""
    t = check_positive(t, "t")
    return zonal_terms(lambda ls: -0.5 * ls * (ls + dim - 1) * t, dim,
                       math.log(_tol(tol)) + max(-math.pi ** 2 / (2 * t), math.log(64 * _EPS)))


# ---------------------------------------------------------------------------------------------- sphere, short time
@lru_cache(maxsize=16)
def _gauss_legendre(n: int) -> Tuple[Tensor, Tensor]:
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.as_tensor(x, dtype=_F64), torch.as_tensor(w, dtype=_F64)


def _arc_integral(theta: Tensor, delta: Tensor, t: Tensor, nodes: int) -> Tensor:
    r"""(n,) :math:`I = \int_0^S e^{-s} (\cos\theta - \cos\psi(s))^{-1/2} ds` with :math:`\psi = \sqrt{\theta^2 + 2ts}`,
    :math:`S = ((2\pi - \theta)^2 - \theta^2)/2t = 2\pi\delta/t` (:math:`\delta = \pi - \theta`), so that
    :math:`\int_\theta^{2\pi-\theta} \psi e^{-\psi^2/2t}(\cos\theta - \cos\psi)^{-1/2}d\psi = t\,e^{-\theta^2/2t} I`.

    :math:`D = \cos\theta - \cos\psi` vanishes (simply, in s) at both ends. If :math:`S \le 2 s_c` (:math:`s_c` = 50):
    :math:`s = S\sin^2(\alpha/2)`, :math:`\alpha\in[0,\pi]`, turns I into :math:`\int_0^\pi e^{-s}\sqrt{s(S-s)/D}\,d\alpha`
    with a smooth integrand; else the integral is cut at :math:`s_c` (the rest is below :math:`e^{-s_c} \approx 2\cdot
    10^{-22}` times a power of 1/t, relative) and :math:`s = s_c w^2` gives :math:`\int_0^1 e^{-s}\, 2\sqrt{s_c}
    \sqrt{s/D}\,dw`. Both by Gauss–Legendre with ``nodes`` points. D is formed without cancellation from the distance
    e to the nearer end, :math:`\epsilon = \psi - \theta = 2ts/(\psi + \theta)` or
    :math:`\eta = 2\pi - \theta - \psi = 2t(S - s)/(2\pi - \theta + \psi)`:
    :math:`D = 2\sin(\theta + e/2)\sin(e/2)`, with :math:`\sin(\theta + e/2) = \sin(\delta - e/2)` taken from the
    smaller argument. ``delta`` is passed (not recomputed) so that it is exact near the antipode."""
    xg, wg = _gauss_legendre(nodes)
    xg, wg = xg.to(theta.device), wg.to(theta.device)
    S = 2 * math.pi * delta / t
    out = torch.zeros_like(theta)

    def D_of(th, de, tt, s, Srem):
        psi = torch.sqrt(th * th + 2 * tt * s)
        eps = 2 * tt * s / (psi + th)
        eta = 2 * tt * Srem / (2 * math.pi - th + psi)
        e = torch.minimum(eps, eta)
        return 2 * torch.sin(torch.minimum(th + 0.5 * e, de - 0.5 * e)) * torch.sin(0.5 * e)

    near = S <= 2 * _S_CUT
    idx = near.nonzero(as_tuple=True)
    if idx[0].numel():
        th, de, tt, SS = (v[idx].unsqueeze(-1) for v in (theta, delta, t, S))
        alpha = 0.5 * math.pi * (xg + 1)
        s = SS * torch.sin(0.5 * alpha) ** 2
        Srem = SS * torch.cos(0.5 * alpha) ** 2
        D = D_of(th, de, tt, s, Srem)
        val = (0.5 * math.pi * wg * torch.exp(-s) * torch.sqrt(s * Srem / D)).sum(-1)
        out = out.index_put(idx, val)
    idx = (~near).nonzero(as_tuple=True)
    if idx[0].numel():
        th, de, tt, SS = (v[idx].unsqueeze(-1) for v in (theta, delta, t, S))
        w = 0.5 * (xg + 1)
        s = _S_CUT * w * w
        D = D_of(th, de, tt, s, SS - s)
        val = (0.5 * wg * torch.exp(-s) * 2 * math.sqrt(_S_CUT) * torch.sqrt(s / D)).sum(-1)
        out = out.index_put(idx, val)
    return out


def _log_p_s2_short(theta: Tensor, t: Tensor, nodes: int) -> Tensor:
    """(n,) log p_t(theta) on S^2 by the Mehler–Dirichlet (McKean) integral's first arc (module docstring), for
    t < _T_S2_MAX; theta is kept 1e-9 from the antipode (where the arc has length 0; log p is flat there)."""
    delta = (math.pi - theta).clamp(min=1e-9)
    theta = math.pi - delta
    I0 = _arc_integral(theta, delta, t, nodes)
    return (0.5 * math.log(2.0) + t / 8 - 1.5 * torch.log(2 * math.pi * t) + torch.log(t) - theta * theta / (2 * t)
            + torch.log(I0))


def _s3_pairs(t_max: float, tol: float) -> int:
    """Image pairs K beyond the leading term on S^3 (bounds in :func:`_log_p_s3_short`)."""
    K = 0
    while True:
        k = K + 1
        b0 = math.exp(-math.pi ** 2 * k * (2 * k - 1) / t_max) * (math.pi + 4 * math.pi ** 3 * k * k / t_max)
        b1 = math.exp(-math.pi ** 2 * k * (2 * k + 1) / t_max) * (0.5 * math.pi) * \
            (2 * math.pi ** 2 * (2 * k + 1) ** 2 / t_max + 2)
        if max(b0, b1) < 0.25 * tol:
            return K
        K += 1


def _log_p_s3_short(theta: Tensor, t: Tensor, tol: float) -> Tensor:
    r"""(n,) log p_t(theta) on S^3 by images: :math:`t/2 - \frac32\log(2\pi t) - \theta^2/2t + \log B` with B the
    image sum relative to :math:`e^{-\theta^2/2t}`. For :math:`\theta < \pi/2` the images :math:`\pm k` are paired
    (their sum is O(theta), cancelling :math:`1/\sin\theta`):
    :math:`B = \frac{\theta}{\sin\theta} + \sum_{k\ge1} e^{-2\pi k(\pi k - \theta)/t}\big[\frac{\theta(1 + E_k)}{\sin\theta}
    - 2\pi k \frac{1 - E_k}{\sin\theta}\big]`, :math:`E_k = e^{-4\pi k\theta/t}`; for :math:`\theta \ge \pi/2`, with
    :math:`\delta = \pi - \theta`, the images k and -k-1 are paired (their sum vanishes at the antipode):
    :math:`B = \sum_{j \ge 0} e^{-2\pi j(\pi(j+1) - \delta)/t}\,\frac{c_j(1 - E_j) - \delta(1 + E_j)}{\sin\delta}`,
    :math:`c_j = \pi(2j+1)`, :math:`E_j = e^{-2c_j\delta/t}`. Every :math:`(1 - E)/\sin` is formed as
    :math:`\frac{1 - e^{-y}}{y}\cdot\frac{y}{\sin}`. Pairs beyond K are below tol/4 relative."""
    K = _s3_pairs(float(t.max()), tol)
    near0 = theta < 0.5 * math.pi
    out = torch.zeros_like(theta)
    idx = near0.nonzero(as_tuple=True)
    if idx[0].numel():
        th, tt = theta[idx], t[idx]
        ts = _theta_over_sin(th)
        B = ts.clone()
        for k in range(1, K + 1):
            y = 4 * math.pi * k * th / tt
            E = torch.exp(-y)
            pair = ts * (1 + E) - 2 * math.pi * k * _safe_ratio_expm1(y) * (4 * math.pi * k / tt) * ts
            B = B + torch.exp(-2 * math.pi * k * (math.pi * k - th) / tt) * pair
        out = out.index_put(idx, -th * th / (2 * tt) + torch.log(B) + tt / 2 - 1.5 * torch.log(2 * math.pi * tt))
    idx = (~near0).nonzero(as_tuple=True)
    if idx[0].numel():
        th, tt = theta[idx], t[idx]
        de = (math.pi - th).clamp(min=0.0)
        ds = _theta_over_sin(de)
        B = torch.zeros_like(th)
        for j in range(0, K + 1):
            c = math.pi * (2 * j + 1)
            y = 2 * c * de / tt
            E = torch.exp(-y)
            term = ds * (c * _safe_ratio_expm1(y) * (2 * c / tt) - (1 + E))
            B = B + torch.exp(-2 * math.pi * j * (math.pi * (j + 1) - de) / tt) * term
        out = out.index_put(idx, -th * th / (2 * tt) + torch.log(B) + tt / 2 - 1.5 * torch.log(2 * math.pi * tt))
    return out


def _log_p_varadhan(theta: Tensor, t: Tensor, d: int) -> Tensor:
    r"""(n,) the Varadhan form :math:`-\frac d2\log(2\pi t) - \theta^2/2t + \frac{d-1}2\log(\theta/\sin\theta)`, with
    :math:`\sin\theta` floored at :math:`t/2\pi` near the antipode (module docstring)."""
    first = theta < 0.5 * math.pi
    th1 = torch.where(first, theta, torch.full_like(theta, 0.25 * math.pi))
    th2 = torch.where(first, torch.full_like(theta, 0.75 * math.pi), theta)
    amp1 = torch.log(_theta_over_sin(th1))
    amp2 = torch.log(th2) - torch.log(torch.maximum(torch.sin(th2), t / (2 * math.pi)))
    amp = torch.where(first, amp1, amp2)
    return -0.5 * d * torch.log(2 * math.pi * t) - theta * theta / (2 * t) + 0.5 * (d - 1) * amp


def _log_p_short(d: int, theta: Tensor, t: Tensor, short_time: str, nodes: int, tol: float) -> Tensor:
    if d == 1:
        lp, _ = _wrapped_parts(theta, t, None, tol)
        return lp
    if short_time == "exact" and d == 2:
        return _log_p_s2_short(theta, t, nodes)
    if short_time == "exact" and d == 3:
        return _log_p_s3_short(theta, t, tol)
    return _log_p_varadhan(theta, t, d)


def _dlogp_du_short(d: int, theta: Tensor, t: Tensor, short_time: str, nodes: int, tol: float) -> Tensor:
    """f'(u)/f(u) = -(d/dtheta log p)/sin(theta) of a short-time form, theta kept in [1e-6, pi - 1e-6]."""
    th = theta.clamp(_THETA_EDGE, math.pi - _THETA_EDGE).detach()
    with torch.enable_grad():
        th = th.clone().requires_grad_(True)
        lp = _log_p_short(d, th, t.detach(), short_time, nodes, tol)
        (g,) = torch.autograd.grad(lp.sum(), th)
    return -g / torch.sin(th.detach())


# ---------------------------------------------------------------------------------------------- sphere, all t
def _check_knobs(manifold, terms, t_switch, short_time, nodes, tol):
    terms = _terms(terms)
    if short_time not in ("exact", "varadhan"):
        raise ValueError(f"short_time must be 'exact' (S^1, S^2, S^3; Varadhan for d >= 4) or 'varadhan'; "
                         f"got {short_time!r}")
    if t_switch is None:
        exact = short_time == "exact" and (isinstance(manifold, Torus) or manifold.dim <= 3)
        t_switch = T_SWITCH if exact else T_SWITCH_VARADHAN
    if isinstance(t_switch, (bool, str, bytes)):
        raise ValueError(f"t_switch must be None or a non-negative number; got {t_switch!r}")
    try:
        t_switch = float(t_switch)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"t_switch must be None or a non-negative number; got {t_switch!r}") from exc
    if not math.isfinite(t_switch) or t_switch < 0:
        raise ValueError(f"t_switch must be a non-negative number (0: the series for every t); got {t_switch}")
    nodes = check_int(nodes, "nodes", minimum=2)
    return terms, t_switch, short_time, nodes, _tol(tol)


def _log_heat_angles(d: int, theta: Tensor, u: Tensor, t: Tensor, terms=None, t_switch: float = T_SWITCH,
                     short_time: str = "exact", nodes: int = NODES, tol: float = TOL,
                     need_score: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """(log p (n,), f'/f (n,) or None) of the heat kernel on S^d at angles theta (cosines u) and times t (all (n,)):
    the series for t >= t_switch where it is resolved, the short-time form elsewhere (module docstring)."""
    lp = torch.zeros_like(u)
    q = torch.zeros_like(u) if need_score else None
    short = torch.ones_like(u, dtype=torch.bool) if d == 1 else t < t_switch
    if d == 2 and short_time == "exact":
        short = short & (t < _T_S2_MAX)
    idx = (~short).nonzero(as_tuple=True)
    if idx[0].numel():
        ts, us = t[idx], u[idx]
        L = terms or heat_kernel_terms(d, float(ts.min()), tol)
        lam = heat_eigenvalues(d, L, device=u.device)
        c = torch.exp(-ts.unsqueeze(-1) * lam)
        f, df = zonal_series(us, c, d)
        scale = (c * _zonal_weights(d, L).to(u.device)).sum(-1)
        good = f > _SERIES_FLOOR * scale
        fs = torch.where(good, f, torch.ones_like(f))
        lp = lp.index_put(idx, torch.log(fs))
        if need_score:
            q = q.index_put(idx, torch.where(good, df / fs, torch.zeros_like(f)))
        bad = torch.zeros_like(short)
        bad = bad.index_put(idx, ~good)
        short = short | bad
    idx = short.nonzero(as_tuple=True)
    if idx[0].numel():
        th, ts = theta[idx], t[idx]
        lp = lp.index_put(idx, _log_p_short(d, th, ts, short_time, nodes, tol))
        if need_score:
            q = q.index_put(idx, _dlogp_du_short(d, th, ts, short_time, nodes, tol))
    return lp, q


def _sphere_parts(d: int, x0: Tensor, x: Tensor, t: Tensor, terms, t_switch: float, short_time: str, nodes: int,
                  tol: float, need_score: bool) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """(log p (n,), f'/f (n,) or None, u (n,)) of the heat kernel on S^d for paired rows."""
    theta = Sphere(d).angle(x0, x)
    u = (x0 * x).sum(-1).clamp(-1.0, 1.0)
    lp, q = _log_heat_angles(d, theta, u, t, terms, t_switch, short_time, nodes, tol, need_score)
    return lp, q, u


def heat_kernel_log_prob(manifold: Manifold, x0, x, t: Times, *, terms: Optional[int] = None,
                         t_switch: Optional[float] = None, short_time: str = "exact", nodes: int = NODES,
                         tol: float = TOL) -> Tensor:
    r"""(n,) :math:`\log p_t(x_0, x)`, the heat kernel of Brownian motion (generator :math:`\tfrac12\Delta_M`) with
    respect to the volume, for ``Torus(d)`` (the wrapped normal of variance t, exact) and ``Sphere(d)``
    (module docstring: the zonal series :math:`\sum_l e^{-l(l+d-1)t/2} Z_l(x_0\cdot x)` for :math:`t \ge`
    ``t_switch``, the short-time forms below it).

    Args:
        manifold: ``Sphere(d)`` or ``Torus(d)``.
        x0, x: (n, ambient_dim) paired points (x0 may be one point); t: a positive float or (n,) tensor.
        terms: the series' highest degree L on the sphere (the wrapped normal's K on the torus); None: chosen from t
            so that the truncation error is below ``tol`` relative everywhere (:func:`heat_kernel_terms`,
            :func:`wrapped_normal_terms`). Not used on :math:`S^1` (the wrapped normal in the angle, K from t).
        t_switch: heat time below which the sphere's short-time form is used (0: always the series); None: 0.4
            (``T_SWITCH``) with the exact short-time forms (d <= 3), 1e-3 (``T_SWITCH_VARADHAN``) with the Varadhan
            form.
        short_time: ``"exact"`` (the Mehler–Dirichlet integral on :math:`S^2`, images on :math:`S^3`; the Varadhan form
            for d >= 4) or ``"varadhan"`` (the Varadhan form for every d >= 2).
        nodes: Gauss–Legendre nodes of the :math:`S^2` short-time quadrature.
        tol: relative truncation tolerance of the series.

    Sources: De Bortoli et al. (2022), "Riemannian score-based generative modelling" (the heat-kernel DSM target,
    the Varadhan asymptotics); Saloff-Coste (1994), "Precise estimates on the rate at which certain diffusions tend to
    equilibrium" (the zonal series); McKean (1970) and Hsu (2002, Ch. 5) for the short-time forms."""
    _check_manifold(manifold)
    terms, t_switch, short_time, nodes, tol = _check_knobs(manifold, terms, t_switch, short_time, nodes, tol)
    x0, x, dtype = _paired(manifold, x0, x)
    tt = _times(t, x.shape[0], device=x.device)
    if isinstance(manifold, Torus):
        delta = wrap(x - x0)
        lp, _ = _wrapped_parts(delta.reshape(-1), tt.unsqueeze(-1).expand_as(delta).reshape(-1), terms, tol)
        return lp.reshape(delta.shape).sum(-1).to(dtype)
    lp, _, _ = _sphere_parts(manifold.dim, x0, x, tt, terms, t_switch, short_time, nodes, tol, need_score=False)
    return lp.to(dtype)


def heat_kernel_score(manifold: Manifold, x0, x, t: Times, *, terms: Optional[int] = None,
                      t_switch: Optional[float] = None, short_time: str = "exact", nodes: int = NODES,
                      tol: float = TOL) -> Tensor:
    r"""(n, ambient_dim) :math:`\nabla_x \log p_t(x_0, x)`, the Riemannian gradient in x (tangent at x): the target of
    denoising score matching on M (De Bortoli et al. 2022, Eq. (9)). On the torus the wrapped normal's score; on the
    sphere :math:`\frac{f'(u)}{f(u)}(x_0 - u\,x)` with :math:`u = x_0\cdot x` (module docstring: the series'
    derivative by the differentiated recurrence, the short-time forms' by autograd in :math:`\theta`). Arguments as
    :func:`heat_kernel_log_prob`. The values carry no autograd graph to x on the sphere's short-time branch."""
    _check_manifold(manifold)
    terms, t_switch, short_time, nodes, tol = _check_knobs(manifold, terms, t_switch, short_time, nodes, tol)
    x0, x, dtype = _paired(manifold, x0, x)
    tt = _times(t, x.shape[0], device=x.device)
    if isinstance(manifold, Torus):
        delta = wrap(x - x0)
        _, g = _wrapped_parts(delta.reshape(-1), tt.unsqueeze(-1).expand_as(delta).reshape(-1), terms, tol)
        return g.reshape(delta.shape).to(dtype)
    _, q, u = _sphere_parts(manifold.dim, x0, x, tt, terms, t_switch, short_time, nodes, tol, need_score=True)
    return (q.unsqueeze(-1) * (x0 - u.unsqueeze(-1) * x)).to(dtype)


# ---------------------------------------------------------------------------------------------- sampling
def sample_heat_kernel(manifold: Manifold, x0, t: Times, generator: Optional[torch.Generator] = None,
                       steps: int = 100, n: Optional[int] = None) -> Tensor:
    r"""Draws of :math:`B_t` from each row of ``x0``, (n, ambient_dim): on the torus exactly,
    :math:`\mathrm{wrap}(x_0 + \sqrt t Z)` (``steps`` is ignored); on the sphere by ``steps`` steps of the geodesic
    random walk :math:`X_{k+1} = \exp_{X_k}(\sqrt{h} Z_k)`, :math:`h = t/\text{steps}` (:meth:`Manifold.brownian`;
    weak order 1, so the law is the kernel's up to :math:`O(t/\text{steps})`; De Bortoli et al. 2022, Alg. 1).
    ``t``: a positive float or an (n,) tensor (one time per row). ``n``: the number of draws when ``x0`` is one point
    (None: one per row of ``x0``). Returned in the dtype of ``x0``."""
    _check_manifold(manifold)
    x0 = manifold.points(x0, "x0")
    if n is not None:
        n = check_dim(n, "n")
        if x0.shape[0] == 1:
            x0 = x0.expand(n, -1)
        elif x0.shape[0] != n:
            raise ValueError(f"n must equal the number of rows of x0 ({x0.shape[0]}) or x0 must be one point; got {n}")
    steps = check_int(steps, "steps", minimum=1)
    tt = _times(t, x0.shape[0], device=x0.device)
    if x0.shape[0] and (isinstance(t, (int, float)) or (isinstance(t, torch.Tensor) and t.numel() == 1)):
        return manifold.brownian(x0, float(tt[0]), steps=steps, generator=generator)
    if isinstance(manifold, Torus):
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return wrap(x0 + torch.sqrt(tt).to(x0.dtype).unsqueeze(-1) * z)
    h = (tt / steps).to(x0.dtype).unsqueeze(-1)
    x = x0
    for _ in range(steps):
        x = manifold.exp(x, torch.sqrt(h) * manifold.random_tangent_normal(x, generator))
    return x
