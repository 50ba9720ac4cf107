"""Test-session settings: one torch thread per worker (pytest-xdist runs one worker per core)."""
import torch

torch.set_num_threads(1)
