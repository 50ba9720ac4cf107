"""`Sampler`: what every sampler of the package provides (the diffusion samplers and the Monte Carlo
baselines alike), so that a training job needs no probing of which kind it holds."""
from __future__ import annotations

from typing import Optional, Protocol, Tuple, runtime_checkable

import torch

Tensor = torch.Tensor


@runtime_checkable
class Sampler(Protocol):
    """Attributes: ``name``; ``trainable`` (whether ``fit`` trains anything); ``weighted`` (whether
    ``sample`` returns weighted particles that are resampled before sample-based metrics, as SMC's are, rather
    than draws of the model with importance weights); ``default_loss``; ``target``; ``target_evals`` (energy
    evaluations so far)."""

    name: str
    trainable: bool
    weighted: bool
    default_loss: Optional[str]
    target_evals: int

    def fit(self, iters: int, batch: int, **options) -> "Sampler":
        """Train (or nothing, for samplers that adapt within each run)."""

    def sample(self, n: int, seed: int = 0) -> Tuple[Tensor, Tensor]:
        """n samples (n, d) and their log importance weights (n,) float64."""

    def log_Z(self, n: int, seed: int = 0) -> float:
        """An estimate of log Z from n paths or particles."""

    def eubo_log_weights(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Optional[Tensor]:
        """log w of paths that end at exact target samples x (their mean is the EUBO), or None when the sampler
        has no path law to evaluate them under."""

    def save(self, path: str) -> None:
        """Write the sampler's state."""

    def load(self, path: str) -> "Sampler":
        """Read what :meth:`save` wrote into a sampler built with the same arguments."""
