r"""VarGrad / trajectory balance with the batch-mean log Z (Richter, Boustati, Nüsken, Ruiz & Akyildiz 2020,
"VarGrad"; Zhang et al. 2023, "TB-avg"):

.. math:: \mathcal L(u) = \frac1n\sum_j \big(\mathrm{sg}[\overline{\log w}] - \log w_j\big)^2,

whose gradient is (n - 1)/n times the log-variance's: the batch mean is trajectory balance's optimal log Z.
Both are kept because the literature reports them as two methods."""
from __future__ import annotations

from .base import LogWeightObjective


class VarGrad(LogWeightObjective):
    name = "vargrad"

    def of_log_weights(self, log_w):
        return ((log_w.mean().detach() - log_w) ** 2).mean()
