"""GridBrownian: increments are N(0, h) and independent, the seeded path is reproducible and additive."""
import math

import pytest
import torch

from controlsamp.sde import GridBrownian


def test_seeded_increments_are_gaussian_and_reproducible():
    n, K, T = 20000, 10, 2.0
    bm = GridBrownian.seeded(T, K, (n, 2), seed=5, dtype=torch.float64)
    h = T / K
    incs = torch.stack([bm(i * h, (i + 1) * h) for i in range(K)])  # (K, n, 2)
    z = incs / math.sqrt(h)
    assert abs(float(z.mean())) < 5 / math.sqrt(z.numel())
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / z.numel())
    corr = float((z[0] * z[1]).mean())  # independent steps
    assert abs(corr) < 5 / math.sqrt(z[0].numel())
    again = GridBrownian.seeded(T, K, (n, 2), seed=5, dtype=torch.float64)
    assert torch.equal(bm(0.4, 1.2), again(0.4, 1.2))
    assert torch.allclose(bm(0.0, 2.0), sum(incs), atol=1e-12)
    assert torch.allclose(bm(1.2, 0.4), -bm(0.4, 1.2))
    assert not torch.equal(bm(0.0, 0.2), GridBrownian.seeded(T, K, (n, 2), seed=6, dtype=torch.float64)(0.0, 0.2))


def test_stored_increments_and_off_grid_queries():
    # Increments are differences of the stored cumulative path, so they carry its round-off: compare
    # with an absolute tolerance of a few ulps of the path's magnitude (float64 here, seeded).
    dW = torch.randn(4, 3, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bm = GridBrownian(dW, 1.0)
    atol = 8 * torch.finfo(torch.float64).eps * float(dW.abs().sum())
    assert torch.allclose(bm(0.25, 1.0), dW[1:].sum(0), rtol=0, atol=atol)
    assert torch.allclose(bm(0.2500001, 0.5), dW[1], rtol=0, atol=atol)  # a float32 solver clock lands on the grid
    with pytest.raises(ValueError, match="off its grid"):
        bm(0.3, 0.5)
