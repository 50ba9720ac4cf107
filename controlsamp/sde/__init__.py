"""Layer 2: SDE integration, one piece each: the discretisation schemes (each declaring its orders), the
discretised isotropic reference, the one rollout and the discrete Girsanov log-ratio, and the one torchsde
wrapper (the stochastic adjoint) with its grid Brownian motion."""
from .augmented import AugmentedSDE, path_costs
from .brownian import GridBrownian
from .reference import DiscretisedReference
from .rollout import ChainPaths, controlled_paths, log_ratio_control_derivative, path_log_ratio, reference_reversal, rollout, step_log_ratio
from .schemes import SCHEMES, EulerMaruyama, Exponential, GaussianScheme, ReversibleHeun, Scheme, get_scheme

__all__ = ["Scheme", "GaussianScheme", "EulerMaruyama", "Exponential", "ReversibleHeun", "SCHEMES", "get_scheme",
           "DiscretisedReference", "rollout", "controlled_paths", "ChainPaths", "log_ratio_control_derivative", "reference_reversal", "path_log_ratio",
           "step_log_ratio", "AugmentedSDE", "path_costs", "GridBrownian"]
