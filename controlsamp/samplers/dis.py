r"""The time-reversed diffusion sampler (Berner, Richter & Ullrich 2024, "An optimal control perspective on
diffusion-based generative modeling"): the sampler is the time reversal of a variance-preserving noising
process :math:`dY = -\tfrac12\beta Y\,d\tau + \sigma\sqrt\beta\,dB` started at the target, with a learned
score s_theta in place of grad log p_tau:

.. math:: dX_t = \big(\tfrac12\beta(T-t) X_t + \sigma^2\beta(T-t)\,s_\theta(t, X_t)\big)\,dt
          + \sigma\sqrt{\beta(T-t)}\,dW_t,\qquad X_0 \sim \mathcal N(0, \sigma^2 I).

Written on DDS's reference (the same stationary OU, reversible), this is the control
u = sqrt(beta) x / sigma + sigma sqrt(beta) s_theta: the same path space and log-weights as DDS, with the
network parametrising the score rather than the control (``parametrisation="score"``). The network is the
score's residual from the prior's, s_theta = -x / sigma^2 + r_theta, so an untrained DIS is the reference (as an
untrained DDS is) and u = sigma sqrt(beta) r_theta: the score's natural scale, where DDS learns u directly (see
:class:`~controlsamp.control.policies.SamplerControl`).
"""
from __future__ import annotations

from .dds import DDS


class DIS(DDS):
    """``DIS(target, steps=100, sigma=1.0, T=1.0, schedule="linear", beta_min=0.1, beta_max=10.0, **options)``:
    DDS's reference with the score parametrisation."""

    name = "dis"

    def __init__(self, target, *args, **kwargs):
        kwargs.setdefault("parametrisation", "score")
        super().__init__(target, *args, **kwargs)
        self.config.update(sampler="dis")
