"""Runs a planned sweep into a results directory: skips jobs already done, hands the rest to
an executor, and writes each finished job to the store in one transaction."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .._version import __version__
from ..store import RunStore, StoreError, process_id
from ._executors import Executor, JobOutput, LocalExecutor
from ._preflight import InfeasibleConfig
from ._sweep import Job, Plan, job_problems
from ._train import _git_commit


@dataclasses.dataclass
class SweepOutcome:
    name: str
    jobs: int
    already_done: int
    finished: int
    failed: list[tuple[str, str]]  # (job_id, message)
    wall_seconds: float  # from the first job's start to the last one's end
    compute_seconds: float  # inside the workers, summed
    store_seconds: float  # the driver's store writes, summed

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def driver_id() -> str:
    return process_id()


LOCK_NAME = "sweep.lock"


@contextlib.contextmanager
def directory_lock(out: Path) -> Iterator[None]:
    """One sweep driver per results directory: a second one (any sweep) refuses with one line
    instead of restarting the first one's running jobs. The OS drops the lock when its holder
    dies, so a killed driver never blocks a resume."""
    import fcntl

    path = out / LOCK_NAME
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StoreError(f"{out}: a sweep driver ({holder}) is already running in this directory; "
                             "wait for it to finish (`errorforcing status` shows its progress)") from None
        f.seek(0)
        f.truncate()
        f.write(driver_id())
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_sweep(plan: Plan, out: str | Path, *, executor: Executor | None = None,
              progress: bool = True) -> SweepOutcome:
    problems = job_problems(plan)
    if problems:
        first = next(j for j in plan.jobs if j.job_id in problems)
        raise InfeasibleConfig(f"{len(problems)} of {len(plan.jobs)} jobs cannot run; job {first.position} "
                               f"({first.label}): {problems[first.job_id]}")
    store = RunStore(out)  # a damaged store raises here, before anything is written
    with directory_lock(Path(out)):
        return _run_locked(store, plan, executor, progress)


def _run_locked(store: RunStore, plan: Plan, executor: Executor | None, progress: bool) -> SweepOutcome:
    jobs = plan.jobs
    store.add_sweep(plan.spec.name, plan.spec.text, driver_id(), [
        {"job_id": j.job_id, "position": j.position, "label": j.label, "n_members": j.n_members, "cost": j.cost}
        for j in jobs])
    runs = {r["run_id"]: r for r in store.runs()}
    todo = [j for j in jobs if runs.get(j.job_id, {}).get("status") != "done"]
    for job in todo:
        earlier = runs.get(job.job_id)
        if earlier and earlier["status"] in ("interrupted", "running", "failed"):
            why = {"interrupted": f"interrupted (its driver {earlier.get('owner')} is gone)",
                   "running": f"still marked running by {earlier.get('owner')}", "failed": "failed"}[earlier["status"]]
            print(f"job {job.job_id} ({job.label}) was {why}: running it again", file=sys.stderr)
    events = _StoreEvents(store, plan, len(jobs) - len(todo), len(jobs), progress)
    start = time.perf_counter()
    with events:
        (executor or LocalExecutor()).run(todo, events)
    return SweepOutcome(plan.spec.name, len(jobs), len(jobs) - len(todo), events.n_finished, events.failures,
                        time.perf_counter() - start if todo else 0.0, events.compute, events.store_seconds)


class _StoreEvents:
    """The executor's callbacks: store writes, a progress bar on stderr, timing."""

    def __init__(self, store: RunStore, plan: Plan, already_done: int, total: int, progress: bool):
        self.store, self.plan, self.progress = store, plan, progress
        self.meta = {"version": __version__, "git_commit": _git_commit()}
        self.running: dict[str, Job] = {}
        self.failures: list[tuple[str, str]] = []
        self.n_finished, self.compute, self.store_seconds = 0, 0.0, 0.0
        self.already_done, self.total = already_done, total

    def __enter__(self):
        self.bar = None
        if self.progress:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(f"sweep {self.plan.spec.name}", total=self.total,
                                          completed=self.already_done, status="")
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:  # interrupted: what was in flight is not done
            for job in list(self.running.values()):
                self.store.fail_run(job.job_id)
        if self.bar is not None:
            self.bar.stop()
        return False

    def _timed(self, fn, *args, **kwargs):
        t = time.perf_counter()
        fn(*args, **kwargs)
        self.store_seconds += time.perf_counter() - t

    def _status(self):
        if self.bar is not None:
            running = ", ".join(j.label for j in list(self.running.values())[:2])
            self.bar.update(self.task, completed=self.already_done + self.n_finished + len(self.failures),
                            status=f"failed {len(self.failures)}" + (f" | {running}" if running else ""))

    def started(self, job: Job) -> None:
        record = {"config": job.config.model_dump(mode="json"), **self.meta,
                  "job": {"id": job.job_id, "sweep": job.sweep, "label": job.label}}
        self._timed(self.store.begin_run, job.job_id, json.dumps(record), restart=True)
        self.running[job.job_id] = job
        self._status()

    def finished(self, job: Job, output: JobOutput) -> None:
        self._timed(self.store.save_params_bytes, job.job_id, output.params)
        self._timed(self.store.finish_run, job.job_id, output.rows, seconds=output.seconds)
        self.running.pop(job.job_id, None)
        self.n_finished += 1
        self.compute += output.seconds
        self._status()

    def failed(self, job: Job, message: str) -> None:
        self._timed(self.store.fail_run, job.job_id)
        self.running.pop(job.job_id, None)
        self.failures.append((job.job_id, message))
        line = f"job {job.job_id} ({job.label}) failed: {message}"
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr)
        self._status()
