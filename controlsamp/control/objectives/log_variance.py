r"""The log-variance divergence (Nüsken & Richter 2021, "Solving high-dimensional Hamilton–Jacobi–Bellman
PDEs using neural networks: perspectives from the theory of controlled diffusions and measures on path
space"; Richter & Berner 2024):

.. math:: \mathcal L(u) = \mathrm{Var}_{X \sim Q}\big[\log w_u(X)\big],

the variance over a batch of paths from any behaviour law Q; zero exactly at the optimal control, with
nothing differentiated through the paths (log Z drops out)."""
from __future__ import annotations

from .base import LogWeightObjective


class LogVariance(LogWeightObjective):
    name = "log_variance"
    aliases = ("lv",)

    def of_log_weights(self, log_w):
        return log_w.var()
