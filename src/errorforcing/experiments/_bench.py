"""`errorforcing bench`: seconds per member-epoch of the reference configuration, peak memory,
and achieved GFLOP/s next to a numpy matmul floor of the same shapes measured in the same run.

Each measurement runs in a fresh subprocess so that its peak memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ..training import default_shards

REFERENCE = dict(hidden=50, batch=128, delay=1000, n_batches=4)


def _epoch_flops(members: int, T: int, B: int, N: int, n_batches: int) -> float:
    """Matmul FLOPs of one epoch: forward W_rec φ(h) per step, backward (Wᵀ δ and δ φᵀ)."""
    per_step = 3 * 2 * B * N * N
    return members * n_batches * T * per_step


def numpy_matmul_gflops(B: int, N: int, repeats: int = 20_000, threads: int = 1) -> float:
    """Aggregate GFLOP/s of float32 [B,N]×[N,N] numpy matmuls run in `threads` threads at once
    (numpy releases the GIL in a matmul; one matmul this small runs on one core); best of 3."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    a = np.random.default_rng(0).standard_normal((B, N)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)

    def loop(n):
        for _ in range(n):
            a @ w

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, [100] * threads))
        for _ in range(3):
            t = time.perf_counter()
            list(pool.map(loop, [repeats] * threads))
            best = min(best, time.perf_counter() - t)
    return 2 * B * N * N * repeats * threads / best / 1e9


def measure_training(members: int, epochs: int, checkpoint: bool) -> dict:
    """Wall seconds per epoch of an EF-BPTT ensemble on delayed XOR at the reference size."""
    import resource

    from . import TrainConfig, build_trainer

    cfg = TrainConfig(task={"name": "delayed-xor", "delay": REFERENCE["delay"]},
                      model={"hidden": REFERENCE["hidden"]}, forcing={"kind": "ef", "alpha": [0.5]},
                      rule={"kind": "bptt", "checkpoint": checkpoint}, seeds=members,
                      epochs=epochs + 1, batch=REFERENCE["batch"], threshold=1e-12)
    trainer = build_trainer(cfg)
    times = []
    last = [time.perf_counter()]

    def on_epoch(epoch, tracker, val_loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    trainer.run(on_epoch=on_epoch)
    per_epoch = min(times[1:])  # the first epoch includes compilation
    T = REFERENCE["delay"] + 45
    flops = _epoch_flops(members, T, REFERENCE["batch"], REFERENCE["hidden"], REFERENCE["n_batches"])
    return dict(members=members, checkpoint=checkpoint, threads=trainer.shards, seconds_per_epoch=per_epoch,
                seconds_per_member_epoch=per_epoch / members, compile_and_first_epoch=times[0],
                gflops=flops / per_epoch / 1e9,
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def _in_subprocess(kind: str, env: dict[str, str] | None = None, **kwargs):
    code = (f"import json; from errorforcing.experiments._bench import {kind}; "
            f"print(json.dumps({kind}(**{kwargs!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=None if env is None else os.environ | env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_benchmarks(quick: bool = False, *, show: bool = True) -> dict:
    epochs = 2 if quick else 3
    results: dict = {"reference": REFERENCE | {"T": REFERENCE["delay"] + 45}}
    cores = default_shards()
    results["cores"] = cores
    # one BLAS thread per calling thread, else OpenBLAS's own threads contend with ours
    single_blas = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    floor = dict(B=REFERENCE["batch"], N=REFERENCE["hidden"])
    results["numpy_matmul_gflops"] = _in_subprocess("numpy_matmul_gflops", single_blas, **floor)
    results["numpy_matmul_gflops_all_cores"] = _in_subprocess("numpy_matmul_gflops", single_blas, **floor,
                                                              threads=cores)
    results["training"] = [
        _in_subprocess("measure_training", members=1, epochs=epochs, checkpoint=False),
        _in_subprocess("measure_training", members=20, epochs=epochs, checkpoint=False),
    ]
    for r in results["training"]:
        r["fraction_of_numpy_floor"] = r["gflops"] / results["numpy_matmul_gflops"]
        r["fraction_of_numpy_floor_all_cores"] = r["gflops"] / results["numpy_matmul_gflops_all_cores"]
    results["extra"] = _extra_benchmarks(quick)
    if show:
        _show(results)
    return results


def _extra_benchmarks(quick: bool) -> dict:
    """Benchmarks contributed by other subsystems (rules, analysis), when present."""
    extra = {}
    try:
        from ..analysis._bench import bench_lyapunov
    except ImportError:
        bench_lyapunov = None
    if bench_lyapunov is not None:
        extra["lyapunov"] = bench_lyapunov()
    try:
        from ..analysis._bench import bench_fixed_points
    except ImportError:
        bench_fixed_points = None
    if bench_fixed_points is not None:
        extra["fixed_points"] = bench_fixed_points(baseline_states=16 if quick else 64)
    try:
        from ..rules._bench import bench_rules
    except ImportError:
        bench_rules = None
    if bench_rules is not None:
        extra["rules"] = bench_rules(quick=quick)
    return extra


def _show(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ref = results["reference"]
    table = Table(title=f"EF-BPTT, delayed XOR, N={ref['hidden']}, batch {ref['batch']}, T={ref['T']}, "
                        f"{ref['n_batches']} batches/epoch; numpy {ref['batch']}×{ref['hidden']}×{ref['hidden']} "
                        f"matmul floor: {results['numpy_matmul_gflops']:.1f} GFLOP/s on one core, "
                        f"{results['numpy_matmul_gflops_all_cores']:.1f} on {results['cores']}")
    for col in ("members", "threads", "s/epoch", "s/member-epoch", "GFLOP/s", "× floor 1 core",
                "× floor all cores", "peak GiB", "1st epoch s"):
        table.add_column(col)
    for r in results["training"]:
        table.add_row(str(r["members"]), str(min(r["threads"], r["members"])), f"{r['seconds_per_epoch']:.3f}",
                      f"{r['seconds_per_member_epoch']:.3f}", f"{r['gflops']:.1f}",
                      f"{r['fraction_of_numpy_floor']:.2f}", f"{r['fraction_of_numpy_floor_all_cores']:.2f}",
                      f"{r['peak_rss_gib']:.2f}",
                      f"{r['compile_and_first_epoch']:.1f}")
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)  # a log file gets whole rows
    console.print(table)
    for name, value in results["extra"].items():
        console.print(f"{name}: {json.dumps(value)}")
