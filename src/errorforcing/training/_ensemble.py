"""One compiled program that trains an ensemble of networks (seeds × α × lr) at once."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..forcing import AbstractForcing, NoForcing, simulate
from ..models import AbstractCell
from ..rules import AbstractLearningRule, Objective, sign_correct
from ..tasks import AbstractTask
from ._convergence import ConvergenceTracker
from ._data import batch_keys, epoch_data, fixed_dataset, member_keys, trims_padding
from ._dynamics import Analysis, Flossing, analysis_key
from ._hooks import AbstractEpochHook, AdaptiveAlpha, DynamicsDiagnostics, FeedbackDiagnostics, GradientAlignment
from ._host_hooks import AbstractHostHook, GradientFlossing, HeldOutLoss, HostRun, LyapunovExponents, Measured
from ._step import MemberState, make_step, trainable_params, with_clip
from ._shards import Shards, compact_layout, compact_mode, default_shards, worth_compiling


# whole float32 vector registers (16 lanes of AVX-512, 2 × 8 of AVX2): on the batch-minor fast
# BPTT a batch of 80 trials runs faster than one of 77 (docs/performance.md, "The last batch")
PADDING_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How much data an epoch sees and when training stops (SPEC §5 reference values).

    `dataset_size` is the task's reference data set size (SPEC §5: 512 delayed XOR, 216 cue,
    5000 sine), of which floor(`val_fraction` · size) is held out. data = "fresh": every epoch
    draws size − floor(0.1 size) new training and floor(0.1 size) new validation trials (what
    the reference code effectively does, as its task objects draw a new trial at every
    access); `train_trials` / `val_trials` override the two counts (fresh only; TrainConfig
    refuses them with fixed data). data = "fixed": one data
    set of `dataset_size` trials per seed, the held-out part fixed, the rest reshuffled every
    epoch. `test_trials`: the fresh trials of each member's test loss after training.
    """

    epochs: int = 200
    batch_size: int = 128
    data: str = "fresh"
    train_trials: int | None = None
    val_trials: int | None = None
    dataset_size: int = 512
    val_fraction: float = 0.1
    test_trials: int = 200
    threshold: float = 0.01
    patience: int = 10
    divergence: float = 1e4
    clip_norm: float | None = None
    log_alignment: bool = False  # cos(rule gradient, BPTT gradient) on each epoch's first batch

    def __post_init__(self):
        if self.data not in ("fresh", "fixed"):
            raise ValueError(f"data must be 'fresh' or 'fixed', got {self.data!r}")
        if self.held_out >= self.dataset_size:
            raise ValueError(f"dataset_size {self.dataset_size} leaves no training trials")

    @property
    def held_out(self) -> int:
        """floor(val_fraction · dataset_size), at least 1 (the reference's held-out 10 %)."""
        # round first: 0.1 · 5000 must give 500, not 499 from a float just under it
        return max(1, math.floor(round(self.val_fraction * self.dataset_size, 9)))

    @property
    def n_train(self) -> int:
        if self.data == "fresh" and self.train_trials is not None:
            return self.train_trials
        return self.dataset_size - self.held_out

    @property
    def n_val(self) -> int:
        if self.data == "fresh" and self.val_trials is not None:
            return self.val_trials
        return self.held_out

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_train / self.batch_size)

    def batch_sizes(self, trim_padding: bool) -> tuple[int, ...]:
        """The trials each batch of an epoch computes: `batch_size` each (the last one padded
        with weight-0 trials), except that with `trim_padding` the last batch stops at its real
        trials rounded up to a multiple of PADDING_MULTIPLE."""
        sizes = [self.batch_size] * self.n_batches
        if trim_padding:
            real = self.n_train - (self.n_batches - 1) * self.batch_size
            sizes[-1] = min(self.batch_size, -(-real // PADDING_MULTIPLE) * PADDING_MULTIPLE)
        return tuple(sizes)


@dataclasses.dataclass
class Member:
    """One ensemble member: what differs between members of one compiled program."""

    seed: int
    alpha: float
    lr: float


class EnsembleState(NamedTuple):
    """The whole ensemble, member axis first (`EnsembleTrainer.init`), or one shard of it."""

    cells: AbstractCell
    forcings: AbstractForcing
    opt_states: Any
    fixed: Any  # the fixed data sets (`Schedule.data = "fixed"`), else None
    rules: AbstractLearningRule  # each member's own random feedback B


class EpochOutput(NamedTuple):
    """What one member's epoch program returns."""

    cell: AbstractCell
    opt_state: Any
    forcing: AbstractForcing
    train_loss: jax.Array
    val_loss: jax.Array
    accuracy: jax.Array
    extras: dict[str, jax.Array]


@dataclasses.dataclass
class EnsembleResult:
    members: list[Member]
    cells: AbstractCell  # batched over members (leading axis)
    tracker: ConvergenceTracker
    train_curves: np.ndarray  # [M, epochs_done] (NaN after a member froze)
    val_curves: np.ndarray
    val_accuracy: np.ndarray  # [M, epochs_done] fraction of validation trials with no sign error
    extra_curves: dict[str, np.ndarray]  # name -> [M, epochs_done], e.g. feedback alignment
    epochs_done: int
    seconds: float
    forcings: AbstractForcing  # batched over members (learned feedback weights, adaptive α included)
    lyap_max_before: np.ndarray | None = None  # [M] λ_max before epoch 1 (Analysis.lyapunov)
    lyap_max_after: np.ndarray | None = None  # [M] λ_max after training
    rules: AbstractLearningRule | None = None  # batched over members (each member's own random feedback B)
    test_loss: np.ndarray | None = None  # [M] held_out_loss after training (NaN for a diverged member)
    layouts: list[tuple[int, int, int]] | None = None  # (first epoch, shards, members per shard) of the epoch programs
    # name -> [M]: what the host hooks measured before and after training (the three above among them)
    analyses: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class EnsembleTrainer:
    """Trains `len(members)` networks in one `vmap`ped, jitted epoch function.

    `make_cell(key)` builds one network; `make_forcing(alpha, cell, key)` its forcing (α is
    vmapped; the cell and key let e.g. random feedback weights be drawn per member);
    `optimizer(learning_rate)` is an optax alias (wrapped in `inject_hyperparams` so lr can
    differ per member). A rule that learns online (`rule.learns_online`) changes θ at every
    step with its own per-step optimizer: each batch then ends at the rule's end-of-trial
    weights, its optimizer state is carried from batch to batch and epoch to epoch, and
    `optimizer` and the members' lr are not used.

    The epoch program scans `make_step` (the pure per-batch step of one member's
    `MemberState`) over the epoch's batches (`_data.epoch_data`; the last one, padded with
    weight-0 trials, computed only up to its real trials rounded up to 16 when the rule
    `ignores_padding`: `self.batch_sizes`, `Schedule.batch_sizes`); what it measures or changes
    besides are `AbstractEpochHook`s (`self.hooks`). What runs on the host before, between and
    after the epochs are `AbstractHostHook`s (`self.host_hooks`: the test loss after training,
    always). The options below add built-in hooks of either kind, and `hooks` appends custom ones
    of either kind (each kind called in that order, after the built-in ones).

    Optional, all off by default (and then the epoch program is exactly the plain one):
    `flossing` (pre- and inter-flossing, `GradientFlossing`), `adaptive_alpha` (True or an α
    estimator's name, `analysis.ALPHA_ESTIMATORS`: the forcing's α adapted after every batch
    inside the epoch program, Hess et al.; carried in the forcing's `alpha` leaf from epoch to
    epoch, recorded as the curve "alpha"), `analysis` (λ_max before/after training,
    `LyapunovExponents`; per-epoch diagnostics).

    `shards` (default: one per CPU core) splits the members into that many equal programs run
    in parallel threads (see `_shards`); results do not depend on it beyond float rounding.
    `compact` ("exact", "auto", "always" or "off"; default $ERRORFORCING_COMPACT, else
    "exact") stops computing frozen members: once a shard's worth of members has converged or
    diverged, "exact" packs the active ones into fewer shards of the same program, with the
    same numbers bit for bit as without (each member keeps its own keys; frozen members keep
    their state as it was when they froze); "auto" and "always" also re-shard them into smaller
    programs of a few fixed sizes (`_shards.compact_layout`; "auto" only when the time saved
    outweighs a new size's compilation), equal only to rounding in float32 (see `_shards`).
    The layouts that ran are in `EnsembleResult.layouts`.
    """

    def __init__(self, task: AbstractTask, make_cell: Callable[..., AbstractCell],
                 make_forcing: Callable[..., AbstractForcing], rule: AbstractLearningRule,
                 optimizer: Callable[..., optax.GradientTransformation], members: list[Member],
                 schedule: Schedule, objective: Objective = Objective(), *, flossing: Flossing | None = None,
                 adaptive_alpha: bool = False, analysis: Analysis = Analysis(), shards: int | None = None,
                 compact: str | bool | None = None, hooks: tuple[AbstractEpochHook | AbstractHostHook, ...] = ()):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if rule.learns_online and schedule.clip_norm is not None:
            raise ValueError("clip_norm does not apply to an online rule (its per-step optimizer updates θ)")
        self.task, self.rule, self.schedule, self.objective = task, rule, schedule, objective
        self.adaptive_alpha, self.analysis = adaptive_alpha, analysis
        self.shards = default_shards(len(members)) if shards is None else shards
        self.compact = compact_mode(compact)
        self.members = members
        self.make_cell, self.make_forcing = make_cell, make_forcing
        self.optimizer = optax.inject_hyperparams(optimizer)(learning_rate=members[0].lr)
        # the transformation the step applies: the clip, then the member's own lr
        self.update_rule = with_clip(self.optimizer, schedule.clip_norm)
        self.batch_sizes = schedule.batch_sizes(trims_padding(rule, objective))
        for hook in hooks:
            if not isinstance(hook, (AbstractEpochHook, AbstractHostHook)):
                raise TypeError(f"a hook is an AbstractEpochHook or an AbstractHostHook, got {type(hook).__name__}")
        self.hooks = tuple(self._builtin_hooks()) + tuple(h for h in hooks if isinstance(h, AbstractEpochHook))
        self.host_hooks = tuple(self._builtin_host_hooks(flossing)) + tuple(
            h for h in hooks if isinstance(h, AbstractHostHook))
        self._host_programs: dict = {}  # the host hooks' compiled member functions (HostRun.map)
        seeds = [m.seed for m in members]
        keys = [member_keys(s) for s in seeds]
        self.init_keys = jnp.stack([k[0] for k in keys])
        self.data_keys = jnp.stack([k[1] for k in keys])
        self.noise_keys = jnp.stack([k[2] for k in keys])
        self.analysis_keys = jnp.stack([analysis_key(s) for s in seeds])
        self.alphas = jnp.asarray([m.alpha for m in members])
        self.lrs = jnp.asarray([m.lr for m in members])
        if adaptive_alpha:  # the epoch is not vmapped, so that α's every-5th-batch update is a real branch
            member, shared = eqx.if_array(0), None
            in_axes = dict(cell=member, opt_state=member, forcing=member, rule=member, active=member,
                           data_key=member, noise_key=member, epoch=shared, fixed=member)
            self._epoch = eqx.filter_jit(eqx.filter_vmap(self._member_epoch, in_axes=tuple(in_axes.values())))
        else:
            self._epoch = eqx.filter_jit(eqx.filter_vmap(self._member_epoch))

    def _builtin_hooks(self):
        if self.schedule.log_alignment:
            yield GradientAlignment()
        if self.analysis.diagnostics:
            yield DynamicsDiagnostics()
        if self.adaptive_alpha:
            yield AdaptiveAlpha(self.adaptive_alpha)
        yield FeedbackDiagnostics()

    def _builtin_host_hooks(self, flossing: Flossing | None):
        if flossing is not None and flossing.enabled:
            yield GradientFlossing(self.task, flossing)
        if self.analysis.lyapunov:
            yield LyapunovExponents(self.task, self.analysis.lyapunov_trials)
        yield HeldOutLoss(self.task, self.schedule.test_trials)

    # ----- building the ensemble -----
    def init(self):
        cells = eqx.filter_vmap(self.make_cell)(self.init_keys)
        forcing_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(self.init_keys)
        forcings = eqx.filter_vmap(self.make_forcing)(self.alphas, cells, forcing_keys)
        if self.rule.learns_online:
            opt_states = eqx.filter_vmap(self.rule.online_init)(cells)
        else:
            opt_states = eqx.filter_vmap(self.update_rule.init)(trainable_params(cells))
            injected = opt_states if self.schedule.clip_norm is None else opt_states[1]
            injected.hyperparams["learning_rate"] = self.lrs.astype(injected.hyperparams["learning_rate"].dtype)
        fixed = None
        if self.schedule.data == "fixed":
            fixed = eqx.filter_vmap(self._fixed_dataset)(self.data_keys)
        # the rule's randomness (random feedback B) is the member's own, like the forcing's F
        rule_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(self.init_keys)
        rules = eqx.filter_vmap(self.rule.for_member)(rule_keys)
        return EnsembleState(cells, forcings, opt_states, fixed, rules)

    def _fixed_dataset(self, data_key):
        return fixed_dataset(self.task, self.schedule, data_key)

    def _epoch_data(self, data_key, epoch, fixed):
        return epoch_data(self.task, self.schedule, data_key, epoch, fixed)

    # ----- one epoch of one member (vmapped over members, then jitted) -----
    def _member_epoch(self, cell, opt_state, forcing, rule, active, data_key, noise_key, epoch, fixed) -> EpochOutput:
        sizes = self.batch_sizes
        n_batches = len(sizes)
        batches, val = epoch_data(self.task, self.schedule, data_key, epoch, fixed)
        keys = batch_keys(noise_key, epoch, n_batches)
        state = MemberState(cell, opt_state, forcing, active)
        extras = {}
        for hook in self.hooks:
            extras |= hook.before_epoch(state, rule, batches, keys, self.objective)
        step = make_step(rule, self.update_rule, self.objective, self.hooks)

        # only the forcing's arrays travel through the scan carry (its flags must stay Python values)
        forcing_arrays, forcing_static = eqx.partition(forcing, eqx.is_array)

        def step_on(carry, batch, key, i):
            cell, opt_state, forcing_arrays = carry
            state = MemberState(cell, opt_state, eqx.combine(forcing_arrays, forcing_static), active)
            state, loss = step(state, batch, key, (epoch - 1) * n_batches + i)
            return (state.cell, state.opt_state, eqx.filter(state.forcing, eqx.is_array)), loss

        def batch_step(carry, xs):
            batch, key, i = xs
            if sizes[-1] == self.schedule.batch_size:
                carry, loss = step_on(carry, batch, key, i)
            else:  # the last batch without the padding beyond its real trials (`trims_padding`)
                trimmed = jax.tree_util.tree_map(lambda x: x[:sizes[-1]], batch)
                carry, loss = jax.lax.cond(i == n_batches - 1, lambda: step_on(carry, trimmed, key, i),
                                           lambda: step_on(carry, batch, key, i))
            return carry, (loss, jnp.sum(batch.info["weight"]))

        carry, xs = (cell, opt_state, forcing_arrays), (batches, keys, jnp.arange(n_batches))
        carry, (losses, weights) = jax.lax.scan(batch_step, carry, xs)
        cell, opt_state, forcing_arrays = carry
        state = MemberState(cell, opt_state, eqx.combine(forcing_arrays, forcing_static), active)
        train_loss = jnp.sum(losses * weights) / jnp.sum(weights)
        _, outputs = simulate(cell, val, NoForcing())
        val_loss = self.task.held_out_error(outputs, val)
        accuracy = jnp.mean(sign_correct(outputs, val.targets, val.mask))
        for hook in self.hooks:
            extras |= hook.after_epoch(state, rule)
        return EpochOutput(state.cell, state.opt_state, state.forcing, train_loss, val_loss, accuracy, extras)

    # ----- the host hooks (between the compiled programs) -----
    def _host_run(self, shards: Shards, tracker: ConvergenceTracker) -> HostRun:
        return HostRun(shards, tracker, self.analysis_keys, self._host_programs)

    def _host_hooks_on(self, cells: list, call: Callable[[AbstractHostHook, list], tuple[list, Measured]]):
        """`call(hook, cells)` of every host hook in order, each on the cells the one before
        returned: the last cells and all they measured."""
        measured: Measured = {}
        for hook in self.host_hooks:
            cells, new = call(hook, cells)
            _add_measured(measured, new)
        return cells, measured

    def run(self, *, on_epoch: Callable[[int, ConvergenceTracker, np.ndarray], None] | None = None,
            state=None) -> EnsembleResult:
        import time

        s = self.schedule
        start = time.perf_counter()
        M = len(self.members)
        with Shards(M, self.shards) as everyone:
            whole = self.init() if state is None else EnsembleState(*state)
            tracker = ConvergenceTracker(M, s.threshold, s.patience, s.divergence)
            run = self._host_run(everyone, tracker)
            cells, analyses = self._host_hooks_on(everyone.split(whole.cells), lambda h, c: h.before_training(run, c))
            whole = whole._replace(cells=everyone.join(cells))
            train_curves, val_curves, acc_curves = [], [], []
            extra_curves: dict[str, list[np.ndarray]] = {}
            between: dict[int, Measured] = {}  # epoch -> what the host hooks measured after it
            layouts: list[tuple[int, int, int]] = []
            shards = everyone
            parts = shards.split(whole)  # an EnsembleState per shard
            # the fixed data sets never change and live only in the shards (no second copy in memory)
            whole = whole._replace(fixed=None)
            data_keys, noise_keys = shards.split(self.data_keys), shards.split(self.noise_keys)
            compiled: set[int] = set()  # shard sizes whose epoch program ran already
            epoch_seconds = compile_seconds = first_seconds = None  # measured on the current layout
            epoch = 0
            for epoch in range(1, s.epochs + 1):
                smaller = self._compacted(everyone, shards, tracker.active) if self.compact != "off" else None
                if (smaller is not None and self.compact == "auto" and smaller.size not in compiled
                        and not worth_compiling(epoch_seconds, compile_seconds, shards.size, smaller.size,
                                                s.epochs - epoch + 1)):
                    smaller = None
                if smaller is not None:  # frozen members leave the programs, their state stays in `whole`
                    whole = shards.scatter(whole, [p._replace(fixed=None) for p in parts])
                    fixed = shards.regroup([p.fixed for p in parts], smaller)
                    shards = smaller
                    parts = [p._replace(fixed=f) for p, f in zip(shards.split(whole), fixed)]
                    data_keys, noise_keys = shards.split(self.data_keys), shards.split(self.noise_keys)
                    epoch_seconds = None
                if not layouts or layouts[-1][1:] != (shards.count, shards.size):
                    layouts.append((epoch, shards.count, shards.size))
                epochs = jnp.asarray(epoch) if self.adaptive_alpha else jnp.full(shards.size, epoch)
                began, compiling = time.perf_counter(), shards.size not in compiled
                outputs: list[EpochOutput] = shards.map(
                    self._epoch, [p.cells for p in parts], [p.opt_states for p in parts], [p.forcings for p in parts],
                    [p.rules for p in parts], shards.split_mask(tracker.active), data_keys, noise_keys,
                    [epochs] * shards.count, [p.fixed for p in parts])
                took = time.perf_counter() - began
                compiled.add(shards.size)
                if compiling:
                    first_seconds = took
                else:
                    epoch_seconds = took
                    if compile_seconds is None and first_seconds is not None:
                        compile_seconds = max(first_seconds - took, 0.0)
                parts = [p._replace(cells=o.cell, forcings=o.forcing, opt_states=o.opt_state)
                         for o, p in zip(outputs, parts)]
                # over the whole ensemble, NaN for members not in the programs (all frozen)
                train_loss, val_loss, acc, extras = shards.join_numpy(
                    [(o.train_loss, o.val_loss, o.accuracy, o.extras) for o in outputs])
                was_active = tracker.active
                tracker.update(epoch, val_loss, train_loss)
                nan = np.full_like(val_loss, np.nan)
                train_curves.append(np.where(was_active, train_loss, nan))
                val_curves.append(np.where(was_active, val_loss, nan))
                acc_curves.append(np.where(was_active, acc, nan))
                for name, value in extras.items():
                    extra_curves.setdefault(name, []).append(np.where(was_active, value, nan))
                if on_epoch is not None:  # a member frozen before this epoch has no value (NaN)
                    on_epoch(epoch, tracker, val_curves[-1])
                if not tracker.active.any() or epoch == s.epochs:
                    break
                run = self._host_run(shards, tracker)
                cells, measured = self._host_hooks_on([p.cells for p in parts],
                                                      lambda h, c: h.between_epochs(run, epoch, c))
                parts = [p._replace(cells=c) for c, p in zip(cells, parts)]
                between[epoch] = {k: np.where(was_active, v, np.nan) for k, v in measured.items()}
            whole = shards.scatter(whole, [p._replace(fixed=None) for p in parts])
            run = self._host_run(everyone, tracker)
            _, after = self._host_hooks_on(everyone.split(whole.cells), lambda h, c: (c, h.after_training(run, c)))
            _add_measured(analyses, after)
        seconds = time.perf_counter() - start
        stack = lambda c: np.stack(c, axis=1) if c else np.zeros((len(self.members), 0))
        curves = {k: stack(v) for k, v in extra_curves.items()}
        _add_measured(curves, _between_curves(between, M, epoch))
        return EnsembleResult(
            members=self.members, cells=whole.cells, tracker=tracker, train_curves=stack(train_curves),
            val_curves=stack(val_curves), val_accuracy=stack(acc_curves), extra_curves=curves, epochs_done=epoch,
            seconds=seconds, forcings=whole.forcings, lyap_max_before=analyses.get("lyap_max_before"),
            lyap_max_after=analyses.get("lyap_max_after"), rules=whole.rules, test_loss=analyses.get("test_loss"),
            layouts=layouts, analyses=analyses)

    def _compacted(self, everyone: Shards, current: Shards, active: np.ndarray) -> Shards | None:
        """A smaller layout holding only the `active` members, or None when it would not be smaller
        (in members per shard, then in member slots) than the `current` one."""
        count, size = compact_layout(int(active.sum()), everyone.count, everyone.size, self.compact == "exact")
        if (size, count * size) >= (current.size, current.count * current.size):
            return None
        return everyone.compact(np.flatnonzero(active), size)


def _add_measured(into: dict[str, np.ndarray], measured: Measured) -> None:
    """`into` with `measured` added; a name measured twice is an error (two hooks, or a hook and a curve)."""
    twice = into.keys() & measured.keys()
    if twice:
        raise ValueError(f"measured twice: {', '.join(sorted(twice))} (hook measurements need names of their own)")
    into.update(measured)


def _between_curves(between: dict[int, Measured], members: int, epochs: int) -> dict[str, np.ndarray]:
    """The host hooks' between-epoch measurements as [members, epochs] curves, NaN where a
    member or an epoch has none (after the last epoch, above all)."""
    curves: dict[str, np.ndarray] = {}
    for epoch, measured in between.items():
        for name, value in measured.items():
            curves.setdefault(name, np.full((members, epochs), np.nan))[:, epoch - 1] = value
    return curves
