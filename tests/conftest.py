"""Test-session settings.

- One torch thread per worker (pytest-xdist runs one worker per core).
- Hypothesis is derandomised by default (fixed seeds, as for every other statistical test here): a
  given commit draws the same examples on every machine, so CI cannot fail on a draw that the
  author never saw. ``HYPOTHESIS_PROFILE=explore make test`` draws fresh random examples (and more
  of them) to search for new counterexamples.
"""
import os

import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
