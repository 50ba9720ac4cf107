"""controlsamp: sampling, bridging and control with diffusions, checked against exact answers.

Layers (imports point down only): _validate, parallel, weights, training -> targets, processes, metrics -> exact, sde,
langevin -> control -> generative -> samplers, bridges -> train, cli. See docs/architecture.md.

Importing the package sets torch to one intra-op CPU thread unless you have chosen a count
(CONTROLSAMP_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS, or torch.set_num_threads before the import);
``set_threads(n)`` changes it, ``set_threads("auto")`` restores torch's default (see ``_threads``).
"""
from ._threads import apply_default as _apply_thread_default, set_threads

_apply_thread_default()
from . import control, exact, langevin, metrics, parallel, processes, samplers, sde, targets
from . import bridges, generative
from .control import ControlProblem, Solution, solve

__version__ = "0.1.0"
__all__ = ["targets", "processes", "exact", "sde", "control", "samplers", "generative", "langevin", "metrics", "parallel", "ControlProblem",
           "solve", "Solution", "set_threads"]
