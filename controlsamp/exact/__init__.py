"""Layer 2: closed forms, in float64 and vectorised over points.

Gaussian Schrödinger bridges (Brownian or linear reference), the Schrödinger–Föllmer drift for Gaussian
and mixture targets, the finite-horizon LQR, and distances between Gaussians.
"""
from .bridge import GaussianBridge
from .eot_benchmark import EOTBenchmarkPair
from .follmer import SchrodingerFollmer
from .gaussian import bures_map, bures_wasserstein, entropic_ot_cross_cov, entropic_ot_gaussian, gaussian_kl
from .lqr import LQR
from .noised import NoisedMixture
from .reference_bridge import sample_reference_bridge

__all__ = ["GaussianBridge", "SchrodingerFollmer", "LQR", "gaussian_kl", "bures_wasserstein", "bures_map",
           "entropic_ot_gaussian", "entropic_ot_cross_cov", "sample_reference_bridge", "EOTBenchmarkPair", "NoisedMixture"]
