"""Layer 4: Schrödinger bridges by iterative proportional fitting (IPF) half-bridges.

Each solver alternates half-bridges (fit the time reversal of the current process, started from the
prescribed law at its other end) and is checked against :class:`controlsamp.exact.GaussianBridge` on
Gaussian ends. :class:`GaussianIPF` does so within Gaussian processes with affine drift, exactly by
moment equations or from simulated paths by least squares. :class:`DSB` (mean matching, De Bortoli et al.
2021) and :class:`DSBM` (bridge matching, Shi et al. 2023) learn both directions with neural drifts; the
half-bridge pieces they share are in :mod:`.halfbridge`.
"""
from .dsb import DSB
from .dsbm import DSBM
from .gaussian_ipf import GaussianIPF
from .riemannian import RiemannianDSB

__all__ = ["DSB", "DSBM", "GaussianIPF", "RiemannianDSB"]
