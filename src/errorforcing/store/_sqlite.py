"""The embedded results store: `DIR/runs.sqlite` (SQLite, WAL) plus `DIR/params/RUN_ID.eqx`.

Contract (DESIGN.md): table `runs` (run_id, created, config JSON, status running|done|failed)
and table `members` (one row per ensemble member, with its learning curves as JSON). A run's
members and its `done` status are written in one transaction, so a killed process never
leaves a run marked done without its members.

Sweeps add two tables: `sweeps` (one row per sweep spec run into this directory: its TOML
text and the driver that last ran it) and `jobs` (the planned ensemble jobs; a job's
`job_id` is the `run_id` of the run that executes it, and its timing is written in the same
transaction as the run's members).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import equinox as eqx
import jax
import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id  TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    config  TEXT NOT NULL,
    status  TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed'))
);
CREATE TABLE IF NOT EXISTS members (
    run_id             TEXT NOT NULL REFERENCES runs(run_id),
    member             INTEGER NOT NULL,
    seed               INTEGER NOT NULL,
    task               TEXT NOT NULL,
    rule               TEXT NOT NULL,
    forcing            TEXT NOT NULL,
    alpha              REAL,
    lr                 REAL,
    converged          INTEGER NOT NULL,
    converged_epoch    INTEGER,
    diverged           INTEGER NOT NULL,
    epochs_run         INTEGER NOT NULL,
    final_val_loss     REAL,
    final_val_accuracy REAL,
    curves             TEXT NOT NULL,
    lyap_max_before    REAL,
    lyap_max_after     REAL,
    test_loss          REAL,
    PRIMARY KEY (run_id, member)
);
CREATE TABLE IF NOT EXISTS sweeps (
    name    TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    spec    TEXT NOT NULL,
    started TEXT NOT NULL,
    driver  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id    TEXT PRIMARY KEY,
    sweep     TEXT NOT NULL,
    position  INTEGER NOT NULL,
    label     TEXT NOT NULL,
    n_members INTEGER NOT NULL,
    cost      REAL NOT NULL,
    seconds   REAL,
    finished  TEXT
);
"""

MEMBER_COLUMNS = ("run_id", "member", "seed", "task", "rule", "forcing", "alpha", "lr", "converged",
                  "converged_epoch", "diverged", "epochs_run", "final_val_loss", "final_val_accuracy",
                  "curves", "lyap_max_before", "lyap_max_after", "test_loss")
# Columns added after the first release, with their SQL type: stores written before get them
# (NULL in old rows) the first time they are opened.
ADDED_RUN_COLUMNS = {"owner": "TEXT"}  # "HOST:PID" of the process that records the run
ADDED_MEMBER_COLUMNS = {"lr": "REAL", "lyap_max_before": "REAL", "lyap_max_after": "REAL", "test_loss": "REAL"}


class StoreError(Exception):
    """A results store that cannot be used as asked (damaged, not a store, busy): one line
    naming the file; the CLI prints it and exits with code 2."""


class RunStore:
    """Reads and writes one results directory. Safe for concurrent readers while one writer
    writes (WAL; readers never block the writer).

    `create=False` opens an existing store for reading only: through SQLite's read-only mode
    (`mode=ro`), never switching the journal mode, creating tables or migrating, so a store on
    a read-only directory or mount can be read. A damaged file raises `StoreError` before
    anything is written to it."""

    def __init__(self, directory: str | Path, *, create: bool = True):
        self.directory = Path(directory)
        self.path = self.directory / "runs.sqlite"
        self.readonly = not create
        if not create and not self.path.exists():
            raise FileNotFoundError(f"no results store at {self.path}")
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(f"{self.directory} is a file, not a results directory")
        if self.path.is_dir():
            raise self._damaged("a directory, not a file")
        if self.path.exists():
            self._check()
        if self.readonly:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            # One transaction: `executescript` alone commits each CREATE TABLE by itself, and a
            # reader arriving between two of them would see `runs` without `members` (damaged).
            db.executescript("BEGIN IMMEDIATE;" + SCHEMA)
            _migrate(db)

    def _damaged(self, why: str) -> StoreError:
        return StoreError(f"{self.path} is not a readable errorforcing store: {why}")

    def _check(self) -> None:
        """Readable, intact and ours (a `runs` and a `members` table), checked read-only."""
        try:
            db = self._open_readonly()
            try:
                problems = [r[0] for r in db.execute("PRAGMA quick_check")]
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise self._damaged(str(e)) from None
        if problems != ["ok"]:
            raise self._damaged(problems[0])
        if not tables:  # its writer is creating it right now: the schema is not committed yet
            return
        missing = sorted({"runs", "members"} - tables)
        if missing:
            raise self._damaged(f"no table {missing[0]!r}")

    def _open_readonly(self) -> sqlite3.Connection:
        # Without a -wal file no writer is attached, and `immutable` reads without creating the
        # -wal/-shm files that `mode=ro` leaves behind (and cannot create on a read-only mount).
        wal = self.path.with_name(self.path.name + "-wal").exists()
        uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
        db = sqlite3.connect(uri, uri=True, timeout=60.0)
        db.row_factory = sqlite3.Row
        return db

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            db = self._open_readonly()
        else:
            db = sqlite3.connect(self.path, timeout=60.0)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=60000")
        try:
            with db:  # one transaction: commit on success, roll back on error
                yield db
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                raise self._damaged(str(e)) from None
            if isinstance(e, sqlite3.OperationalError):  # e.g. a read-only directory, a full disk
                raise StoreError(f"{self.path}: {e}") from None
            raise
        finally:
            db.close()

    def _tables(self) -> set[str]:
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    # ----- writes -----
    def begin_run(self, run_id: str, config_json: str, *, restart: bool = False, owner: str | None = None) -> None:
        """Record a run as `running`, owned by `owner` ("HOST:PID", default this process), so
        that readers can tell a killed run (`interrupted`) from a live one. `restart=True` lets
        a sweep take over the row of an earlier attempt that was interrupted or failed (never
        one that is done)."""
        created = _now()
        with self._connect() as db:
            if restart:
                stale = "run_id = ? AND run_id IN (SELECT run_id FROM runs WHERE status != 'done')"
                db.execute(f"DELETE FROM members WHERE {stale}", (run_id,))
                db.execute(f"DELETE FROM runs WHERE {stale}", (run_id,))
            db.execute("INSERT INTO runs (run_id, created, config, status, owner) VALUES (?, ?, ?, 'running', ?)",
                       (run_id, created, config_json, owner or process_id()))

    def stale_runs(self) -> list[dict[str, Any]]:
        """Runs still marked `running` whose owner process is gone (killed): `interrupted`."""
        return [r for r in self.runs() if r["status"] == "interrupted"]

    def mark_failed(self, run_ids: list[str]) -> None:
        """Record interrupted runs as failed (their members were never written)."""
        with self._connect() as db:
            db.executemany("UPDATE runs SET status = 'failed' WHERE run_id = ? AND status = 'running'",
                           [(r,) for r in run_ids])

    def finish_run(self, run_id: str, rows: list[dict[str, Any]], *, seconds: float | None = None) -> None:
        """The run's members and its `done` status in one transaction (and, for a sweep's job,
        how long it computed)."""
        with self._connect() as db:
            db.execute("DELETE FROM members WHERE run_id = ?", (run_id,))
            db.executemany(
                f"INSERT INTO members ({', '.join(MEMBER_COLUMNS)}) VALUES ({', '.join('?' * len(MEMBER_COLUMNS))})",
                [tuple(row.get(c) for c in MEMBER_COLUMNS) for row in rows])
            db.execute("UPDATE runs SET status = 'done' WHERE run_id = ?", (run_id,))
            db.execute("UPDATE jobs SET seconds = ?, finished = ? WHERE job_id = ?", (seconds, _now(), run_id))

    def add_sweep(self, name: str, spec: str, driver: str, jobs: list[dict[str, Any]]) -> None:
        """Record a sweep's spec and planned jobs (`job_id`, `position`, `label`, `n_members`,
        `cost`); a job planned before keeps its row and timing."""
        now = _now()
        with self._connect() as db:
            db.execute("INSERT INTO sweeps VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "spec = excluded.spec, started = excluded.started, driver = excluded.driver",
                       (name, now, spec, now, driver))
            db.executemany("INSERT OR IGNORE INTO jobs (job_id, sweep, position, label, n_members, cost) "
                           "VALUES (:job_id, :sweep, :position, :label, :n_members, :cost)",
                           [j | {"sweep": name} for j in jobs])

    def fail_run(self, run_id: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status = 'failed' WHERE run_id = ?", (run_id,))

    def params_path(self, run_id: str) -> Path:
        return self.directory / "params" / f"{run_id}.eqx"

    def save_params(self, run_id: str, cells) -> Path:
        path = self.params_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".eqx.tmp")
        eqx.tree_serialise_leaves(tmp, cells)
        tmp.replace(path)  # atomic: a reader never sees half a file
        return path

    def save_params_bytes(self, run_id: str, data: bytes) -> Path:
        """Parameters already serialised (`eqx.tree_serialise_leaves`), e.g. by a remote worker."""
        path = self.params_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".eqx.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path

    def load_params(self, run_id: str, like):
        """Parameters of a run, into a pytree shaped `like` (e.g. a freshly built ensemble), in
        the dtype they were saved in: a run trained in float32 loads where `like` was built in
        float64 (`jax_enable_x64`), and the reverse."""
        path = self.params_path(run_id)
        stored = []

        def record_dtype(f, x):
            if eqx.is_array(x):
                stored.append(np.load(f).dtype)
                return x
            return eqx.default_deserialise_filter_spec(f, x)

        eqx.tree_deserialise_leaves(path, like, filter_spec=record_dtype)
        dtypes = iter(stored)
        like = jax.tree.map(lambda x: x.astype(next(dtypes)) if eqx.is_array(x) else x, like)
        return eqx.tree_deserialise_leaves(path, like)

    # ----- reads -----
    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        if "runs" not in self._tables():  # read while its writer creates it
            return []
        query, args = "SELECT * FROM runs", ()
        if status:
            query, args = query + " WHERE status = ?", (status,)
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query + " ORDER BY created, run_id", args)]
        return [_with_liveness(r) for r in rows]

    def members(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The members of the finished (`done`) runs.

        Arguments:
            run_id: only this run's members (None: every finished run's).

        Returns:
            One dict per member, ordered by run and member index, with the `members` table's
            columns (`MEMBER_COLUMNS`); `curves` is parsed from JSON into a dict of lists.
        """
        if not {"runs", "members"} <= self._tables():  # read while its writer creates it
            return []
        query, args = "SELECT m.* FROM members m JOIN runs r USING (run_id) WHERE r.status = 'done'", ()
        if run_id:
            query, args = query + " AND m.run_id = ?", (run_id,)
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query + " ORDER BY m.run_id, m.member", args)]
        for r in rows:
            r["curves"] = json.loads(r["curves"])
            for column in ADDED_MEMBER_COLUMNS:  # a read-only older store is not migrated
                r.setdefault(column, None)
        return rows

    def sweeps(self) -> list[dict[str, Any]]:
        if "sweeps" not in self._tables():
            return []
        with self._connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM sweeps ORDER BY created, name")]

    def jobs(self) -> list[dict[str, Any]]:
        """Every planned job with the status of its run (`pending` if it never started)."""
        if "jobs" not in self._tables():  # a read-only store from before sweeps
            return []
        owner = "r.owner" if "owner" in self._run_columns() else "NULL"
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(
                f"SELECT j.*, coalesce(r.status, 'pending') AS status, {owner} AS owner FROM jobs j "
                "LEFT JOIN runs r ON r.run_id = j.job_id ORDER BY j.sweep, j.position")]
        return [_with_liveness(r) for r in rows]

    def _run_columns(self) -> set[str]:
        with self._connect() as db:
            return {r[1] for r in db.execute("PRAGMA table_info(runs)")}

    def config(self, run_id: str) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return json.loads(row["config"])


def _migrate(db: sqlite3.Connection) -> None:
    """ALTER TABLE ADD COLUMN for every member column an older store lacks."""
    have = {row[1] for row in db.execute("PRAGMA table_info(members)")}
    for column, sql_type in ADDED_MEMBER_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE members ADD COLUMN {column} {sql_type}")
    have_runs = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for column, sql_type in ADDED_RUN_COLUMNS.items():
        if column not in have_runs:
            db.execute(f"ALTER TABLE runs ADD COLUMN {column} {sql_type}")


def process_id() -> str:
    """This process as "HOST:PID" (a run's owner, a sweep's driver)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process "HOST:PID" still runs (None: unknown, e.g. another machine)."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _with_liveness(row: dict[str, Any]) -> dict[str, Any]:
    # `interrupted` is derived, never stored: a run marked running whose owner died.
    if row.get("status") == "running" and owner_alive(row.get("owner")) is False:
        row["status"] = "interrupted"
    return row


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
