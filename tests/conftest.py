"""Test-session settings.

- One torch thread per worker (pytest-xdist runs one worker per core).
- Global torch and numpy seeds are reset before every test (see ``_fixed_global_seed``).
- Hypothesis is derandomised by default (fixed seeds, as for every other statistical test here): a
  given commit draws the same examples on every machine, so CI cannot fail on a draw that the
  author never saw. ``HYPOTHESIS_PROFILE=explore make test`` draws fresh random examples (and more
  of them) to search for new counterexamples.
"""
import os

import numpy as np
import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _fixed_global_seed():
    """Every test starts from the same global torch and numpy seeds, whatever ran before it on its
    xdist worker: a test that draws from the global generator is then reproducible on any machine."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield
