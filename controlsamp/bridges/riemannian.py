r"""Riemannian diffusion Schrödinger bridge: IPF on a compact manifold with geodesic-random-walk half-bridges
fitted by mean matching in tangent form (Thornton, Hutchinson, Mathieu, De Bortoli, Teh & Doucet,
"Riemannian diffusion Schrödinger bridge", 2022, arXiv:2207.03024; the Euclidean method is De Bortoli,
Thornton, Heng & Doucet, "Diffusion Schrödinger bridge", NeurIPS 2021, and the manifold time reversal and
geodesic random walk are from De Bortoli, Mathieu, Hutchinson, Thornton, Teh & Doucet, "Riemannian
score-based generative modelling", NeurIPS 2022).

**The problem.** On a compact Riemannian manifold M (:mod:`controlsamp.manifolds`: the sphere S^d, the flat
torus T^d) let R be the law on [0, T] of :math:`\sigma B_M` started from the source :math:`\mu_0`, where B_M
is Brownian motion on M (generator :math:`\tfrac12\Delta_M`), so that R has generator
:math:`\tfrac{\sigma^2}{2}\Delta_M` and its marginal at t is :math:`\mu_0` run through the heat flow for heat
time :math:`\sigma^2 t`. The Schrödinger bridge between :math:`\mu_0` and :math:`\mu_T` is the path law closest
to R in relative entropy with these marginals; IPF reaches it by alternating half-bridges over path measures,

.. math:: P^{2n+1} = \arg\min_{P:\,P_T = \mu_T} KL(P\,|\,P^{2n}), \qquad
          P^{2n+2} = \arg\min_{P:\,P_0 = \mu_0} KL(P\,|\,P^{2n+1}), \qquad P^0 = R,

each the time reversal of the previous iterate, started from the other marginal. If
:math:`P^{2n}` is :math:`dX = f(t, X)\,dt + \sigma\,dB_M` with marginals :math:`p_t`, its time reversal
:math:`Y_s = X_{T-s}` solves :math:`dY = b(s, Y)\,ds + \sigma\,dB_M` with

.. math:: b(s, y) = -f(T - s, y) + \sigma^2 \nabla_M \log p_{T-s}(y)

(the Riemannian gradient; the time reversal of a diffusion on a compact manifold, De Bortoli et al. 2022),
and symmetrically for the forward drift of a backward process. The first backward drift is therefore
:math:`\sigma^2 \nabla_M \log p_{T-s}` with :math:`p_t` the heat flow of :math:`\mu_0` for time
:math:`\sigma^2 t`, known in closed form for the mixtures of :mod:`controlsamp.manifolds.mixtures`: the tests
check the first half-bridge against it.

**Discretisation.** On the grid :math:`t_k = k h`, h = T / K, both directions are geodesic random walks
(:meth:`controlsamp.manifolds.Manifold.random_walk`, weak order 1):

.. math:: X_{k+1} = \exp_{X_k}\big(h f_k(X_k) + \sigma\sqrt h\, Z_k\big), \qquad
          X_k = \exp_{X_{k+1}}\big(h b_{k+1}(X_{k+1}) + \sigma\sqrt h\, Z'_k\big),

with :math:`Z_k, Z'_k` standard normal in the tangent space, :math:`f_k = f(t_k, \cdot)` and
:math:`b_{k+1} = b(T - t_{k+1}, \cdot)` tangent fields (the networks' outputs are projected onto
:math:`T_x M`). Paths are stored in forward-time order, (n, K + 1, ambient_dim).

**Mean matching in tangent form.** Write :math:`V_k = h f_k(X_k) + \sigma\sqrt h Z_k \in T_{X_k}M`, so
:math:`X_{k+1} = \exp_{X_k}(V_k)`, and let :math:`\Gamma_{x\to y}` be parallel transport along the minimising
geodesic from x to y. Running the geodesic backwards gives, below the injectivity radius,
:math:`\log_{X_{k+1}}(X_k) = -\Gamma_{X_k\to X_{k+1}} V_k`. The regression target of the backward drift is

.. math:: Y^b_{k+1} = \frac{\log_{X_{k+1}}(X_k)}{h} + \Gamma_{X_k\to X_{k+1}} f_k(X_k) - f_k(X_{k+1})
          \;=\; -\frac{\sigma}{\sqrt h}\,\Gamma_{X_k\to X_{k+1}} Z_k - f_k(X_{k+1}) \;\in T_{X_{k+1}}M,

the Riemannian form of DSB's :math:`(X_k - X_{k+1})/h + f_k(X_k) - f_k(X_{k+1})` (to which it reduces in
R^d and on the flat torus, where :math:`\log_x y = y - x` and :math:`\Gamma = I`). Why it works: given X_k,
:math:`u = -\log_{X_{k+1}}(X_k) - h\Gamma f_k(X_k) = \sigma\sqrt h\,\Gamma Z_k` is N(0, sigma^2 h I) in
:math:`T_{X_{k+1}}M`. In flat space Tweedie's identity (an integration by parts in u) then gives
:math:`E[u \mid X_{k+1} = y] = -\sigma^2 h \nabla\log p_{k+1}(y)` exactly, p_{k+1} the law of X_{k+1}. On M, in
normal coordinates w = :math:`\log_y X_k` at y, the exp-map Jacobians at the two ends agree to
:math:`O(|w|^3)` (exactly on spheres) and the differentials of :math:`w \mapsto \exp_y w` and of
:math:`y \mapsto \exp_y w` (w transported with y) differ by :math:`O(|w|^2) = O(h)` (Jacobi fields), so the
identity holds up to a relative O(h): :math:`E[u \mid X_{k+1} = y] = -\sigma^2 h \nabla_M \log p_{k+1}(y)
(1 + O(h))`, and

.. math:: E[Y^b_{k+1} \mid X_{k+1}] = \sigma^2\nabla_M\log p_{k+1}(X_{k+1}) - f_k(X_{k+1}) + O(h)
          = b(T - t_{k+1}, X_{k+1}) + O(h):

the target is first order in h, the order of the geodesic random walk itself (measured on S^2 from a
von Mises–Fisher mixture: a relative bias of about 0.3 sigma^2 h along the exact drift, vanishing linearly as
h -> 0; zero on the flat torus). Symmetrically the forward drift
regresses, on backward paths, onto

.. math:: Y^f_k = \frac{\log_{X_k}(X_{k+1})}{h} + \Gamma_{X_{k+1}\to X_k} b_{k+1}(X_{k+1}) - b_{k+1}(X_k)
          \in T_{X_k}M.

Parallel transport is exact on the sphere
(:math:`\Gamma_{x\to y} v = v - \frac{\langle y, v\rangle}{1 + \langle x, y\rangle}(x + y)`) and the torus
(:math:`\Gamma = I`); on another manifold without a ``transp(x, y, v)`` method the tangent projection
:math:`P_y v` is used, which differs from :math:`\Gamma_{x\to y} v` by :math:`O(d(x, y)^2 |v|) = O(h)|v|`, the
same first order. The two losses are :math:`E|b_{k+1}(X_{k+1}) - Y^b_{k+1}|^2` and
:math:`E|f_k(X_k) - Y^f_k|^2` over uniform k and cached paths (as in Thornton et al. 2022), minimised by
:meth:`NeuralBridge.fit <controlsamp.bridges.base.NeuralBridge.fit>`, the bridges' one alternating loop.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..control.policies import MLPPolicy
from ..manifolds import Manifold, Sphere, Torus
from ..targets.sources import as_sampler
from .base import NeuralBridge
from .halfbridge import DriftNet

Tensor = torch.Tensor

__all__ = ["RiemannianDSB", "TangentDriftNet", "parallel_transport", "riemannian_mean_matching_batch"]


def parallel_transport(manifold: Manifold, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    r"""Transport the tangent vectors v at x to y along the minimising geodesic: exact on the sphere
    (:math:`v - \frac{\langle y, v\rangle}{1 + \langle x, y\rangle}(x + y)`, undefined at antipodes: the
    denominator is floored at 1e-12) and the flat torus (identity), ``manifold.transp(x, y, v)`` where a
    manifold has one, else the first-order equivalent :math:`P_y v` (module docstring)."""
    transp = getattr(manifold, "transp", None)
    if callable(transp):
        return transp(x, y, v)
    if isinstance(manifold, Sphere):
        c = (x * y).sum(-1, keepdim=True)
        return v - (y * v).sum(-1, keepdim=True) / (1 + c).clamp(min=1e-12) * (x + y)
    if isinstance(manifold, Torus):
        return v
    return manifold.proj(y, v)


def riemannian_mean_matching_batch(manifold: Manifold, paths: Tensor, fit: str,
                                   drift_other: Callable[[Tensor, Tensor], Tensor], h: float, idx: Tensor,
                                   k: Tensor):
    """Inputs and targets for fitting the ``fit`` direction's drift from geodesic-random-walk paths of the
    other direction (forward-time order, (n, K + 1, ambient_dim)), at rows ``idx`` and steps k in 0..K-1 (the
    pair X_k, X_{k+1}); the tangent-form mean-matching targets Y^b_{k+1} / Y^f_k of the module docstring.

    ``drift_other(k_vec, x)`` is the other direction's (tangent) drift at grid indices k_vec (forward: at k,
    backward: at k + 1). Returns (grid index of the input state, input state, target tangent at it)."""
    x0, x1 = paths[idx, k], paths[idx, k + 1]
    if fit == "backward":  # b_{k+1}(X_{k+1}) ~ log_{X_{k+1}} X_k / h + Gamma f_k(X_k) - f_k(X_{k+1})
        f0, f1 = manifold.proj(x0, drift_other(k, x0)), manifold.proj(x1, drift_other(k, x1))
        target = manifold.log(x1, x0) / h + parallel_transport(manifold, x0, x1, f0) - f1
        return k + 1, x1, manifold.proj(x1, target)
    b1, b0 = manifold.proj(x1, drift_other(k + 1, x1)), manifold.proj(x0, drift_other(k + 1, x0))
    target = manifold.log(x0, x1) / h + parallel_transport(manifold, x1, x0, b1) - b0
    return k, x0, manifold.proj(x0, target)


def _features(manifold: Manifold):
    """(number of input features, x -> features): (cos, sin) of the angles on the torus (continuous across the
    cut at +-pi), the ambient coordinates elsewhere."""
    if isinstance(manifold, Torus):
        return 2 * manifold.dim, lambda x: torch.cat([torch.cos(x), torch.sin(x)], -1)
    return manifold.ambient_dim, lambda x: x


class TangentDriftNet(nn.Module):
    """A drift b(t, x) tangent to a manifold: an :class:`~controlsamp.control.policies.MLPPolicy` of the time
    and of features of x (the ambient coordinates; cos and sin of the angles on the torus), its output
    projected onto T_x M. Starts at zero (the MLP's last layer does)."""

    def __init__(self, manifold: Manifold, T: float, hidden: int, depth: int):
        super().__init__()
        self.manifold = manifold
        n_in, self._embed = _features(manifold)
        self.mlp = MLPPolicy(n_in, manifold.ambient_dim, T, hidden=hidden, depth=depth)

    def forward(self, t, x: Tensor) -> Tensor:
        return self.manifold.proj(x, self.mlp(t, self._embed(x)))


class _ManifoldLaw:
    """An endpoint law on a manifold with ``dim`` = the ambient coordinates, for
    :func:`controlsamp.targets.sources.as_sampler`; every draw is checked to lie on the manifold."""

    def __init__(self, obj, name: str, manifold: Manifold):
        self.name, self.manifold, self.dim = name, manifold, manifold.ambient_dim
        if isinstance(obj, str) or obj is None:
            raise ValueError(f"{name} must be an (N, {manifold.ambient_dim}) array of points of {manifold!r}, an "
                             f"object with .sample(n, generator) on it or a callable fn(n, generator); got "
                             f"{type(obj).__name__}")
        other = getattr(obj, "manifold", None)
        if other is not None and other != manifold:
            raise ValueError(f"{name} lives on {other!r}, but the bridge's manifold is {manifold!r}")
        if isinstance(obj, (np.ndarray, torch.Tensor, list, tuple)):
            data = manifold.points(obj, name, dtype=torch.float64)
            self._draw = as_sampler(data, name)
        elif hasattr(obj, "sample"):
            self._draw = lambda n, g: obj.sample(n, generator=g)
        elif callable(obj):
            self._draw = obj
        else:
            raise ValueError(f"{name} must be an (N, {manifold.ambient_dim}) array of points of {manifold!r}, an "
                             f"object with .sample(n, generator) on it or a callable fn(n, generator); got "
                             f"{type(obj).__name__}")
        self.sample(2, torch.Generator().manual_seed(0))  # a probe: shape and membership, errors naming `name`

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        x = torch.as_tensor(self._draw(n, generator)).detach().to(torch.float64).cpu()
        if x.ndim != 2 or x.shape[0] != n or x.shape[1] != self.manifold.ambient_dim:
            raise ValueError(f"{self.name} must give ({n}, {self.manifold.ambient_dim}) points of "
                             f"{self.manifold!r} for n = {n}; got shape {tuple(x.shape)}")
        return self.manifold.points(x, self.name, atol=1e-5)


class RiemannianDSB(NeuralBridge):
    r"""Riemannian diffusion Schrödinger bridge (Thornton et al. 2022): IPF between two laws on a compact
    manifold for the reference :math:`\sigma B_M` on [0, T], geodesic-random-walk half-bridges fitted by tangent
    mean matching (module docstring), both directions learned.

    Args:
        manifold: a :class:`~controlsamp.manifolds.Manifold` (``Sphere(d)``, ``Torus(d)``).
        source, target: the laws at t = 0 and t = T: (N, ambient_dim) arrays of points of the manifold
            (resampled), objects with ``sample(n, generator)`` (e.g. the mixtures of
            :mod:`controlsamp.manifolds.mixtures`; one with another ``.manifold`` is refused) or callables
            ``fn(n, generator) -> (n, ambient_dim)``; every draw is checked to lie on the manifold.
        sigma, T: the reference sigma B_M on [0, T] (generator sigma^2 Laplace-Beltrami / 2).
        steps: geodesic random walk steps K.
        hidden, depth, ema, ema_warmup, cache_size, cache_refresh, device, dtype, seed: as for
            :class:`~controlsamp.bridges.DSB`; the drift networks are :class:`TangentDriftNet`.

    The methods are :class:`~controlsamp.bridges.DSB`'s: ``fit(ipf_iters, iters_per_half, batch, lr, seed, ...)``
    (checkpointed and resumable), ``sample(n) -> (x0, xT)``, ``sample_backward(n)``, ``sample_paths``,
    ``transport(x, direction)``, ``drift(t, x, direction)`` (tangent; the backward one in reversed time
    s = T - t), ``save(path)`` / ``load(path)``. Points are rows of ``manifold.ambient_dim`` coordinates.
    """

    def __init__(self, manifold: Manifold, source, target, sigma: float = 1.0, T: float = 1.0, steps: int = 20,
                 hidden: int = 128, depth: int = 3, ema: float = 0.999, ema_warmup: float = 10.0,
                 cache_size: int = 4096, cache_refresh: int = 200, device="cpu", dtype=None, seed: int = 0):
        if not isinstance(manifold, Manifold):
            raise ValueError(f"manifold must be a controlsamp.manifolds.Manifold (Sphere(d), Torus(d)); got "
                             f"{type(manifold).__name__}")
        self.manifold = manifold
        super().__init__(_ManifoldLaw(source, "source", manifold), _ManifoldLaw(target, "target", manifold),
                         sigma=sigma, T=T, steps=steps, reference=None, hidden=hidden, depth=depth, ema=ema,
                         ema_warmup=ema_warmup, cache_size=cache_size, cache_refresh=cache_refresh, device=device,
                         dtype=dtype, seed=seed)
        self.config["manifold"] = repr(manifold)

    # ---------------------------------------------------------------- hooks of NeuralBridge
    def _drift_net(self, hidden, depth, ema, ema_warmup) -> DriftNet:
        return DriftNet(self.dim, self.T, hidden, depth, ema, ema_warmup,
                        net=TangentDriftNet(self.manifold, self.T, hidden, depth))

    def _simulate(self, drift, x_start, direction, generator, record=True):
        """Geodesic random walks on the grid (module docstring): forward from X_0 = x_start with f_k = drift(k,
        .), or backward from X_K = x_start with b_{k+1} = drift(k + 1, .); forward-time order."""
        K, h = self.steps, self.reference.h
        with torch.no_grad():
            if direction == "forward":
                return self.manifold.random_walk(x_start, K, h, drift=drift, scale=self.sigma, generator=generator,
                                                 record=record)
            xs = self.manifold.random_walk(x_start, K, h, drift=lambda j, x: drift(K - j, x), scale=self.sigma,
                                           generator=generator, record=record)
            return xs.flip(1) if record else xs

    def _points(self, x, direction: str) -> Tensor:
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be one of ('forward', 'backward'); got {direction!r}")
        return self.manifold.points(x, "x", dtype=self.dtype, device=self.device)

    # ---------------------------------------------------------------- half-bridge data
    def _simulate_cache(self, fit, n, streams):
        other = "forward" if fit == "backward" else "backward"
        x = self._start(other, n, streams.cpu)
        return self._simulate(self._grid_drift(other), x, other, streams.device)

    def _batch(self, fit, batch, streams):
        other = "forward" if fit == "backward" else "backward"
        idx = torch.randint(self._cache.shape[0], (batch,), generator=streams.cpu).to(self.device)
        k = torch.randint(self.reference.K, (batch,), generator=streams.cpu).to(self.device)
        with torch.no_grad():
            return riemannian_mean_matching_batch(self.manifold, self._cache, fit, self._grid_drift(other),
                                                  self.reference.h, idx, k)
