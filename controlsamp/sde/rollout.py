r"""The one rollout: fixed-step paths of a Markov chain with additive Gaussian noise, forward or backward,
and the discrete Girsanov log-ratio of a path.

Every path simulated by the package (controlled samplers, the reference's time reversal for off-policy
training, the control problems' Euler paths, the bridges' learned processes) is a chain

.. math:: x_{i+1} = m_i(x_i) + n_i(\xi_i),\qquad \xi_i \sim \mathcal N(0, I),

run by :func:`rollout` with a step mean :math:`m_i` and a noise map :math:`n_i` (for the isotropic
schemes :math:`n_i(\xi) = \sqrt{v_i}\,\xi`; for a control problem with noise matrix sigma,
:math:`\sqrt h\,\xi\sigma^\top`), or backward from :math:`x_K` (indices K-1 down to 0; the path is returned in
forward-time order).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch

from .reference import DiscretisedReference

Tensor = torch.Tensor

__all__ = ["rollout", "controlled_paths", "ChainPaths", "log_ratio_control_derivative", "reference_reversal", "path_log_ratio", "step_log_ratio"]


def rollout(mean: Callable[[int, Tensor], Tensor], noise_map: Callable[[int, Tensor], Tensor], x_start: Tensor,
            steps: int, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
            noise_dim: Optional[int] = None, backward: bool = False, record: bool = True,
            detach_states: bool = False, keep_means: bool = True) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    r"""Run :math:`x \leftarrow m_i(x) + n_i(\xi_i)` for i = 0..K-1 (forward, from x_start = x_0) or
    i = K-1..0 (``backward``, from x_start = x_K).

    Args:
        mean: ``mean(i, x) -> (n, d)``, the step mean from x at step i.
        noise_map: ``noise_map(i, xi) -> (n, d)``, the noise added at step i from standard normals xi.
        noise: standard normals (n, K, noise_dim) to reuse (same noise, same path); else drawn from
            ``generator`` with ``noise_dim`` (default d) channels.
        record: keep the whole path; else only the far end is returned (xs (n, d), means None).
        keep_means: also stack the step means (else means is None; a caller that needs only the states
            saves a (n, K, d) copy).
        detach_states: the states carry no gradient (x = sg(m) + noise) while the means keep theirs: the
            means of a detached path, differentiable in what ``mean`` depends on besides x (a policy's
            parameters), in the same pass that draws the path.
    Returns:
        xs (n, K + 1, d) in forward-time order, the step means (n, K, d) (indexed by step) and the noise.
    """
    n, d = x_start.shape
    k = d if noise_dim is None else int(noise_dim)
    if noise is None:
        noise = torch.randn(n, steps, k, generator=generator, device=x_start.device, dtype=x_start.dtype)
    elif tuple(noise.shape) != (n, steps, k):
        raise ValueError(f"noise must have shape ({n}, {steps}, {k}); got {tuple(noise.shape)}")
    order = range(steps - 1, -1, -1) if backward else range(steps)
    x, xs, means = x_start, [x_start], []
    for i in order:
        m = mean(i, x)
        x = (m.detach() if detach_states and m.requires_grad else m) + noise_map(i, noise[:, i])
        if record:
            xs.append(x)
            if keep_means:
                means.append(m)
    if not record:
        return x, None, noise
    if backward:
        xs, means = xs[::-1], means[::-1]
    return torch.stack(xs, 1), torch.stack(means, 1) if keep_means else None, noise


class ChainPaths(NamedTuple):
    """What :func:`controlled_paths` returns: states xs (n, K+1, d); the model's step means (n, K, d) or None;
    the standard normal noise (n, K, d); the discrete Girsanov log-ratio of each path (n,) float64 or None."""
    xs: Tensor
    means: Optional[Tensor]
    noise: Tensor
    log_ratio: Optional[Tensor]


def controlled_paths(reference: DiscretisedReference, control: Callable[[int, Tensor], Tensor], x0: Tensor,
                     noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                     explore: float = 0.0, record: bool = True, detach_states: bool = False,
                     keep_means: bool = True, log_ratio: bool = False, block: int = 16,
                     base: Optional[Callable[[int, Tensor], Tensor]] = None) -> ChainPaths:
    r"""Paths of the controlled chain :math:`x_{i+1} = a_i x_i + b_i u_i + \sqrt{v_i + \epsilon^2 h}\,\xi_i`,
    :math:`u_i` = ``control(i, x_i)``; ``explore`` = :math:`\epsilon` widens the noise (exploration, Sendera et
    al. 2024: the behaviour law differs from the model, whose step density keeps v_i). Differentiable when
    called with gradients on (a reparametrised path; with ``detach_states`` only the means are).

    ``log_ratio``: also accumulate the path's :func:`path_log_ratio`
    :math:`\sum_i -\delta_i\cdot(2e_i + \delta_i)/(2v_i)` with :math:`\delta_i = b_i u_i` and
    :math:`e_i = x_{i+1} - a_i x_i - b_i u_i` (the realised residual, here :math:`\sqrt{v_i+\epsilon^2h}\,\xi_i`),
    in blocks of ``block`` steps during the rollout (terms in the paths' dtype, the sum over steps in float64):
    a block's arrays are still in cache, one pass over the whole (n, K, d) path afterwards costs several times
    more on a memory-bound CPU, and a pass per step costs a few operations' dispatch per step.
    ``keep_means``: stack the step means (else None). ``base``: a fixed control :math:`u^0_i` = ``base(i, x_i)``
    added to the mean, :math:`x_{i+1} = a_i x_i + b_i(u^0_i + u_i) + \dots`, so that the chain without ``control``
    is another Markov chain (e.g. a pretrained diffusion model's) and the log-ratio is against that chain
    (:math:`\delta_i = b_i u_i` only). Returns a :class:`ChainPaths`."""
    if block < 1:
        raise ValueError(f"block must be a positive integer; got {block}")
    n, d, K = x0.shape[0], x0.shape[1], reference.K
    a, b, v = reference.floats("a"), reference.floats("b"), reference.floats("v")
    if noise is None:
        noise = torch.randn(n, K, d, generator=generator, device=x0.device, dtype=x0.dtype)
    elif tuple(noise.shape) != (n, K, d):
        raise ValueError(f"noise must have shape ({n}, {K}, {d}); got {tuple(noise.shape)}")
    std = torch.tensor([math.sqrt(v_i + explore ** 2 * reference.h) for v_i in v], device=x0.device,
                       dtype=x0.dtype)
    resid = noise * std.reshape(1, K, 1)  # the realised residuals e_i, (n, K, d)
    state = {"lr": torch.zeros(n, dtype=torch.float64, device=x0.device) if log_ratio else None, "deltas": []}
    if log_ratio:
        neg_half_prec = torch.tensor([-0.5 / v_i for v_i in v], dtype=torch.float64, device=x0.device)

    def mean(i: int, x: Tensor) -> Tensor:
        delta = b[i] * control(i, x)
        if log_ratio:
            deltas = state["deltas"]
            deltas.append(delta)
            if len(deltas) == block or i == K - 1:  # steps lo..i
                lo = i + 1 - len(deltas)
                dl = torch.stack(deltas)  # (c, n, d)
                term = torch.linalg.vecdot(dl, torch.add(dl, resid[:, lo:i + 1].transpose(0, 1), alpha=2.0))
                state["lr"] = state["lr"] + (term.double() * neg_half_prec[lo:i + 1, None]).sum(0)
                deltas.clear()
        m = torch.add(delta, x, alpha=a[i])  # a_i x + b_i u_i
        return m if base is None else m + b[i] * base(i, x)

    xs, means, noise = rollout(mean, lambda i, xi: resid[:, i], x0, K, noise, record=record,
                               detach_states=detach_states, keep_means=keep_means)
    return ChainPaths(xs, means, noise, state["lr"])


def log_ratio_control_derivative(reference: DiscretisedReference, noise: Tensor, explore: float = 0.0
                                 ) -> Callable[[int, int], Tensor]:
    r"""The derivative of the log-ratio that :func:`controlled_paths` accumulates, in the controls of a path
    with detached states: :math:`\partial/\partial u_i = -(b_i / v_i)\,e_i` with the realised residual
    :math:`e_i = \sqrt{v_i + \epsilon^2 h}\,\xi_i` (``noise`` (n, K, d) the standard normals that drew the
    path, ``explore`` = :math:`\epsilon`). Returns ``derivative(lo, hi)`` of steps lo..hi-1, shape
    (hi - lo, n, d) (steps first, as :meth:`controlsamp.control.grid_mlp.GridRecorder.functional` takes it)."""
    b, v = reference.floats("b"), reference.floats("v")
    coef = torch.tensor([-b[i] * math.sqrt(v[i] + explore ** 2 * reference.h) / v[i] for i in range(reference.K)],
                        device=noise.device, dtype=noise.dtype)
    return lambda lo, hi: coef[lo:hi].reshape(-1, 1, 1) * noise[:, lo:hi].transpose(0, 1)


def reference_reversal(reference: DiscretisedReference, xK: Tensor, generator: Optional[torch.Generator] = None
                       ) -> Tensor:
    r"""Paths (n, K+1, d) of the discrete reference's time reversal ending at ``xK``:
    :math:`x_i \mid x_{i+1} \sim \mathcal N(a_i w_i / w_{i+1}\,x_{i+1},\ w_i v_i / w_{i+1} I)` (the off-policy
    "backward" paths from terminal samples)."""
    a, v, w = reference.floats("a"), reference.floats("v"), reference.w.tolist()
    c = [a[i] * w[i] / w[i + 1] for i in range(reference.K)]
    std = [math.sqrt(w[i] * v[i] / w[i + 1]) for i in range(reference.K)]
    xs, _, _ = rollout(lambda i, x: c[i] * x, lambda i, xi: std[i] * xi, xK, reference.K, generator=generator,
                       backward=True)
    return xs


def step_log_ratio(reference: DiscretisedReference, x: Tensor, x_next: Tensor, mean: Tensor,
                   steps: Optional[Sequence[int]] = None, base_mean: Optional[Tensor] = None) -> Tensor:
    r"""Per-step :math:`\log\mathcal N(x_{i+1}; a_i x_i, v_i I) - \log\mathcal N(x_{i+1}; m_i, v_i I)`, returned in
    float64 (the residuals are formed in the paths' dtype), for x, x_next, mean of shape (n, K, d) (all steps; or the steps ``steps``). With :math:`\delta = m - a x`
    and :math:`e = x_{i+1} - m` it is :math:`-\delta\cdot(2e + \delta) / (2 v_i)`, which has no cancellation
    between two large quadratic forms. ``base_mean``: the step means of the chain to compare against instead of
    the reference's :math:`a_i x_i` (a chain with a fixed control, see :func:`controlled_paths`). Returns (n, K)."""
    idx = slice(None) if steps is None else torch.as_tensor(steps, device=x.device)
    a = reference.coef("a", x.device, x.dtype)[idx]
    v = reference.coef("v", x.device)[idx]
    delta = mean - (a.unsqueeze(-1) * x if base_mean is None else base_mean)  # in the paths' dtype; sums in float64
    return -(delta * (2 * (x_next - mean) + delta)).sum(-1).double() / (2 * v)


def path_log_ratio(reference: DiscretisedReference, xs: Tensor, means: Tensor,
                   base_means: Optional[Tensor] = None) -> Tensor:
    r"""The discrete Girsanov log-ratio :math:`\log\frac{dP^{ref}}{dP^u}` of paths xs (n, K+1, d) whose model
    step means are ``means`` (n, K, d): the sum of :func:`step_log_ratio`, (n,) float64. For a path the
    model drew itself (:math:`x_{i+1} = m_i + \sqrt{v_i}\xi_i`, :math:`m_i = a_i x_i + b_i u_i`) it equals
    :math:`-\sum_i (b_i/\sqrt{v_i})\,u_i\cdot\xi_i - \sum_i b_i^2 |u_i|^2 / (2 v_i)`; for Euler
    (:math:`b_i^2/v_i = h`) that is :math:`-\sum u\cdot\Delta W - \tfrac h2\sum |u|^2`."""
    return step_log_ratio(reference, xs[:, :-1], xs[:, 1:], means, base_mean=base_means).sum(1)
