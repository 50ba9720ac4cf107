"""Feedback policies u(t, x): a time-conditioned MLP and an affine policy on the time grid."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from .._validate import call_with_graph, check_count, check_dim, check_nonnegative, check_positive
from .grid_mlp import GridRecorder

Tensor = torch.Tensor


class FourierTime(nn.Module):
    r"""Time features [sin(2 pi k t / T), cos(2 pi k t / T)]_{k=1..K} and t/T (Tancik et al. 2020)."""

    def __init__(self, T: float, n_freq: int = 4):
        super().__init__()
        self.T = float(T)
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32) / self.T)
        self.out_dim = 2 * n_freq + 1

    def forward(self, t_col: Tensor) -> Tensor:
        ang = t_col * self.freqs.to(t_col.dtype)
        return torch.cat([torch.sin(ang), torch.cos(ang), t_col / self.T], dim=1)


def zero_output_mlp(width_in: int, hidden: int, depth: int, width_out: int) -> nn.Sequential:
    """``depth`` SiLU layers of width ``hidden`` and a linear output layer initialised at zero (the network starts
    as the zero map), as one ``nn.Sequential`` (layers in that order)."""
    layers, width = [], width_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    last = nn.Linear(width, width_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class MLPPolicy(nn.Module):
    r"""u(t, x) = NN([x, phi(t)]) + c(t) * h(x), an MLP on the state and Fourier time features phi(t).

    With ``feature`` (a callable x -> (n, m), e.g. -R^{-1} B' grad g(x) / 2, the optimal control at t = T)
    a learned time-dependent gain c(t) in R^m multiplies it, as in the path integral sampler's
    NN_1(t, x) + NN_2(t) grad log pi (Zhang & Chen 2022). The output layers start at zero, so training
    starts from the uncontrolled process.
    """

    def __init__(self, dim: int, control_dim: int, T: float = 1.0, hidden: int = 64, depth: int = 2,
                 n_freq: int = 4, feature: Optional[Callable[[Tensor], Tensor]] = None):
        super().__init__()
        dim, control_dim = check_dim(dim, "dim"), check_dim(control_dim, "control_dim")
        hidden, depth, n_freq = check_dim(hidden, "hidden"), check_count(depth, "depth"), check_count(n_freq, "n_freq")
        T = check_positive(T, "T")
        if feature is not None and not callable(feature):
            raise ValueError(f"feature must be a callable x -> (n, control_dim) or None; got {type(feature).__name__}")
        self.dim, self.control_dim = dim, control_dim
        self.time = FourierTime(T, n_freq)
        self.net = zero_output_mlp(dim + self.time.out_dim, hidden, depth, control_dim)
        self.feature = feature
        if feature is not None:
            gain_last = nn.Linear(hidden, control_dim)
            nn.init.zeros_(gain_last.weight)
            nn.init.zeros_(gain_last.bias)
            self.gain = nn.Sequential(nn.Linear(self.time.out_dim, hidden), nn.SiLU(), gain_last)

    def _time_terms(self, t, x: Tensor):
        """The time-only parts of the network: the first layer's time columns plus its bias, (r, hidden), and
        the gain c(t), (r, m), evaluated once per distinct time (r = 1 for a scalar t, else one row per point,
        gathered from the distinct values: a batch of paths on a grid holds only K distinct times)."""
        col = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1)
        inverse = None
        if col.shape[0] > 1:
            if bool((col == col[0]).all()):  # one shared time (also keeps forward-mode AD, which unique lacks)
                col, inverse = col[:1], torch.zeros(col.shape[0], dtype=torch.long, device=col.device)
            else:
                col, inverse = torch.unique(col, return_inverse=True)
                col = col.reshape(-1, 1)
        tf = self.time(col)
        first = self.net[0]
        bias = torch.nn.functional.linear(tf, first.weight[:, self.dim:], first.bias)
        gain = self.gain(tf) if self.feature is not None else None
        if inverse is not None:
            inverse = inverse.reshape(-1)
            bias = bias[inverse]
            gain = gain[inverse] if gain is not None else None
        return bias, gain

    def on_grid(self, ts: Tensor) -> Callable[..., Tensor]:
        """``u(i, x, features=None)`` = u(ts[i], x) with the time-only terms of all the times ``ts`` (distinct,
        increasing) computed in one batched call: what a rollout over a fixed grid calls at every step. With
        ``i = slice(None)`` and x of shape (n, len(ts), d) it evaluates every time at once (a batch of whole
        paths). Differentiable in the parameters when built with gradients on."""
        bias, gain = self._time_terms(ts, ts.reshape(-1, 1))
        weight, rest = self.net[0].weight[:, : self.dim], self.net[1:]

        def u(i: int, x: Tensor, features: Optional[Tensor] = None) -> Tensor:
            # (one fused product for a batch of states: the same arithmetic as the GridRecorder's)
            z = torch.addmm(bias[i], x, weight.T) if x.dim() == 2 else torch.nn.functional.linear(x, weight) + bias[i]
            out = rest(z)
            if gain is not None:
                out = out + gain[i] * (self.feature(x) if features is None else features)
            return out
        return u

    def forward(self, t, x: Tensor, features: Optional[Tensor] = None) -> Tensor:
        """u(t, x); ``features`` (n, m), when given, replaces ``feature(x)`` (a caller that already has the
        feature values, e.g. target scores along a path, avoids recomputing them)."""
        bias, gain = self._time_terms(t, x)
        first = self.net[0]
        u = self.net[1:](torch.nn.functional.linear(x, first.weight[:, : self.dim]) + bias)
        if gain is not None:
            u = u + gain * (self.feature(x) if features is None else features)
        return u


class AffinePolicy(nn.Module):
    r"""u(t, x) = K_i x + k_i for t in [t_i, t_{i+1}) on a uniform grid of ``steps`` intervals of [0, T].

    The exact policy class of linear–quadratic problems (u* = -R^{-1} B' P(t) x), piecewise constant in
    time. Starts at zero. ``snap``: see :meth:`index`."""

    def __init__(self, dim: int, control_dim: int, T: float = 1.0, steps: int = 100, snap: float = 1e-3):
        super().__init__()
        dim, control_dim = check_dim(dim, "dim"), check_dim(control_dim, "control_dim")
        steps = check_dim(steps, "steps")
        self.T, self.steps, self.snap = check_positive(T, "T"), steps, check_nonnegative(snap, "snap")
        self.K = nn.Parameter(torch.zeros(steps, control_dim, dim))
        self.k = nn.Parameter(torch.zeros(steps, control_dim))

    def index(self, t) -> int:
        """The interval of t; a time within ``snap`` steps below a grid point counts as that grid point, so
        float32 solver clocks (t = 0.2799999 for 0.28) land on the intended interval."""
        i = int(math.floor(float(t) / self.T * self.steps + self.snap))
        return min(max(i, 0), self.steps - 1)

    def forward(self, t, x: Tensor) -> Tensor:
        i = self.index(t)
        return x @ self.K[i].to(x.dtype).T + self.k[i].to(x.dtype)


class SamplerControl(nn.Module):
    r"""The control of a diffusion sampler on a :class:`~controlsamp.sde.DiscretisedReference`: an
    :class:`MLPPolicy` u(t, x), with ``langevin=True`` plus a learned time gain times the clipped target score
    (the path integral sampler's NN_1(t, x) + NN_2(t) grad log pi, Zhang & Chen 2022; the "Langevin
    parametrisation" that Sendera et al. 2024 find essential on hard targets).

    ``parametrisation="score"`` (the time-reversed diffusion sampler, Berner, Richter & Ullrich 2024): the
    network output r is the score s of the reversed noising process less the reference's own marginal score,
    s(t, x) = -x / w(t) + r(t, x) (w(t) the reference's marginal variance, the prior's sigma^2 on DDS's
    stationary reference), and the control is u = -2 k(t) x / g(t) + g(t) s. A zero network is then the
    reference itself, as for the control parametrisation; with s = r (a zero score, the score of an infinitely
    wide target) the untrained sampler expands the prior by e^{int beta / 2} (12-fold on the default VP schedule)
    and funnel10's log-weights reach 1e23 in the first batch. (Berner et al.'s code starts the score at an
    interpolation between the prior's and the target's scores for the same reason; here the target's score enters
    through the learned Langevin gain.)

    ``forward(t, x, features=None)``: t a float or a (n,) tensor on the grid; ``features`` the Langevin
    feature at x when the caller has it (``uses_features`` says whether the control takes it)."""

    def __init__(self, reference, feature: Optional[Callable[[Tensor], Tensor]] = None, hidden: int = 64,
                 depth: int = 2, n_freq: int = 4, parametrisation: str = "control"):
        super().__init__()
        if parametrisation not in ("control", "score"):
            raise ValueError(f"parametrisation must be 'control' or 'score'; got {parametrisation!r}")
        self.net = MLPPolicy(reference.dim, reference.dim, reference.T, hidden=hidden, depth=depth, n_freq=n_freq,
                             feature=feature)
        self.uses_features = feature is not None
        self.parametrisation, self.step_index = parametrisation, reference.step_index
        g, w = reference.g.clamp(min=1e-12), reference.w[:-1]
        # the reference's marginal score -x / w_i (coefficient 0 where w_i = 0: a start at the origin, x = 0)
        prior = torch.where(w > 0, -reference.g / w.clamp(min=1e-300), torch.zeros_like(w))
        self.register_buffer("c1", (-2.0 * reference.k / g + prior).float())
        self.register_buffer("c2", reference.g.float())

    def on_grid(self, ts: Tensor) -> Callable[..., Tensor]:
        """``u(i, x, features=None)`` at the grid times ``ts`` (see :meth:`MLPPolicy.on_grid`)."""
        net = self.net.on_grid(ts)
        if self.parametrisation == "control":
            return net
        idx = [self.step_index(t) for t in ts.tolist()]
        c1, c2 = [float(self.c1[j]) for j in idx], [float(self.c2[j]) for j in idx]
        col1, col2 = (torch.tensor(c, device=ts.device, dtype=ts.dtype).unsqueeze(-1) for c in (c1, c2))

        def u(i, x, features=None):
            if isinstance(i, slice):
                return col1[i] * x + col2[i] * net(i, x, features)
            return c1[i] * x + c2[i] * net(i, x, features)
        return u

    def grid_recorder(self, ts: Tensor) -> "GridRecorder":
        """``u(i, x, features=None)`` at the grid times ``ts`` evaluated without autograd, whose ``stacked()``
        gives the controls of the calls (n, K, d) differentiable in the parameters through one batched
        backward pass (:mod:`controlsamp.control.grid_mlp`): a rollout with detached states."""
        rec = GridRecorder(self.net, ts)
        if self.parametrisation == "control":
            return rec
        idx = [self.step_index(t) for t in ts.tolist()]
        c1 = torch.tensor([float(self.c1[j]) for j in idx], device=ts.device, dtype=ts.dtype)
        c2 = torch.tensor([float(self.c2[j]) for j in idx], device=ts.device, dtype=ts.dtype)
        return _ScoreRecorder(rec, c1, c2)

    def forward(self, t, x: Tensor, features: Optional[Tensor] = None) -> Tensor:
        out = self.net(t, x, features)
        if self.parametrisation == "control":
            return out
        i = self.step_index(t)
        if isinstance(i, Tensor):
            i = i.to(self.c1.device)
            c1, c2 = self.c1[i].unsqueeze(1).to(x.dtype), self.c2[i].unsqueeze(1).to(x.dtype)
        else:
            c1, c2 = float(self.c1[i]), float(self.c2[i])
        return c1 * x + c2 * out


class _ScoreRecorder:
    """A :class:`GridRecorder` of the score network s with u = c1(t) x + c2(t) s(t, x) (DIS)."""

    def __init__(self, rec: GridRecorder, c1: Tensor, c2: Tensor):
        self.rec, self.c1, self.c2 = rec, c1, c2
        self._c1, self._c2 = c1.tolist(), c2.tolist()

    def __call__(self, i: int, x: Tensor, features: Optional[Tensor] = None) -> Tensor:
        return self._c1[i] * x + self._c2[i] * self.rec(i, x, features)

    def stacked(self) -> Tensor:
        s = self.rec.stacked()
        K = s.shape[1]
        xs = self.rec.xs[: K * self.rec.n].reshape(K, self.rec.n, -1).transpose(0, 1)
        return self.c1[:K].reshape(1, K, 1) * xs + self.c2[:K].reshape(1, K, 1) * s

    def functional(self, value: Tensor, derivative: Callable[[int, int], Tensor]) -> Tensor:
        # dF/ds_i = c2_i dF/du_i (the c1 x term does not depend on the parameters)
        return self.rec.functional(value, lambda lo, hi: self.c2[lo:hi].reshape(-1, 1, 1) * derivative(lo, hi))


def frozen(policy: nn.Module) -> Callable[..., Tensor]:
    """``policy`` as a callable with its parameters cut from the graph (the gradient still flows through the
    inputs): the control inside the "sticking the landing" terms."""
    params = {k: v.detach() for k, v in policy.named_parameters()}
    return lambda *args: torch.func.functional_call(policy, params, args)


def make_policy(policy, problem, **kwargs) -> nn.Module:
    """A policy from a name ("mlp", "affine", "mlp+grad") or an nn.Module given as is."""
    if isinstance(policy, nn.Module):
        return policy
    d, m = problem.dim, problem.control_dim
    if policy == "mlp":
        return MLPPolicy(d, m, problem.T, **kwargs)
    if policy == "mlp+grad":
        return MLPPolicy(d, m, problem.T, feature=terminal_control_feature(problem), **kwargs)
    if policy == "affine":
        return AffinePolicy(d, m, problem.T, problem.steps)
    raise ValueError(f"policy must be 'mlp', 'mlp+grad', 'affine' or an nn.Module; got {policy!r}")


def terminal_control_feature(problem) -> Callable[[Tensor], Tensor]:
    r"""h(x) = -R^{-1} B' grad g(x) / 2: the optimal control at t = T, as a policy feature."""
    M = -0.5 * torch.linalg.solve(problem.R, problem.B.T)  # (m, d)

    def feature(x: Tensor) -> Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(call_with_graph(problem.g, xg, "terminal_cost").sum(), xg)
        return grad @ M.to(x.dtype).T.to(x.device)

    return feature
