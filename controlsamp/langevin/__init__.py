"""Layer 4: Langevin algorithms and Monte Carlo baselines, batched in torch over chains.

=================  ==============================================================  =========================
module             holds                                                           source
=================  ==============================================================  =========================
`proposal`         the (preconditioned) Langevin proposal and MH ratio              Roberts & Tweedie 1996
`ula`, `mala`      ULA and MALA as pure init / step kernels; step adaptation        Roberts & Tweedie 1996
`chains`           `run_chains`: warm-up adaptation, then frozen-kernel draws
`smc`              AIS and SMC with adaptive tempering, systematic resampling       Neal 2001; Del Moral et al. 2006
=================  ==============================================================  =========================
"""
from . import chains, mala, proposal, smc, ula
from .chains import run_chains
from .proposal import Preconditioner, target_log_density

__all__ = ["proposal", "ula", "mala", "chains", "smc", "run_chains", "Preconditioner", "target_log_density"]
