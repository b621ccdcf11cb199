"""Configs, the name registry, and the jobs built from them."""

from ._config import (ALPHA_GRID, AnalysisConfig, FlossConfig, ForcingConfig, ModelConfig, OptimConfig, RuleConfig,
                      TaskConfig, TrainConfig)
from ._registry import FORCINGS, METHOD_COLORS, MODELS, RULES, TASKS
from ._compare import COMPARE_ALPHAS, CompareResult, compare, compare_verdicts, save_dynamics
from ._load import LoadedRun, StoredRunError, load_run
from ._summary import METHOD_PREFIX, best_setting, method_label, summarize, wilson_interval
from ._train import TrainResult, build_task, build_trainer, train
from ._preflight import InfeasibleConfig, check_task, estimate_memory, preflight
from ._config import APPLIES, FLOSS_STEP_FIELDS, inapplicable, is_read, read_stored_spellings
from ._stats import (INCONCLUSIVE, LEVEL, NOT_REPRODUCED, REPRODUCED, SELECTIONS, Outcomes, compare_fractions,
                     directional_verdict, mann_whitney_less, wilcoxon_less)
from ._sweep import SpecError, SweepSpec, expand, job_problems, load_spec, parse_spec
from ._executors import Executor, make_executor
from ._driver import SweepOutcome, run_sweep
from ._status import sweep_status
from ._lyapunov import stored_spectra
from ._dynamics import check_input, compare_dynamics, member_dynamics

__all__ = ["ALPHA_GRID", "AnalysisConfig", "FlossConfig", "ForcingConfig", "ModelConfig", "OptimConfig", "RuleConfig", "TaskConfig",
           "TrainConfig", "FORCINGS", "METHOD_COLORS", "MODELS", "RULES", "TASKS", "TrainResult", "build_task",
           "build_trainer", "train", "COMPARE_ALPHAS", "CompareResult", "compare", "compare_verdicts", "save_dynamics",
           "METHOD_PREFIX", "method_label",
           "best_setting", "summarize", "wilson_interval", "InfeasibleConfig", "estimate_memory", "preflight",
           "LoadedRun", "StoredRunError", "load_run", "check_task", "APPLIES", "FLOSS_STEP_FIELDS", "inapplicable",
           "is_read", "read_stored_spellings", "INCONCLUSIVE", "LEVEL", "NOT_REPRODUCED", "REPRODUCED", "SELECTIONS", "Outcomes",
           "compare_fractions", "directional_verdict", "mann_whitney_less", "wilcoxon_less", "SpecError", "SweepSpec",
           "expand", "job_problems", "load_spec", "parse_spec", "Executor", "make_executor", "SweepOutcome",
           "run_sweep", "sweep_status", "stored_spectra", "check_input", "compare_dynamics", "member_dynamics"]
