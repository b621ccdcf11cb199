"""Ensemble training: one compiled epoch for all members, the convergence rule, the hooks
inside the epoch program and between the programs, and what the trainer can do to and measure
of the network dynamics (flossing, adaptive α, diagnostics)."""

from ._convergence import ConvergenceTracker
from ._diagnostics import dynamics_diagnostics, exact_step_gradients, forcing_gain, update_diagnostics
from ._dynamics import (Analysis, Flossing, adapt_alpha, analysis_key, analysis_streams, evaluation_key, floss_cell,
                        forced_jacobian_norms, held_out_loss, lyapunov_key, sampled_jacobian_norms, task_lyapunov)
from ._data import batch_keys, epoch_data, fixed_dataset, member_keys, pad_into_batches, trims_padding
from ._ensemble import EnsembleResult, EnsembleTrainer, Member, Schedule
from ._hooks import AbstractEpochHook, AdaptiveAlpha, DynamicsDiagnostics, FeedbackDiagnostics, GradientAlignment
from ._host_hooks import AbstractHostHook, GradientFlossing, HeldOutLoss, HostRun, LyapunovExponents
from ._online import ContinualSchedule, ContinualTrainer
from ._step import MemberState, clip_by_global_norm, make_step, with_clip
from ._shards import COMPACT_ENV, MAX_SHARD_SIZE, THREADS_ENV, Shards, default_shards, threads_from_env, usable_cores

__all__ = ["ConvergenceTracker", "EnsembleResult", "EnsembleTrainer", "Member", "Schedule", "member_keys",
           "held_out_loss", "evaluation_key",
           "MemberState", "make_step", "clip_by_global_norm", "with_clip", "batch_keys", "epoch_data", "fixed_dataset",
           "pad_into_batches", "trims_padding", "AbstractEpochHook", "AdaptiveAlpha", "DynamicsDiagnostics", "FeedbackDiagnostics",
           "GradientAlignment", "AbstractHostHook", "HostRun", "GradientFlossing", "LyapunovExponents", "HeldOutLoss",
           "ContinualSchedule", "ContinualTrainer",
           "Analysis", "Flossing", "adapt_alpha", "analysis_key", "analysis_streams", "floss_cell", "forced_jacobian_norms", "lyapunov_key",
           "sampled_jacobian_norms", "COMPACT_ENV", "MAX_SHARD_SIZE", "THREADS_ENV", "Shards", "default_shards", "threads_from_env", "usable_cores",
           "task_lyapunov", "dynamics_diagnostics", "exact_step_gradients", "forcing_gain", "update_diagnostics"]
