"""errorforcing: train recurrent networks with error forcing, teacher forcing and local
learning rules, as seed × α ensembles in one compiled JAX program."""

from ._version import __version__
from . import forcing, models, rules, tasks, training
from .forcing import simulate
from . import analysis, experiments, store
from .experiments import LoadedRun, TrainConfig, TrainResult, load_run, train

__all__ = ["analysis", "forcing", "models", "rules", "tasks", "training", "experiments", "store", "simulate",
           "train", "TrainConfig", "TrainResult", "load_run", "LoadedRun", "__version__"]
