"""The adjoint gradient equals backpropagation through the solver on the same Brownian path, and both
equal finite differences of the discretised cost."""
import numpy as np
import pytest
import torch

import controlsamp as cs
from controlsamp.sde import path_costs


def cost_through_solver(problem, pol, x0, entropy, solver="euler", adjoint=True):
    return path_costs(problem, pol, x0, entropy, list(pol.parameters()), solver, adjoint)


def _problem(steps=20):
    A = torch.tensor([[-0.5, 0.3], [0.1, -0.8]], dtype=torch.float64)
    return cs.ControlProblem(
        2, lambda t, x: x @ A.T + 0.1 * torch.sin(x), sigma=[[0.5, 0.1], [0.0, 0.4]],
        terminal_cost=lambda x: (x ** 2).sum(1) + 0.2 * x[:, 0] ** 4,
        running_cost=lambda t, x: 0.5 * (x ** 2).sum(1), control_matrix=[[1.0], [0.5]], control_cost=[[0.7]],
        x0=([0.5, -1.0], 0.2 * np.eye(2)), steps=steps)


def _policy(problem, kind):
    torch.manual_seed(0)
    pol = cs.control.make_policy(kind, problem).double()
    with torch.no_grad():
        for p in pol.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return pol


def _grads(problem, pol, solver, adjoint, x0, entropy=123):
    pol.zero_grad()
    cost_through_solver(problem, pol, x0, entropy, solver=solver, adjoint=adjoint).mean().backward()
    return torch.cat([p.grad.reshape(-1) for p in pol.parameters()]).clone()


@pytest.mark.parametrize("kind", ["affine", "mlp"])
def test_reversible_heun_adjoint_equals_backprop(kind):
    problem = _problem()
    pol = _policy(problem, kind)
    x0 = problem.sample_x0(16, torch.Generator().manual_seed(1), dtype=torch.float64)
    g_adj = _grads(problem, pol, "reversible_heun", True, x0)
    g_bp = _grads(problem, pol, "reversible_heun", False, x0)
    rel = float((g_adj - g_bp).norm() / g_bp.norm())
    assert rel < 1e-5, rel


def test_euler_adjoint_is_consistent_with_backprop():
    """Euler's adjoint solves the adjoint SDE with its own error: O(h) apart from backprop, shrinking with h."""
    rels = []
    for steps in (20, 80):
        problem = _problem(steps)
        pol = _policy(problem, "mlp")
        x0 = problem.sample_x0(16, torch.Generator().manual_seed(1), dtype=torch.float64)
        g_adj = _grads(problem, pol, "euler", True, x0)
        g_bp = _grads(problem, pol, "euler", False, x0)
        rels.append(float((g_adj - g_bp).norm() / g_bp.norm()))
    assert rels[0] < 0.1 and rels[1] < rels[0] / 2, rels


@pytest.mark.parametrize("solver", ["euler", "reversible_heun"])
def test_backprop_gradient_matches_finite_differences(solver):
    problem = _problem()
    pol = _policy(problem, "affine")
    x0 = problem.sample_x0(8, torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = {}
    for adjoint in (False, True):
        pol.zero_grad()
        cost_through_solver(problem, pol, x0, 7, solver=solver, adjoint=adjoint).mean().backward()
        grads[adjoint] = pol.K.grad.clone()
    eps = 1e-6
    for idx in [(0, 0, 0), (5, 0, 1), (19, 0, 0)]:
        vals = []
        for sgn in (1, -1):
            with torch.no_grad():
                pol.K[idx] += sgn * eps
                vals.append(float(cost_through_solver(problem, pol, x0, 7, solver=solver, adjoint=False).mean()))
                pol.K[idx] -= sgn * eps
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert abs(float(grads[False][idx]) - fd) < 1e-6 * (1 + abs(fd)), (idx, grads[False][idx], fd)
        if solver == "reversible_heun":
            assert abs(float(grads[True][idx]) - fd) < 1e-5 * (1 + abs(fd)), (idx, grads[True][idx], fd)
