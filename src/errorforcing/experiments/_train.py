"""`train(config)`: build an ensemble from a TrainConfig, train it, record it in the store."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import optax

from .._version import __version__
from ..rules import Objective
from ..training import (Analysis, ContinualSchedule, ContinualTrainer, EnsembleResult, EnsembleTrainer, Flossing,
                        Member, Schedule)
from ._config import TrainConfig
from ._preflight import preflight
from ._registry import FORCINGS, MODELS, RULES, TASKS


@dataclasses.dataclass
class TrainResult:
    """What a training job produced: one row per member (the store's `members` columns)."""

    run_id: str
    config: TrainConfig
    rows: list[dict[str, Any]]
    ensemble: EnsembleResult

    @property
    def fraction_learned(self) -> float:
        return float(np.mean([r["converged"] for r in self.rows]))


def build_task(config: TrainConfig):
    return TASKS[config.task.kind].build(config.task)


def build_schedule(config: TrainConfig, task) -> Schedule:
    """The config's data sizes and stopping rule, the task's reference values where unset.
    Fields the schedule shares with the config by name are copied as they are."""
    same = {f.name: getattr(config, f.name) for f in dataclasses.fields(Schedule) if f.name in TrainConfig.model_fields}
    return Schedule(**same | dict(
        batch_size=config.batch, dataset_size=config.dataset_size or type(task).dataset_size,
        threshold=config.threshold or type(task).threshold, clip_norm=config.optim.clip_norm,
        log_alignment=config.rule.log_alignment))


def build_trainer(config: TrainConfig) -> EnsembleTrainer | ContinualTrainer:
    task = build_task(config)
    model_entry, forcing_entry = MODELS[config.model.kind], FORCINGS[config.forcing.kind]
    # random feedback B: the trainer redraws it for every member from that member's seed
    # (rule.for_member); this key only makes the job-level rule well-formed
    rule_key = jax.random.fold_in(jax.random.key(config.seed), 10_000)
    rule = RULES[config.rule.kind].build(config.rule, rule_key)
    lrs = [config.rule.online_lr] if config.rule.learns_online else config.optim.lr  # online: the per-step rate
    members = [Member(seed=config.seed + s, alpha=a, lr=lr)
               for lr in lrs for a in config.forcing.alpha for s in range(config.seeds)]
    make_cell = lambda key: model_entry.build(config.model, task, key)  # noqa: E731
    make_forcing = lambda alpha, cell, key: forcing_entry.build(config.forcing, alpha, cell, key)  # noqa: E731
    objective = Objective(config.rate_reg, config.readout_reg, config.forcing.training_noise(config.model.noise_std))
    if config.continual:
        schedule = ContinualSchedule(config.steps, config.val_every, config.val_steps or task.n_steps,
                                     threshold=config.threshold or type(task).threshold, patience=config.patience,
                                     divergence=config.divergence, test_trials=config.test_trials)
        return ContinualTrainer(task, make_cell, make_forcing, rule, members, schedule, objective)
    schedule = build_schedule(config, task)
    optimizer = _optimizer(config.optim)
    flossing = copied(Flossing, config.floss) if config.floss.enabled else None
    adaptive = config.forcing.own("adaptive", False)
    return EnsembleTrainer(task, make_cell, make_forcing, rule, optimizer, members, schedule, objective,
                           flossing=flossing, adaptive_alpha=config.forcing.alpha_estimator if adaptive else False,
                           analysis=copied(Analysis, config.analysis))


def copied(dataclass: type, section) -> Any:
    """The training layer's `dataclass` (which cannot import the config) from the config
    `section` declaring the same fields; a field missing from either side is an error."""
    names = [f.name for f in dataclasses.fields(dataclass)]
    missing = set(names) ^ set(type(section).model_fields)
    if missing:
        raise TypeError(f"{dataclass.__name__} and {type(section).__name__} differ in {sorted(missing)}")
    return dataclass(**{n: getattr(section, n) for n in names})


def _optimizer(cfg) -> Callable[..., optax.GradientTransformation]:
    alias = getattr(optax, cfg.name)
    return lambda learning_rate: alias(learning_rate=learning_rate, **cfg.options)


def member_rows(config: TrainConfig, result: EnsembleResult, run_id: str) -> list[dict[str, Any]]:
    task_cls = type(build_task(config))
    rows = []
    tr = result.tracker
    for i, m in enumerate(result.members):
        n = int(tr.epochs_run[i])
        val = result.val_curves[i, :n]
        acc = result.val_accuracy[i, :n]
        rows.append(dict(
            run_id=run_id, member=i, seed=m.seed, task=config.task.kind, rule=config.rule.kind,
            forcing=config.forcing.kind, alpha=float(m.alpha), lr=float(m.lr),
            converged=int(tr.converged[i]),
            converged_epoch=int(tr.converged_epoch[i]) if tr.converged[i] else None,
            diverged=int(tr.diverged[i]), epochs_run=n,
            final_val_loss=float(val[-1]) if n else None,
            final_val_accuracy=float(acc[-1]) if (n and task_cls.classification) else None,
            lyap_max_before=_finite(result.lyap_max_before, i), lyap_max_after=_finite(result.lyap_max_after, i),
            test_loss=_finite(result.test_loss, i),
            curves=json.dumps({"train_loss": _clean(result.train_curves[i, :n]),
                               "val_loss": _clean(val),
                               **({"val_accuracy": _clean(acc)} if task_cls.classification else {}),
                               **{k: _clean(v[i, :n]) for k, v in result.extra_curves.items()}}),
        ))
    return rows


def _finite(values, i: int) -> float | None:
    if values is None or not np.isfinite(values[i]):
        return None
    return float(values[i])


def _clean(values) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64)]


def config_record(config: TrainConfig) -> str:
    return json.dumps({"config": config.model_dump(), "version": __version__, "git_commit": _git_commit()})


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def train(config: TrainConfig, *, progress: bool = True, run_id: str | None = None) -> TrainResult:
    """Train the ensemble `config` describes; if `config.out` is set, record it in `out/runs.sqlite`
    (and the trained parameters in `out/params/RUN_ID.eqx`).

    Arguments:
        config: the job: task, model, forcing, rule, optimizer, seeds, data sizes, epochs.
            Members = seeds × `forcing.alpha` × `optim.lr`, trained in one compiled program.
        progress: draw a progress bar on stderr.
        run_id: the id to record the run under (default: a new timestamped id).

    Returns:
        `TrainResult`: `rows` (one dict per member, the store's `members` columns),
        `fraction_learned`, the `run_id`, the config and the trained ensemble.

    Raises:
        InfeasibleConfig: the config cannot run (memory, or the rule × forcing × model
            combination), raised before anything is written.
    """
    from ..store import RunStore

    run_id = run_id or new_run_id()
    preflight(config)  # memory and compatibility, before anything is built or written
    trainer = build_trainer(config)
    store = RunStore(config.out) if config.out else None
    if store:
        _retire_stale_runs(store)
        store.begin_run(run_id, config_record(config))  # owned by this process (HOST:PID)
    try:
        with _progress(progress, config) as on_epoch:
            result = trainer.run(on_epoch=on_epoch)
    except BaseException:
        if store:
            store.fail_run(run_id)
        raise
    rows = member_rows(config, result, run_id)
    if store:
        store.save_params(run_id, result.cells)
        store.finish_run(run_id, rows)
    return TrainResult(run_id, config, rows, result)


def _retire_stale_runs(store) -> None:
    """Runs left `running` by a process that was killed are marked failed, and said so."""
    stale = store.stale_runs()
    store.mark_failed([r["run_id"] for r in stale])
    for r in stale:
        print(f"note: run {r['run_id']} in {store.directory} was interrupted (its process {r['owner']} is gone); "
              "marked failed", file=sys.stderr)


class _progress:
    """A rich progress bar on stderr: epochs, converged/diverged counts, median val loss."""

    def __init__(self, enabled: bool, config: TrainConfig):
        self.enabled, self.config = enabled, config

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        c = self.config
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                            console=Console(stderr=True), transient=False)
        label = f"{c.rule.kind}/{c.forcing.kind} {c.task.kind}"
        self.bar.start()
        total = c.steps // c.val_every if c.continual else c.epochs  # continual: validation checks
        self.task = self.bar.add_task(label, total=total, status="compiling…")

        def on_epoch(epoch, tracker, val_loss):
            live = val_loss[tracker.active | (tracker.epochs_run == epoch)]
            med = float(np.nanmedian(live)) if live.size and np.isfinite(live).any() else float("nan")
            self.bar.update(self.task, completed=epoch,
                            status=f"converged {int(tracker.converged.sum())}/{len(val_loss)} "
                                   f"diverged {int(tracker.diverged.sum())} val {med:.4f}")

        return on_epoch

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False
