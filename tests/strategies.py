"""Hypothesis strategies shared by the tests: random SPD matrices, dimensions, noise levels, horizons."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def spd_from_seed(seed: int, d: int, log10_cond: float, scale: float) -> np.ndarray:
    """A random SPD matrix: Haar rotation, eigenvalues log-spaced over ``10**log10_cond``, times ``scale``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    q = q * np.sign(np.diag(r))
    eig = scale * 10.0 ** (log10_cond * rng.uniform(0.0, 1.0, size=d))
    if d > 1:
        eig[0], eig[-1] = scale, scale * 10.0 ** log10_cond  # hit the condition number exactly
    m = (q * eig) @ q.T
    return 0.5 * (m + m.T)


@st.composite
def spd(draw, d: int, max_log10_cond: float = 3.0, min_scale: float = 0.1, max_scale: float = 10.0):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    cond = draw(st.floats(0.0, max_log10_cond))
    scale = draw(st.floats(min_scale, max_scale))
    return spd_from_seed(seed, d, cond, scale)


@st.composite
def vector(draw, d: int, bound: float = 3.0):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return np.random.default_rng(seed).uniform(-bound, bound, size=d)


def log_uniform(lo: float, hi: float):
    """A float drawn log-uniformly in [lo, hi] (noise levels and horizons over decades)."""
    return st.floats(np.log10(lo), np.log10(hi)).map(lambda e: float(10.0 ** e))
