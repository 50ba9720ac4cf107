r"""The perturbation kernel of denoising score matching: the Gaussian law of the noised state given a data point.

For an isotropic linear reference :math:`dX = k(t) X\,dt + g(t)\,dW` (VP, VE, OU, Brownian),

.. math:: X_t \mid X_0 = x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I), \qquad
          x_t = \alpha_t x_0 + \sigma_t \epsilon,\quad
          \nabla_{x_t}\log p(x_t \mid x_0) = -\epsilon / \sigma_t,

with :math:`(\alpha_t, \sigma_t^2) = ` ``reference.marginal_coefficients(t)`` (Vincent 2011; Song et al. 2021).

For critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis 2022) the state is :math:`u = (x, v)`, the
data sit on x and the initial velocity is drawn, :math:`v_0 \sim \mathcal N(0, \gamma M I)`. Given :math:`x_0`
alone (the velocity marginalised: *hybrid* score matching, their §3.2),

.. math:: u_t \mid x_0 \sim \mathcal N\big(\Phi_t (x_0, 0),\ \Sigma_t\big), \qquad
          \Sigma_t = \Phi_t\,\mathrm{diag}(0, \gamma M)\,\Phi_t^\top + Q_t,

per coordinate (a 2x2 block, Kronecker with :math:`I_d`). With the Cholesky factor
:math:`\Sigma_t = L_t L_t^\top`, :math:`L_t = [[\ell_{xx}, 0], [\ell_{vx}, \ell_{vv}]]`, a draw is
:math:`u_t = \Phi_t (x_0, 0) + L_t \epsilon` and the velocity component of the conditional score is
:math:`\nabla_v \log p(u_t \mid x_0) = -(L_t^{-\top}\epsilon)_v = -\epsilon_v / \ell_{vv}`: the regression
target of HSM, which needs only the velocity score (the only one the CLD reverse SDE and probability-flow ODE use).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..processes import CLD, IsotropicLinearSDE

Tensor = torch.Tensor

__all__ = ["IsotropicKernel", "CLDKernel", "make_kernel"]


def _times(t, n: int) -> Tensor:
    """t as a float64 CPU tensor of n times, or of one time when all n points share it (the caller broadcasts)."""
    tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).cpu()
    if tt.numel() > 1 and bool((tt == tt[0]).all()):
        tt = tt[:1]
    if tt.numel() not in (1, n):
        raise ValueError(f"t must be a scalar or hold one time per point ({n}); got {tt.numel()} times")
    return tt


def _columns(values, n: int, like: Tensor):
    """Each (1,) or (n,) tensor as an (n, 1) column in the dtype and device of ``like``."""
    return tuple(v.to(like.dtype).to(like.device).reshape(-1, 1).expand(n, 1) for v in values)


class IsotropicKernel:
    r""":math:`x_t = \alpha_t x_0 + \sigma_t \epsilon` for an isotropic linear reference (see the module docstring)."""

    velocity = False

    def __init__(self, process: IsotropicLinearSDE):
        self.process = process
        self.data_dim = self.state_dim = int(process.dim)

    def coefficients(self, t, n: int, like: Tensor) -> Tuple[Tensor, Tensor]:
        r"""Columns :math:`\alpha_t` and :math:`\sigma_t`, each (n, 1) in the dtype and device of ``like``."""
        a, q = self.process.marginal_coefficients(_times(t, n))
        return _columns((a, q.sqrt()), n, like)

    def perturb(self, t: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
        a, s = self.coefficients(t, x0.shape[0], x0)
        return a * x0 + s * eps

    def noise_scale(self, t, n: int, like: Tensor) -> Tensor:
        r"""The scale that turns a unit-variance noise prediction into the score, :math:`\sigma_t` (n, 1)."""
        return self.coefficients(t, n, like)[1]

    def g2(self, t: Tensor) -> Tensor:
        r""":math:`g(t)^2` per time, float64 (the diffusion acting on the scored coordinates)."""
        return torch.tensor([self.process.g(float(v)) ** 2 for v in t.reshape(-1)], dtype=torch.float64)

    def log_snr(self, t) -> Tensor:
        r""":math:`\log(\alpha_t^2/\sigma_t^2)`, float64; decreasing in t, and
        :math:`-\frac{d}{dt}\log\mathrm{SNR} = g^2/\sigma^2` (from :math:`\dot q = 2kq + g^2`)."""
        a, q = self.process.marginal_coefficients(torch.as_tensor(t, dtype=torch.float64))
        return 2.0 * torch.log(a) - torch.log(q)


class CLDKernel:
    r"""The CLD perturbation kernel given :math:`x_0` with :math:`v_0 \sim \mathcal N(0, \gamma M I)` (see the module
    docstring). ``velocity_var`` is :math:`\gamma M` (Dockhorn et al. use :math:`\gamma = 0.04`)."""

    velocity = True

    def __init__(self, process: CLD, velocity_var: float):
        self.process = process
        self.data_dim, self.state_dim = int(process.data_dim), int(process.dim)
        self.velocity_var = float(velocity_var)

    def blocks(self, t, n: int, like: Tensor) -> Tuple[Tensor, ...]:
        r"""Per point: :math:`\Phi_{xx}, \Phi_{vx}` and :math:`\ell_{xx}, \ell_{vx}, \ell_{vv}`, each (n, 1)."""
        Phi, Q = self.process.kernel_blocks(_times(t, n))
        c = self.velocity_var
        p12, p22 = Phi[:, 0, 1], Phi[:, 1, 1]
        sxx = Q[:, 0, 0] + c * p12 * p12
        sxv = Q[:, 0, 1] + c * p12 * p22
        svv = Q[:, 1, 1] + c * p22 * p22
        lxx = sxx.clamp_min(0).sqrt()
        lvx = torch.where(lxx > 0, sxv / lxx.clamp_min(1e-300), torch.zeros_like(sxv))
        lvv = (svv - lvx * lvx).clamp_min(0).sqrt()
        return _columns((Phi[:, 0, 0], Phi[:, 1, 0], lxx, lvx, lvv), n, like)

    def perturb(self, t: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
        pxx, pvx, lxx, lvx, lvv = self.blocks(t, x0.shape[0], x0)
        d = self.data_dim
        ex, ev = eps[:, :d], eps[:, d:]
        return torch.cat([pxx * x0 + lxx * ex, pvx * x0 + lvx * ex + lvv * ev], 1)

    def noise_scale(self, t, n: int, like: Tensor) -> Tensor:
        r""":math:`\ell_{vv}(t)` (n, 1): the velocity score is :math:`-\epsilon_v/\ell_{vv}`."""
        return self.blocks(t, n, like)[4]

    def g2(self, t: Tensor) -> Tensor:
        r""":math:`2\Gamma\beta(t)`, the velocity diffusion squared, float64."""
        p = self.process
        tt = t.reshape(-1).to(torch.float64)
        return 2.0 * p.Gamma * (p.beta_min + (tt / p.T) * (p.beta_max - p.beta_min))


def make_kernel(reference, velocity_var: Optional[float] = None):
    """The perturbation kernel of a reference of :mod:`controlsamp.processes` (isotropic, or CLD)."""
    if isinstance(reference, CLD):
        if velocity_var is None:
            velocity_var = 0.04 * reference.M
        if not (isinstance(velocity_var, (int, float)) and math.isfinite(velocity_var) and velocity_var > 0):
            raise ValueError(f"velocity_var (the initial velocity variance gamma M of CLD) must be a positive "
                             f"number; got {velocity_var!r}")
        return CLDKernel(reference, velocity_var)
    if isinstance(reference, IsotropicLinearSDE):
        if velocity_var is not None:
            raise ValueError("velocity_var applies to a CLD reference only (it is the initial velocity's variance)")
        return IsotropicKernel(reference)
    raise ValueError("reference must be a process of controlsamp.processes: an isotropic linear SDE (VP, VE, OU, "
                     f"Brownian) or CLD; got {type(reference).__name__}")
