"""The training benchmarks of `errorforcing bench`: seconds per member-epoch of the reference
configuration, peak memory, and achieved GFLOP/s next to a numpy matmul floor of the same shapes
measured in the same run; `--scaling`: the same per member-epoch cost and peak memory as N,
members and T grow.

Each measurement runs in a fresh subprocess so that its peak memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from ..training import default_shards

REFERENCE = dict(hidden=50, batch=128, delay=1000, n_batches=4, members=20)
TARGET_SECONDS_PER_MEMBER_EPOCH = 0.077  # issue 15: ≥ 100× the published code (7.7 s per seed-epoch)
SCALING_AXES = dict(hidden=(50, 100, 200, 400), members=(1, 20, 100), T=(145, 445, 1045))
MEMORY_LIMIT_GIB = 8.0  # issue 15: 100 members at T = 1045 must fit


def _epoch_flops(members: int, T: int, trials: int, N: int) -> float:
    """Matmul FLOPs of one epoch that computes `trials` trials (the sum of its batch sizes,
    `EnsembleTrainer.batch_sizes`): forward W_rec φ(h) per step, backward (Wᵀ δ and δ φᵀ)."""
    per_trial_step = 3 * 2 * N * N
    return members * trials * T * per_trial_step


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


def device_info() -> dict:
    """The device the benchmarks ran on: platform (cpu, gpu, tpu), kind, count, jax version."""
    import jax

    device = jax.devices()[0]
    return dict(platform=device.platform, device_kind=device.device_kind, device_count=jax.device_count(),
                jax=jax.__version__)


def _reference_config(members: int, epochs: int, checkpoint: bool, hidden: int, delay: int):
    from ..experiments import TrainConfig

    return TrainConfig(task={"kind": "delayed-xor", "delay": delay},
                       model={"hidden": hidden}, forcing={"kind": "ef", "alpha": [0.5]},
                       rule={"kind": "bptt", "checkpoint": checkpoint}, seeds=members,
                       epochs=epochs + 1, batch=REFERENCE["batch"], threshold=1e-12)


def measure_training(members: int, epochs: int, checkpoint: bool, hidden: int = REFERENCE["hidden"],
                     delay: int = REFERENCE["delay"]) -> dict:
    """Wall seconds per epoch of an EF-BPTT ensemble on delayed XOR (the reference size unless
    `hidden`/`delay` say otherwise): the best of `epochs` epochs after the compiling first one."""
    import resource

    from ..experiments import build_trainer

    cfg = _reference_config(members, epochs, checkpoint, hidden, delay)
    trainer = build_trainer(cfg)
    times = []
    last = [time.perf_counter()]

    def on_epoch(epoch, tracker, val_loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    trainer.run(on_epoch=on_epoch)
    per_epoch = min(times[1:])  # the first epoch includes compilation
    T = delay + 45
    flops = _epoch_flops(members, T, sum(trainer.batch_sizes), hidden)
    return dict(members=members, hidden=hidden, T=T, checkpoint=checkpoint, threads=trainer.shards,
                seconds_per_epoch=per_epoch,
                seconds_per_member_epoch=per_epoch / members, compile_and_first_epoch=times[0],
                trials_per_epoch=sum(trainer.batch_sizes),
                gflops=flops / per_epoch / 1e9,
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                load=os.getloadavg()[0])  # the machine's 1-minute load when the run ended


def epoch_program_memory(members: int, hidden: int = REFERENCE["hidden"], delay: int = REFERENCE["delay"],
                         checkpoint: bool = False) -> dict:
    """XLA's memory plan of the epoch program, compiled but not run: per shard, its arguments,
    outputs and temporaries (`compiled.memory_analysis()`); the shards run at once, so the
    ensemble needs `shards` times one shard's total."""
    import jax

    from ..training import Shards
    from ..experiments import build_trainer

    trainer = build_trainer(_reference_config(members, 1, checkpoint, hidden, delay))
    with Shards(members, trainer.shards) as shards:
        cells, forcings, opt_states, fixed, rules = zip(*shards.split(trainer.init()))
        import numpy as np

        args = (cells[0], opt_states[0], forcings[0], rules[0], shards.split_mask(np.ones(members, bool))[0],
                shards.split(trainer.data_keys)[0], shards.split(trainer.noise_keys)[0],
                jax.numpy.full(shards.size, 1), fixed[0])
        stats = trainer._epoch.lower(*args).lowered.compile().memory_analysis()  # jax's own Lowered
        count, size = shards.count, shards.size
    per_shard = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    return dict(members=members, hidden=hidden, T=delay + 45, checkpoint=checkpoint, shards=count,
                shard_size=size, temp_gib=stats.temp_size_in_bytes / 2**30, per_shard_gib=per_shard / 2**30,
                program_gib=count * per_shard / 2**30)


def _in_subprocess(kind: str, env: dict[str, str] | None = None, **kwargs):
    code = (f"import json; from errorforcing.bench._training import {kind}; "
            f"print(json.dumps({kind}(**{kwargs!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=None if env is None else os.environ | env)
    if out.returncode:  # the child's own error, not just its exit status
        raise RuntimeError(f"{kind}({kwargs}) failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_training(quick: bool = False) -> dict:
    """The reference configuration with 1 and 20 members, the device and the numpy floors (the
    results of `errorforcing bench` but its "extra" sections)."""
    epochs = 2 if quick else 3
    results: dict = {"reference": REFERENCE | {"T": REFERENCE["delay"] + 45}}
    results["device"] = _in_subprocess("device_info")
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
        _in_subprocess("measure_training", members=REFERENCE["members"], epochs=epochs, checkpoint=False),
    ]
    for r in results["training"]:
        r["fraction_of_numpy_floor"] = r["gflops"] / results["numpy_matmul_gflops"]
        r["fraction_of_numpy_floor_all_cores"] = r["gflops"] / results["numpy_matmul_gflops_all_cores"]
        # the floor's time for the epoch's matmuls, per member, with all cores at the numpy rate
        r["floor_seconds_per_member_epoch"] = r["gflops"] * r["seconds_per_member_epoch"] / (
            results["numpy_matmul_gflops_all_cores"])
        r["ratio_to_floor"] = r["seconds_per_member_epoch"] / r["floor_seconds_per_member_epoch"]
    ref = next(r for r in results["training"] if r["members"] == REFERENCE["members"])
    results["target"] = dict(seconds_per_member_epoch=TARGET_SECONDS_PER_MEMBER_EPOCH,
                             measured=ref["seconds_per_member_epoch"],
                             met=ref["seconds_per_member_epoch"] <= TARGET_SECONDS_PER_MEMBER_EPOCH)
    return results


def show_benchmarks(results: dict) -> None:
    """The reference table, the target line and each extra section's result (on stderr)."""
    from rich.console import Console
    from rich.table import Table

    ref = results["reference"]
    table = Table(title=f"EF-BPTT, delayed XOR, N={ref['hidden']}, batch {ref['batch']}, T={ref['T']}, "
                        f"{ref['n_batches']} batches/epoch; numpy {ref['batch']}×{ref['hidden']}×{ref['hidden']} "
                        f"matmul floor: {results['numpy_matmul_gflops']:.1f} GFLOP/s on one core, "
                        f"{results['numpy_matmul_gflops_all_cores']:.1f} on {results['cores']}")
    for col in ("members", "threads", "s/epoch", "s/member-epoch", "GFLOP/s", "× floor 1 core",
                "× floor all cores", "time / floor", "peak GiB", "1st epoch s"):
        table.add_column(col)
    for r in results["training"]:
        table.add_row(str(r["members"]), str(min(r["threads"], r["members"])), f"{r['seconds_per_epoch']:.3f}",
                      f"{r['seconds_per_member_epoch']:.3f}", f"{r['gflops']:.1f}",
                      f"{r['fraction_of_numpy_floor']:.2f}", f"{r['fraction_of_numpy_floor_all_cores']:.2f}",
                      f"{r['ratio_to_floor']:.2f}", f"{r['peak_rss_gib']:.2f}",
                      f"{r['compile_and_first_epoch']:.1f}")
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)  # a log file gets whole rows
    console.print(_device_line(results["device"]))
    console.print(table)
    t = results["target"]
    console.print(f"reference ({REFERENCE['members']} members): {t['measured']:.3f} s per member-epoch, target "
                  f"≤ {t['seconds_per_member_epoch']} s: {'met' if t['met'] else 'missed'}; "
                  f"{ref_ratio(results):.2f}× the all-cores numpy floor's time")
    for name, value in results.get("extra", {}).items():
        console.print(f"{name}: {json.dumps(value)}")


def ref_ratio(results: dict) -> float:
    """Seconds per member-epoch of the reference ensemble over the numpy floor's (all cores)."""
    return next(r for r in results["training"] if r["members"] == REFERENCE["members"])["ratio_to_floor"]


def _device_line(device: dict) -> str:
    line = f"device: {device['platform']} ({device['device_kind']}, {device['device_count']}), jax {device['jax']}"
    if device["platform"] != "cpu":
        line += "; the numpy floors are the host CPU's"
    return line


# ----- bench --scaling -----

def scaling_configs(quick: bool) -> list[dict]:
    """One axis at a time around a base: the reference (N = 50, 20 members, T = 1045), or with
    `quick` a base at T = 145 (the N and members axes at T = 145, 7× cheaper; the T axis at
    N = 50, 20 members as in the full grid)."""
    base = dict(hidden=REFERENCE["hidden"], members=REFERENCE["members"], T=145 if quick else 1045)
    configs = [dict(base)]
    for axis, values in SCALING_AXES.items():
        for v in values:
            c = dict(base, **{axis: v})
            if axis == "T":
                c = dict(hidden=REFERENCE["hidden"], members=REFERENCE["members"], T=v)
            if c not in configs:
                configs.append(c)
    return configs


def run_scaling(quick: bool = False, *, show: bool = True) -> dict:
    """Seconds and peak memory per member-epoch over `scaling_configs`, each in a fresh
    subprocess (peak RSS of that process: compilation included), one timed epoch after the
    compiling one; plus XLA's memory plan of 100 members at T = 1045 (compiled, not run)."""
    results: dict = {"device": _in_subprocess("device_info"), "axes": {k: list(v) for k, v in SCALING_AXES.items()},
                     "quick": quick, "rows": []}
    for c in scaling_configs(quick):
        r = _in_subprocess("measure_training", members=c["members"], epochs=1, checkpoint=False,
                           hidden=c["hidden"], delay=c["T"] - 45)
        r["peak_rss_gib_per_member"] = r["peak_rss_gib"] / c["members"]
        results["rows"].append(r)
        if show:
            print(json.dumps({k: r[k] for k in ("hidden", "members", "T", "seconds_per_member_epoch",
                                                "peak_rss_gib")}), file=sys.stderr, flush=True)
    memory = _in_subprocess("epoch_program_memory", members=100, hidden=REFERENCE["hidden"],
                            delay=REFERENCE["delay"])
    memory["fits"] = memory["program_gib"] <= MEMORY_LIMIT_GIB
    memory["limit_gib"] = MEMORY_LIMIT_GIB
    results["memory_100_members"] = memory
    if show:
        _show_scaling(results)
    return results


def _show_scaling(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="EF-BPTT, delayed XOR, batch 128, 4 batches/epoch; one axis varied at a time")
    for col in ("N", "members", "T", "threads", "s/member-epoch", "s/epoch", "peak GiB", "GFLOP/s"):
        table.add_column(col)
    for r in results["rows"]:
        table.add_row(str(r["hidden"]), str(r["members"]), str(r["T"]), str(min(r["threads"], r["members"])),
                      f"{r['seconds_per_member_epoch']:.4f}", f"{r['seconds_per_epoch']:.3f}",
                      f"{r['peak_rss_gib']:.2f}", f"{r['gflops']:.1f}")
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)
    console.print(_device_line(results["device"]))
    console.print(table)
    m = results["memory_100_members"]
    console.print(f"100 members, T = {m['T']}: XLA plans {m['program_gib']:.2f} GiB for the epoch programs "
                  f"({m['shards']} shards × {m['per_shard_gib']:.2f} GiB) — "
                  f"{'fits' if m['fits'] else 'does not fit'} in {m['limit_gib']:.0f} GiB")

