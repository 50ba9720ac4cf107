r"""Trajectory balance with a known normaliser: when log Z is known (a normalised benchmark target, or a value
from a long SMC run), the balance condition :math:`\log w \equiv \log Z` of the optimal control can be imposed
directly,

.. math:: \mathcal L(u) = \frac1n\sum_j \big(\log Z - \log w_j\big)^2
          = \mathrm{Var}[\log w] + \big(\log Z - \overline{\log w}\big)^2,

the log-variance plus the squared ELBO gap of the batch; zero exactly at the optimum, on paths of any
behaviour law (Malkin et al. 2022's trajectory balance with log Z fixed instead of learned). It is the
README's example of adding an objective: this file is the whole change."""
from __future__ import annotations

from .base import LogWeightObjective


class KnownLogZ(LogWeightObjective):
    name = "known_log_Z"

    def __init__(self, log_Z: float = 0.0):
        super().__init__()
        self.value = float(log_Z)

    def of_log_weights(self, log_w):
        return ((self.value - log_w) ** 2).mean()
