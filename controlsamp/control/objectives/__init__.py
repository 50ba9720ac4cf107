"""Training objectives, one module each, with one signature (see :mod:`.base`). Every module of this package
is imported here, so a new objective is one new file."""
import importlib
import pkgutil

from .base import REGISTRY, Batch, LogWeightObjective, Objective, get_objective

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Objective", "LogWeightObjective", "Batch", "REGISTRY", "get_objective"]
