"""`ControlProblem`: a controlled SDE with additive noise and a cost to minimise."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._linalg import sym_sqrt
from .._validate import as_tensor, check_dim, check_positive, check_spd, check_vector

Tensor = torch.Tensor
Fn = Callable[..., Tensor]


def _zero_drift(t, x):
    return torch.zeros_like(x)


class ControlProblem:
    r"""Minimise over feedback controls u(t, x) in R^m

    .. math::
        J(u) = \mathbb{E}\Big[\int_0^T \big(q(t, X_t) + u^\top R\, u\big)\,dt + g(X_T)\Big],\qquad
        dX_t = \big(f(t, X_t) + B\,u(t, X_t)\big)\,dt + \sigma\,dW_t,\quad X_0 \sim \mu_0,

    with sigma state-independent (additive noise). Samplers are the case B = sigma, R = I/2, q = 0,
    g = log p_ref_T - log pi~, where int |u|^2/2 dt is KL(P^u | P^ref) (Zhang & Chen 2022; DESIGN.md).

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

    def time_grid(self, device=None, dtype=torch.float32) -> Tensor:
        return torch.linspace(0.0, self.T, self.steps + 1, device=device, dtype=dtype)

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

    # evaluation with checks ---------------------------------------------------------------------
    def f(self, t: float, x: Tensor) -> Tensor:
        return self.drift(t, x)

    def q(self, t: float, x: Tensor) -> Tensor:
        if self.running_cost is None:
            return x.new_zeros(x.shape[0])
        return self.running_cost(t, x)

    def g(self, x: Tensor) -> Tensor:
        return self.terminal_cost(x)

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
