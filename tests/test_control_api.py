"""ControlProblem and solve(): clear errors, NaN reports, save/load, interruption and exact resume."""
import numpy as np
import pytest
import torch
from torch import nn

import controlsamp as cs


def _lq(**kw):
    base = dict(dim=2, drift=lambda t, x: -x, sigma=0.5, terminal_cost=lambda x: (x ** 2).sum(1),
                running_cost=lambda t, x: (x ** 2).sum(1), x0=[1.0, -1.0], steps=10)
    base.update(kw)
    return cs.ControlProblem(**base)


@pytest.mark.parametrize("kw, match", [
    (dict(sigma=np.ones((3, 2))), "sigma"),
    (dict(sigma=-1.0), "sigma"),
    (dict(control_matrix=np.ones((3, 1))), "control_matrix"),
    (dict(control_cost=[[1.0, 2.0], [2.0, 1.0]]), "control_cost"),
    (dict(x0=[1.0, 2.0, 3.0]), "x0"),
    (dict(T=0.0), "T"),
    (dict(steps=0), "steps"),
    (dict(terminal_cost=None), "terminal_cost"),
])
def test_problem_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        _lq(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(drift=lambda t, x: torch.cat([x, x], 1)), r"drift must return a tensor of shape \(8, 2\)"),
    (dict(terminal_cost=lambda x: x), r"terminal_cost must return a tensor of shape \(8,\)"),
    (dict(running_cost=lambda t, x: x.sum(1) * torch.nan), "running_cost returned NaN"),
])
def test_solve_checks_shapes_and_values_first(kw, match):
    with pytest.raises(ValueError, match=match):
        cs.solve(_lq(**kw), iters=2, progress=False)


def test_policy_returning_nan_is_reported():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, t, x):
            return x * torch.nan + self.w

    with pytest.raises(ValueError, match="policy returned NaN"):
        cs.solve(_lq(), policy=Bad(), iters=2, progress=False)


def test_loss_becoming_nan_names_the_iteration():
    calls = {"n": 0}

    def g(x):
        calls["n"] += 1
        return (x ** 2).sum(1) * (torch.nan if calls["n"] > 3 else 1.0)

    with pytest.raises(ValueError, match="at iteration"):
        cs.solve(_lq(terminal_cost=g), method="backprop", iters=10, progress=False)


def test_method_and_policy_names():
    with pytest.raises(ValueError, match="method must be one of"):
        cs.solve(_lq(), method="nope", iters=1, progress=False)
    with pytest.raises(ValueError, match="policy must be"):
        cs.solve(_lq(), policy="nope", iters=1, progress=False)
    with pytest.raises(ValueError, match="log_variance.*relative-entropy"):
        cs.solve(_lq(control_matrix=[[1.0], [0.0]]), method="log_variance", iters=1, progress=False)


@pytest.mark.parametrize("policy", ["mlp", "mlp+grad", "affine"])
def test_save_and_load_round_trip(policy, tmp_path):
    problem = _lq()
    sol = cs.solve(problem, method="adjoint_matching", policy=policy, iters=5, lr=1e-2, progress=False)
    path = tmp_path / "sol.pt"
    sol.save(str(path))
    back = cs.Solution.load(str(path), problem)
    x = torch.randn(7, 2)
    for t in (0.0, 0.35, 0.9):
        assert torch.equal(sol.policy(t, x), back.policy(t, x))
    assert back.history == sol.history and back.method == "adjoint_matching"
    assert sol.policy(0.5, x).shape == (7, 2)


@pytest.mark.parametrize("method", ["adjoint", "log_variance"])
def test_interrupted_run_resumes_exactly(method, tmp_path):
    """An interrupted run saves a checkpoint; resuming it gives the parameters of an uninterrupted run."""
    problem = _lq(control_matrix=None)
    straight = cs.solve(problem, method=method, iters=12, lr=1e-2, seed=3, progress=False)
    calls = {"n": 0}

    def drift(t, x):
        calls["n"] += 1
        if calls["n"] == 7 * problem.steps + 3:  # in the middle of iteration 7
            raise KeyboardInterrupt
        return -x

    ckpt = str(tmp_path / "run.pt")
    with pytest.raises(KeyboardInterrupt):
        cs.solve(_lq(drift=drift), method=method, iters=12, lr=1e-2, seed=3, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=False)["iteration"] > 0
    resumed = cs.solve(problem, method=method, iters=12, lr=1e-2, seed=3, checkpoint=ckpt, resume=True,
                       progress=False)
    assert len(resumed.history["loss"]) == 12
    for a, b in zip(straight.module.parameters(), resumed.module.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_solution_cost_standard_error_shrinks_like_root_n():
    sol = cs.solve(_lq(), method="backprop", iters=3, progress=False)
    _, se1 = sol.cost(4000, seed=0)
    _, se2 = sol.cost(16000, seed=0)
    assert 0.4 < se2 / se1 < 0.6


# ------------------------------------------------------------------------------------ issue 14 regressions
@pytest.mark.parametrize("drift, running", [(None, None), (lambda t, x: torch.zeros_like(x), None),
                                            (None, lambda t, x: torch.ones(x.shape[0], dtype=x.dtype)),
                                            (lambda t, x: torch.ones_like(x), lambda t, x: x.new_zeros(x.shape[0]))])
def test_adjoint_matching_with_drift_and_running_cost_independent_of_x(drift, running):
    """Adjoint matching differentiates f and q in x: for ones that do not depend on x (including drift=None)
    the lean adjoint is constant, a_i = grad g(X_K) (it used to fail with "element 0 of tensors does not
    require grad"). Here g = |x|^2: a_i = 2 X_K at every step."""
    problem = cs.ControlProblem(2, drift, 1.0, lambda x: (x * x).sum(1), running_cost=running, steps=5)
    sol = cs.solve(problem, method="adjoint_matching", iters=3, batch=8, progress=False)
    assert np.isfinite(sol.history["loss"]).all()
    paths = problem.on_policy_paths(sol.module, 4, torch.Generator().manual_seed(0))
    adj = problem.lean_adjoint(paths)
    assert torch.allclose(adj, (2 * paths.xs[:, -1]).unsqueeze(1).expand_as(adj))


def test_a_drift_computed_through_numpy_is_refused_where_it_is_differentiated():
    """The relative entropy and adjoint matching differentiate the drift: one computed through numpy would
    train with a wrong (zero) gradient, so solve() refuses it up front; log-variance needs only its values."""
    numpy_drift = _lq(drift=lambda t, x: torch.as_tensor(-x.detach().numpy()))
    for method in ("adjoint", "backprop", "adjoint_matching"):
        with pytest.raises(ValueError, match="drift.*torch"):
            cs.solve(numpy_drift, method=method, iters=1, batch=4, progress=False)
    kl = cs.ControlProblem(2, lambda t, x: torch.as_tensor(-x.detach().numpy()), 1.0, lambda x: (x ** 2).sum(1),
                           steps=5)
    cs.solve(kl, method="log_variance", iters=2, batch=4, progress=False)
    cost_through_numpy = _lq(terminal_cost=lambda x: torch.as_tensor((x.detach().numpy() ** 2).sum(1)))
    with pytest.raises(ValueError, match="terminal_cost"):
        cs.solve(cost_through_numpy, method="adjoint", iters=1, batch=4, progress=False)


def test_solve_dtype_follows_torch_default_and_bad_devices_are_named():
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        sol = cs.solve(_lq(), method="backprop", iters=1, batch=4, progress=False)
        assert next(sol.module.parameters()).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
    for device in ("gpu", "tpu", "cuda:99"):
        with pytest.raises(ValueError, match="device"):
            cs.solve(_lq(), iters=1, device=device)
    with pytest.raises(ValueError, match="grad_clip"):
        cs.solve(_lq(), iters=1, grad_clip=0.0)


def test_mps_is_refused_for_its_missing_float64(monkeypatch):
    """Even where MPS is available (faked here), it is refused with the reason: no float64 on Apple's backend."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    with pytest.raises(ValueError, match="device.*float64"):
        cs.solve(_lq(), iters=1, device="mps")
    with pytest.raises(ValueError, match="device.*float64"):
        cs.samplers.PIS(cs.targets.get("gmm25"), device="mps")


def test_solution_policy_refuses_non_finite_states():
    sol = cs.solve(_lq(), method="backprop", iters=1, batch=4, progress=False)
    assert sol.policy(0.5, np.zeros((3, 2))).shape == (3, 2)
    with pytest.raises(ValueError, match=r"\bx\b.*NaN"):
        sol.policy(0.5, torch.tensor([[0.0, float("inf")]]))
