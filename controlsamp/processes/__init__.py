r"""Linear reference SDEs with exact Gaussian kernels (layer 1).

Every process is :math:`dX_t = (A(t) X_t + a(t))\,dt + G(t)\,dW_t` on :math:`[0, T]` and implements the
:class:`LinearSDE` interface: ``drift_matrix``, ``drift_offset``, ``diffusion``, ``diffusion_cov``,
``drift``, ``transition(s, t) -> (Phi, c, Q)`` in closed form, ``marginal``, ``sample_marginal``,
``sample_path`` and ``sde()`` (a torchsde module).

=============  ======================================================  ==============================
process        SDE                                                     source
=============  ======================================================  ==============================
`Brownian`     :math:`dX = \sigma(t) dW`                               standard
`OU`           :math:`dX = -\theta X dt + \sigma dW`                   standard (Uhlenbeck–Ornstein)
`VP`           :math:`dX = -\beta(t) X/2\,dt + \sqrt{\beta(t)} dW`     Song et al. 2021; cosine:
                                                                       Nichol & Dhariwal 2021
`SubVP`        VP drift, :math:`g^2 = \beta(1 - e^{-2\int_0^t\beta})`           Song et al. 2021
`VE`           :math:`dX = \sqrt{d\sigma^2/dt}\,dW`                    Song et al. 2021
`CLD`          critically-damped Langevin in phase space (x, v)       Dockhorn et al. 2022
`Reversed`     :math:`dY = -k(T-s) Y ds + g(T-s) dW` (the linear part  Anderson 1982; Song et al. 2021
               of an isotropic reference's reverse-time SDE)
=============  ======================================================  ==============================
"""
from .base import IsotropicLinearSDE, LinearSDE, TorchSDE, lti_transition
from .brownian import Brownian
from .cld import CLD
from .ou import OU
from .reversed import Reversed
from .ve import VE
from .vp import VP, SubVP

__all__ = ["LinearSDE", "IsotropicLinearSDE", "TorchSDE", "lti_transition", "Brownian", "OU", "VP", "SubVP", "VE", "CLD", "Reversed"]
