"""Layer 1: target densities (energies), by class or by name."""
from .base import Target
from .gaussian import Gaussian, GaussianMixture
from .registry import get, names, register

__all__ = ["Target", "Gaussian", "GaussianMixture", "get", "names", "register"]
