"""Layer 1: target densities (energies), by class or by name."""
from .base import Target
from .datasets import DATASETS, checkerboard, circles, eight_gaussians, get_dataset, moons, sample_dataset, spirals
from .evaluation import TargetEvaluator
from .funnel import Funnel
from .gaussian import Gaussian, GaussianMixture
from .manywell import ManyWell
from .particles import (CentreOfMassFree, DoubleWellParticles, LennardJones, centre_of_mass_free_basis,
                        pairwise_distances, remove_mean)
from .registry import get, names, register

__all__ = ["Target", "TargetEvaluator", "Gaussian", "GaussianMixture", "Funnel", "ManyWell", "DoubleWellParticles",
           "LennardJones",
           "CentreOfMassFree", "centre_of_mass_free_basis", "pairwise_distances", "remove_mean", "get", "names", "register",
           "DATASETS", "get_dataset", "sample_dataset", "moons", "circles", "eight_gaussians", "checkerboard", "spirals"]
