"""Where jobs run: `LocalExecutor` (this process, or a pool of worker processes) and
`RayExecutor` (tasks on a Ray cluster). Workers only compute; results come back to the
driver as plain data (JSON text and serialised parameter bytes) and the driver alone writes
the store, through the `JobEvents` it passes in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import sys
import time
from typing import Any, Callable, Iterable, Protocol, Sequence

from ._sweep import Job


@dataclasses.dataclass(frozen=True)
class JobOutput:
    job_id: str
    rows: list[dict[str, Any]]  # the store's member rows
    params: bytes  # eqx.tree_serialise_leaves of the trained ensemble
    seconds: float  # compute time inside the worker
    worker: str


class JobEvents(Protocol):
    """Called in the driver only, one call at a time."""

    def started(self, job: Job) -> None: ...
    def finished(self, job: Job, output: JobOutput) -> None: ...
    def failed(self, job: Job, message: str) -> None: ...


class Executor(Protocol):
    def run(self, jobs: Sequence[Job], events: JobEvents) -> None: ...


class JobFailed(Exception):
    """The job itself raised (in the worker); its message is one line."""


def execute_job(job_id: str, config_json: str, threads: int | None = None) -> dict[str, Any]:
    """Train one job and return it as plain data (what crosses process and machine borders).
    A job that raises comes back as `{"error": "Type: message"}`: an exception object might
    not even be deserialisable on the driver, and a retry would only raise again.
    `threads`: the CPU cores this worker may use (the ensemble's parallel shards), so that
    workers sharing a machine do not oversubscribe it."""
    import equinox as eqx

    from ..training import THREADS_ENV
    from ._config import TrainConfig
    from ._train import train

    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        config = TrainConfig.model_validate_json(config_json)
        start = time.perf_counter()
        result = train(config, progress=False, run_id=job_id)
        seconds = time.perf_counter() - start
        buffer = io.BytesIO()
        eqx.tree_serialise_leaves(buffer, result.ensemble.cells)
    except Exception as e:
        return {"job_id": job_id, "error": _error_line(e), "worker": worker}
    return {"job_id": job_id, "rows": json.dumps(result.rows), "params": buffer.getvalue(),
            "seconds": seconds, "worker": worker}


def _decode(wire: dict[str, Any]) -> JobOutput:
    if "error" in wire:
        raise JobFailed(wire["error"])
    return JobOutput(wire["job_id"], json.loads(wire["rows"]), wire["params"], float(wire["seconds"]),
                     wire["worker"])


def _payload(job: Job) -> tuple[str, str]:
    return job.job_id, job.config.model_dump_json()


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class LocalExecutor:
    """Jobs in this process one after another (`workers=1`), or in a pool of `workers` fresh
    processes (spawned, not forked: JAX is not fork-safe)."""

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def run(self, jobs: Sequence[Job], events: JobEvents) -> None:
        if self.workers == 1:
            for job in jobs:
                events.started(job)
                try:
                    output = _decode(execute_job(*_payload(job)))
                except JobFailed as e:  # recorded; the sweep goes on
                    events.failed(job, str(e))
                else:
                    events.finished(job, output)
            return
        self._run_pool(jobs, events)

    def _run_pool(self, jobs: Sequence[Job], events: JobEvents) -> None:
        import concurrent.futures as cf
        import multiprocessing
        from concurrent.futures.process import BrokenProcessPool

        from ..training import usable_cores

        threads = max(1, usable_cores() // self.workers)
        with cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            _stream(jobs, events, self.workers,
                    submit=lambda job: pool.submit(execute_job, *_payload(job), threads),
                    wait=lambda futures: cf.wait(futures, return_when=cf.FIRST_COMPLETED)[0],
                    collect=lambda future: future.result(), lost=(BrokenProcessPool,),
                    cancel=lambda future: future.cancel())


def _stream(jobs: Sequence[Job], events: JobEvents, slots: int, *, submit: Callable[[Job], Any],
            wait: Callable[[list], Iterable], collect: Callable[[Any], dict[str, Any]],
            lost: tuple[type[BaseException], ...], cancel: Callable[[Any], None]) -> None:
    """Keep at most `slots` jobs in flight (so `running` in the store is true and results
    stream back as they finish); `lost`: the errors of a worker that died."""
    queue = list(jobs)[::-1]
    in_flight: dict[Any, Job] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < slots:
                job = queue.pop()
                events.started(job)
                in_flight[submit(job)] = job
            for handle in wait(list(in_flight)):
                job = in_flight.pop(handle)
                try:
                    output = _decode(collect(handle))
                except JobFailed as e:
                    events.failed(job, str(e))
                except lost as e:
                    events.failed(job, _error_line(e))
                else:
                    events.finished(job, output)
    except BaseException:
        for handle in in_flight:
            cancel(handle)
        raise


class RayExecutor:
    """Jobs as Ray tasks (one CPU each) on the cluster at `address` (`HOST:PORT` of a running
    head, or `ray://HOST:PORT` for Ray Client), or on a local Ray instance started here when
    `address` is None. Ray re-runs a task whose worker died (`max_retries`); a job that raises
    is not retried: it comes back as a failure (the same config would raise again)."""

    def __init__(self, address: str | None = None, *, max_retries: int = 3):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'errorforcing[ray]'") from None
        self.address, self.max_retries = address, max_retries

    def run(self, jobs: Sequence[Job], events: JobEvents) -> None:
        import logging

        import ray

        # The driver's stdout carries results (--json); Ray prints workers' output and the
        # cluster's messages (e.g. "a worker died") there, so they go to stderr instead.
        with contextlib.redirect_stdout(sys.stderr):
            started_here = not ray.is_initialized()
            if started_here:
                if self.address:
                    _match_cluster_auth()
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING,
                         include_dashboard=False, configure_logging=False)
            try:
                self._run(ray, jobs, events)
            finally:
                if started_here:
                    ray.shutdown()

    def _run(self, ray, jobs: Sequence[Job], events: JobEvents) -> None:
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(execute_job)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        _stream(jobs, events, slots, submit=lambda job: remote.remote(*_payload(job), 1),
                wait=lambda refs: ray.wait(refs, num_returns=1)[0], collect=ray.get,
                lost=(ray.exceptions.RayError,),  # retries used up: worker or node lost
                cancel=lambda ref: ray.cancel(ref, force=True))


def _match_cluster_auth() -> None:
    """`ray start` turns Ray's token authentication on when a token exists (~/.ray/auth_token,
    which a local `ray.init()` creates) and RAY_AUTH_MODE is unset; a driver connecting to that
    cluster must do the same or the head refuses it. A token sent to a head without
    authentication is ignored, so this is safe either way."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def make_executor(kind: str, *, workers: int = 1, address: str | None = None) -> Executor:
    if kind == "local":
        if address:
            raise ValueError("--address is only for --executor ray")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {kind!r}; choose local or ray")
