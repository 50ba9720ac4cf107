"""GridRecorder: the blocked parameter gradient of recorded MLP evaluations equals autograd's (float64)."""
import pytest
import torch

from controlsamp.control.grid_mlp import GridRecorder
from controlsamp.control.policies import MLPPolicy

F64 = torch.float64


def _policy(dim, depth, feature):
    torch.manual_seed(0)
    pol = MLPPolicy(dim, dim, T=1.0, hidden=16, depth=depth, n_freq=3, feature=feature).to(F64)
    for p in pol.parameters():  # leave the zero-initialised output layers: a generic point
        torch.nn.init.normal_(p, std=0.4)
    return pol


def _grads(pol, loss):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(pol.parameters()))])


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("langevin", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 50])
def test_stacked_and_functional_gradients_equal_autograd(depth, langevin, chunk):
    n, K, d = 7, 5, 3
    feature = (lambda x: torch.sin(x)) if langevin else None
    pol = _policy(d, depth, feature)
    ts = torch.linspace(0, 0.8, K, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, d, generator=gen, dtype=F64) for _ in range(K)]
    w = torch.randn(n, K, d, generator=gen, dtype=F64)  # cotangents of the controls
    # autograd through K separate calls
    u_ref = torch.stack([pol(float(ts[i]), xs[i]) for i in range(K)], 1)
    g_ref = _grads(pol, (w * u_ref).sum())
    # recorded: values equal, stacked() and functional() give autograd's gradient
    rec = GridRecorder(pol, ts, chunk=chunk)
    u = torch.stack([rec(i, xs[i]) for i in range(K)], 1)
    assert not u.requires_grad
    assert torch.allclose(u, u_ref.detach(), atol=1e-12, rtol=0)
    g_stacked = _grads(pol, (w * rec.stacked()).sum())
    assert torch.allclose(g_stacked, g_ref, atol=1e-11, rtol=1e-11)
    rec = GridRecorder(pol, ts, chunk=chunk)  # one backward pass per recording (as autograd's graphs)
    u = torch.stack([rec(i, xs[i]) for i in range(K)], 1)
    F = (w * u).sum((1, 2))  # a per-path function of the controls with dF_j/du_i = w[j, i]
    g_fun = _grads(pol, rec.functional(F, lambda lo, hi: w[:, lo:hi].transpose(0, 1)).sum())
    assert torch.allclose(g_fun, g_ref, atol=1e-11, rtol=1e-11)


def test_calls_out_of_order_are_refused():
    pol = _policy(2, 2, None)
    rec = GridRecorder(pol, torch.linspace(0, 0.5, 4, dtype=F64))
    rec(0, torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="grid order"):
        rec(2, torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="chunk"):
        GridRecorder(pol, torch.linspace(0, 0.5, 4, dtype=F64), chunk=0)


def test_live_recordings_keep_their_arrays_finished_ones_are_reused_and_the_oldest_past_the_pool_refuses():
    """Several recordings alive at once (the shards of one process) each keep their arrays and differentiate
    exactly; a recording whose backward pass has run gives its arrays to the next one; past POOL_SLOTS live
    recordings the oldest's arrays are taken and its backward pass refuses."""
    from controlsamp.control.grid_mlp import POOL_SLOTS
    n, K, d = 5, 4, 2
    pol = _policy(d, 2, None)
    ts = torch.linspace(0, 0.5, K, dtype=F64)
    xs = [torch.randn(n, d, dtype=F64) for _ in range(K)]
    w = torch.randn(n, K, d, dtype=F64)

    def record(scale):
        rec = GridRecorder(pol, ts)
        for i in range(K):
            rec(i, scale * xs[i])
        return rec

    def exact(scale):
        return _grads(pol, (w * torch.stack([pol(float(ts[i]), scale * xs[i]) for i in range(K)], 1)).sum())

    first, second = record(1.0), record(2.0)
    assert second.xs.data_ptr() != first.xs.data_ptr()  # both alive: their own arrays
    u_first, u_second = first.stacked(), second.stacked()
    assert torch.allclose(_grads(pol, (w * u_second).sum()), exact(2.0), atol=1e-11)
    assert torch.allclose(_grads(pol, (w * u_first).sum()), exact(1.0), atol=1e-11)
    third = record(3.0)  # both have been differentiated: an old array is reused
    assert third.xs.data_ptr() in (first.xs.data_ptr(), second.xs.data_ptr())
    assert torch.allclose(_grads(pol, (w * third.stacked()).sum()), exact(3.0), atol=1e-11)
    live = [record(1.0 + k) for k in range(POOL_SLOTS)]  # third was differentiated: POOL_SLOTS alive now
    outputs = [rec.stacked() for rec in live]
    extra = record(10.0)  # one more than the pool holds: the oldest live recording loses its arrays
    assert extra.xs.data_ptr() == live[0].xs.data_ptr()
    with pytest.raises(RuntimeError, match="differentiate one batch"):
        torch.autograd.grad((w * outputs[0]).sum(), list(pol.parameters()))
    assert torch.allclose(_grads(pol, (w * outputs[1]).sum()), exact(2.0), atol=1e-11)
    assert torch.allclose(_grads(pol, (w * extra.stacked()).sum()), exact(10.0), atol=1e-11)
