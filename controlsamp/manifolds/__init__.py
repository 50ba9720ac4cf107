r"""Riemannian manifolds for diffusions on curved spaces (layer 1): the sphere S^d and the flat torus T^d, with
exponential / logarithm maps, tangent projections, uniform laws, the Riemannian divergence and the geodesic
random walk (Brownian motion with generator Laplace–Beltrami / 2).

=====================  ==========================================================================================
module                 holds
=====================  ==========================================================================================
``base``               the ``Manifold`` interface, the divergence of a tangent field, the geodesic random walk
``sphere``             ``Sphere(d)``: unit vectors of R^{d+1}; longitude / latitude on S^2
``torus``              ``Torus(d)``: angles in [-pi, pi)^d; exact (wrapped normal) Brownian motion
``data``               longitude / latitude CSV tables onto S^2; the earth event sets (``load_earth``), if present
``heat``               exact heat kernels of S^d and T^d (log-density, score, draws); the zonal series; wrapped normals
``mixtures``           ``VonMisesFisherMixture``, ``WrappedNormalMixture``: density, score, draws, entropy, noised laws
=====================  ==========================================================================================
"""
from .base import Manifold
from .sphere import Sphere
from .torus import Torus, wrap
from . import data

__all__ = ["Manifold", "Sphere", "Torus", "wrap", "data"]
from . import heat, mixtures  # noqa: E402
from .heat import heat_kernel_log_prob, heat_kernel_score, sample_heat_kernel  # noqa: E402
from .mixtures import VonMisesFisherMixture, WrappedNormalMixture  # noqa: E402

__all__ += ["heat", "mixtures", "heat_kernel_log_prob", "heat_kernel_score", "sample_heat_kernel",
            "VonMisesFisherMixture", "WrappedNormalMixture"]
