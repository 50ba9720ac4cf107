r"""Trajectory balance (Malkin, Jain, Bengio, Sun & Bengio 2022; for diffusions Lahlou et al. 2023, Zhang et
al. 2023) with its own learned scalar :math:`\log Z_\theta`:

.. math:: \mathcal L(u, \log Z_\theta) = \frac1n\sum_j \big(\log Z_\theta - \log w_j\big)^2,

on paths of any behaviour law; at the optimum :math:`\log w \equiv \log Z` and :math:`\log Z_\theta = \log Z`.
The parameter lives on this module (``log_Z``, float64), so it trains with its own learning rate
(``lr_log_Z`` in the samplers) and is saved with the objective."""
from __future__ import annotations

import torch
from torch import nn

from .base import LogWeightObjective


class TrajectoryBalance(LogWeightObjective):
    name = "trajectory_balance"
    aliases = ("tb",)

    def __init__(self, log_Z: float = 0.0):
        super().__init__()
        self.log_Z = nn.Parameter(torch.tensor(float(log_Z), dtype=torch.float64))

    def of_log_weights(self, log_w):
        return ((self.log_Z.to(log_w.device) - log_w) ** 2).mean()
