r"""Score-based generative models learned from data (layer 4): a score network on a reference process of
:mod:`controlsamp.processes` trained by denoising score matching (hybrid score matching for CLD), its samplers
and its likelihood.

=====================  ==========================================================================================
module                 holds
=====================  ==========================================================================================
``kernel``             the perturbation kernel of each reference (isotropic; CLD with the velocity marginalised)
``parametrisation``    eps / score / x0 / v outputs and how each becomes the noise estimate and the score
``score_matching``     the DSM / HSM objective, its weightings and time sampling
``source``             the ``ScoreSource`` protocol and ``ExactScore`` (closed-form scores of mixture data)
``model``              ``DiffusionModel``: network, EMA, ``fit`` through the package's training loop, save / load
``sampling``           reverse-time SDE (Euler–Maruyama, exponential), predictor–corrector, annealed Langevin, SSCS
``ode``                the probability-flow ODE: Euler, DDIM, Heun, adaptive Dormand–Prince (torchdiffeq), scipy
``genie``              GENIE's second-order Taylor step: exact JVP derivative or a learned head (``GenieHead``)
``distill``            a smaller student trained on a teacher's noise predictions (``distill``, ``parameter_count``)
``dpdm``               differentially private training (DP-SGD with noise multiplicity; opacus's accountants)
``data``               data sets for generative modelling: the 2-d sets, scikit-learn's 8x8 digits (dequantised),
                       ``.npy`` files
``likelihood``         log-likelihood through the probability-flow ODE (exact or Hutchinson divergence), bits/dim,
                       dequantisation
``riemannian``         Riemannian score-based models on the sphere and torus (``RiemannianDiffusionModel``, DSM / ISM),
                       reverse geodesic random walk, PF-ODE sampler and likelihood, ``ExactManifoldScore``
=====================  ==========================================================================================
"""
from .kernel import CLDKernel, IsotropicKernel, make_kernel
from . import data, dpdm
from .likelihood import (DIVERGENCES, bits_per_dim, cld_data_log_likelihood, dequantisation_log_scale, dequantise,
                         log_likelihood)
from .distill import distill, parameter_count
from .genie import GenieHead, eps_and_derivative, fit_genie_head, genie_sample
from .model import DiffusionModel
from .ode import ADAPTIVE, ODE_METHODS, ORDERS, pf_drift, pf_ode_sample
from .parametrisation import PARAMETRISATIONS
from .sampling import ODE_SAMPLERS, SAMPLERS, SDE_SAMPLERS, annealed_langevin, predictor_corrector, reverse_sde, sample, sscs
from .score_matching import T_SAMPLINGS, WEIGHTINGS, TimeSampler, score_matching_loss
from .source import ExactScore, ScoreSource, reference_prior
from . import riemannian
from .riemannian import ExactManifoldScore, RiemannianDiffusionModel

__all__ = ["data", "dpdm", "DiffusionModel", "ExactScore", "ScoreSource", "reference_prior", "make_kernel", "IsotropicKernel",
           "CLDKernel", "PARAMETRISATIONS", "WEIGHTINGS", "T_SAMPLINGS", "TimeSampler", "score_matching_loss",
           "sample", "reverse_sde", "predictor_corrector", "annealed_langevin", "sscs", "SDE_SAMPLERS", "ODE_SAMPLERS", "SAMPLERS",
           "pf_drift", "pf_ode_sample", "genie_sample", "GenieHead", "distill", "parameter_count", "fit_genie_head", "eps_and_derivative", "ORDERS", "ADAPTIVE", "ODE_METHODS", "log_likelihood",
           "cld_data_log_likelihood", "bits_per_dim", "dequantise", "dequantisation_log_scale", "DIVERGENCES",
           "riemannian", "RiemannianDiffusionModel", "ExactManifoldScore"]
