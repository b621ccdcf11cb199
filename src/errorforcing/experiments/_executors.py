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
from typing import Any, Protocol, Sequence

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


def execute_job(job_id: str, config_json: str) -> dict[str, Any]:
    """Train one job and return it as plain data (what crosses process and machine borders)."""
    import equinox as eqx

    from ._config import TrainConfig
    from ._train import train

    config = TrainConfig.model_validate_json(config_json)
    start = time.perf_counter()
    result = train(config, progress=False, run_id=job_id)
    seconds = time.perf_counter() - start
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, result.ensemble.cells)
    return {"job_id": job_id, "rows": json.dumps(result.rows), "params": buffer.getvalue(),
            "seconds": seconds, "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _decode(wire: dict[str, Any]) -> JobOutput:
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
                except Exception as e:  # a job's failure is recorded; the sweep goes on
                    events.failed(job, _error_line(e))
                else:
                    events.finished(job, output)
            return
        self._run_pool(jobs, events)

    def _run_pool(self, jobs: Sequence[Job], events: JobEvents) -> None:
        import concurrent.futures as cf
        import multiprocessing

        queue = list(jobs)[::-1]
        with cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            in_flight: dict[cf.Future, Job] = {}
            try:
                while queue or in_flight:
                    # only as many submitted as there are workers, so `running` in the store is true
                    while queue and len(in_flight) < self.workers:
                        job = queue.pop()
                        events.started(job)
                        in_flight[pool.submit(execute_job, *_payload(job))] = job
                    done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        job = in_flight.pop(future)
                        try:
                            output = _decode(future.result())
                        except Exception as e:
                            events.failed(job, _error_line(e))
                        else:
                            events.finished(job, output)
            except BaseException:
                for future in in_flight:
                    future.cancel()
                raise


class RayExecutor:
    """Jobs as Ray tasks (one CPU each) on the cluster at `address` (`HOST:PORT` of a running
    head, or `ray://HOST:PORT` for Ray Client), or on a local Ray instance started here when
    `address` is None. Ray re-runs a task whose worker died (`max_retries`); a job that raises
    is not retried (the same config would raise again)."""

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
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING,
                         include_dashboard=False, configure_logging=False)
            try:
                self._run(ray, jobs, events)
            finally:
                if started_here:
                    ray.shutdown()

    def _run(self, ray, jobs: Sequence[Job], events: JobEvents) -> None:
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(execute_job)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = list(jobs)[::-1]
        in_flight: dict[Any, Job] = {}
        try:
            while queue or in_flight:
                # a bounded number of tasks in flight: results stream back while the rest wait
                while queue and len(in_flight) < slots:
                    job = queue.pop()
                    events.started(job)
                    in_flight[remote.remote(*_payload(job))] = job
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    job = in_flight.pop(ref)
                    try:
                        output = _decode(ray.get(ref))
                    except ray.exceptions.RayTaskError as e:
                        events.failed(job, _error_line(e.cause) if e.cause else str(e).splitlines()[0])
                    except ray.exceptions.RayError as e:  # retries used up: worker or node lost
                        events.failed(job, f"{type(e).__name__}: {str(e).splitlines()[0]}")
                    else:
                        events.finished(job, output)
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise


def make_executor(kind: str, *, workers: int = 1, address: str | None = None) -> Executor:
    if kind == "local":
        if address:
            raise ValueError("--address is only for --executor ray")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address)
    raise ValueError(f"unknown executor {kind!r}; choose local or ray")
