"""Layer 4: Langevin algorithms and Monte Carlo baselines, batched in torch over chains.

=================  ==============================================================  =========================
module             holds                                                           source
=================  ==============================================================  =========================
`proposal`         the (preconditioned) Langevin proposal and MH ratio              Roberts & Tweedie 1996
`ula`, `mala`      ULA and MALA as pure init / step kernels; step adaptation        Roberts & Tweedie 1996
`chains`           `run_chains`: warm-up adaptation, then frozen-kernel draws
`underdamped`      BAOAB, OBABO; CLD with the exact linear kernel (SSCS splitting)   Leimkuhler & Matthews 2013;
                                                                                   Dockhorn et al. 2022
`diagnostics`      acceptance rate, split / rank R-hat, multi-chain ESS             Vehtari et al. 2021
`optim`            SGLD, TUSLA, TheoPouLa as torch optimisers                       Welling & Teh 2011;
                                                                                   Lovas et al. 2023;
                                                                                   Lim & Sabanis 2021
`smc`              AIS and SMC with adaptive tempering, systematic resampling       Neal 2001; Del Moral et al. 2006
=================  ==============================================================  =========================
"""
from . import chains, diagnostics, mala, optim, proposal, smc, ula, underdamped
from .chains import run_chains
from .diagnostics import acceptance_rate, ess, rhat
from .optim import SGLD, TUSLA, TheoPouLa
from .proposal import Preconditioner, target_log_density

__all__ = ["proposal", "ula", "mala", "chains", "smc", "underdamped", "diagnostics", "optim", "run_chains",
           "Preconditioner", "target_log_density", "acceptance_rate", "rhat", "ess", "SGLD", "TUSLA",
           "TheoPouLa"]
