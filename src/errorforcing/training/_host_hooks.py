"""What the trainer runs on the host between its compiled programs, all through one interface:
gradient flossing, the members' Lyapunov exponents, the test loss after training, and yours.

The epoch hooks (`_hooks.AbstractEpochHook`) run inside the compiled epoch program; these run
before the first epoch, between two epochs and after the last, each as its own vmapped, jitted
program over the shards the members are in at that moment (`HostRun.map`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import equinox as eqx
import jax
import numpy as np

from ..models import AbstractCell
from ..tasks import AbstractTask
from ._convergence import ConvergenceTracker
from ._dynamics import (INTER_FLOSS, LYAPUNOV, PRE_FLOSS, TEST_LOSS, Flossing, analysis_streams, floss_cell,
                        held_out_loss, task_lyapunov)
from ._shards import Shards
from ._step import tree_where

Cells = list[AbstractCell]  # one cell per shard, batched over the shard's members
Measured = dict[str, np.ndarray]  # name -> [M], one value per ensemble member


@dataclasses.dataclass(frozen=True)
class HostRun:
    """What a host hook sees of the run: the members' current layout (`shards`: the cells a
    hook gets are one per shard), their convergence (`tracker`: `active`, `diverged`, ...) and
    their analysis keys ([M], `_dynamics.analysis_key`: from the seed alone)."""

    shards: Shards
    tracker: ConvergenceTracker
    analysis_keys: jax.Array
    programs: dict  # the trainer's compiled member functions, kept from call to call

    def map(self, member_fn: Callable[..., Any], *shard_args: list) -> list:
        """`member_fn` of one member, vmapped over each shard's members and jitted (once per
        trainer and function), on `shard_args` (lists with one entry per shard; array leaves
        are mapped over the members, other values are the same for all): one result per shard."""
        program = self.programs.get(member_fn)
        if program is None:
            program = self.programs[member_fn] = eqx.filter_jit(eqx.filter_vmap(member_fn))
        return self.shards.map(program, *shard_args)

    def keys(self, stream: int, epoch: int | None = None) -> list[jax.Array]:
        """Per shard, each member's key of analysis stream `stream` (folded with `epoch` if given)."""
        return self.shards.split(analysis_streams(self.analysis_keys, stream, epoch))

    def training(self) -> list[jax.Array]:
        """Per shard, whether each member is still training (False for the padding)."""
        return self.shards.split_mask(self.tracker.active)

    def shared(self, value: Any) -> list:
        """`value` for every shard (a `map` argument that is the same for all members)."""
        return [value] * self.shards.count

    def join(self, per_shard: list) -> np.ndarray:
        """Per-shard results → [M, ...] float64 over the whole ensemble (NaN for members not in the shards)."""
        return self.shards.join_numpy(per_shard)


class AbstractHostHook:
    """A hook of the trainer's host loop, run between its compiled programs.

    `before_training(run, cells) -> (cells, measured)`: before epoch 1, every member training.
    `between_epochs(run, epoch, cells) -> (cells, measured)`: after epoch `epoch` (its
    convergence update included) when another epoch follows: not after the last one, nor once
    every member has frozen. `after_training(run, cells) -> measured`: on the final cells.

    `cells` are one per shard of `run.shards` (`HostRun.map` runs a function of one member
    over them; with compaction only the members still in the programs are there); a hook
    returns the cells training goes on with, changed or not. `measured` are named [M] arrays
    (`HostRun.join`): before and after training they land in `EnsembleResult.analyses`,
    between epochs in `EnsembleResult.extra_curves` at the epoch's column (NaN for a member
    frozen before the epoch, and after the last epoch). Hooks run in order, each on the cells
    the one before returned. Every method defaults to doing nothing."""

    def before_training(self, run: HostRun, cells: Cells) -> tuple[Cells, Measured]:
        return cells, {}

    def between_epochs(self, run: HostRun, epoch: int, cells: Cells) -> tuple[Cells, Measured]:
        return cells, {}

    def after_training(self, run: HostRun, cells: Cells) -> Measured:
        return {}


@dataclasses.dataclass(frozen=True)
class GradientFlossing(AbstractHostHook):
    """Gradient flossing (`Flossing`): `pre` iterations before epoch 1, `steps` after every
    `every`-th epoch of the members still training, each member on its own flossing inputs
    (analysis streams 0 and 1, the latter folded with the epoch)."""

    task: AbstractTask
    flossing: Flossing

    def before_training(self, run, cells):
        if not self.flossing.pre:
            return cells, {}
        return run.map(self.floss, cells, run.training(), run.keys(PRE_FLOSS), run.shared(self.flossing.pre)), {}

    def between_epochs(self, run, epoch, cells):
        every = self.flossing.every
        if not every or epoch % every:
            return cells, {}
        return run.map(self.floss, cells, run.training(), run.keys(INTER_FLOSS, epoch),
                       run.shared(self.flossing.steps)), {}

    def floss(self, cell: AbstractCell, training: jax.Array, key: jax.Array, steps: int) -> AbstractCell:
        flossed, _ = floss_cell(cell, self.task, self.flossing, steps, key=key)
        return tree_where(training, flossed, cell)


@dataclasses.dataclass(frozen=True)
class LyapunovExponents(AbstractHostHook):
    """λ_max of every member (`task_lyapunov`, k = 1, on `trials` task trials of analysis
    stream 2) before epoch 1 (after pre-flossing, as the hooks run in order) and after training:
    "lyap_max_before" and "lyap_max_after" (`Analysis.lyapunov`)."""

    task: AbstractTask
    trials: int = 8

    def before_training(self, run, cells):
        return cells, {"lyap_max_before": self.measure(run, cells)}

    def after_training(self, run, cells):
        return {"lyap_max_after": self.measure(run, cells)}

    def measure(self, run: HostRun, cells: Cells) -> np.ndarray:
        return run.join(run.map(self.largest_exponent, cells, run.keys(LYAPUNOV)))

    def largest_exponent(self, cell: AbstractCell, key: jax.Array) -> jax.Array:
        return task_lyapunov(cell, self.task, 1, key=key, trials=self.trials)[0]


@dataclasses.dataclass(frozen=True)
class HeldOutLoss(AbstractHostHook):
    """The test loss after training (`held_out_loss` on `trials` fresh trials of analysis
    stream 3, `evaluation_key`): "test_loss", NaN for a diverged member (its weights may be NaN)."""

    task: AbstractTask
    trials: int = 200

    def after_training(self, run, cells):
        loss = run.join(run.map(self.loss, cells, run.keys(TEST_LOSS)))
        return {"test_loss": np.where(run.tracker.diverged, np.nan, loss)}

    def loss(self, cell: AbstractCell, key: jax.Array) -> jax.Array:
        return held_out_loss(cell, self.task, self.trials, key=key)
