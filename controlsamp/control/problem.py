"""`ControlProblem`: a controlled SDE with additive noise and a cost to minimise."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch

from .._linalg import sym_sqrt
from .._validate import as_tensor, call_with_graph, check_dim, check_positive, check_spd, check_vector
from ..sde import rollout
from .policies import MLPPolicy, frozen as frozen_policy

Tensor = torch.Tensor
Fn = Callable[..., Tensor]


class Paths(NamedTuple):
    """Detached paths and what the objectives need of them: states xs (n, K+1, d); the standard normal
    noise that drove them (n, K, k) and the behaviour controls (n, K, m) (control problems); the model's step
    means (n, K, d) when the paths are the model's own (samplers); the log-rewards log pi~(x_K) (n,)
    (samplers); the Langevin features along the path (n, K, d) or None; the path costs (n,) (control
    problems); the terminal-cost gradient at x_K (n, d) where an objective needs it (adjoint matching on
    endpoint pairs: then xs holds only the endpoints, (n, 2, d)); the discrete Girsanov log-ratio of each
    path under the model that drew it (n,) float64 (samplers; differentiable in the policy's parameters when
    drawn for training)."""
    xs: Tensor
    noise: Optional[Tensor] = None
    controls: Optional[Tensor] = None
    means: Optional[Tensor] = None
    log_reward: Optional[Tensor] = None
    features: Optional[Tensor] = None
    cost: Optional[Tensor] = None
    terminal_grad: Optional[Tensor] = None
    log_ratio: Optional[Tensor] = None

    def detached_from_model(self) -> "Paths":
        """The same paths without what the model that drew them computed along them (means, log-ratio): an
        objective then evaluates the current policy along the states."""
        return self._replace(means=None, log_ratio=None)


def _zero_drift(t, x):
    return torch.zeros_like(x)


class ControlProblem:
    r"""Minimise over feedback controls u(t, x) in R^m

    .. math::
        J(u) = \mathbb{E}\Big[\int_0^T \big(q(t, X_t) + u^\top R\, u\big)\,dt + g(X_T)\Big],\qquad
        dX_t = \big(f(t, X_t) + B\,u(t, X_t)\big)\,dt + \sigma\,dW_t,\quad X_0 \sim \mu_0,

    with sigma state-independent (additive noise). Samplers are the case B = sigma, R = I/2, q = 0,
    g = log p_ref_T - log pi~, where int |u|^2/2 dt is KL(P^u | P^ref) (Zhang & Chen 2022; docs/architecture.md).

    Args:
        dim: state dimension d.
        drift: f(t, x) -> (n, d), t a float; ``None`` for f = 0.
        sigma: a scalar (sigma I), a (d,) vector (diagonal) or a (d, k) matrix.
        terminal_cost: g(x) -> (n,).
        running_cost: q(t, x) -> (n,), or ``None``.
        control_matrix: B, (d, m); default sigma (m = k).
        control_cost: R, (m, m) symmetric positive definite; default I/2.
        x0: initial law: ``None`` (the origin), a point (d,), a pair (mean, cov) for a Gaussian, or a
            callable ``(n, generator) -> (n, d)``.
        T: horizon; steps: number of time steps of the discretisation used by the solvers.
    """

    def __init__(self, dim: int, drift: Optional[Fn], sigma, terminal_cost: Fn, running_cost: Optional[Fn] = None,
                 control_matrix=None, control_cost=None, x0=None, T: float = 1.0, steps: int = 100):
        self.dim = d = check_dim(dim, "dim")
        self.drift = _zero_drift if drift is None else drift
        if not callable(self.drift):
            raise ValueError("drift must be a callable f(t, x) -> (n, dim) or None")
        if not callable(terminal_cost):
            raise ValueError("terminal_cost must be a callable g(x) -> (n,)")
        if running_cost is not None and not callable(running_cost):
            raise ValueError("running_cost must be a callable q(t, x) -> (n,) or None")
        self.terminal_cost, self.running_cost = terminal_cost, running_cost
        self.sigma = self._sigma_matrix(sigma, d)
        self.noise_dim = self.sigma.shape[1]
        if control_matrix is None:
            self.B = self.sigma.clone()
        else:
            self.B = as_tensor(control_matrix, "control_matrix")
            if self.B.ndim == 1 and d == 1:
                self.B = self.B.reshape(1, -1)
            if self.B.ndim != 2 or self.B.shape[0] != d:
                raise ValueError(f"control_matrix must have shape ({d}, m); got {tuple(self.B.shape)}")
        self.control_dim = m = self.B.shape[1]
        if control_cost is None:
            self.R = 0.5 * torch.eye(m, dtype=torch.float64)
        else:
            self.R = check_spd(control_cost, "control_cost", m)
        self.T = check_positive(T, "T")
        self.steps = check_dim(steps, "steps")
        self._x0 = self._initial_law(x0, d)

    @staticmethod
    def _sigma_matrix(sigma, d: int) -> Tensor:
        s = as_tensor(sigma, "sigma")
        if s.ndim == 0:
            return check_positive(float(s), "sigma") * torch.eye(d, dtype=torch.float64)
        if s.ndim == 1:
            if s.shape[0] != d:
                raise ValueError(f"sigma as a vector must have length dim = {d}; got {s.shape[0]}")
            if (s <= 0).any():
                raise ValueError("sigma as a vector must be positive")
            return torch.diag(s)
        if s.ndim != 2 or s.shape[0] != d:
            raise ValueError(f"sigma must be a scalar, a ({d},) vector or a ({d}, k) matrix; got {tuple(s.shape)}")
        return s

    @staticmethod
    def _initial_law(x0, d: int):
        if x0 is None:
            return ("point", torch.zeros(d, dtype=torch.float64))
        if callable(x0):
            return ("sampler", x0)
        if isinstance(x0, (tuple, list)) and len(x0) == 2 and not isinstance(x0[0], (int, float)):
            mean = check_vector(x0[0], "x0 mean", d)
            cov = check_spd(x0[1], "x0 covariance", d)
            return ("gaussian", (mean, sym_sqrt(cov)))
        return ("point", check_vector(x0, "x0", d))

    # ------------------------------------------------------------------------------------------
    @property
    def dt(self) -> float:
        return self.T / self.steps

    time_varying = False  # whether sigma_at / control_matrix_at depend on t

    def sigma_at(self, t) -> Tensor:
        """The noise matrix sigma(t), (d, k), float64 (constant here; the samplers' problem varies it)."""
        return self.sigma

    def control_matrix_at(self, t) -> Tensor:
        """B(t), (d, m), float64 (constant here)."""
        return self.B

    def sample_x0(self, n: int, generator: Optional[torch.Generator] = None, device=None,
                  dtype=torch.float32) -> Tensor:
        """n draws of X_0, (n, d)."""
        kind, law = self._x0
        if kind == "point":
            return law.to(device=device, dtype=dtype).expand(n, self.dim).clone()
        if kind == "gaussian":
            mean, root = (v.to(device=device, dtype=dtype) for v in law)
            z = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
            return mean + z @ root.T
        x = law(n, generator)
        if not isinstance(x, torch.Tensor) or x.shape != (n, self.dim):
            raise ValueError(f"x0 sampler must return a tensor of shape ({n}, {self.dim}); "
                             f"got {getattr(x, 'shape', type(x))}")
        return x.to(device=device, dtype=dtype)

    def kl_scale(self) -> Optional[float]:
        r"""rho when B = sigma and R = (rho/2) I: then J / rho is a relative-entropy (KL) control problem,
        J/rho = E[int q/rho + |u|^2/2 dt + g/rho], whose optimal path measure is the reference reweighted by
        exp(-(int q dt + g)/rho). ``None`` otherwise (the log-variance loss needs this structure)."""
        if self.B.shape != self.sigma.shape or not torch.allclose(self.B, self.sigma, rtol=1e-10, atol=1e-12):
            return None
        rho = 2.0 * float(self.R[0, 0])
        if not torch.allclose(self.R, 0.5 * rho * torch.eye(self.control_dim, dtype=torch.float64), rtol=1e-10):
            return None
        return rho

    # paths ---------------------------------------------------------------------------------------
    def simulate(self, policy, x0: Tensor, generator: Optional[torch.Generator] = None,
                 steps: Optional[int] = None, noise: Optional[Tensor] = None, record: bool = True) -> Paths:
        r"""Detached Euler–Maruyama paths :math:`X_{i+1} = X_i + (f + B u)(t_i, X_i) h + \sigma \sqrt h \xi_i`
        under ``policy(t, x)``, with their costs :math:`\sum_i h (q + u^\top R u)(t_i, X_i) + g(X_K)`, on
        ``steps`` steps (default the problem's). ``record=False`` keeps only the costs and the end points
        (xs of shape (n, 1, d)): what a Monte-Carlo cost estimate needs, in memory independent of the steps."""
        K = self.steps if steps is None else steps
        h = self.T / K
        R = self.R.to(device=x0.device, dtype=x0.dtype)
        us = []
        mats = [(self.control_matrix_at(i * h).to(device=x0.device, dtype=x0.dtype),
                 math.sqrt(h) * self.sigma_at(i * h).to(device=x0.device, dtype=x0.dtype).T) for i in range(K)]

        def mean(i, x):
            t = i * h
            u = policy(t, x)
            if record:
                us.append(u)
            run[0] = run[0] + self.q(t, x) + ((u @ R) * u).sum(1)
            return x + (self.f(t, x) + u @ mats[i][0].T) * h

        run = [0.0]
        with torch.no_grad():
            xs, _, noise = rollout(mean, lambda i, xi: xi @ mats[i][1], x0, K, noise, generator,
                                   noise_dim=self.noise_dim, record=record)
            xs = xs if record else xs.unsqueeze(1)
            cost = h * run[0] + self.g(xs[:, -1])
        if not record:
            return Paths(xs, cost=cost)
        return Paths(xs, noise=noise, controls=torch.stack(us, 1), cost=cost)

    def on_policy_paths(self, policy, n: int, generator=None, device=None, dtype=torch.float32) -> Paths:
        """n detached paths of the current control from X_0 ~ mu_0."""
        return self.simulate(policy, self.sample_x0(n, generator, device=device, dtype=dtype), generator)

    def control_fn(self, policy, frozen: bool = False):
        """u(t, x) of ``policy`` as a callable; ``frozen``: its parameters cut from the graph (the gradient
        still flows through x)."""
        return frozen_policy(policy) if frozen else policy

    def controls_along(self, policy, paths: Paths) -> Tensor:
        """u(t_i, X_i) along the paths, (n, K, m), differentiable in the policy's parameters: one batched call
        for an :class:`~controlsamp.control.policies.MLPPolicy` (it takes a tensor of times), else a call per
        step."""
        xs = paths.xs
        n, K = xs.shape[0], xs.shape[1] - 1
        h = self.T / K
        if isinstance(policy, MLPPolicy):
            t = (torch.arange(K, device=xs.device, dtype=xs.dtype) * h).repeat(n)
            return policy(t, xs[:, :-1].reshape(n * K, self.dim)).reshape(n, K, -1)
        return torch.stack([policy(i * h, xs[:, i]) for i in range(K)], 1)

    def lean_adjoint(self, paths: Paths) -> Tensor:
        r"""The lean adjoint of the Euler scheme along detached paths, a_i for i = 0..K, (n, K+1, d):
        :math:`a_K = \nabla g(X_K)`, :math:`a_i = a_{i+1} + h[(\nabla_x f)^\top a_{i+1} + \nabla_x q](t_i, X_i)`
        (vector–Jacobian products)."""
        xs = paths.xs
        K = xs.shape[1] - 1
        h = self.T / K
        has_f, has_q = self.drift is not _zero_drift, self.running_cost is not None
        with torch.enable_grad():
            xT = xs[:, -1].detach().requires_grad_(True)
            (a,) = torch.autograd.grad(call_with_graph(self.g, xT, "terminal_cost").sum(), xT)
            out = [a]
            for i in reversed(range(K)):
                if has_f or has_q:  # (with neither, the adjoint is constant in time)
                    t = i * h
                    x = xs[:, i].detach().requires_grad_(True)
                    s = 0.0
                    if has_f:
                        s = s + (call_with_graph(lambda z: self.f(t, z), x, "drift") * a).sum()
                    if has_q:
                        s = s + call_with_graph(lambda z: self.q(t, z), x, "running_cost").sum()
                    (grad,) = torch.autograd.grad(s, x, allow_unused=True)
                    a = a + h * grad if grad is not None else a
                out.append(a)
        return torch.stack(out[::-1], 1).detach()

    def adjoint_matching_targets(self, adjoint: Tensor) -> Tensor:
        r"""The control paired with the lean adjoint: :math:`u_i = -\tfrac12 R^{-1} B(t_i)^\top a_{i+1}`, since
        u_i moves X_{i+1} (the discrete maximum principle). (n, K, m)."""
        K = adjoint.shape[1] - 1
        h = self.T / K
        R = self.R.to(device=adjoint.device, dtype=adjoint.dtype)
        if not self.time_varying:
            M = 0.5 * torch.linalg.solve(R, self.control_matrix_at(0.0).to(adjoint).T)
            return -adjoint[:, 1:] @ M.T
        out = []
        for i in range(K):
            M = 0.5 * torch.linalg.solve(R, self.control_matrix_at(i * h).to(adjoint).T)
            out.append(-adjoint[:, i + 1] @ M.T)
        return torch.stack(out, 1)

    def log_weights(self, policy, paths: Paths) -> Tensor:
        r"""log w = log dP*/dP^u of Euler paths driven by any behaviour control v (Nüsken & Richter 2021), for a
        relative-entropy problem (B = sigma, R = (rho/2) I), up to the constant log Z:

        .. math:: \log w = -\sum_i \big[u_i\cdot(\Delta W_i + v_i h) - \tfrac h2 |u_i|^2\big]
                  - \frac1\rho\Big(\sum_i h\,q(t_i, X_i) + g(X_K)\Big),

        differentiable in the policy's parameters. (n,), float64."""
        rho = self.kl_scale()
        if rho is None:
            raise ValueError("log-weight objectives need a relative-entropy problem: control_matrix = sigma and "
                             "control_cost = (rho/2) I (then J/rho is KL to the reweighted reference); use "
                             "'relative_entropy' or 'adjoint_matching' otherwise")
        xs, K = paths.xs, paths.xs.shape[1] - 1
        h = self.T / K
        u = self.controls_along(policy, paths)
        dW = math.sqrt(h) * paths.noise
        lw = -((u * (dW + paths.controls * h)).sum(-1) - 0.5 * h * (u * u).sum(-1)).double().sum(1)
        run = sum(h * self.q(i * h, xs[:, i]).double() for i in range(K))
        return lw - (run + self.g(xs[:, -1]).double()) / rho

    # evaluation with checks ---------------------------------------------------------------------
    def f(self, t: float, x: Tensor) -> Tensor:
        return self.drift(t, x)

    def q(self, t: float, x: Tensor) -> Tensor:
        if self.running_cost is None:
            return x.new_zeros(x.shape[0])
        return self.running_cost(t, x)

    def g(self, x: Tensor) -> Tensor:
        return self.terminal_cost(x)

    def check_differentiable(self, n: int = 8, device=None, dtype=torch.float32) -> None:
        """Check that the drift, the running cost and the terminal cost have autograd graphs to x (what the
        relative entropy through the SDE and adjoint matching differentiate): one written through numpy or
        ``.detach()`` is a ValueError naming it, a function that does not depend on x passes (its gradient
        is 0). Called by :func:`controlsamp.solve` for those methods."""
        x = self.sample_x0(n, torch.Generator(device=device or "cpu").manual_seed(0), device=device, dtype=dtype)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            if self.drift is not _zero_drift:
                call_with_graph(lambda z: self.drift(0.0, z), x, "drift")
            if self.running_cost is not None:
                call_with_graph(lambda z: self.running_cost(0.0, z), x, "running_cost")
            call_with_graph(self.g, x, "terminal_cost")

    def check(self, policy=None, n: int = 8, device=None, dtype=torch.float32) -> None:
        """Evaluate every piece on a few points and raise a ValueError naming what has the wrong shape
        or returns NaN/inf. Called by :func:`controlsamp.solve` before training."""
        x = self.sample_x0(n, torch.Generator(device=device or "cpu").manual_seed(0), device=device, dtype=dtype)
        checks = [("drift", self.drift(0.0, x), (n, self.dim)), ("terminal_cost", self.g(x), (n,))]
        if self.running_cost is not None:
            checks.append(("running_cost", self.running_cost(0.0, x), (n,)))
        if policy is not None:
            with torch.no_grad():
                checks.append(("policy", policy(0.0, x), (n, self.control_dim)))
        for name, out, shape in checks:
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
                raise ValueError(f"{name} must return a tensor of shape {shape} for x of shape {tuple(x.shape)}; "
                                 f"got {tuple(getattr(out, 'shape', ())) or type(out).__name__}")
            if not torch.isfinite(out).all():
                raise ValueError(f"{name} returned NaN or inf at the initial states")
