"""The Ray executor on a real local Ray cluster: a sweep through `--address`, with one worker
process killed while it runs a job; every job still finishes, once."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweep_helpers import N_JOBS, TINY as SPEC

pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else "ray"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


@pytest.fixture
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs and its own temp dir; stopped by killing exactly the
    processes that carry that temp dir (never `ray stop`, which stops every Ray on the machine)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    port = _free_port()
    cache = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    env = os.environ | {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "RAY_USAGE_STATS_ENABLED": "0",
                        # the same on head and driver, whatever tokens this machine's ~/.ray holds
                        "RAY_AUTH_MODE": "disabled"}
    start = subprocess.run([_ray_cli(), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                            "--num-cpus=2", f"--temp-dir={temp}", "--include-dashboard=false",
                            "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=180)

    def mine() -> set[int]:
        """This head's processes: those naming its temp dir or its address, and their children."""
        def named(pid):
            cmd = _cmdline(pid)
            return temp in cmd or any(a.startswith(("--address=", "--gcs-address=")) and a.endswith(f":{port}")
                                      for a in cmd.split())
        pids = {p for p in _pids() if named(p)}
        parents = {p: _ppid(p) for p in _pids()}
        while True:
            more = {p for p, pp in parents.items() if pp in pids} - pids
            if not more:
                return pids
            pids |= more

    try:
        assert start.returncode == 0, start.stderr
        yield f"127.0.0.1:{port}", env, mine
    finally:
        tree = mine()  # before killing: orphans lose their parent
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
            alive = [p for p in tree if _cmdline(p)]
            for pid in alive:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while any(_cmdline(p) for p in tree) and time.monotonic() < deadline:
                time.sleep(0.1)


def test_ray_sweep_survives_a_killed_worker(tmp_path, ray_head):
    address, env, head_pids = ray_head
    raylet = next(p for p in head_pids() if "raylet" in _cmdline(p).split(" ")[0])
    spec, out = tmp_path / "spec.toml", tmp_path / "out"
    spec.write_text(SPEC)
    sweep = subprocess.Popen([sys.executable, "-m", "errorforcing.cli", "sweep", str(spec), "--out", str(out),
                              "--executor", "ray", "--address", address, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and sweep.poll() is None and time.monotonic() < deadline:
        for pid in _pids():  # a worker of this cluster's raylet, in the middle of a job
            if _ppid(pid) == raylet and _cmdline(pid).startswith("ray::execute_job"):
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.02)
    stdout, stderr = sweep.communicate(timeout=300)
    assert killed is not None, "no worker was caught running a job"
    assert sweep.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["finished"] == N_JOBS and summary["failed"] == []
    with sqlite3.connect(out / "runs.sqlite") as db:
        runs = db.execute("SELECT run_id, status FROM runs").fetchall()
        assert len(runs) == N_JOBS and {s for _, s in runs} == {"done"}
        counts = dict(db.execute("SELECT run_id, count(*) FROM members GROUP BY run_id"))
        planned = dict(db.execute("SELECT job_id, n_members FROM jobs"))
        assert counts == planned and set(planned.values()) == {4}
        assert db.execute("SELECT count(*) FROM members WHERE final_val_loss IS NULL").fetchone()[0] == 0
        workers = {json.loads(c)["job"]["id"] for c, in db.execute("SELECT config FROM runs")}
        assert workers == set(planned)
