"""errorforcing: train recurrent networks with error forcing, teacher forcing and local
learning rules, as seed × α ensembles in one compiled JAX program."""

from . import forcing, models, rules, tasks
from .forcing import simulate

__version__ = "0.1.0"

__all__ = ["forcing", "models", "rules", "tasks", "simulate", "__version__"]
