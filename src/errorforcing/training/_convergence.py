"""The Error Forcing paper's success criterion, tracked per ensemble member (SPEC §5)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ConvergenceTracker:
    """Per-member state of the convergence/divergence rule, updated once per epoch on the host.

    Converged: validation loss below `threshold` for `patience` consecutive epochs; the
    converged epoch is the last of those (1-based). Diverged: a non-finite loss or one above
    `divergence`. Either freezes the member (`active` turns False); nothing is ever re-seeded.
    """

    n_members: int
    threshold: float
    patience: int = 10
    divergence: float = 1e4

    def __post_init__(self):
        self.streak = np.zeros(self.n_members, np.int64)
        self.converged_epoch = np.full(self.n_members, -1, np.int64)
        self.diverged = np.zeros(self.n_members, bool)
        self.epochs_run = np.zeros(self.n_members, np.int64)

    @property
    def converged(self) -> np.ndarray:
        return self.converged_epoch >= 0

    @property
    def active(self) -> np.ndarray:
        return ~(self.converged | self.diverged)

    def update(self, epoch: int, val_loss: np.ndarray, train_loss: np.ndarray | None = None) -> None:
        """Record epoch `epoch` (1-based) for the members that were active during it."""
        val_loss = np.asarray(val_loss, np.float64)
        was_active = self.active
        bad = ~np.isfinite(val_loss) | (val_loss > self.divergence)
        if train_loss is not None:
            train_loss = np.asarray(train_loss, np.float64)
            bad |= ~np.isfinite(train_loss) | (train_loss > self.divergence)
        self.epochs_run[was_active] = epoch
        self.diverged |= was_active & bad
        below = was_active & ~bad & (val_loss < self.threshold)
        self.streak = np.where(below, self.streak + 1, np.where(was_active, 0, self.streak))
        newly = was_active & (self.streak >= self.patience)
        self.converged_epoch[newly] = epoch
