"""Sweep overheads and executors on this machine.

Runs one small sweep (4 delays of EF-BPTT on delayed XOR, 8 members each) through the CLI
with each executor, into fresh directories, and prints per executor: the command's wall time,
the sweep's wall time (first job handed out to last job stored), the compute time inside the
workers, the driver's store writes, and the overhead (sweep wall time not spent computing, as
a share of compute; in-process only, where jobs do not overlap).

    python benchmarks/bench_sweeps.py [--executors local,local2,ray]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name = "bench"
seeds = 4
[base]
epochs = 20
task.name = "delayed-xor"
forcing.kind = "ef"
forcing.alpha = [0.5, 1.0]
[grid]
"task.delay" = [10, 20, 30, 40]
"""
EXECUTORS = {"local": [], "local2": ["--workers", "2"], "ray": ["--executor", "ray"]}


def run(name: str, spec: Path, out: Path) -> dict:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "errorforcing.cli", "sweep", str(spec), "--out", str(out), "--json",
                        *EXECUTORS[name]], capture_output=True, text=True)
    total = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{name}: {r.stderr}")
    s = json.loads(r.stdout)
    row = {"executor": name, "command_s": round(total, 1), "sweep_wall_s": round(s["wall_seconds"], 1),
           "compute_s": round(s["compute_seconds"], 1), "store_s": round(s["store_seconds"], 3),
           "jobs": s["finished"], "store_ms_per_job": round(1000 * s["store_seconds"] / s["finished"], 1)}
    if name == "local":
        row["overhead_pct"] = round(100 * (s["wall_seconds"] - s["compute_seconds"]) / s["compute_seconds"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executors", default="local,local2,ray")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.toml"
        spec.write_text(SPEC)
        rows = [run(name, spec, Path(tmp) / name) for name in args.executors.split(",")]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
