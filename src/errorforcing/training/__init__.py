"""Ensemble training: one compiled epoch for all members, the convergence rule."""

from ._convergence import ConvergenceTracker
from ._ensemble import EnsembleResult, EnsembleTrainer, Member, Schedule, member_keys

__all__ = ["ConvergenceTracker", "EnsembleResult", "EnsembleTrainer", "Member", "Schedule", "member_keys"]
