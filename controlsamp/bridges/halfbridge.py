r"""The half-bridge: fit the time reversal of a Markov process, started from a marginal at its other end.

Every IPF-style bridge solver alternates one step: given a process (a drift on a time grid) and a law at
one end, learn the drift of the process run the other way from that law. Two ways to get the regression
targets are here, sharing one grid (a :class:`~controlsamp.sde.DiscretisedReference` under the Euler scheme),
one simulator (:func:`controlsamp.sde.rollout`) and one regression loop:

* **mean matching** (De Bortoli et al. 2021, "Diffusion Schrödinger bridge", Prop. 3): on paths of the
  current process, discretised with Euler–Maruyama steps X_{k+1} = X_k + h f_k(X_k) + g_k sqrt(h) Z, the
  backward step mean is E[X_k | X_{k+1}] ≈ X_{k+1} + F_k(X_k) - F_k(X_{k+1}) with F_k(x) = x + h f_k(x),
  so the backward drift b_{k+1} regresses onto (X_k - X_{k+1}) / h + f_k(X_k) - f_k(X_{k+1});
  symmetrically the forward drift from backward paths;
* **bridge matching** (Peluchetti 2023; Shi et al. 2023, "Diffusion Schrödinger bridge matching"): on
  couplings (X_0, X_T) with reference bridges between them, the Markovian projection's forward drift is
  E[k(t) X_t + g(t)^2 grad_x log p^ref_{T|t}(X_T | X_t) | X_t], i.e. a regression onto
  k(t) X_t + g(t)^2 phi(t, T) (X_T - phi(t, T) X_t) / q(t, T); its time reversal's drift (in s = T - t)
  onto -k(t) X_t - g(t)^2 (X_t - phi(0, t) X_0) / q(0, t).

The reference is an isotropic linear SDE of :mod:`controlsamp.processes`, dX = k(t) X dt + g(t) dW, with
kernel N(phi(s, t) x, q(s, t) I), discretised as ``DiscretisedReference(process, steps, scheme="euler")``: its
per-step ``g`` and ``v = g^2 h`` give the Euler noise, its ``phi0, q0, phiT, qT`` the exact reference-bridge
points. Paths are always stored in forward-time order, (n, K + 1, d): index k holds X at t_k = k h. A
backward drift is a function of the reversed time s = T - t (docs/architecture.md).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from ..control.policies import MLPPolicy
from ..exact.reference_bridge import isotropic_bridge_point
from ..processes import Brownian
from ..processes.base import IsotropicLinearSDE
from ..sde import DiscretisedReference, rollout
from ..training import ema_copy

Tensor = torch.Tensor
DIRECTIONS = ("forward", "backward")


def make_reference(dim: int, sigma: float, T: float, reference: Optional[IsotropicLinearSDE]) -> IsotropicLinearSDE:
    """Brownian sigma dW on [0, T] unless a reference process is given (an isotropic linear process of
    :mod:`controlsamp.processes` whose dim and T must match)."""
    if reference is None:
        return Brownian(dim, sigma=sigma, T=T)
    if not isinstance(reference, IsotropicLinearSDE):
        raise ValueError("reference must be an isotropic linear process of controlsamp.processes (Brownian, OU, "
                         f"VP, ...); got {type(reference).__name__}")
    if getattr(reference, "dim", None) != dim:
        raise ValueError(f"reference must have dim {dim} (the endpoints'); got {getattr(reference, 'dim', None)}")
    if abs(float(reference.T) - float(T)) > 1e-12:
        raise ValueError(f"reference.T = {reference.T} must equal T = {T}")
    return reference


class DriftNet(nn.Module):
    """A drift network b(t, x) (an :class:`~controlsamp.control.policies.MLPPolicy`) with an EMA copy used for
    simulation (:func:`controlsamp.training.ema_copy`: decay min(ema, (1 + n) / (ema_warmup + n)) at the n-th
    update). ``net``, when given, is the network b(t, x) to use instead of the MLP (e.g. one whose outputs are
    tangent to a manifold); ``dim``, ``hidden`` and ``depth`` then describe it only."""

    def __init__(self, dim: int, T: float, hidden: int, depth: int, ema: float, ema_warmup: float = 10.0,
                 net: Optional[nn.Module] = None):
        super().__init__()
        self.net = MLPPolicy(dim, dim, T, hidden=hidden, depth=depth) if net is None else net
        self.ema = ema_copy(self.net, ema, ema_warmup)
        self.trained = False

    def forward(self, t, x: Tensor, use_ema: bool = True) -> Tensor:
        return (self.ema if use_ema else self.net)(t, x)


def simulate(drift: Callable[[int, Tensor], Tensor], x_start: Tensor, reference: DiscretisedReference,
             direction: str, generator: torch.Generator, record: bool = True) -> Tensor:
    """Euler–Maruyama paths of a process on the reference's grid (:func:`controlsamp.sde.rollout`), in
    forward-time order (n, K + 1, d) (or only the far end, (n, d), with ``record=False``).

    forward:  X_{k+1} = X_k + h drift(k, X_k) + sqrt(v_k) Z, from X_0 = x_start;
    backward: X_k = X_{k+1} + h drift(k + 1, X_{k+1}) + sqrt(v_k) Z, from X_K = x_start,
    where ``drift(k, x)`` is the drift applied at grid point k (the backward one in reversed time) and
    v_k = g(t_k)^2 h the Euler step variance of the reference."""
    h, at = reference.h, (0 if direction == "forward" else 1)
    std = [math.sqrt(v) for v in reference.floats("v")]
    with torch.no_grad():
        xs, _, _ = rollout(lambda k, x: x + h * drift(k + at, x), lambda k, z: std[k] * z, x_start, reference.K,
                           generator=generator, backward=direction != "forward", record=record)
    return xs


def mean_matching_batch(paths: Tensor, fit: str, drift_other: Callable[[Tensor, Tensor], Tensor],
                        reference: DiscretisedReference, idx: Tensor, k: Tensor):
    """Inputs (grid index, x) and targets for fitting the ``fit`` direction's drift from paths of the
    other direction, at rows ``idx`` and steps k in 0..K-1 (the pair X_k, X_{k+1}).

    ``drift_other(k_vec, x)`` is the other direction's drift at grid indices k_vec (forward: at k, backward:
    at k + 1). Returns (grid index of the input state, input state, target)."""
    h = reference.h
    x0, x1 = paths[idx, k], paths[idx, k + 1]
    if fit == "backward":  # b_{k+1}(X_{k+1}) ~ (X_k - X_{k+1}) / h + f_k(X_k) - f_k(X_{k+1})
        target = (x0 - x1) / h + drift_other(k, x0) - drift_other(k, x1)
        return k + 1, x1, target
    target = (x1 - x0) / h + drift_other(k + 1, x1) - drift_other(k + 1, x0)  # f_k(X_k) from backward paths
    return k, x0, target


def bridge_matching_batch(x0: Tensor, xT: Tensor, fit: str, reference: DiscretisedReference, k: Tensor,
                          generator: torch.Generator):
    """A reference-bridge point X_{t_k} between each coupled pair (x0, xT) (exact Gaussian conditional)
    and the bridge-matching target of the ``fit`` direction at it; forward fits use k in 0..K-1, backward
    fits k in 1..K (k(t) and g(t) are read at all K + 1 grid points). Returns (grid index, X_{t_k}, target)."""
    like = dict(dtype=x0.dtype, device=x0.device)
    phi0, q0, phiT, qT = reference.bridge_coefficients(k, **like)
    at_points = lambda fn: torch.tensor([fn(t) for t in reference.t], **like)[k].unsqueeze(1)
    kt, gt = at_points(reference.k_at), at_points(reference.g_at)
    z = torch.randn(x0.shape, generator=generator, **like)
    xt = isotropic_bridge_point(phi0, q0, phiT, qT, x0, xT, z)
    if fit == "forward":
        target = kt * xt + gt ** 2 * phiT * (xT - phiT * xt) / qT
    else:
        target = -kt * xt - gt ** 2 * (xt - phi0 * x0) / q0
    return k, xt, target
