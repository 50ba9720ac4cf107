r"""The Langevin proposal shared by ULA and MALA, with an optional fixed preconditioner.

Both algorithms take the Euler–Maruyama step of the preconditioned Langevin diffusion
:math:`dX = P\nabla\log\pi(X)\,dt + \sqrt{2}P^{1/2}dW` (which leaves :math:`\pi` invariant for any fixed
symmetric positive definite :math:`P`):

.. math:: y = x + \epsilon P\nabla\log\tilde\pi(x) + \sqrt{2\epsilon}\,L\xi, \qquad LL^\top = P,
          \qquad q(y\mid x) = \mathcal N\big(y;\ x + \epsilon P\nabla\log\tilde\pi(x),\ 2\epsilon P\big).

ULA (Roberts & Tweedie 1996; Durmus & Moulines 2017) keeps ``y``; MALA accepts it with the
Metropolis–Hastings probability :math:`\min\{1, \tilde\pi(y)q(x\mid y) / (\tilde\pi(x)q(y\mid x))\}`.
:func:`log_accept_ratio` computes that ratio; ULA reports it too, as a diagnostic of its step.

``P`` is ``None`` (identity), a vector (a diagonal, shape (d,)) or an SPD matrix (d, d), for example
the covariance of a pilot run (Roberts & Stramer 2002, "Langevin diffusions and Metropolis–Hastings
algorithms").
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple, Union

import torch

from ..targets.evaluation import TargetEvaluator

Tensor = torch.Tensor
LogDensity = Callable[[Tensor], Tuple[Tensor, Tensor]]  # x -> (log pi~(x) (n,), grad log pi~(x) (n, d))

__all__ = ["LangevinState", "Preconditioner", "init", "propose", "log_accept_ratio", "target_log_density"]


class LangevinState(NamedTuple):
    """A batch of chains: positions (n, d) with their log-densities (n,) and scores (n, d)."""
    x: Tensor
    log_prob: Tensor
    score: Tensor


def init(x: Tensor, log_density: LogDensity) -> LangevinState:
    """The chain state at ``x``: the position with its log-density and score."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a tensor of shape (n_chains, d); got {getattr(x, 'shape', type(x))}")
    lp, sc = log_density(x)
    return LangevinState(x, lp, sc)


class Preconditioner:
    r"""A fixed SPD matrix :math:`P` (or its diagonal), with :math:`P s`, :math:`L\xi` and
    :math:`r^\top P^{-1} r` batched over rows.

    Args:
        P: ``None`` (identity), a positive vector (d,) for a diagonal, or an SPD matrix (d, d).
        dim: the dimension ``d`` it must have.
    """

    def __init__(self, P=None, dim: Optional[int] = None):
        self.kind = "identity"
        if P is None:
            return
        P = torch.as_tensor(P, dtype=torch.float64)
        if P.dim() == 1:
            if dim is not None and P.shape[0] != dim:
                raise ValueError(f"precond must have {dim} entries (a diagonal); got shape {tuple(P.shape)}")
            if not (torch.isfinite(P).all() and (P > 0).all()):
                raise ValueError("precond (a diagonal) must be finite and positive")
            self.kind, self.diag = "diag", P
        elif P.dim() == 2:
            if P.shape[0] != P.shape[1] or (dim is not None and P.shape[0] != dim):
                raise ValueError(f"precond must be a ({dim}, {dim}) SPD matrix; got shape {tuple(P.shape)}")
            if not torch.allclose(P, P.T, rtol=1e-10, atol=1e-12):
                raise ValueError("precond must be symmetric")
            L, info = torch.linalg.cholesky_ex(P)
            if int(info) != 0:
                raise ValueError("precond must be positive definite (its Cholesky factorisation failed)")
            self.kind, self.P, self.L = "dense", P, L
        else:
            raise ValueError(f"precond must be None, a vector (d,) or a matrix (d, d); got shape {tuple(P.shape)}")

    def _cast(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(device=like.device, dtype=like.dtype)

    def apply(self, s: Tensor) -> Tensor:
        """:math:`P s` for rows s (n, d)."""
        if self.kind == "identity":
            return s
        if self.kind == "diag":
            return s * self._cast("diag", s)
        return s @ self._cast("P", s)  # P symmetric

    def noise(self, xi: Tensor) -> Tensor:
        r""":math:`L\xi` for rows :math:`\xi` (n, d), :math:`LL^\top = P`."""
        if self.kind == "identity":
            return xi
        if self.kind == "diag":
            return xi * self._cast("diag", xi).sqrt()
        return xi @ self._cast("L", xi).T

    def quad(self, r: Tensor) -> Tensor:
        r""":math:`r^\top P^{-1} r` per row (n,)."""
        if self.kind == "identity":
            return (r * r).sum(-1)
        if self.kind == "diag":
            return (r * r / self._cast("diag", r)).sum(-1)
        z = torch.linalg.solve_triangular(self._cast("L", r), r.T, upper=False)
        return (z * z).sum(0)


def _as_step(step_size, x: Tensor) -> Tensor:
    eps = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    if not bool((eps > 0).all()):
        raise ValueError(f"step_size must be positive; got {step_size}")
    if eps.dim() == 1:  # one per chain
        eps = eps.unsqueeze(-1)
    return eps


def propose(state: LangevinState, log_density: LogDensity, step_size: Union[float, Tensor],
            precond: Optional[Preconditioner] = None, generator=None) -> LangevinState:
    r"""The Langevin proposal :math:`y` from every chain, with its log-density and score.

    ``step_size`` is a scalar or one per chain, shape (n,) or (n, 1).
    """
    precond = precond or Preconditioner()
    x = state.x
    eps = _as_step(step_size, x)
    xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    y = x + eps * precond.apply(state.score) + torch.sqrt(2 * eps) * precond.noise(xi)
    return init(y, log_density)


def log_accept_ratio(state: LangevinState, proposal: LangevinState, step_size: Union[float, Tensor],
                     precond: Optional[Preconditioner] = None) -> Tensor:
    r""":math:`\log[\tilde\pi(y)q(x\mid y)] - \log[\tilde\pi(x)q(y\mid x)]` per chain (n,); NaN counts as
    :math:`-\infty` (rejected)."""
    precond = precond or Preconditioner()
    eps = _as_step(step_size, state.x).reshape(-1)

    def log_q(to: LangevinState, frm: LangevinState) -> Tensor:  # up to the constant that cancels
        return -precond.quad(to.x - frm.x - _as_step(step_size, frm.x) * precond.apply(frm.score)) / (4 * eps)

    out = (proposal.log_prob - state.log_prob) + log_q(state, proposal) - log_q(proposal, state)
    return torch.nan_to_num(out, nan=-float("inf"))


def target_log_density(target, counter: Optional[list] = None) -> LogDensity:
    r"""``x -> (log pi~(x), grad log pi~(x))`` for a :class:`~controlsamp.targets.Target`.

    The :meth:`~controlsamp.targets.TargetEvaluator.value_and_score` of a fresh
    :class:`~controlsamp.targets.TargetEvaluator`: the closed-form score where the target has one, else
    one autograd pass for both; a NaN or :math:`+\infty` log-density, or a non-finite score where the
    log-density is finite, raises a ValueError naming the target and the first bad point. Each call
    adds ``n`` to ``counter[0]`` when a ``counter`` (a one-element list) is given; code that owns its
    loop can use a :class:`~controlsamp.targets.TargetEvaluator` and read its ``evals`` instead.
    """
    evaluator = TargetEvaluator(target)
    if counter is None:
        return evaluator.value_and_score

    def log_density(x: Tensor) -> Tuple[Tensor, Tensor]:
        before = evaluator.evals
        out = evaluator.value_and_score(x)
        counter[0] += evaluator.evals - before
        return out

    return log_density
