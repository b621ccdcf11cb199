"""Configs, the name registry, and the jobs built from them."""

from ._config import (ALPHA_GRID, AnalysisConfig, FlossConfig, ForcingConfig, ModelConfig, OptimConfig, RuleConfig,
                      TaskConfig, TrainConfig)
from ._registry import FORCINGS, METHOD_COLORS, MODELS, RULES, TASKS
from ._compare import COMPARE_ALPHAS, CompareResult, compare, compare_verdicts, method_label
from ._load import LoadedRun, StoredRunError, load_run
from ._summary import best_setting, summarize, wilson_interval
from ._train import TrainResult, build_task, build_trainer, train
from ._preflight import InfeasibleConfig, estimate_memory, preflight

__all__ = ["ALPHA_GRID", "AnalysisConfig", "FlossConfig", "ForcingConfig", "ModelConfig", "OptimConfig", "RuleConfig", "TaskConfig",
           "TrainConfig", "FORCINGS", "METHOD_COLORS", "MODELS", "RULES", "TASKS", "TrainResult", "build_task",
           "build_trainer", "train", "COMPARE_ALPHAS", "CompareResult", "compare", "compare_verdicts", "method_label",
           "best_setting", "summarize", "wilson_interval", "InfeasibleConfig", "estimate_memory", "preflight",
           "LoadedRun", "StoredRunError", "load_run"]
