"""Faults: damaged and read-only stores, killed runs, concurrent sweep drivers."""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from errorforcing.cli import main
from errorforcing.experiments import TrainConfig
from errorforcing.experiments._train import config_record
from errorforcing.store import RunStore, StoreError

TINY = ["--delay", "4", "--seeds", "2", "--epochs", "2", "--hidden", "8", "--batch", "32"]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` with the hash of its bytes."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def write_finished_run(out: Path, run_id: str = "r1", n: int = 2) -> None:
    """A store with one finished run of `n` members, written through the store's own API (no
    training: these tests are about the store, and a compile costs a minute on a busy machine)."""
    cfg = TrainConfig(seeds=n, epochs=2, out=str(out))
    store = RunStore(out)
    store.begin_run(run_id, config_record(cfg))
    curves = json.dumps({"train_loss": [0.5, 0.2], "val_loss": [0.4, 0.1 * (1 + 0.1)], "val_accuracy": [0.5, 1.0]})
    store.finish_run(run_id, [dict(run_id=run_id, member=i, seed=i, task="delayed-xor", rule="bptt", forcing="ef",
                                   alpha=0.5, lr=3e-4, converged=i % 2, converged_epoch=2 if i % 2 else None,
                                   diverged=0, epochs_run=2, final_val_loss=0.11, final_val_accuracy=1.0,
                                   curves=curves) for i in range(n)])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results directory with one finished run."""
    out = tmp_path_factory.mktemp("finished") / "runs"
    write_finished_run(out)
    return out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _damage(directory: Path, how: str) -> None:
    path = directory / "runs.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else os.urandom(len(data)))


@pytest.mark.parametrize("how", ["truncated", "random"])
@pytest.mark.parametrize("command", ["status", "report", "export", "analyze", "sweep", "train"])
def test_damaged_store_is_one_line_and_untouched(finished, tmp_path, capsys, how, command):
    out = tmp_path / "damaged"
    shutil.copytree(finished, out)
    _damage(out, how)
    spec = tmp_path / "spec.toml"
    spec.write_text('[base]\nseeds = 1\nepochs = 1\nbatch = 8\nmodel.hidden = 4\ntask.delay = 2\n'
                    '[grid]\n"forcing.kind" = ["ef"]\n')
    argv = {"status": ["status", str(out)], "report": ["report", str(out)],
            "export": ["export", str(out), "--csv"], "analyze": ["analyze", "lyapunov", str(out)],
            "sweep": ["sweep", str(spec), "--out", str(out)],
            "train": ["train", *TINY, "--out", str(out)]}[command]
    before = snapshot(out)
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"{out / 'runs.sqlite'} is not a readable errorforcing store: " in line
    assert snapshot(out) == before


def test_readers_open_read_only_and_write_nothing(finished, tmp_path, capsys):
    out = tmp_path / "ro"
    shutil.copytree(finished, out)
    before = snapshot(out)
    assert main(["status", str(out), "--json"]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert main(["export", str(out), "--csv", "--out", str(tmp_path / "members.csv")]) == 0
    capsys.readouterr()
    assert snapshot(out) == before  # no -wal/-shm, no new tables, no journal switch
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "members.csv").read_text().count("\n") == 3  # header + 2 members
    store = RunStore(out, create=False)
    assert len(store.members()) == 2
    with pytest.raises(StoreError, match="readonly"):
        store.begin_run("x", "{}")  # the connection itself is read-only
    assert snapshot(out) == before


def test_read_only_store_does_not_migrate(finished, tmp_path):
    """An old store (without the runs.owner column) is read as it is, not altered."""
    out = tmp_path / "old"
    shutil.copytree(finished, out)
    db = sqlite3.connect(out / "runs.sqlite")
    db.execute("ALTER TABLE runs DROP COLUMN owner")
    db.commit()
    db.close()
    before = snapshot(out)
    store = RunStore(out, create=False)
    assert [r["status"] for r in store.runs()] == ["done"] and len(store.members()) == 2
    assert store.jobs() == []
    assert snapshot(out) == before


def test_a_reader_during_creation_never_sees_half_a_schema(tmp_path, monkeypatch):
    """A reader that opens the store between the writer's CREATE TABLE statements sees either no
    tables (being created) or all of them, never `runs` without `members` (CI failed on this race:
    `executescript` committed each statement by itself). The reader is run at the start of every
    statement the creating connection executes, so the interleaving is forced, not hoped for."""
    out = tmp_path / "new"
    real_connect = sqlite3.connect
    seen: list[str] = []

    def read_now(statement: str) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE"):
            try:
                RunStore(out, create=False)
                seen.append("ok")
            except StoreError as e:
                seen.append(str(e))

    def connect(*args, **kwargs):
        db = real_connect(*args, **kwargs)
        if not kwargs.get("uri"):  # the writer's connection, not the reader's read-only one
            db.set_trace_callback(read_now)
        return db

    monkeypatch.setattr(sqlite3, "connect", connect)
    RunStore(out)
    monkeypatch.undo()
    assert len(seen) == 4 and seen == ["ok"] * 4, seen


# ----- killed runs and concurrent drivers (subprocesses: a real SIGKILL, real processes) -----
@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax-cache")
    return os.environ | {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "ERRORFORCING_THREADS": "1"}


def _cli(*args, env):
    return subprocess.Popen([sys.executable, "-m", "errorforcing.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _statuses(out: Path) -> list[str]:
    try:
        return [r["status"] for r in RunStore(out, create=False).runs()]
    except (FileNotFoundError, StoreError):
        return []


def test_killed_train_is_interrupted_and_a_rerun_says_so(tmp_path, capsys, cli_env):
    out = tmp_path / "runs"
    proc = _cli("train", *TINY[:-4], "--hidden", "8", "--batch", "32", "--epochs", "1000", "--out", str(out), env=cli_env)
    deadline = time.time() + 120
    while "running" not in _statuses(out):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _statuses(out) == ["interrupted"]  # the owner HOST:PID is gone
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["other_runs"]["interrupted"] == 1
    (stale,) = RunStore(out, create=False).runs()
    # a rerun into the same directory retires the stale run, and says so
    from errorforcing.experiments._train import _retire_stale_runs

    _retire_stale_runs(RunStore(out))  # what `train` does on opening its --out (not rerun here: a compile)
    err = capsys.readouterr().err
    assert f"run {stale['run_id']} in {out} was interrupted" in err and "marked failed" in err
    assert _statuses(out) == ["failed"]


SPEC_2 = """
name = "two"
seeds = 2
[base]
epochs = 3
batch = 16
train_trials = 32
val_trials = 8
task.delay = 4
model.hidden = 6
forcing.alpha = [0.5]
[grid]
threshold = [0.7, 0.9]
"""


def _table(out: Path, query: str):
    with sqlite3.connect(f"file:{out / 'runs.sqlite'}?mode=ro", uri=True) as db:
        return db.execute(query).fetchall()


@pytest.mark.slow
def test_two_concurrent_drivers_end_as_one(tmp_path, cli_env):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC_2)
    shared, single = tmp_path / "shared", tmp_path / "single"
    procs = [_cli("sweep", str(spec), "--out", str(shared), "--json", env=cli_env) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (refused_err,) = [err for code, _, err in results if code == 2]
    lines = refused_err.strip().splitlines()
    assert len(lines) == 1 and "already running in this directory" in lines[0], lines
    finished_single = _cli("sweep", str(spec), "--out", str(single), "--json", env=cli_env)
    assert finished_single.wait(timeout=600) == 0, finished_single.communicate()
    for query in ("SELECT run_id, status FROM runs ORDER BY run_id", "SELECT * FROM members ORDER BY run_id, member",
                  "SELECT job_id, sweep, position, label, n_members, cost FROM jobs ORDER BY job_id"):
        assert _table(shared, query) == _table(single, query)
