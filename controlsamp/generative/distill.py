r"""Distillation of a score model into a smaller student: approximate score matching against the teacher.

A teacher :math:`\hat\epsilon_{\rm T}` (a trained :class:`~.model.DiffusionModel`, or an exact score,
:class:`~.source.ExactScore`) and a student :math:`\hat\epsilon_\theta` with fewer parameters on the same reference
process. The student regresses the teacher's prediction at noised inputs rather than the drawn noise:

.. math:: \min_\theta\ \mathbb E_{t, x_0, \epsilon}\,\frac{\lambda(t)}{\sigma_t^2}\,
          \big|\hat\epsilon_\theta(t, x_t) - \hat\epsilon_{\rm T}(t, x_t)\big|^2, \qquad
          x_t = \alpha_t x_0 + \sigma_t\epsilon,

with :math:`x_0` from the data (the inputs are noised as in denoising score matching; only the target changes).
Its minimiser over all functions is the teacher itself, and unlike DSM the objective has no irreducible part (the
conditional noise's variance), so the gradient noise is that of the teacher–student gap alone. This is knowledge
distillation (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network", arXiv:1503.02531)
applied to the noise prediction; the target swap is :func:`.score_matching.score_matching_loss`'s ``teacher``
and the training is :meth:`.model.DiffusionModel.fit`'s (its loop, EMA, checkpoints and resume).
"""
from __future__ import annotations

from typing import Optional

from .model import DiffusionModel, check_teacher
from .source import ScoreSource

__all__ = ["distill", "parameter_count"]


def parameter_count(model) -> int:
    """The number of trainable parameters of a DiffusionModel's network (or of an nn.Module)."""
    module = getattr(model, "network", model)
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def distill(teacher: ScoreSource, data, hidden: int = 32, depth: int = 2, parametrisation: str = "eps",
            t_min: Optional[float] = None, ema: float = 0.999, seed: int = 0, device=None, dtype=None, student: Optional[DiffusionModel] = None,
            **fit_options) -> DiffusionModel:
    r"""A student :class:`~.model.DiffusionModel` (an MLP of width ``hidden`` and depth ``depth``, on the teacher's
    reference, ``t_min`` default the teacher's or 1e-3 if that is lower, EMA decay ``ema``) trained to regress the teacher's noise estimate on noised ``data``
    (see the module docstring); or ``student``, an existing model to train. ``fit_options`` go to
    :meth:`~.model.DiffusionModel.fit` (``iters``, ``batch``, ``lr``, ``weighting``, ``checkpoint``, ...)."""
    if student is None:
        if not isinstance(teacher, ScoreSource):
            raise ValueError(f"teacher must be a score source (DiffusionModel, ExactScore or another ScoreSource); "
                             f"got {type(teacher).__name__}")
        student = DiffusionModel(teacher.reference, parametrisation=parametrisation, hidden=hidden, depth=depth,
                                 t_min=max(teacher.t_min, 1e-3) if t_min is None else t_min,
                                 velocity_var=getattr(teacher, "velocity_var", None), ema=ema, seed=seed,
                                 device=device if device is not None else getattr(teacher, "device", "cpu"),
                                 dtype=dtype)
    check_teacher(teacher, student)
    return student.fit(data, teacher=teacher, **fit_options)
