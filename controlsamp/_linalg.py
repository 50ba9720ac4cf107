"""Small float64 linear-algebra helpers for symmetric matrices (one place for each)."""
from __future__ import annotations

import torch


def symmetrize(m: torch.Tensor) -> torch.Tensor:
    return 0.5 * (m + m.transpose(-1, -2))


def sym_power(m: torch.Tensor, p: float) -> torch.Tensor:
    """M^p for a symmetric positive (semi-)definite M, through its eigendecomposition."""
    w, v = torch.linalg.eigh(symmetrize(m))
    w = w.clamp_min(0.0) if p > 0 else w
    return symmetrize((v * w.pow(p).unsqueeze(-2)) @ v.transpose(-1, -2))


def sym_sqrt(m: torch.Tensor) -> torch.Tensor:
    """The symmetric square root M^{1/2}."""
    return sym_power(m, 0.5)


def sym_inv_sqrt(m: torch.Tensor) -> torch.Tensor:
    """M^{-1/2} for symmetric positive definite M."""
    return sym_power(m, -0.5)


def logdet(m: torch.Tensor) -> torch.Tensor:
    """log det M for symmetric positive definite M (Cholesky)."""
    return 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(symmetrize(m)), dim1=-2, dim2=-1)).sum(-1)


def solve_spd(m: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """M^{-1} b for symmetric positive definite M."""
    return torch.cholesky_solve(b, torch.linalg.cholesky(symmetrize(m)))
