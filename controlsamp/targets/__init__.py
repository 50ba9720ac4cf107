"""Layer 1: target densities (energies), by class or by name."""
from .base import Target
from .funnel import Funnel
from .gaussian import Gaussian, GaussianMixture
from .manywell import ManyWell
from .particles import DoubleWellParticles, LennardJones, pairwise_distances, remove_mean
from .registry import get, names, register

__all__ = ["Target", "Gaussian", "GaussianMixture", "Funnel", "ManyWell", "DoubleWellParticles", "LennardJones",
           "pairwise_distances", "remove_mean", "get", "names", "register"]
