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
