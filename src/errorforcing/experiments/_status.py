"""Progress of the sweeps in a results directory: job counts per status and an ETA."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..store import RunStore, owner_alive

STATUSES = ("done", "running", "interrupted", "failed", "pending")


def _seconds_since(stamp: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(stamp)).total_seconds()


def sweep_status(store: RunStore) -> dict[str, Any]:
    """Per sweep: jobs (total, done, running, interrupted, failed, pending), members done,
    whether its driver still runs, and the ETA in seconds (None when it cannot be estimated).
    `interrupted`: marked running, but the process that owned it is gone (killed)."""
    now = datetime.now(timezone.utc)
    jobs = store.jobs()
    sweeps = []
    for sweep in store.sweeps():
        mine = [j for j in jobs if j["sweep"] == sweep["name"]]
        counts = {s: sum(j["status"] == s for j in mine) for s in STATUSES}
        alive = owner_alive(sweep["driver"])
        sweeps.append({"name": sweep["name"], "jobs": len(mine), **counts,
                       "members_done": sum(j["n_members"] for j in mine if j["status"] == "done"),
                       "driver": sweep["driver"], "driver_alive": alive,
                       "eta_seconds": _eta(mine, sweep["started"], now) if alive is not False else None})
    planned = {j["job_id"] for j in jobs}
    other = [r for r in store.runs() if r["run_id"] not in planned]
    totals = {k: sum(s[k] for s in sweeps) for k in ("jobs", *STATUSES, "members_done")}
    etas = [s["eta_seconds"] for s in sweeps if s["eta_seconds"] is not None]
    return {"sweeps": sweeps, "total": totals | {"eta_seconds": max(etas) if etas else None},
            "other_runs": {s: sum(r["status"] == s for r in other) for s in ("done", "running", "interrupted", "failed")}}


def _eta(jobs: list[dict[str, Any]], started: str, now: datetime) -> float | None:
    """Remaining estimated cost over the observed rate: cost finished per wall second since
    this sweep (re)started if any job finished since (so parallel workers count), else the
    summed compute seconds per cost of all finished jobs."""
    remaining = sum(j["cost"] for j in jobs if j["status"] in ("running", "interrupted", "pending"))
    if remaining == 0:
        return 0.0
    done = [j for j in jobs if j["status"] == "done" and j["seconds"] is not None]
    since = [j for j in done if j["finished"] and j["finished"] >= started]
    elapsed = _seconds_since(started, now)
    if since and elapsed > 0:
        return remaining * elapsed / sum(j["cost"] for j in since)
    if done and sum(j["cost"] for j in done) > 0:
        return remaining * sum(j["seconds"] for j in done) / sum(j["cost"] for j in done)
    return None
