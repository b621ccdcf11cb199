"""Continual learning: an ensemble of networks learning in real time on one unending stream each."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..forcing import AbstractForcing, NoForcing, simulate
from ..models import AbstractCell
from ..rules import AbstractLearningRule, Objective
from ..tasks import AbstractContinualTask, Trials, stream
from ._convergence import ConvergenceTracker
from ._dynamics import evaluation_key, held_out_loss
from ._ensemble import EnsembleResult, Member, member_keys
from ._step import tree_where


@dataclasses.dataclass(frozen=True)
class ContinualSchedule:
    """`steps` steps of one stream per member, a validation check every `val_every` steps on
    `val_steps` fresh steps (unforced, from rest). Converged = validation loss below
    `threshold` at `patience` consecutive checks; divergence as in the epoch trainer. After
    training, the test loss on `test_trials` fresh trials (the task's first n_steps of fresh
    streams, unforced), as the epoch trainer reports it."""

    steps: int
    val_every: int
    val_steps: int
    threshold: float = 0.01
    patience: int = 10
    divergence: float = 1e4
    test_trials: int = 200

    def __post_init__(self):
        if min(self.steps, self.val_every, self.val_steps) < 1 or self.steps % self.val_every:
            raise ValueError(f"need steps >= 1 a multiple of val_every >= 1 and val_steps >= 1, got steps={self.steps},"
                             f" val_every={self.val_every}, val_steps={self.val_steps}")

    @property
    def n_checks(self) -> int:
        return self.steps // self.val_every


class ContinualTrainer:
    """Real-time learning without epochs or trials (Williams & Zipser 1989; SPEC §3): every
    member runs on its own stream (`tasks.stream`, from its seed), and its rule changes θ at
    every step (`rule.online_run`, per-step loss normalisation). The stream is processed in
    segments of `val_every` steps, the network's state, the rule's traces or influence matrix
    and the per-step optimizer's state carried across segments, so the learner sees one
    unbroken stream; after each segment the member is checked on a fresh validation stream
    (its own seed, a key stream disjoint from training). Members are vmapped, one program.

    The result is an `EnsembleResult` whose "epochs" are validation checks: curves per check
    (train_loss = the mean step loss over the segment), with the step count as the extra curve
    "step".
    """

    def __init__(self, task: AbstractContinualTask, make_cell: Callable[..., AbstractCell],
                 make_forcing: Callable[..., AbstractForcing], rule: AbstractLearningRule, members: list[Member],
                 schedule: ContinualSchedule, objective: Objective = Objective()):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if not rule.learns_online:
            raise ValueError("continual learning needs a rule that learns online (online=True)")
        if not isinstance(task, AbstractContinualTask):
            raise TypeError(f"continual learning needs a continual task (Williams–Zipser family), "
                            f"got {type(task).__name__}")
        self.task, self.rule, self.schedule, self.objective = task, rule, schedule, objective
        self.members, self.make_cell, self.make_forcing = members, make_cell, make_forcing
        keys = [member_keys(m.seed) for m in members]
        self.init_keys, self.data_keys, self.noise_keys = (jnp.stack([k[i] for k in keys]) for i in range(3))
        self.alphas = jnp.asarray([m.alpha for m in members])
        self.evaluation_keys = jnp.stack([evaluation_key(m.seed) for m in members])
        self._segment = eqx.filter_jit(eqx.filter_vmap(self._member_segment))
        self._test_loss = eqx.filter_jit(eqx.filter_vmap(
            lambda cell, key: held_out_loss(cell, self.task, self.schedule.test_trials, key=key)))

    def init(self):
        """(cells, forcings, per-step optimizer states, rules, training streams), batched over members."""
        cells = eqx.filter_vmap(self.make_cell)(self.init_keys)
        forcings = eqx.filter_vmap(self.make_forcing)(self.alphas, cells,
                                                      jax.vmap(lambda k: jax.random.fold_in(k, 1))(self.init_keys))
        rules = eqx.filter_vmap(self.rule.for_member)(jax.vmap(lambda k: jax.random.fold_in(k, 2))(self.init_keys))
        opt_states = eqx.filter_vmap(self.rule.online_init)(cells)
        streams = jax.vmap(self._training_stream)(self.data_keys)
        return cells, forcings, opt_states, rules, streams

    def _training_stream(self, data_key) -> Trials:
        s = stream(self.task, self.schedule.steps, key=jax.random.fold_in(data_key, 0))
        return Trials(s.inputs, s.targets, s.mask, {})

    def _member_segment(self, cell, opt_state, forcing, rule, carry, active, streams, data_key, noise_key, check):
        K = self.schedule.val_every
        start = (check - 1) * K
        segment = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, K)[None], streams)  # one stream
        loss, new_cell, new_opt_state, new_carry = rule.online_run(
            cell, opt_state, forcing, segment, key=jax.random.fold_in(noise_key, check), objective=self.objective,
            carry=carry, per_step_loss=True)
        cell = tree_where(active, new_cell, cell)
        opt_state = tree_where(active, new_opt_state, opt_state)
        carry = new_carry if carry is None else tree_where(active, new_carry, carry)
        held_out = stream(self.task, self.schedule.val_steps, key=jax.random.fold_in(jax.random.fold_in(data_key, 1),
                                                                                      check))
        val = jax.tree.map(lambda a: a[None], Trials(held_out.inputs, held_out.targets, held_out.mask, {}))
        _, outputs = simulate(cell, val, NoForcing())
        return cell, opt_state, carry, loss / K, self.task.held_out_error(outputs, val)

    def run(self, *, on_epoch: Callable[[int, ConvergenceTracker, np.ndarray], None] | None = None) -> EnsembleResult:
        s = self.schedule
        start = time.perf_counter()
        M = len(self.members)
        cells, forcings, opt_states, rules, streams = self.init()
        carry = None
        tracker = ConvergenceTracker(M, s.threshold, s.patience, s.divergence)
        train_curves, val_curves, steps = [], [], []
        check = 0
        for check in range(1, s.n_checks + 1):
            cells, opt_states, carry, train_loss, val_loss = self._segment(
                cells, opt_states, forcings, rules, carry, jnp.asarray(tracker.active), streams, self.data_keys,
                self.noise_keys, jnp.full(M, check))
            train_loss, val_loss = np.asarray(train_loss, np.float64), np.asarray(val_loss, np.float64)
            was_active = tracker.active
            tracker.update(check, val_loss, train_loss)
            nan = np.full(M, np.nan)
            train_curves.append(np.where(was_active, train_loss, nan))
            val_curves.append(np.where(was_active, val_loss, nan))
            steps.append(np.where(was_active, float(check * s.val_every), nan))
            if on_epoch is not None:
                on_epoch(check, tracker, val_loss)
            if not tracker.active.any():
                break
        test_loss = np.asarray(self._test_loss(cells, self.evaluation_keys), np.float64)
        stack = lambda c: np.stack(c, axis=1)  # noqa: E731
        return EnsembleResult(self.members, cells, tracker, stack(train_curves), stack(val_curves),
                              np.full((M, check), np.nan), {"step": stack(steps)}, check,
                              time.perf_counter() - start, forcings, rules=rules,
                              test_loss=np.where(tracker.diverged, np.nan, test_loss))
