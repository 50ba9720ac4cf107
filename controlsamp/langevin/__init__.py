"""Layer 4: Langevin algorithms. `mala` holds MALA as pure init / step kernels (used by the samplers' local
search)."""
from . import mala

__all__ = ["mala"]
