"""Training methods for ControlProblem: one module each, each exposing
``loss(problem, policy, x0, generator, entropy, ...) -> (loss tensor, on-policy cost estimate)``."""
from functools import partial

from . import adjoint, adjoint_matching, log_variance

METHODS = {
    "adjoint": partial(adjoint.loss, adjoint=True),
    "backprop": partial(adjoint.loss, adjoint=False),
    "log_variance": log_variance.loss,
    "adjoint_matching": adjoint_matching.loss,
}
