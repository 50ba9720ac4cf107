r"""Counted, checked evaluation of a target: :math:`\log\tilde\pi`, :math:`\nabla\log\tilde\pi`, or both at once.

Every algorithm that queries a :class:`~controlsamp.targets.Target` (the diffusion samplers' rewards
and Langevin features, the ULA / MALA kernels, SMC, local search) goes through a
:class:`TargetEvaluator`, so that

* the cost is counted the same way everywhere: ``evals`` grows by one per point, whether the value,
  the score or both (:meth:`TargetEvaluator.value_and_score`) are evaluated there;
* both come from one pass: with a closed-form score (``type(target).score`` overrides
  :meth:`Target.score`) :math:`\log\tilde\pi` and :math:`\nabla\log\tilde\pi` are two calls, otherwise
  one forward pass of ``log_prob`` and one reverse-mode sweep give both;
* a log-density that does not depend on x (a constant energy) has score 0; one computed outside torch's
  autograd (through numpy) is a ValueError saying so wherever its gradient is needed;
* a broken energy stops the run where it breaks: a NaN or :math:`+\infty` log-density, or a
  non-finite score, raises a ValueError naming the target and the first offending point. A log-density
  of :math:`-\infty` is allowed (zero density, e.g. outside the support); its score is not checked.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .base import Target

Tensor = torch.Tensor

__all__ = ["TargetEvaluator"]


class TargetEvaluator:
    r"""A :class:`~controlsamp.targets.Target` with evaluation counting and NaN / inf reporting.

    Args:
        target: the target :math:`\tilde\pi` (a :class:`~controlsamp.targets.Target`).

    Attributes:
        target: the wrapped target.
        evals: the number of points evaluated so far (an ``int``; one per row of every ``x`` passed to
            :meth:`log_prob`, :meth:`score` or :meth:`value_and_score`). Reset it by assignment.
        analytic_score: whether the target has a closed-form score (else autograd of ``log_prob``).

    Calling the evaluator is :meth:`value_and_score`, so it is the ``log_density`` that the Langevin
    kernels of :mod:`controlsamp.langevin` take.
    """

    def __init__(self, target: Target):
        if not isinstance(target, Target):
            raise ValueError(f"target must be a controlsamp.targets.Target; got {type(target).__name__}")
        self.target = target
        self.evals = 0
        self.analytic_score = type(target).score is not Target.score

    @property
    def name(self) -> str:
        """The target's ``name`` attribute, or its class name when it has none."""
        return getattr(self.target, "name", None) or type(self.target).__name__

    def __repr__(self) -> str:
        return f"TargetEvaluator({self.name!r}, evals={self.evals})"

    # ------------------------------------------------------------------ checks
    def _check_log_prob(self, x: Tensor, lp: Tensor) -> None:
        total = float(lp.detach().sum())  # one reduction: NaN or +inf make the sum NaN or +inf, -inf alone -inf
        if total == total and total != float("inf"):
            return
        bad = torch.isnan(lp) | (lp == float("inf"))
        if bad.any():
            first = x[bad.nonzero()[0, 0]].detach().tolist()
            raise ValueError(f"the target {self.name!r} returned NaN or +inf log_prob at {int(bad.sum())} of "
                             f"{len(lp)} points (first: {first})")

    def _check_score(self, x: Tensor, score: Tensor, where: Optional[Tensor] = None) -> None:
        if math.isfinite(float(score.detach().sum())):  # one reduction; only a non-finite sum is looked into
            return
        bad = ~torch.isfinite(score).all(-1)
        if where is not None:
            bad = bad & where
        if bad.any():
            first = x[bad.nonzero()[0, 0]].detach().tolist()
            raise ValueError(f"the target {self.name!r} returned a non-finite score at {int(bad.sum())} of "
                             f"{len(score)} points (first: {first})")

    # ------------------------------------------------------------------ evaluations
    def log_prob(self, x: Tensor) -> Tensor:
        r""":math:`\log\tilde\pi(x)`, shape (n,), in ``x``'s dtype; differentiable in ``x`` where the
        target's ``log_prob`` is (the grad mode is left as the caller set it). Counts ``n``."""
        if x.requires_grad and torch.is_grad_enabled():  # differentiated later: it must have a graph to x
            lp = self.target.log_prob_with_graph(x)
        else:
            lp = self.target.log_prob(x)
        self.evals += x.shape[0]
        self._check_log_prob(x, lp)
        return lp.to(x.dtype)

    def score(self, x: Tensor, create_graph: bool = False) -> Tensor:
        r""":math:`\nabla_x\log\tilde\pi(x)`, shape (n, d), in ``x``'s dtype. Counts ``n``.

        With ``create_graph=False`` the result is detached from ``x``. With ``create_graph=True`` it is a
        differentiable function of ``x`` (for the adjoint, or a loss through a score-dependent policy):
        an autograd score is built with ``create_graph`` (second derivatives
        :math:`\nabla^2\log\tilde\pi` flow through it), a closed-form score is evaluated on ``x`` itself.
        Every entry must be finite.
        """
        if not create_graph:
            sc = self.target.score(x.detach())
        elif self.analytic_score:
            sc = self.target.score(x)
        else:
            with torch.enable_grad():
                xg = x if x.requires_grad else x.detach().requires_grad_(True)
                (sc,) = torch.autograd.grad(self.target.log_prob_with_graph(xg).sum(), xg, create_graph=True)
        self.evals += x.shape[0]
        self._check_score(x, sc)
        return sc.to(x.dtype)

    def value_and_score(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        r"""``(log pi~(x), grad log pi~(x))``, shapes (n,) and (n, d), detached, in ``x``'s dtype; counts
        ``n`` (one evaluation per point for both).

        Without a closed-form score, one forward pass of ``log_prob`` on a leaf copy of ``x`` and one
        ``torch.autograd.grad`` of its sum give both (the rows are independent, so the gradient of the
        sum is each row's gradient). The score is checked only where the log-density is finite: at a
        point of zero density (:math:`-\infty`) it is not used by a Metropolis step, which rejects the
        move.
        """
        if self.analytic_score:
            with torch.no_grad():
                lp, sc = self.target.log_prob(x), self.target.score(x)
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                lp = self.target.log_prob_with_graph(xg)
                (sc,) = torch.autograd.grad(lp.sum(), xg)
            lp = lp.detach()
        self.evals += x.shape[0]
        self._check_log_prob(x, lp)
        self._check_score(x, sc, torch.isfinite(lp))
        return lp.to(x.dtype), sc.to(x.dtype)

    __call__ = value_and_score
