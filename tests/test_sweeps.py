"""Sweeps: spec expansion and job grouping, bad specs, resume after SIGKILL, concurrent status
readers while a sweep writes."""

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from errorforcing.cli import main
from errorforcing.reproductions import SWEEPS as REPRODUCTIONS
from errorforcing.experiments._sweep import SpecError, expand, job_id, parse_spec, points

from sweep_helpers import N_JOBS, TINY


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    return os.environ | {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def cli(*args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "errorforcing.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


# ----- expansion -----
def test_grid_times_zip_counts_and_grouping():
    spec = parse_spec(textwrap.dedent("""
        seeds = 3
        [base]
        task.name = "delayed-xor"
        [grid]
        "task.delay" = [10, 20]
        "forcing.alpha" = [0.1, 0.5, 1.0]
        "optim.lr" = [1e-3, 3e-4]
        [[zip]]
        "forcing.kind" = ["none", "tf", "ef"]
        "model.gain" = [1.5, 1.5, 1.0]
    """))
    assert len(points(spec)) == 2 * 3 * 2 * 3
    plan = expand(spec)
    # structural: delay × arm; α and lr (and seeds) are vmapped into each job
    assert len(plan.jobs) == 2 * 3
    by_label = {j.label: j for j in plan.jobs}
    ef = by_label["task.delay=10 forcing.kind=ef model.gain=1.0"]
    assert ef.config.forcing.alpha == [0.1, 0.5, 1.0] and ef.config.optim.lr == [3e-4, 1e-3]
    assert ef.n_members == 3 * 2 * 3
    none = by_label["task.delay=20 forcing.kind=none model.gain=1.5"]
    assert none.config.forcing.alpha == [0.0] and none.n_members == 2 * 3  # α is meaningless without forcing
    assert len({j.job_id for j in plan.jobs}) == len(plan.jobs)
    assert [j.job_id for j in expand(spec).jobs] == [j.job_id for j in plan.jobs]  # stable


def test_members_that_are_not_a_product_split_into_jobs():
    spec = parse_spec(textwrap.dedent("""
        seeds = 2
        [zip]
        "forcing.alpha" = [0.1, 0.5, 0.9]
        "optim.lr" = [1e-3, 1e-2, 1e-3]
        [grid]
        seed = [0, 2, 10]
    """))
    jobs = expand(spec).jobs
    # lr 1e-3 pairs with α {0.1, 0.9}, lr 1e-2 with α {0.5}; seeds 0-3 are contiguous, 10-11 not
    got = sorted((j.config.seed, j.config.seeds, tuple(j.config.forcing.alpha), tuple(j.config.optim.lr))
                 for j in jobs)
    assert got == [(0, 4, (0.1, 0.9), (1e-3,)), (0, 4, (0.5,), (1e-2,)),
                   (10, 2, (0.1, 0.9), (1e-3,)), (10, 2, (0.5,), (1e-2,))]
    members = {(j.config.seed + s, a, lr) for j in jobs for s in range(j.config.seeds)
               for a in j.config.forcing.alpha for lr in j.config.optim.lr}
    assert len(members) == sum(j.n_members for j in jobs) == 3 * 3 * 2


def test_job_id_is_the_hash_of_the_grouped_config():
    a, b = (expand(parse_spec(TINY)).jobs[0].config for _ in range(2))
    assert job_id(a) == job_id(b)
    b.task.delay = 5
    assert job_id(a) != job_id(b)


def test_unregistered_names_are_skipped_with_a_note():
    spec = parse_spec('[zip]\n"model.kind" = ["leaky", "not-registered"]\n')
    with pytest.raises(SpecError, match="model.kind"):
        expand(spec)
    plan = expand(spec, skip_unregistered=True)
    assert len(plan.jobs) == 1
    assert plan.skipped == ["skipped 1 point(s) of sweep 'sweep': model.kind = 'not-registered' is not registered yet"]


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
@pytest.mark.parametrize("quick", [True, False])
def test_reproductions_expand(name, quick):
    for spec in REPRODUCTIONS[name](quick):
        plan = expand(spec, skip_unregistered=True)
        assert plan.jobs or plan.skipped
        assert ("QUICK" in spec.note) == quick


@pytest.mark.parametrize("spec, field", [
    ('[grid]\n"task.dela" = [1, 2]\n', "grid.task.dela"),
    ('[grid]\n"task.delay" = []\n', "grid.task.delay"),
    ('[grid]\n"task.delay" = 5\n', "grid.task.delay"),
    ('[grid]\n"task.delay" = ["long"]\n', "task.delay"),
    ('[grid]\n"forcing.alpha" = [0.5, 2.0]\n', "forcing.alpha"),
    ('[zip]\n"task.delay" = [1, 2]\n"model.gain" = [1.0]\n', "zip"),
    ('[base]\nepoch = 3\n', "base.epoch"),
    ('[base]\ntask.kind = "nope"\n', "task.kind"),
    ('seeds = 0\n', "seeds"),
    ('grids = 1\n', "grids"),
    ('[grid]\n"task" = [1]\n', "grid.task"),
    ('[grid]\n"task.options" = [{bogus = 1}]\n', "task.options"),
])
def test_invalid_spec_exits_2_naming_the_field_and_writes_nothing(tmp_path, capsys, spec, field):
    path = tmp_path / "spec.toml"
    path.write_text(spec)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {field}"), err
    assert not out.exists()


def test_bad_executor_options_exit_2(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text(TINY)
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--address", "127.0.0.1:1"]) == 2
    args = ["sweep", str(path), "--out", str(tmp_path / "o"), "--executor", "ray", "--address", "127.0.0.1:1"]
    expected = ["--workers", "--address", "--address" if importlib.util.find_spec("ray") else "--executor"]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert [e.split(":")[1].strip() for e in err] == expected, err
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_the_job_table_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text(TINY)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--dry-run", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [j["label"] for j in table["jobs"]] == [f"threshold={t}" for t in (0.7, 0.8, 0.9, 1.0, 1.1, 1.2)]
    assert all(j["members"] == 4 and j["status"] == "pending" for j in table["jobs"])
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert table["jobs"][0]["job_id"] in text and "6 jobs" in text
    assert not out.exists()


def test_a_job_that_cannot_run_is_refused_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text('seeds = 1\n[base]\nepochs = 1\nmodel.kind = "gru"\nrule.kind = "eprop"\nforcing.kind = "none"\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 2
    assert "cannot run" in capsys.readouterr().err and not out.exists()


def test_a_failing_job_is_recorded_and_the_sweep_exits_1(tmp_path, capsys, monkeypatch):
    from errorforcing.training import EnsembleTrainer

    def crash(self, **kwargs):  # a job that passes every check and then fails while training
        raise RuntimeError("simulated crash during training")

    monkeypatch.setattr(EnsembleTrainer, "run", crash)
    path = tmp_path / "spec.toml"
    path.write_text('seeds = 1\n[base]\nepochs = 1\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    ((job, message),) = summary["failed"]
    assert message.startswith("RuntimeError: simulated crash")
    assert main(["status", str(out), "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["total"]["failed"] == 1 and state["total"]["done"] == 0
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 1  # a rerun tries it again
    assert json.loads(capsys.readouterr().out)["already_done"] == 0


# ----- running: resume and concurrency -----
def _db(directory):
    return sqlite3.connect(f"file:{directory / 'runs.sqlite'}?mode=ro", uri=True, timeout=30)


def _done(directory) -> int:
    try:
        with _db(directory) as db:
            return db.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _members(directory):
    with _db(directory) as db:
        return db.execute("SELECT * FROM members ORDER BY run_id, member").fetchall()


READER = """
import json, os, sys, time
from errorforcing.experiments._status import sweep_status
from errorforcing.store import RunStore
print("ready", flush=True)
while not os.path.exists(os.path.join(sys.argv[1], "runs.sqlite")):
    time.sleep(0.01)
reads, seen = 0, set()
while True:
    state = sweep_status(RunStore(sys.argv[1], create=False))
    reads += 1
    seen.add(state["total"]["done"])
    if state["total"]["jobs"] and state["total"]["done"] == state["total"]["jobs"]:
        break
    time.sleep(0.02)
print(json.dumps({"reads": reads, "seen": sorted(seen)}))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cli_env):
    """An uninterrupted sweep (two worker processes), read by two status readers (and the
    CLI) while it writes."""
    root = tmp_path_factory.mktemp("reference")
    spec, out = root / "spec.toml", root / "out"
    spec.write_text(TINY)
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cli_env) for _ in range(2)]
    for r in readers:  # reading before the sweep starts writing
        assert r.stdout.readline().strip() == "ready", r.communicate()
    # two worker processes: jobs finish concurrently, the driver alone writes
    sweep = cli("sweep", str(spec), "--out", str(out), "--json", "--workers", "2", env=cli_env)
    while _done(out) < 1 and sweep.poll() is None:
        time.sleep(0.02)
    status_call = subprocess.run([sys.executable, "-m", "errorforcing.cli", "status", str(out), "--json"],
                                 capture_output=True, text=True, env=cli_env)
    summary = json.loads(finish(sweep)[0])
    reads = [json.loads(finish(r, 120)[0]) for r in readers]
    return out, summary, reads, status_call


def test_concurrent_status_readers_never_see_a_locked_database(reference):
    out, summary, reads, status_call = reference
    assert summary["finished"] == N_JOBS and not summary["failed"]
    for r in reads:  # each reader saw the sweep progress, job by job, without an error
        assert len(r["seen"]) > 2 and r["seen"][-1] == N_JOBS, r
    assert status_call.returncode == 0 and "locked" not in status_call.stderr, status_call.stderr
    assert json.loads(status_call.stdout)["total"]["jobs"] == N_JOBS
    assert main_status(out) == {"jobs": N_JOBS, "done": N_JOBS, "running": 0, "interrupted": 0, "failed": 0,
                                "pending": 0, "members_done": 4 * N_JOBS}


def main_status(out):
    from errorforcing.experiments._status import sweep_status
    from errorforcing.store import RunStore

    total = sweep_status(RunStore(out, create=False))["total"]
    return {k: v for k, v in total.items() if k != "eta_seconds"}


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, cli_env, reference):
    ref_out = reference[0]
    spec, out = tmp_path / "spec.toml", tmp_path / "out"
    spec.write_text(TINY)
    kept = {}
    for kill_after in (1, 3):  # kill twice, at different points, then let it finish
        sweep = cli("sweep", str(spec), "--out", str(out), env=cli_env)
        while _done(out) < kill_after:
            assert sweep.poll() is None, f"sweep ended before it could be killed: {sweep.communicate()}"
            time.sleep(0.01)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        with sqlite3.connect(out / "runs.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            n_members = dict(db.execute("SELECT job_id, n_members FROM jobs"))
            done = [r for r, in db.execute("SELECT run_id FROM runs WHERE status = 'done'")]
            assert done, "nothing finished before the kill"
            for run_id in done:  # never done without all its members
                count = db.execute("SELECT count(*) FROM members WHERE run_id = ?", (run_id,)).fetchone()[0]
                assert count == n_members[run_id]
            for run_id, created in db.execute("SELECT run_id, created FROM runs WHERE status = 'done'"):
                kept.setdefault(run_id, (created, (out / "params" / f"{run_id}.eqx").stat().st_mtime_ns))
    summary = json.loads(finish(cli("sweep", str(spec), "--out", str(out), "--json", env=cli_env))[0])
    assert summary["already_done"] >= 3 and summary["already_done"] + summary["finished"] == N_JOBS
    with sqlite3.connect(out / "runs.sqlite") as db:
        assert db.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0] == N_JOBS
        for run_id, created in db.execute("SELECT run_id, created FROM runs"):
            if run_id in kept:  # finished jobs were not recomputed
                assert (created, (out / "params" / f"{run_id}.eqx").stat().st_mtime_ns) == kept[run_id]
    assert _members(out) == _members(ref_out)  # same seeds, same numbers
    again = json.loads(finish(cli("sweep", str(spec), "--out", str(out), "--json", env=cli_env))[0])
    assert again["already_done"] == N_JOBS and again["finished"] == 0
