"""Shared pieces of the sampler and bridge tests: the exact Föllmer control as a policy, the drift error,
and a simulated Ctrl-C for the resume tests."""
from __future__ import annotations

import torch
from torch import nn

import controlsamp as cs


class FollmerControl(nn.Module):
    """u*(t, x) = b_Föllmer(t, x) / sigma, the optimal PIS control, as a policy module."""

    def __init__(self, follmer: cs.exact.SchrodingerFollmer):
        super().__init__()
        self.fol = follmer
        self.unused = nn.Parameter(torch.zeros(1))  # a module with a parameter, like a network

    def forward(self, t, x):
        t = torch.as_tensor(t).reshape(-1)
        if t.numel() == 1:
            return (self.fol.drift(float(t), x.double()) / self.fol.sigma).to(x.dtype)
        out = torch.empty_like(x)
        for tv in t.unique():
            m = t == tv
            out[m] = (self.fol.drift(float(tv), x[m].double()) / self.fol.sigma).to(x.dtype)
        return out


def drift_error(sampler, follmer, n: int = 2000, seed: int = 1) -> float:
    r"""Relative L2 error of the learned drift against the Föllmer drift along the model's own paths:
    sqrt( sum_i E|b_theta(t_i, X_i) - b*(t_i, X_i)|^2 / sum_i E|b*(t_i, X_i)|^2 )."""
    xs = sampler.simulate(n, torch.Generator().manual_seed(seed)).xs
    num = den = 0.0
    for i in range(sampler.steps):
        t = i * sampler.reference.h
        b = sampler.drift(t, xs[:, i]).double()
        bs = follmer.drift(t, xs[:, i].double())
        num += float(((b - bs) ** 2).sum(1).mean())
        den += float((bs ** 2).sum(1).mean())
    return (num / den) ** 0.5


def gaussian_target(d: int, seed: int = 0) -> cs.targets.Gaussian:
    """N(m, S) with a non-zero mean and a random covariance with eigenvalues in about [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    A = 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
    mean = torch.linspace(-1.0, 1.0, d, dtype=torch.float64) + 0.5
    return cs.targets.Gaussian(mean, A @ A.T + 0.5 * torch.eye(d, dtype=torch.float64))


def two_mode_mixture() -> cs.targets.GaussianMixture:
    return cs.targets.GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.5], [1.5, -0.5]]),
                                      0.3 * torch.eye(2).expand(2, 2, 2))


ess = cs.metrics.ess  # normalised ESS from log-weights (one implementation, in the library)


def interrupt_on_call(obj, name: str, n: int) -> None:
    """Make ``obj.name`` raise KeyboardInterrupt on its n-th call (a Ctrl-C at a known point of training);
    ``del obj.name`` restores the class's method."""
    method, calls = getattr(obj, name), {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return method(*args, **kwargs)

    setattr(obj, name, wrapped)
