"""Closed forms between Gaussian laws: KL divergence, W2 (Bures) distance and map, entropic OT."""
from __future__ import annotations

import math

import torch

from .._linalg import logdet, solve_spd, sym_inv_sqrt, sym_sqrt, symmetrize
from .._validate import check_positive, check_spd, check_vector


def _pair(mean0, cov0, mean1, cov1):
    m0 = check_vector(mean0, "mean0")
    d = m0.shape[0]
    return m0, check_spd(cov0, "cov0", d), check_vector(mean1, "mean1", d), check_spd(cov1, "cov1", d)


def gaussian_kl(mean0, cov0, mean1, cov1) -> float:
    r"""KL(N(m_0, S_0) \| N(m_1, S_1)) =
    \tfrac12[\operatorname{tr}(S_1^{-1}S_0) + (m_1-m_0)^\top S_1^{-1}(m_1-m_0) - d + \log\det S_1 - \log\det S_0]."""
    m0, S0, m1, S1 = _pair(mean0, cov0, mean1, cov1)
    d = m0.shape[0]
    dm = (m1 - m0).unsqueeze(1)
    tr = torch.trace(solve_spd(S1, S0))
    quad = float((dm * solve_spd(S1, dm)).sum())
    return float(0.5 * (tr + quad - d + logdet(S1) - logdet(S0)))


def bures_wasserstein(mean0, cov0, mean1, cov1) -> float:
    r"""W2(N(m_0,S_0), N(m_1,S_1)) (not squared):
    W_2^2 = |m_0-m_1|^2 + \operatorname{tr}(S_0 + S_1 - 2(S_0^{1/2} S_1 S_0^{1/2})^{1/2})
    (Dowson & Landau 1982; Olkin & Pukelsheim 1982)."""
    m0, S0, m1, S1 = _pair(mean0, cov0, mean1, cov1)
    r0 = sym_sqrt(S0)
    cross = sym_sqrt(r0 @ S1 @ r0)
    w2sq = float(((m0 - m1) ** 2).sum() + torch.trace(S0 + S1 - 2 * cross))
    return math.sqrt(max(w2sq, 0.0))


def bures_map(cov0, cov1) -> torch.Tensor:
    r"""The matrix of the W2-optimal map x \mapsto m_1 + A(x - m_0) between centred Gaussians:
    A = S_0^{-1/2}(S_0^{1/2} S_1 S_0^{1/2})^{1/2} S_0^{-1/2} (symmetric positive definite)."""
    S0 = check_spd(cov0, "cov0")
    S1 = check_spd(cov1, "cov1", S0.shape[0])
    r0, ir0 = sym_sqrt(S0), sym_inv_sqrt(S0)
    return symmetrize(ir0 @ sym_sqrt(r0 @ S1 @ r0) @ ir0)


def entropic_ot_gaussian(mean0, cov0, mean1, cov1, eps: float) -> float:
    r"""Entropic OT between Gaussians for the cost |x - y|^2 (Janati et al. 2020; Mallasto et al. 2021):

    .. math:: \min_\pi \mathbb{E}_\pi|X - Y|^2 + \varepsilon\,\mathrm{KL}(\pi \| \mu_0\otimes\mu_1)
       = |m_0 - m_1|^2 + \operatorname{tr}(S_0 + S_1 - D) + d s (1 - \log 2s) + s \log\det(D + sI),

    with s = eps / 2 and D = (4 S_0^{1/2} S_1 S_0^{1/2} + s^2 I)^{1/2}. A Brownian reference sigma dW on
    [0, T] is the case eps = 2 sigma^2 T (the POT convention)."""
    m0, S0, m1, S1 = _pair(mean0, cov0, mean1, cov1)
    s = check_positive(eps, "eps") / 2.0
    d = m0.shape[0]
    eye = torch.eye(d, dtype=S0.dtype)
    r0 = sym_sqrt(S0)
    D = sym_sqrt(4.0 * r0 @ S1 @ r0 + s * s * eye)
    return float(((m0 - m1) ** 2).sum() + torch.trace(S0 + S1 - D) + d * s * (1 - math.log(2 * s))
                 + s * logdet(D + s * eye))


def entropic_ot_cross_cov(cov0, cov1, s2: float) -> torch.Tensor:
    r"""Cov(X_0, X_T) of the optimal entropic coupling for the cost |x-y|^2 / (2 s2), i.e. the static
    Schrödinger bridge of a Brownian reference with s2 = sigma^2 T (Janati et al. 2020; Bunne et al. 2023):

    .. math:: C = \tfrac12 (S_0^{1/2} D S_0^{-1/2} - s_2 I), \quad D = (4 S_0^{1/2} S_1 S_0^{1/2} + s_2^2 I)^{1/2},

    computed as C = 2 S_0^{1/2} X (D + s_2 I)^{-1} S_0^{-1/2} with X = S_0^{1/2} S_1 S_0^{1/2}, which is the
    same matrix without the cancellation of the first form when s_2 is large.
    """
    S0 = check_spd(cov0, "cov0")
    S1 = check_spd(cov1, "cov1", S0.shape[0])
    return _entropic_ot_cross_cov(S0, S1, check_positive(s2, "s2"))


def _entropic_ot_cross_cov(S0: torch.Tensor, S1: torch.Tensor, s2: float) -> torch.Tensor:
    """:func:`entropic_ot_cross_cov` on matrices the caller has checked (or computed: then the caller checks
    them with :func:`controlsamp._validate.check_internal_spd`, never under a user's argument name)."""
    eye = torch.eye(S0.shape[0], dtype=S0.dtype)
    r0, ir0 = sym_sqrt(S0), sym_inv_sqrt(S0)
    X = symmetrize(r0 @ S1 @ r0)
    D = sym_sqrt(4.0 * X + s2 * s2 * eye)
    # D - s2 I = 4 X (D + s2 I)^{-1} (X and D commute): no cancellation when s2 is large
    return 2.0 * r0 @ torch.linalg.solve(D + s2 * eye, X) @ ir0
