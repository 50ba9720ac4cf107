"""Layer 2: SDE integration. torchsde serves the adjoint methods; `euler_maruyama` keeps whole paths
and their noise for the losses that train on detached paths."""
from .brownian import GridBrownian
from .euler import euler_maruyama

__all__ = ["euler_maruyama", "GridBrownian"]
