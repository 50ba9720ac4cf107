"""Layer 3: stochastic optimal control. `ControlProblem`, policies, training methods, `solve`."""
from .policies import AffinePolicy, FourierTime, MLPPolicy, make_policy, terminal_control_feature
from .problem import ControlProblem
from .solve import Solution, solve

__all__ = ["ControlProblem", "solve", "Solution", "MLPPolicy", "AffinePolicy", "FourierTime", "make_policy",
           "terminal_control_feature"]
