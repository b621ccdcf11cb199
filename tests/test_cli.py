"""The command line end to end on a temporary directory."""

import json
import sqlite3
import statistics
import subprocess
import sys

import pytest

from errorforcing.store import MEMBER_COLUMNS

TINY = ["--delay", "4", "--seeds", "2", "--epochs", "2", "--hidden", "8", "--batch", "32"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "errorforcing.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def _columns(db, table):
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def test_train_writes_the_store(tmp_path):
    out = tmp_path / "runs"
    r = run_cli("train", "--task", "delayed-xor", "--forcing", "ef", "--alpha", "0.2,1.0", *TINY,
                "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert {s["alpha"] for s in summary["settings"]} == {0.2, 1.0}
    test_losses = {(m["seed"], m["alpha"]): m["test_loss"] for m in summary["members"]}
    assert len(test_losses) == 4 and all(v > 0 for v in test_losses.values())
    for s in summary["settings"]:
        mine = [v for (_, a), v in test_losses.items() if a == s["alpha"]]
        assert s["median_test_loss"] == pytest.approx(statistics.median(mine))
    db = sqlite3.connect(out / "runs.sqlite")
    assert {"run_id", "created", "config", "status"} <= set(_columns(db, "runs"))
    assert set(MEMBER_COLUMNS) - {"lr"} <= set(_columns(db, "members"))
    (run_id, status, config), = db.execute("SELECT run_id, status, config FROM runs")
    assert status == "done" and run_id == summary["run_id"]
    assert json.loads(config)["config"]["forcing"]["alpha"] == [0.2, 1.0]
    rows = db.execute("SELECT member, seed, alpha, epochs_run, converged, diverged, curves FROM members").fetchall()
    assert len(rows) == 4
    assert dict(((seed, alpha), loss) for seed, alpha, loss in db.execute(
        "SELECT seed, alpha, test_loss FROM members")) == test_losses
    assert sorted((seed, alpha) for _, seed, alpha, *_ in rows) == [(0, 0.2), (0, 1.0), (1, 0.2), (1, 1.0)]
    for *_, epochs_run, converged, diverged, curves in rows:
        curves = json.loads(curves)
        assert epochs_run == 2 and len(curves["val_loss"]) == 2 and len(curves["train_loss"]) == 2
    assert (out / "params" / f"{run_id}.eqx").stat().st_size > 0
    assert (out / f"curves-{run_id}.png").stat().st_size > 0


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('seeds = 1\nepochs = 1\nbatch = 16\n[task]\nname = "evidence-integration"\ndelay = 3\n'
                   '[forcing]\nkind = "tf"\nalpha = [0.5]\n[model]\nhidden = 6\n')
    r = run_cli("train", "--config", str(cfg), "--delay", "5", "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr
    config = json.loads(sqlite3.connect(tmp_path / "o" / "runs.sqlite").execute("SELECT config FROM runs").fetchone()[0])
    assert config["config"]["task"] == {"name": "evidence-integration", "delay": 5, "shift": 0.0, "options": {}}
    assert config["config"]["forcing"]["kind"] == "tf" and config["config"]["model"]["hidden"] == 6


def test_compare_writes_three_methods_and_a_figure(tmp_path):
    out = tmp_path / "cmp"
    r = run_cli("compare", "--task", "delayed-xor", *TINY, "--alphas", "0.5,1.0", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [b["label"] for b in summary["best"]] == ["BPTT", "TF-BPTT", "EF-BPTT"]
    for b in summary["best"]:
        assert 0.0 <= b["ci_low"] <= b["fraction"] <= b["ci_high"] <= 1.0
        assert b["median_test_loss"] > 0
    db = sqlite3.connect(out / "runs.sqlite")
    assert db.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0] == 3
    forcings = db.execute("SELECT forcing, count(*) FROM members GROUP BY forcing ORDER BY forcing").fetchall()
    assert forcings == [("ef", 4), ("none", 2), ("tf", 4)]
    assert (out / "compare.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, field", [
    (["train", "--task", "nope"], "task.kind"),
    (["train", "--forcing", "tf", "--alpha", "1.5"], "forcing.alpha"),
    (["train", "--delay", "-3"], "task.delay"),
    (["train", "--seeds", "0"], "seeds"),
    (["train", "--alpha", "x"], "alpha"),
    (["train", "--rule", "magic"], "rule.kind"),
    (["compare", "--seeds", "0"], "seeds"),
    (["compare", "--alphas", "2"], "forcing.alpha"),
    (["train", "--config", "/nonexistent.toml"], "--config"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args, field):
    # in-process (nothing compiles; tests/test_cli_package.py runs the installed command)
    from errorforcing.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_threads_environment_exits_2(tmp_path, capsys, monkeypatch, value):
    from errorforcing.cli import main

    monkeypatch.setenv("ERRORFORCING_THREADS", value)
    assert main(["train", "--task", "delayed-xor", "--epochs", "1", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "ERRORFORCING_THREADS" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_tasks_lists_sources():
    r = run_cli("tasks", "--json")
    assert r.returncode == 0
    names = {t["name"]: t for t in json.loads(r.stdout)}
    assert {"delayed-xor", "evidence-integration", "sine"} <= set(names)
    assert all(t["source"] for t in names.values())


def test_tasks_show_draws_a_trial(tmp_path):
    out = tmp_path / "trial.png"
    r = run_cli("tasks", "show", "evidence-integration", "--delay", "10", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 5_000


def test_every_registered_task_is_listed_with_its_shape():
    from errorforcing.experiments import TASKS

    r = run_cli("tasks", "--json")
    rows = {t["name"]: t for t in json.loads(r.stdout)}
    assert set(rows) == set(TASKS)
    for t in rows.values():
        assert t.get("unavailable") or (t["n_in"] >= 1 and t["n_out"] >= 1 and t["n_steps"] >= 1)
