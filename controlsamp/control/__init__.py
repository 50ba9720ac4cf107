"""Layer 3: stochastic optimal control. `ControlProblem` and its sampling case `SamplingProblem`, policies,
the objectives (one module each), `solve`."""
from . import objectives
from .objectives import Batch, LogWeightObjective, Objective, get_objective
from .policies import AffinePolicy, FourierTime, MLPPolicy, SamplerControl, make_policy, terminal_control_feature
from .problem import ControlProblem, Paths
from .sampling import SamplingProblem, check_target
from .solve import Solution, solve

__all__ = ["ControlProblem", "SamplingProblem", "Paths", "solve", "Solution", "MLPPolicy", "AffinePolicy",
           "FourierTime", "SamplerControl", "make_policy", "terminal_control_feature", "objectives", "Objective",
           "LogWeightObjective", "Batch", "get_objective", "check_target"]
