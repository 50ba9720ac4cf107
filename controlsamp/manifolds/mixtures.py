r"""Mixtures on the sphere and the torus with exact densities, scores, samples, entropies and heat-noised laws: the
data of score-based generative models on manifolds with known answers.

**von Mises–Fisher mixture** on :math:`S^d` (Mardia & Jupp 2000, "Directional statistics", Sec. 9.3):

.. math::
    p(x) = \sum_j w_j\, C_d(\kappa_j)\, e^{\kappa_j \mu_j\cdot x}, \qquad
    C_d(\kappa) = \frac{\kappa^{\nu}}{(2\pi)^{\nu + 1} I_\nu(\kappa)}, \quad \nu = \frac{d-1}2,

w.r.t. the volume (:math:`C_2(\kappa) = \kappa / (4\pi\sinh\kappa)`), computed in logs with the exponentially
scaled Bessel function ``scipy.special.ive`` (:math:`\log I_\nu(\kappa) = \log \mathrm{ive}(\nu,\kappa) + \kappa`), so
any :math:`\kappa > 0` (1e-8 to 1e5 and beyond) is stable. The score is :math:`\sum_j r_j(x)\,\kappa_j P_x\mu_j`, with
:math:`r_j` the responsibilities and :math:`P_x\mu = \mu - (x\cdot\mu)x`.

**Heat-noised law.** If :math:`B` is Brownian motion (generator :math:`\tfrac12\Delta`) with :math:`B_0 \sim p`, the law
of :math:`B_t` is :math:`p_t = \sum_j w_j f_{j,t}(x\cdot\mu_j)`, the heat semigroup applied to each component. A
vMF component is zonal about its mean, so by Funk–Hecke its expansion in the zonal harmonics :math:`Z_l`
(:mod:`controlsamp.manifolds.heat`) has the coefficients

.. math::
    a_l(\kappa) = \int_{S^d} C_d(\kappa) e^{\kappa\mu\cdot x}\,\bar P_l(\mu\cdot x)\,dx
    = \frac{I_{l+\nu}(\kappa)}{I_\nu(\kappa)},

(the Gegenbauer integral :math:`\int_{-1}^1 e^{\kappa u} \bar P_l(u) (1-u^2)^{\nu - 1/2} du \propto I_{l+\nu}(\kappa)
\kappa^{-\nu}`; on :math:`S^2`, :math:`a_l = I_{l+1/2}(\kappa)/I_{1/2}(\kappa)`, checked symbolically in
``theory/heat_kernel.py``), and the heat semigroup multiplies them by :math:`e^{-l(l+d-1)t/2}`:

.. math:: f_{j,t}(u) = \sum_l \frac{I_{l+\nu}(\kappa_j)}{I_\nu(\kappa_j)} e^{-l(l+d-1)t/2}\, Z_l(u),

summed by :func:`~controlsamp.manifolds.heat.zonal_series` with ratios of ``ive`` (the :math:`e^{-\kappa}` scalings
cancel). The number of degrees is chosen per component from :math:`\kappa_j` and the smallest t
(:func:`~controlsamp.manifolds.heat.zonal_terms`), so that the truncation error is below ``tol`` relative to the
component's resolved values (below). At t = 0 the closed form is used.

*Resolution.* The series' terms are as large as its peak value :math:`f_{\max} = \sum_l c_l Z_l(1)` while far from
the mean the density can be many orders smaller, so there its sum is round-off (about :math:`\epsilon f_{\max}`). A
component's series value is trusted where :math:`f \ge 10^{-8} f_{\max}` (round-off at most about 2e-8 relative);
beyond, it is computed by the exact convolution integral in geodesic polar coordinates about x (d <= 3;
:func:`_convolution_log`),

.. math:: f_t(x) = C_d(\kappa)\,|S^{d-1}| \int_0^\pi p_t(\rho)\, e^{\kappa\cos\rho\cos\theta}\,
          A_d(\kappa\sin\rho\sin\theta)\,\sin^{d-1}\rho\, d\rho, \qquad \cos\theta = \mu\cdot x,

with the exact heat kernel :math:`p_t(\rho)` of :mod:`controlsamp.manifolds.heat` and :math:`A_d(z)` the average of
:math:`e^{z\cos}` over the directions (:math:`\cosh z`, :math:`I_0(z)`, :math:`\sinh(z)/z` for d = 1, 2, 3), wherever
the component can matter (its bound :math:`10^{-8} f_{\max}` is within :math:`e^{40}` of the resolved part of the
mixture at x). Elsewhere, for d >= 4, or with ``tail="approx"``, the component is replaced by the vMF law of the same
mean and concentration :math:`\kappa_{\mathrm{eff}} = \kappa/(1 + \kappa t)` (the small-noise match of the variances
:math:`1/\kappa + t`), capped at the bound: an approximation of the far tail only, which keeps log-densities and
scores finite.

Sampling: Wood (1994), "Simulation of the von Mises Fisher distribution" (rejection for the cosine :math:`w = \mu\cdot x`,
then a uniform tangent direction); on :math:`S^2` the exact inverse CDF
:math:`w = 1 + \log(1 + (1 - U)(e^{-2\kappa} - 1))/\kappa`.

**Wrapped normal mixture** on :math:`T^d`: :math:`p(x) = \sum_j w_j \prod_i \mathrm{WN}(x_i; m_{ji}, s_{ji}^2)`
(:func:`~controlsamp.manifolds.heat.wrapped_normal_log_prob`); Brownian noising adds t to every variance, exactly.

**Entropy** :math:`H = -\int p\log p`: for vMF mixtures on :math:`S^2` (and :math:`S^1`) by quadrature, for wrapped normal
mixtures on :math:`T^1, T^2` by the periodic trapezoidal rule (see the methods); both converge geometrically and are
checked against doubled resolutions and Monte Carlo in the tests.

**Devices**: the densities and scores are computed on the CPU in float64 (the vMF normalisers and Bessel ratios come
from scipy); points on a GPU are copied to the CPU and the results back to their device, differentiably. ``sample``
draws on the CPU (a CPU generator).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import torch

from .._validate import as_tensor, check_dim, check_int, check_positive, on_cpu
from .heat import (T_SWITCH, TOL, _F64, _THETA_EDGE, _log_heat_angles, _log_p_varadhan, _safe_ratio_expm1, _times, _tol,
                   _zonal_weights, heat_eigenvalues, wrapped_normal_log_prob, wrapped_normal_score, zonal_series,
                   zonal_terms)
from .sphere import Sphere
from .torus import Torus, wrap

Tensor = torch.Tensor
Times = Union[float, Tensor]

__all__ = ["VonMisesFisherMixture", "WrappedNormalMixture"]

#: a noised vMF component's series is trusted where f >= _RESOLUTION * f_max
_RESOLUTION = 1e-8
#: points of the coarse, the refined and the final (sinh-mapped Gauss–Legendre) rules of the convolution integral
_CONV_COARSE, _CONV_FINE, _CONV_NODES = 256, 64, 96
#: Gauss–Legendre nodes of the S^2 heat kernel inside the convolution integral (32 give about 1e-14)
_CONV_HEAT_NODES = 32
#: rows per chunk of the convolution integral
_CONV_CHUNK = 256


def _log_ring_average(d: int, z: Tensor) -> Tensor:
    r""":math:`\log(A_d(z) e^{-z})` with :math:`A_d(z)` the average of :math:`e^{z\cos}` over the unit sphere
    :math:`S^{d-1}` of a tangent space: :math:`\cosh z` (d = 1), :math:`I_0(z)` (d = 2), :math:`\sinh(z)/z` (d = 3)."""
    if d == 1:
        return torch.log1p(torch.exp(-2 * z)) - math.log(2.0)
    if d == 2:
        return torch.log(torch.special.i0e(z))
    return torch.log(_safe_ratio_expm1(2 * z))


def _log_ring_volume(d: int) -> float:
    """log |S^{d-1}| (|S^0| = 2)."""
    return math.log(2.0) if d == 1 else Sphere(d - 1).log_volume


def _convolution_log(d: int, theta: Tensor, kappa: float, t: Tensor) -> Tensor:
    r"""(n,) :math:`\log(f_t(\cos\theta) / (C_d(\kappa) e^\kappa))`, the heat-noised vMF component by the exact convolution
    integral in geodesic polar coordinates about x (d = 1, 2, 3):

    .. math:: f_t(x) = \int p_t(x, y)\, C e^{\kappa\mu\cdot y} dy
              = C\,|S^{d-1}| \int_0^\pi p_t(\rho)\, e^{\kappa\cos\rho\cos\theta}\,
              A_d(\kappa\sin\rho\sin\theta)\, \sin^{d-1}\rho\,d\rho,

    (:math:`y = \exp_x(\rho v)`, :math:`\mu\cdot y = \cos\rho\cos\theta + \sin\rho\sin\theta\, v\cdot e`, and the
    average over directions v of :math:`e^{z\, v\cdot e}` is :math:`A_d(z)`, :func:`_log_ring_average`), with the exact
    heat kernel :math:`p_t(\rho)` of :mod:`controlsamp.manifolds.heat`. The integrand is peaked (widths
    :math:`\sqrt t` and :math:`\kappa^{-1/2}`): its maximum :math:`\rho^*` is located on a 256-point grid refined by a
    64-point one (both with the Varadhan form of the kernel, which suffices to place it), and the integral is done
    by 96-point Gauss–Legendre in :math:`\xi` with
    :math:`\rho = \rho^* + \sigma\sinh\xi` over [0, pi], :math:`\sigma = (1/t + \kappa\max(\cos(\theta - \rho^*),
    0))^{-1/2}` (a map that spreads nodes over many widths on either side of the peak, whose Gaussian decay becomes
    doubly exponential in :math:`\xi`). Rows are done in chunks of 256 (memory)."""
    if theta.shape[0] > _CONV_CHUNK:
        return torch.cat([_convolution_log(d, th_c, kappa, t_c)
                          for th_c, t_c in zip(torch.split(theta, _CONV_CHUNK), torch.split(t, _CONV_CHUNK))])
    n = theta.shape[0]
    sin_th = torch.sin(theta).unsqueeze(-1)
    th = theta.unsqueeze(-1)
    tt = t.unsqueeze(-1)

    def phi(rho: Tensor, exact: bool = True) -> Tensor:  # rho (n, k) -> log integrand (n, k)
        k = rho.shape[-1]
        rr = rho.reshape(-1)
        t_rows = tt.expand(-1, k).reshape(-1)
        if exact:
            lk, _ = _log_heat_angles(d, rr, torch.cos(rr), t_rows, t_switch=T_SWITCH, nodes=_CONV_HEAT_NODES)
        else:  # the Varadhan form: only to locate the peak
            lk = _log_p_varadhan(rr, t_rows, max(d, 2))
        lk = lk.reshape(n, k)
        z = kappa * torch.sin(rho) * sin_th
        return (lk + kappa * (torch.cos(th - rho) - 1) + _log_ring_average(d, z)
                + (d - 1) * torch.log(torch.sin(rho)))

    with torch.no_grad():
        G = _CONV_COARSE
        grid = (torch.arange(G, dtype=_F64) + 0.5) * (math.pi / G)
        i = phi(grid.expand(n, -1), exact=False).argmax(-1)
        centre = grid[i].unsqueeze(-1)
        fine = centre + (math.pi / G) * torch.linspace(-1, 1, _CONV_FINE, dtype=_F64)
        fine = fine.clamp(1e-12, math.pi - 1e-12)
        rho_star = fine.gather(-1, phi(fine, exact=False).argmax(-1, keepdim=True))
        curv = 1 / tt + kappa * torch.cos(th - rho_star).clamp(min=0.0)
        sigma = curv.rsqrt().clamp(max=1.0)
        xg, wg = np.polynomial.legendre.leggauss(_CONV_NODES)
        xg, wg = torch.as_tensor(xg, dtype=_F64), torch.as_tensor(wg, dtype=_F64)
        a = torch.asinh((0 - rho_star) / sigma)
        b = torch.asinh((math.pi - rho_star) / sigma)
        xi = 0.5 * (a + b) + 0.5 * (b - a) * xg
        rho = (rho_star + sigma * torch.sinh(xi)).clamp(1e-300, math.pi)
        logw = torch.log(0.5 * (b - a) * wg * sigma * torch.cosh(xi))
    return torch.logsumexp(phi(rho) + logw, -1) + _log_ring_volume(d)



def _check_weights(weights) -> Tensor:
    w = as_tensor(weights, "weights").reshape(-1)
    if w.numel() == 0 or bool((w <= 0).any()):
        raise ValueError(f"weights must be a non-empty vector of positive numbers; got {w.tolist()}")
    return w / w.sum()


def _log_vmf_normaliser(kappa: np.ndarray, d: int) -> np.ndarray:
    r""":math:`\log C_d(\kappa) + \kappa = \nu\log\kappa - (\nu+1)\log 2\pi - \log\mathrm{ive}(\nu, \kappa)`: the
    log-density at the mean is this; at x it is this plus :math:`\kappa(\mu\cdot x - 1)`."""
    from scipy.special import ive
    nu = 0.5 * (d - 1)
    return nu * np.log(kappa) - (nu + 1) * math.log(2 * math.pi) - np.log(ive(nu, kappa))


def _log_bessel_ratios(kappa: float, d: int, ls: np.ndarray) -> np.ndarray:
    r""":math:`\log(I_{l+\nu}(\kappa)/I_\nu(\kappa))` for an array of degrees l (-inf where it underflows)."""
    from scipy.special import ive
    nu = 0.5 * (d - 1)
    with np.errstate(divide="ignore"):
        return np.log(ive(np.asarray(ls, dtype=np.float64) + nu, kappa)) - math.log(ive(nu, kappa))


def _mean_resultant(kappa: np.ndarray, d: int) -> np.ndarray:
    r""":math:`A_d(\kappa) = I_{\nu+1}(\kappa)/I_\nu(\kappa) = E[\mu\cdot x]` for a vMF on :math:`S^d`."""
    from scipy.special import ive
    nu = 0.5 * (d - 1)
    return ive(nu + 1, kappa) / ive(nu, kappa)


class VonMisesFisherMixture:
    r"""A mixture of von Mises–Fisher laws on :math:`S^d` (module docstring).

    Args:
        weights: (m,) positive weights (normalised here).
        means: (m, d + 1) unit vectors (within 1e-6; re-normalised).
        kappas: (m,) concentrations > 0.
        dim: d, the sphere's dimension (``means`` must have d + 1 columns).
        tol: relative truncation tolerance of the noised series.
        tail: how a noised component is evaluated beyond the series' resolution (module docstring): ``"exact"``
            (the convolution integral, d <= 3; the approximation for d >= 4) or ``"approx"``.

    Attributes: ``manifold`` (``Sphere(d)``), ``dim``, ``weights``, ``means``, ``kappas`` (float64 tensors)."""

    def __init__(self, weights, means, kappas, dim: int = 2, tol: float = TOL, tail: str = "exact"):
        self.dim = check_dim(dim, "dim")
        if tail not in ("exact", "approx"):
            raise ValueError(f"tail must be 'exact' (the convolution integral beyond the series' resolution, d <= 3) "
                             f"or 'approx' (the vMF of concentration kappa / (1 + kappa t) there); got {tail!r}")
        self.tail = tail
        self.manifold = Sphere(self.dim)
        self.weights = _check_weights(weights)
        m = self.weights.numel()
        mu = as_tensor(means, "means")
        if mu.ndim == 1 and m == 1:
            mu = mu.unsqueeze(0)
        if tuple(mu.shape) != (m, self.dim + 1):
            raise ValueError(f"means must have shape ({m}, {self.dim + 1}) (one unit vector of R^{self.dim + 1} per "
                             f"weight, for dim={self.dim}); got {tuple(mu.shape)}")
        norms = mu.norm(dim=-1)
        if bool(((norms - 1).abs() > 1e-6).any()):
            i = int(((norms - 1).abs() > 1e-6).nonzero()[0, 0])
            raise ValueError(f"means must be unit vectors; row {i} has norm {float(norms[i]):.6g}")
        self.means = mu / norms.unsqueeze(-1)
        k = as_tensor(kappas, "kappas").reshape(-1)
        if k.numel() != m:
            raise ValueError(f"kappas must hold one concentration per weight ({m}); got {k.numel()}")
        if bool((k <= 0).any()):
            raise ValueError(f"kappas must be positive; got {k.tolist()}")
        self.kappas = k
        self.tol = _tol(tol)
        self._log_norm = torch.as_tensor(_log_vmf_normaliser(k.numpy(), self.dim), dtype=_F64)

    def __repr__(self) -> str:
        return f"VonMisesFisherMixture(m={self.weights.numel()}, dim={self.dim})"

    # ------------------------------------------------------------------ the data law
    def _component_logs(self, x: Tensor) -> Tensor:
        """(n, m) log w_j + log f_j(x)."""
        u = x @ self.means.T
        return self.weights.log() + self._log_norm + self.kappas * (u - 1)

    @on_cpu
    def log_prob(self, x) -> Tensor:
        r"""(n,) :math:`\log p(x)` w.r.t. the volume of :math:`S^d`; ``x`` (n, d + 1) unit vectors."""
        x = self.manifold.points(x, "x")
        return torch.logsumexp(self._component_logs(x.to(_F64)), -1).to(x.dtype)

    @on_cpu
    def score(self, x) -> Tensor:
        r"""(n, d + 1) the Riemannian gradient :math:`\nabla_x\log p = P_x \sum_j r_j(x) \kappa_j \mu_j`."""
        x = self.manifold.points(x, "x")
        x64 = x.to(_F64)
        r = torch.softmax(self._component_logs(x64), -1)
        return self.manifold.proj(x64, (r * self.kappas) @ self.means).to(x.dtype)

    def mean_resultant(self) -> Tensor:
        r"""(d + 1,) :math:`E[x] = \sum_j w_j A_d(\kappa_j)\mu_j`, :math:`A_d = I_{\nu+1}/I_\nu` (Mardia & Jupp 9.3.9)."""
        A = torch.as_tensor(_mean_resultant(self.kappas.numpy(), self.dim), dtype=_F64)
        return (self.weights * A) @ self.means

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""(n, d + 1) independent draws (float64): a component by its weight, then Wood's (1994) algorithm
        (module docstring)."""
        n = check_dim(n, "n")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        out = torch.empty(n, self.dim + 1, dtype=_F64)
        for j in range(self.weights.numel()):
            idx = (comp == j).nonzero(as_tuple=True)[0]
            if idx.numel():
                out[idx] = self._sample_vmf(j, idx.numel(), generator)
        return out

    def _sample_w(self, kappa: float, n: int, generator) -> Tensor:
        """n draws of the cosine w = mu . x of a vMF(kappa) on S^d."""
        d = self.dim
        if d == 2:
            U = torch.rand(n, generator=generator, dtype=_F64)
            return (1 + torch.log1p((1 - U) * math.expm1(-2 * kappa)) / kappa).clamp(-1.0, 1.0)
        b = d / (2 * kappa + math.sqrt(4 * kappa ** 2 + d ** 2))  # = (-2k + sqrt(4k^2 + d^2)) / d, rationalised
        x0 = (1 - b) / (1 + b)
        c = kappa * x0 + d * math.log(1 - x0 * x0)
        w = torch.empty(n, dtype=_F64)
        todo = torch.arange(n)
        for _ in range(10_000):
            k = todo.numel()
            g1 = (torch.randn(k, d, generator=generator, dtype=_F64) ** 2).sum(-1)
            g2 = (torch.randn(k, d, generator=generator, dtype=_F64) ** 2).sum(-1)
            Z = g1 / (g1 + g2)  # Beta(d/2, d/2)
            W = (1 - (1 + b) * Z) / (1 - (1 - b) * Z)
            U = torch.rand(k, generator=generator, dtype=_F64)
            ok = kappa * W + d * torch.log1p(-x0 * W) - c >= torch.log(U)
            w[todo[ok]] = W[ok]
            todo = todo[~ok]
            if todo.numel() == 0:
                return w.clamp(-1.0, 1.0)
        raise RuntimeError("Wood's rejection sampler did not finish in 10000 rounds")  # pragma: no cover

    def _sample_vmf(self, j: int, n: int, generator) -> Tensor:
        mu = self.means[j]
        w = self._sample_w(float(self.kappas[j]), n, generator)
        z = torch.randn(n, self.dim + 1, generator=generator, dtype=_F64)
        v = z - (z @ mu).unsqueeze(-1) * mu
        v = v / v.norm(dim=-1, keepdim=True)
        x = w.unsqueeze(-1) * mu + torch.sqrt((1 - w * w).clamp(min=0.0)).unsqueeze(-1) * v
        return x / x.norm(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ the heat-noised law
    def noised_terms(self, t: float) -> Tuple[int, ...]:
        r"""The number of degrees L_j of each component's noised series at heat time t > 0: the smallest L with
        :math:`\sum_{l>L} N(d,l)\, a_l(\kappa_j) e^{-\lambda_l t} \le \mathrm{tol}\cdot\max(\text{the component's
        minimum},\ 10^{-8} f_{\max})\,|S^d|` (:func:`~controlsamp.manifolds.heat.zonal_terms`; the minimum of the
        noised component is at least the vMF's, :math:`C_d(\kappa)e^{-\kappa}`, since the heat semigroup raises minima)."""
        t = check_positive(t, "t")
        d = self.dim
        out = []
        for j in range(self.weights.numel()):
            kappa = float(self.kappas[j])

            def logc(ls, kappa=kappa):
                return _log_bessel_ratios(kappa, d, ls) - 0.5 * ls * (ls + d - 1) * t

            ls = np.arange(0, 4096)
            g = logc(ls) + np.log(np.maximum(_zonal_weights(d, 4095).numpy(), 1e-300))
            log_fmax = float(np.logaddexp.reduce(g[np.isfinite(g)]))  # log f(1), to double precision
            log_min = float(self._log_norm[j]) - 2 * kappa + Sphere(d).log_volume
            log_floor = max(log_min, math.log(_RESOLUTION) + log_fmax + Sphere(d).log_volume)
            out.append(zonal_terms(logc, d, math.log(self.tol) + log_floor))
        return tuple(out)

    def _noised_parts(self, t, x, need_score: bool):
        """(x (n, d+1) float64, logs (n, m) = log w_j + log f_{j,t}(x), qs (n, m) = f'/f, x's dtype)."""
        x = self.manifold.points(x, "x")
        dtype = x.dtype
        x = x.to(_F64)
        n, m, d = x.shape[0], self.weights.numel(), self.dim
        tt = _times(t, n, allow_zero=True)
        logs = self._component_logs(x)  # the closed form at t = 0
        qs = self.kappas.expand(n, -1).clone()
        pos = (tt > 0).nonzero(as_tuple=True)[0]
        if pos.numel() == 0:
            return x, logs, qs, dtype
        tp, xp = tt[pos], x[pos]
        Ls = self.noised_terms(float(tp.min()))
        # built out of place (stacked columns, index_put) so that autograd differentiates it in x
        lps, qps, goods, bounds = [], [], [], []
        for j, L in enumerate(Ls):
            kappa = float(self.kappas[j])
            la = torch.as_tensor(_log_bessel_ratios(kappa, d, np.arange(L + 1)), dtype=_F64)
            c = torch.exp(la - tp.unsqueeze(-1) * heat_eigenvalues(d, L))  # (n_pos, L + 1)
            u = (xp @ self.means[j]).clamp(-1.0, 1.0)
            f, df = zonal_series(u, c, d)
            fmax = (c * _zonal_weights(d, L)).sum(-1)
            g = f > _RESOLUTION * fmax
            fs = torch.where(g, f, torch.ones_like(f))
            goods.append(g)
            lps.append(self.weights[j].log() + torch.log(fs))
            qps.append(df / fs)
            bounds.append(self.weights[j].log() + torch.log(_RESOLUTION * fmax))
        good, lp, bound = torch.stack(goods, 1), torch.stack(lps, 1), torch.stack(bounds, 1)
        # unresolved entries: the exact convolution integral where they can matter (within e^{-40} of the resolved
        # part of the mixture), else (negligible) the kappa_eff approximation capped at the resolution bound
        resolved = torch.logsumexp(torch.where(good, lp, torch.full_like(lp, -math.inf)), -1, keepdim=True)
        matters = ~good & (bound > resolved - 40)
        for j in range(m):
            bad = (~good[:, j]).nonzero(as_tuple=True)[0]
            if bad.numel() == 0:
                continue
            kappa = float(self.kappas[j])
            tb = tp[bad]
            u = (xp[bad] @ self.means[j]).clamp(-1.0, 1.0)
            k_eff = kappa / (1 + kappa * tb)
            approx = (torch.as_tensor(_log_vmf_normaliser(k_eff.detach().numpy(), d), dtype=_F64) + k_eff * (u - 1))
            lj = lps[j].index_put((bad,), torch.minimum(self.weights[j].log() + approx, bounds[j][bad]))
            qj = qps[j].index_put((bad,), k_eff.to(_F64))
            ex = bad[matters[bad, j]]
            if ex.numel() and d <= 3 and self.tail == "exact":
                th = self.manifold.angle(xp[ex], self.means[j].expand(ex.numel(), -1))
                l_ex, q = self._exact_component(j, th, tp[ex], need_score)
                lj = lj.index_put((ex,), l_ex)
                if need_score:
                    qj = qj.index_put((ex,), q)
            lps[j], qps[j] = lj, qj
        logs = logs.index_put((pos,), torch.stack(lps, 1))
        qs = qs.index_put((pos,), torch.stack(qps, 1))
        return x, logs, qs, dtype

    def _exact_component(self, j: int, theta: Tensor, t: Tensor, need_score: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """(log w_j + log f_{j,t}, f'/f) by the convolution integral; f'/f = -(d/dtheta log f)/sin(theta) by autograd
        with theta kept in [1e-6, pi - 1e-6] (as in :mod:`controlsamp.manifolds.heat`)."""
        kappa = float(self.kappas[j])
        base = self.weights[j].log() + self._log_norm[j]
        lf = base + _convolution_log(self.dim, theta, kappa, t)
        if not need_score:
            return lf, None
        th = theta.clamp(_THETA_EDGE, math.pi - _THETA_EDGE).detach()
        with torch.enable_grad():
            th = th.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(_convolution_log(self.dim, th, kappa, t).sum(), th)
        return lf, -g / torch.sin(th.detach())

    @on_cpu
    def noised_log_prob(self, t: Times, x) -> Tensor:
        r"""(n,) :math:`\log p_t(x)`, the law of :math:`B_t` for Brownian motion started from the mixture (module
        docstring: the Bessel-ratio series for t > 0, the closed form at t = 0). ``t``: a float >= 0 or an (n,)
        tensor."""
        x, logs, _, dtype = self._noised_parts(t, x, need_score=False)
        return torch.logsumexp(logs, -1).to(dtype)

    @on_cpu
    def noised_score(self, t: Times, x) -> Tensor:
        r"""(n, d + 1) :math:`\nabla_x \log p_t(x) = P_x \sum_j r_j(x)\,\frac{f_{j,t}'(u_j)}{f_{j,t}(u_j)}\,\mu_j`
        (:math:`u_j = \mu_j\cdot x`, :math:`r_j` the noised responsibilities): the denoising score-matching target of
        the noised data law."""
        x, logs, qs, dtype = self._noised_parts(t, x, need_score=True)
        r = torch.softmax(logs, -1)
        return self.manifold.proj(x, (r * qs) @ self.means).to(dtype)

    # ------------------------------------------------------------------ entropy
    def entropy(self, nodes: int = 128, azimuths: int = 256) -> float:
        r"""The differential entropy :math:`H = -\int p \log p\,dx` (nats, w.r.t. the volume), by quadrature, for
        d = 1 and d = 2.

        :math:`H = -\sum_j w_j E_{j}[\log p]`, each expectation in coordinates about :math:`\mu_j`. On :math:`S^2`,
        :math:`x = u\mu_j + \sqrt{1 - u^2}(\cos\psi\, e_1 + \sin\psi\, e_2)` and the cosine u of a vMF has the density
        :math:`\propto e^{\kappa u}` on [-1, 1]; with :math:`r = \kappa(1 - u)`,
        :math:`E_j[g] = \int_0^{2\kappa} \frac{e^{-r}}{1 - e^{-2\kappa}}\, \bar g(1 - r/\kappa)\,dr` where :math:`\bar g`
        is the average over :math:`\psi` (``azimuths`` points of the periodic trapezoidal rule, exact for
        trigonometric polynomials of degree below ``azimuths``). The r-integral is cut at :math:`\min(2\kappa, 60)`
        (:math:`e^{-60} \approx 10^{-26}`) and done by ``nodes``-point Gauss–Legendre; :math:`\bar g` is analytic in u,
        so both rules converge geometrically (the defaults agree with doubled rules to 1e-13 for the tests' mixtures,
        and with the closed form of one component to 1e-12). Components of very different concentrations that
        overlap need more azimuths. On :math:`S^1`: the periodic trapezoidal rule in the angle with ``max(azimuths, 64 sqrt(max kappa))`` points."""
        nodes = check_int(nodes, "nodes", minimum=2)
        azimuths = check_int(azimuths, "azimuths", minimum=4)
        if self.dim == 1:
            N = max(azimuths, int(64 * math.sqrt(float(self.kappas.max())) + 1))
            th = 2 * math.pi * torch.arange(N, dtype=_F64) / N
            x = torch.stack([torch.cos(th), torch.sin(th)], 1)
            lp = self.log_prob(x)
            return float(-(torch.exp(lp) * lp).sum() * (2 * math.pi / N))
        if self.dim != 2:
            raise ValueError(f"entropy by quadrature is implemented for S^1 and S^2; this mixture is on S^{self.dim} "
                             "(estimate -E[log p] by Monte Carlo: -log_prob(sample(n)).mean())")
        xg, wg = np.polynomial.legendre.leggauss(nodes)
        xg, wg = torch.as_tensor(xg, dtype=_F64), torch.as_tensor(wg, dtype=_F64)
        psi = 2 * math.pi * torch.arange(azimuths, dtype=_F64) / azimuths
        H = 0.0
        for j in range(self.weights.numel()):
            kappa, mu = float(self.kappas[j]), self.means[j]
            R = min(2 * kappa, 60.0)
            r = 0.5 * R * (xg + 1)
            wr = 0.5 * R * wg * torch.exp(-r) / -math.expm1(-2 * kappa)
            u = (1 - r / kappa).clamp(-1.0, 1.0)
            # an orthonormal frame (e1, e2) of the plane orthogonal to mu
            a = torch.zeros(3, dtype=_F64)
            a[int(torch.argmin(mu.abs()))] = 1.0
            e1 = a - (a @ mu) * mu
            e1 = e1 / e1.norm()
            e2 = torch.linalg.cross(mu, e1)
            s = torch.sqrt((1 - u * u).clamp(min=0.0))
            x = (u[:, None, None] * mu + s[:, None, None] * (torch.cos(psi)[None, :, None] * e1
                                                             + torch.sin(psi)[None, :, None] * e2))
            x = x / x.norm(dim=-1, keepdim=True)
            lp = self.log_prob(x.reshape(-1, 3)).reshape(nodes, azimuths).mean(-1)
            H -= float(self.weights[j]) * float((wr * lp).sum())
        return H


class WrappedNormalMixture:
    r"""A mixture of wrapped normals on :math:`T^d` (angles in :math:`[-\pi, \pi)^d`; module docstring).

    Args:
        weights: (m,) positive weights (normalised here).
        means: (m, d) angles (wrapped into :math:`[-\pi, \pi)`).
        scales: (m, d) or (m,) positive standard deviations (one per coordinate, or one per component).
        tol: relative truncation tolerance of the wrapped sums.

    Attributes: ``manifold`` (``Torus(d)``), ``dim``, ``weights``, ``means``, ``scales`` ((m, d))."""

    def __init__(self, weights, means, scales, tol: float = TOL):
        self.weights = _check_weights(weights)
        m = self.weights.numel()
        mu = as_tensor(means, "means")
        if mu.ndim == 1 and m == 1:
            mu = mu.unsqueeze(0)
        if mu.ndim != 2 or mu.shape[0] != m or mu.shape[1] < 1:
            raise ValueError(f"means must have shape ({m}, d) (one point of the torus per weight); "
                             f"got {tuple(mu.shape)}")
        self.dim = mu.shape[1]
        self.manifold = Torus(self.dim)
        self.means = wrap(mu)
        s = as_tensor(scales, "scales")
        if s.ndim == 1 and s.numel() == m:
            s = s.unsqueeze(-1).expand(m, self.dim)
        if tuple(s.shape) != (m, self.dim):
            raise ValueError(f"scales must have shape ({m},) or ({m}, {self.dim}); got {tuple(s.shape)}")
        if bool((s <= 0).any()):
            raise ValueError(f"scales must be positive standard deviations; got {s.tolist()}")
        self.scales = s.contiguous()
        self.tol = _tol(tol)

    def __repr__(self) -> str:
        return f"WrappedNormalMixture(m={self.weights.numel()}, dim={self.dim})"

    def _component_logs(self, x: Tensor, extra_var) -> Tensor:
        """(n, m) log w_j + log WN(x; m_j, s_j^2 + extra_var) (extra_var a float or an (n,) tensor)."""
        cols = []
        for j in range(self.weights.numel()):
            var = self.scales[j] ** 2 + (extra_var.unsqueeze(-1) if isinstance(extra_var, Tensor) else extra_var)
            cols.append(wrapped_normal_log_prob(x, self.means[j], var, tol=self.tol))
        return self.weights.log() + torch.stack(cols, -1)

    def _scores(self, x: Tensor, extra_var) -> Tensor:
        """(n, m, d) the component scores."""
        cols = []
        for j in range(self.weights.numel()):
            var = self.scales[j] ** 2 + (extra_var.unsqueeze(-1) if isinstance(extra_var, Tensor) else extra_var)
            cols.append(wrapped_normal_score(x, self.means[j], var, tol=self.tol))
        return torch.stack(cols, 1)

    def _points(self, x) -> Tuple[Tensor, torch.dtype]:
        x = self.manifold.points(x, "x")
        return x.to(_F64), x.dtype

    @on_cpu
    def log_prob(self, x) -> Tensor:
        r"""(n,) :math:`\log p(x)` w.r.t. :math:`dx_1\cdots dx_d`; ``x`` (n, d) angles."""
        x, dtype = self._points(x)
        return torch.logsumexp(self._component_logs(x, 0.0), -1).to(dtype)

    @on_cpu
    def score(self, x) -> Tensor:
        r"""(n, d) :math:`\nabla_x \log p = \sum_j r_j(x)\, \nabla_x\log \mathrm{WN}_j(x)`."""
        x, dtype = self._points(x)
        r = torch.softmax(self._component_logs(x, 0.0), -1)
        return (r.unsqueeze(-1) * self._scores(x, 0.0)).sum(1).to(dtype)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        r"""(n, d) draws :math:`\mathrm{wrap}(m_j + s_j Z)` (float64)."""
        n = check_dim(n, "n")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=_F64)
        return wrap(self.means[comp] + self.scales[comp] * z)

    def _noised(self, t, x):
        x, dtype = self._points(x)
        tt = _times(t, x.shape[0], allow_zero=True)
        return x, tt, dtype

    @on_cpu
    def noised_log_prob(self, t: Times, x) -> Tensor:
        r"""(n,) :math:`\log p_t(x)` of :math:`B_t`, :math:`B_0 \sim p`: the wrapped normal mixture with variances
        :math:`s_{ji}^2 + t` (exact). ``t``: a float >= 0 or an (n,) tensor."""
        x, tt, dtype = self._noised(t, x)
        return torch.logsumexp(self._component_logs(x, tt), -1).to(dtype)

    @on_cpu
    def noised_score(self, t: Times, x) -> Tensor:
        r"""(n, d) :math:`\nabla_x\log p_t(x)` (exact)."""
        x, tt, dtype = self._noised(t, x)
        r = torch.softmax(self._component_logs(x, tt), -1)
        return (r.unsqueeze(-1) * self._scores(x, tt)).sum(1).to(dtype)

    def entropy(self, points_per_scale: float = 2.0, max_points: int = 4_000_000) -> float:
        r"""The differential entropy :math:`H = -\int_{T^d} p\log p\,dx` (nats), for d = 1, 2, by the periodic
        trapezoidal rule on a uniform grid of N points per axis, spacing :math:`h = 2\pi/N \le s_{\min}` /
        ``points_per_scale``. The integrand is analytic and periodic, so the error decays like the Fourier
        coefficients of :math:`p\log p` at frequency N, about :math:`e^{-2\pi^2 s_{\min}^2/h^2}` for the narrowest
        component (:math:`e^{-8\pi^2} \approx 10^{-34}` at the default). A grid beyond ``max_points`` points, and
        d > 2, are ValueErrors (estimate -E[log p] by Monte Carlo there)."""
        pps = check_positive(points_per_scale, "points_per_scale")
        if self.dim > 2:
            raise ValueError(f"entropy by quadrature is implemented for T^1 and T^2; this mixture is on T^{self.dim} "
                             "(estimate -E[log p] by Monte Carlo: -log_prob(sample(n)).mean())")
        N = max(64, int(math.ceil(2 * math.pi * pps / float(self.scales.min()))))
        if N ** self.dim > max_points:
            raise ValueError(f"the entropy grid needs {N}^{self.dim} points (narrowest scale "
                             f"{float(self.scales.min()):.3g}), beyond max_points={max_points}")
        g = -math.pi + 2 * math.pi * torch.arange(N, dtype=_F64) / N
        if self.dim == 1:
            x = g.unsqueeze(-1)
        else:
            x = torch.cartesian_prod(g, g)
        total = 0.0
        for chunk in torch.split(x, 262_144):
            lp = self.log_prob(chunk)
            total += float((torch.exp(lp) * lp).sum())
        return -total * (2 * math.pi / N) ** self.dim
