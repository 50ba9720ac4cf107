"""Layer 4: diffusion samplers for unnormalised densities, each a target + a reference + a control network.

==========  =========================================================  ==========================
sampler     reference / parametrisation                                source
==========  =========================================================  ==========================
`PIS`       Brownian from the origin; network = control                Zhang & Chen 2022
`DDS`       stationary VP/OU, exponential integrator; network = control Vargas et al. 2023
`DIS`       same reference; network = score of the noising process      Berner et al. 2024
`ASBS`      Brownian from a Gaussian (or point) prior; adjoint matching  Liu et al. 2025
            of the control + corrector matching (a Schrödinger bridge)
`AIS`       annealed importance sampling, MALA moves (nothing to train)   Neal 2001
`SMC`       SMC, adaptive tempering, systematic resampling, MALA moves    Del Moral et al. 2006
`DiKL`      one-step generator x = g(z); reverse diffusive KL over VP     He et al. 2024
            noise levels (a DSM score model of its samples, MALA posterior
            estimates of the target's noised score)
`RTB`       a diffusion prior's reverse chain (controlsamp.generative);  Venkatraman et al. 2024
            posterior p(x) r(x) / Z by relative trajectory balance
==========  =========================================================  ==========================

``SAMPLERS`` (and the CLI's ``run``) hold the weighted samplers of a target alone; ``RTB`` also takes a prior, and
``DiKL``'s samples carry no importance weight.

Losses: every objective of :mod:`controlsamp.control.objectives` (``kl``, ``lv``, ``tb``, ``vargrad``,
``am``, ...); off-policy exploration, replay buffer and local search (:mod:`.offpolicy`, Sendera et al. 2024).
"""
from .asbs import ASBS
from .base import LOSSES, DiffusionSampler
from .dds import DDS
from .dikl import DiKL
from .dis import DIS
from .egnn import EGNNGenerator
from .montecarlo import AIS, SMC
from .pis import PIS
from .rtb import RTB, PosteriorProblem

SAMPLERS = {"pis": PIS, "dds": DDS, "dis": DIS, "asbs": ASBS, "ais": AIS, "smc": SMC}


def get(name: str):
    """The sampler class registered as ``name``."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: name must be one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


__all__ = ["DiffusionSampler", "PIS", "DDS", "DIS", "ASBS", "AIS", "SMC", "RTB", "PosteriorProblem", "DiKL", "EGNNGenerator", "LOSSES", "SAMPLERS", "get"]
