r"""Langevin algorithms as ``torch.optim.Optimizer`` s: SGLD, TUSLA and TheoPouLa.

Each one is an Euler-type discretisation of the overdamped Langevin diffusion
:math:`d\theta_t = -\nabla u(\theta_t)\,dt + \sqrt{2/\beta}\,dW_t`, whose invariant law
:math:`\pi_\beta \propto e^{-\beta u}` concentrates on the global minimisers of :math:`u` as the inverse
temperature :math:`\beta\to\infty`. With step :math:`\lambda` (``lr``), the gradient (or an unbiased
stochastic estimate of it) :math:`G = \nabla u(\theta_n)` in the parameters' ``.grad`` and
:math:`\xi_{n+1}\sim\mathcal N(0, I)`,

.. math:: \theta_{n+1} = \theta_n - \lambda\,H_\lambda(\theta_n) + \sqrt{2\lambda/\beta}\,\xi_{n+1},

where the drift :math:`H_\lambda` is

* :class:`SGLD` (Welling & Teh 2011): :math:`H = G`;
* :class:`TUSLA` (Lovas, Lytras, Rásonyi & Sabanis 2023): the whole gradient tamed by the norm of the
  whole parameter vector, plus a small confining term,
  :math:`H = \big(G + \eta\,\theta|\theta|^{2r}\big)/\big(1 + \sqrt\lambda|\theta|^{2r}\big)`;
* :class:`TheoPouLa` (Lim & Sabanis 2021): each coordinate tamed (and boosted where it is small) by its
  own gradient, :math:`H_i = G_i\big(1 + \sqrt\lambda/(\epsilon + |G_i|)\big)/\big(1 + \sqrt\lambda|G_i|\big)`,
  plus the same optional confining term.

For a gradient growing at most like :math:`|\theta|^{2r+1}` the TUSLA step :math:`\lambda H` is at most a
constant times :math:`\lambda + \sqrt\lambda\,|\theta|`, and a TheoPouLa step moves each coordinate by
at most :math:`\sqrt\lambda + \lambda^{3/2}` (plus the confining term), whatever the gradient; the Euler
step of SGD on a loss whose gradient grows superlinearly instead overshoots by a factor that grows with
:math:`|\theta|`, and diverges from a large enough start. That instability is what taming removes.

Shared conventions: ``lr``, ``beta`` and the other hyperparameters may differ between param groups (each
is re-checked at every step, so a schedule that edits ``group["beta"]`` is checked too); parameters
whose ``.grad`` is ``None`` are skipped; a non-finite gradient raises :class:`FloatingPointError` before
any parameter is changed; the noise is drawn from ``generator`` (on the generator's device, then moved)
in param-group order, one ``torch.randn(p.shape)`` per updated parameter. The generator is not part of
``state_dict()``; save ``generator.get_state()`` alongside it to resume a run bit for bit.

References: M. Welling & Y. W. Teh, Bayesian learning via stochastic gradient Langevin dynamics, ICML
2011. A. Lovas, I. Lytras, M. Rásonyi & S. Sabanis, Taming neural networks with TUSLA: non-convex
learning via adaptive stochastic gradient Langevin algorithms, SIAM J. Math. Data Sci. 5 (2023)
(arXiv:2006.14514). D.-Y. Lim & S. Sabanis, Polygonal unadjusted Langevin algorithms: creating stable
and efficient adaptive algorithms for neural networks, arXiv:2105.13937 (2021).
"""
from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch.optim import Optimizer

from .._validate import check_nonnegative, check_positive

Tensor = torch.Tensor

__all__ = ["SGLD", "TUSLA", "TheoPouLa"]


class _LangevinOptimizer(Optimizer, metaclass=ABCMeta):
    r"""The part the three algorithms share: hyperparameter checks, the finiteness check on the
    gradients, and the step :math:`\theta \leftarrow \theta - \lambda H + \sqrt{2\lambda/\beta}\,\xi`.

    Subclasses name their extra hyperparameters in ``_positive`` / ``_nonnegative``, may compute
    something once per step from all parameters in :meth:`_prepare`, and give the drift :math:`H` of one
    parameter in :meth:`_drift`.
    """

    _positive: Tuple[str, ...] = ("lr", "beta")
    _nonnegative: Tuple[str, ...] = ()

    def __init__(self, params, defaults: Dict, generator: Optional[torch.Generator] = None):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
        self._check_hyper(defaults, "")
        self.generator = generator
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ checks
    def _check_hyper(self, group: Dict, where: str) -> Dict[str, float]:
        """The group's hyperparameters as floats; a ValueError naming the bad one otherwise."""
        out = {}
        for key in self._positive:
            out[key] = check_positive(group[key], f"{type(self).__name__} {key}{where}")
        for key in self._nonnegative:
            out[key] = check_nonnegative(group[key], f"{type(self).__name__} {key}{where}")
        return out

    def add_param_group(self, param_group: Dict) -> None:
        super().add_param_group(param_group)
        self._check_hyper(self.param_groups[-1], f" (param group {len(self.param_groups) - 1})")

    def _gradients(self) -> List[Tuple[Dict, Dict[str, float], List[Tuple[Tensor, Tensor]]]]:
        """Per group: the group, its checked hyperparameters and its (param, grad) pairs with a grad.
        Raises FloatingPointError on the first non-finite gradient, before anything is updated."""
        out, index = [], 0
        for gi, group in enumerate(self.param_groups):
            hyper = self._check_hyper(group, f" (param group {gi})")
            pairs = []
            for pi, p in enumerate(group["params"]):
                if p.grad is not None:
                    g = p.grad
                    if g.is_sparse:
                        raise RuntimeError(f"{type(self).__name__} does not support sparse gradients "
                                           f"(parameter {index})")
                    if not bool(torch.isfinite(g).all()):
                        raise FloatingPointError(
                            f"{type(self).__name__}: the gradient of parameter {index} (param group {gi}, "
                            f"position {pi}, shape {tuple(p.shape)}) contains NaN or inf; refusing to "
                            f"update with it")
                    pairs.append((p, g))
                index += 1
            out.append((group, hyper, pairs))
        return out

    # ------------------------------------------------------------------ the step
    def _noise(self, p: Tensor) -> Tensor:
        """Standard normal noise of p's shape, drawn from ``self.generator`` (on its device)."""
        gen = self.generator
        if gen is None or gen.device == p.device:
            return torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
        return torch.randn(p.shape, generator=gen, device=gen.device, dtype=p.dtype).to(p.device)

    def _prepare(self) -> object:
        """Anything the drift needs from all parameters before the update (default: nothing)."""
        return None

    @abstractmethod
    def _drift(self, p: Tensor, g: Tensor, hyper: Dict[str, float], context: object) -> Tensor:
        """The drift H of one parameter; each of SGLD, TUSLA and TheoPouLa defines it."""

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """One update of every parameter with a gradient. Returns the closure's loss (None without one)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self._gradients()
        context = self._prepare()
        for group, hyper, pairs in groups:
            lr, beta = hyper["lr"], hyper["beta"]
            scale = math.sqrt(2.0 * lr / beta)
            for p, g in pairs:
                drift = self._drift(p, g, hyper, context)
                p.add_(drift, alpha=-lr)
                p.add_(self._noise(p), alpha=scale)
        return loss


class SGLD(_LangevinOptimizer):
    r"""Stochastic gradient Langevin dynamics (Welling & Teh 2011) at inverse temperature :math:`\beta`:

    .. math:: \theta_{n+1} = \theta_n - \lambda\,G(\theta_n) + \sqrt{2\lambda/\beta}\,\xi_{n+1},
              \qquad \xi_{n+1}\sim\mathcal N(0, I),

    with :math:`G` the parameters' ``.grad``. With the exact gradient this is the unadjusted Langevin
    algorithm for :math:`\pi_\beta\propto e^{-\beta u}`, biased by :math:`O(\lambda)`: on
    :math:`u = |\theta|^2/(2s)` its invariant law is :math:`\mathcal N(0, v I)` with
    :math:`v = s/(\beta(1 - \lambda/(2s)))`.

    Args:
        params: parameters or param-group dicts, as for any ``torch.optim.Optimizer``.
        lr: the step :math:`\lambda > 0`.
        beta: the inverse temperature :math:`\beta > 0` (1 samples :math:`e^{-u}`).
        generator: a ``torch.Generator`` for the noise (reproducible runs), or None for the global RNG.

    Reference: M. Welling & Y. W. Teh, Bayesian learning via stochastic gradient Langevin dynamics,
    ICML 2011.
    """

    def __init__(self, params: Iterable, lr: float, beta: float = 1.0, *,
                 generator: Optional[torch.Generator] = None):
        super().__init__(params, dict(lr=lr, beta=beta), generator)

    def _drift(self, p, g, hyper, context):
        return g


def _whole_norm(groups) -> Tensor:
    r""":math:`|\theta|`, the Euclidean norm of all parameters of all groups concatenated (a 0-d tensor on
    the first parameter's device, in the widest floating dtype among the parameters and float32)."""
    params = [p for group in groups for p in group["params"]]
    dtype = torch.float32
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    device = params[0].device
    norms = [torch.linalg.vector_norm(p.detach().to(dtype)).to(device) for p in params]
    return torch.linalg.vector_norm(torch.stack(norms))


def _confining(p: Tensor, hyper: Dict[str, float], t: Tensor) -> Optional[Tensor]:
    r""":math:`\eta\,\theta|\theta|^{2r}/(1 + \sqrt\lambda|\theta|^{2r})` for the coordinates in ``p``,
    given :math:`t = |\theta|^{2r}` in the norm's precision, written as
    :math:`\eta\,\theta/(t^{-1} + \sqrt\lambda)` so that it stays finite (at most
    :math:`\eta|\theta|/\sqrt\lambda`) when :math:`t` overflows; None when :math:`\eta = 0`."""
    if hyper["eta"] == 0.0:
        return None
    factor = hyper["eta"] / (t.reciprocal() + math.sqrt(hyper["lr"]))
    return p * factor.to(device=p.device, dtype=p.dtype)


class TUSLA(_LangevinOptimizer):
    r"""The tamed unadjusted stochastic Langevin algorithm (Lovas, Lytras, Rásonyi & Sabanis 2023):

    .. math:: \theta_{n+1} = \theta_n - \lambda\,
              \frac{G(\theta_n) + \eta\,\theta_n|\theta_n|^{2r}}{1 + \sqrt\lambda\,|\theta_n|^{2r}}
              + \sqrt{2\lambda/\beta}\,\xi_{n+1},\qquad \xi_{n+1}\sim\mathcal N(0, I),

    where :math:`|\theta|` is the Euclidean norm of the **whole** parameter vector: every parameter of
    every param group, including those without a gradient this step, concatenated, and evaluated once per
    step before any parameter moves. (So two parameter sets that must not interact, such as independent
    runs, need separate optimizers.) The per-group ``r``, ``eta``, ``lr`` enter the formula for that
    group's parameters.

    As :math:`\lambda\to0` the drift tends to the gradient of the regularised objective
    :math:`u(\theta) + \tfrac{\eta}{2r+2}|\theta|^{2r+2}`, so the chain approximates
    :math:`\pi_\beta\propto\exp\{-\beta(u + \tfrac{\eta}{2r+2}|\theta|^{2r+2})\}`: the :math:`\eta`
    term makes the regularised objective dissipative, and the denominator tames the drift: a gradient
    growing like :math:`|\theta|^{2r+1}` or slower, :math:`|G|\le C(1 + |\theta|^{2r+1})`, gives a step
    :math:`\lambda|H| \le C\lambda + (C + \eta)\sqrt\lambda\,|\theta|` whatever :math:`|\theta|` is,
    where the Euler step :math:`\lambda G` grows like :math:`|\theta|^{2r+1}`.

    Defaults: ``beta=1e10`` puts the per-step noise, :math:`\sqrt{2\lambda/\beta}\approx 1.4\cdot10^{-5}
    \sqrt\lambda`, far below any gradient step of a training loss, i.e. the optimisation regime where
    :math:`\pi_\beta` sits on the global minimisers; lower it (e.g. to :math:`10^2`–:math:`10^4` for
    losses of order one) to let the noise cross barriers. ``eta=1e-4`` adds a confining term that is
    negligible for :math:`|\theta|` of order one, and ``r=1`` tames gradients growing up to cubically
    (a quartic loss, a two-layer network's squared loss).

    Args:
        params: parameters or param-group dicts, as for any ``torch.optim.Optimizer``.
        lr: the step :math:`\lambda > 0`.
        beta: the inverse temperature :math:`\beta > 0`.
        eta: the confining strength :math:`\eta \ge 0`.
        r: the taming exponent :math:`r \ge 0` (a real number; the paper's theory uses
            :math:`r` tied to the polynomial growth of :math:`G`).
        generator: a ``torch.Generator`` for the noise, or None for the global RNG.

    Reference: A. Lovas, I. Lytras, M. Rásonyi & S. Sabanis, Taming neural networks with TUSLA:
    non-convex learning via adaptive stochastic gradient Langevin algorithms, SIAM J. Math. Data Sci. 5
    (2023), arXiv:2006.14514.
    """

    _nonnegative = ("eta", "r")

    def __init__(self, params: Iterable, lr: float, beta: float = 1e10, eta: float = 1e-4, r: float = 1.0, *,
                 generator: Optional[torch.Generator] = None):
        super().__init__(params, dict(lr=lr, beta=beta, eta=eta, r=r), generator)

    def _prepare(self):
        return _whole_norm(self.param_groups)

    def _drift(self, p, g, hyper, norm):
        t = norm ** (2.0 * hyper["r"])
        taming = (1.0 + math.sqrt(hyper["lr"]) * t).reciprocal()  # in (0, 1], safe to cast down
        drift = g * taming.to(device=p.device, dtype=p.dtype)
        conf = _confining(p, hyper, t)
        return drift if conf is None else drift + conf


class TheoPouLa(_LangevinOptimizer):
    r"""TheoPouLa, the tamed and boosted polygonal unadjusted Langevin algorithm of Lim & Sabanis (2021):
    coordinatewise taming and boosting of the gradient,

    .. math:: H_i = \frac{G_i}{1 + \sqrt\lambda\,|G_i|}\Big(1 + \frac{\sqrt\lambda}{\epsilon + |G_i|}\Big)
              + \eta\,\frac{\theta_i|\theta|^{2r}}{1 + \sqrt\lambda\,|\theta|^{2r}},\qquad
              \theta_{n+1} = \theta_n - \lambda H(\theta_n) + \sqrt{2\lambda/\beta}\,\xi_{n+1},

    with :math:`G = G(\theta_n)` the parameters' ``.grad`` and :math:`|\theta|` the norm of the whole
    parameter vector (all param groups, as in :class:`TUSLA`; computed only when some group has
    :math:`\eta > 0`). The first factor tames a large :math:`|G_i|`; the second boosts a small one (for
    :math:`|G_i|\ll 1/\sqrt\lambda` it behaves like :math:`G_i + \sqrt\lambda\,G_i/(\epsilon + |G_i|)`, a
    sign-like push of size up to :math:`\sqrt\lambda` in the descent direction, much as Adam's
    per-coordinate normalisation). Without the confining term,
    :math:`|\lambda H_i| \le \sqrt\lambda + \lambda^{3/2}` per coordinate, whatever the gradient.
    Near a minimiser the drift is steeper than the gradient by up to the factor
    :math:`1 + \sqrt\lambda/\epsilon`, so with :math:`\epsilon \ll \sqrt\lambda` the iterates, even
    without noise, keep hopping around the minimiser at a distance of order :math:`\lambda^{3/2}` (their
    mean still sits on it) instead of converging; a larger :math:`\epsilon` removes that. The confining
    term enters with the same sign as the gradient: it pulls :math:`\theta` towards 0.

    Args:
        params: parameters or param-group dicts, as for any ``torch.optim.Optimizer``.
        lr: the step :math:`\lambda > 0`.
        beta: the inverse temperature :math:`\beta > 0`.
        eps: :math:`\epsilon > 0`, which smooths the boost near :math:`G_i = 0` (the boost factor is at
            most :math:`1 + \sqrt\lambda/\epsilon`; the boost itself at most :math:`\sqrt\lambda`).
        eta: the confining strength :math:`\eta \ge 0` (default 0, no confining term).
        r: the exponent :math:`r \ge 0` of the confining term.
        generator: a ``torch.Generator`` for the noise, or None for the global RNG.

    Reference: D.-Y. Lim & S. Sabanis, Polygonal unadjusted Langevin algorithms: creating stable and
    efficient adaptive algorithms for neural networks, arXiv:2105.13937 (2021).
    """

    _positive = ("lr", "beta", "eps")
    _nonnegative = ("eta", "r")

    def __init__(self, params: Iterable, lr: float, beta: float, eps: float, eta: float = 0.0,
                 r: float = 1.0, *, generator: Optional[torch.Generator] = None):
        super().__init__(params, dict(lr=lr, beta=beta, eps=eps, eta=eta, r=r), generator)

    def _prepare(self):
        if any(float(group["eta"]) > 0 for group in self.param_groups):
            return _whole_norm(self.param_groups)
        return None

    def _drift(self, p, g, hyper, norm):
        sq = math.sqrt(hyper["lr"])
        a = g.abs()
        drift = g / (1.0 + sq * a) * (1.0 + sq / (hyper["eps"] + a))
        conf = _confining(p, hyper, norm ** (2.0 * hyper["r"])) if norm is not None else None
        return drift if conf is None else drift + conf
