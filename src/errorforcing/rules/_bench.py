"""Benchmarks of the learning rules (`errorforcing bench` shows them under "rules").

- RTRL: one gradient for N = 32, batch 32, T = 500 (delayed XOR, delay 455), every leaky-RNN
  parameter tracked. FLOPs counted as the influence update alone, 2 · N · N · P per step and
  trial with P = N² + N · n_in + N (the parameters that act on the state), next to a numpy
  matmul of the same shapes ([N, N] @ [N, B · P], the product the fast path takes each step)
  timed in the same run. The generic path (`RTRL(fast=False)`) is timed too.
- e-prop and RFLO: per-step cost of one gradient relative to BPTT (`BPTT()`, the hand-written
  leaky-RNN path, and `BPTT(fast=False)`, autodiff) on the reference configuration: N = 50,
  batch 128, delayed XOR with delay 1000 (T = 1045), causal error forcing (α = 0.5) for all.

Every time is the minimum over repeats of a jitted call after a warm-up (compile) call; the
machine is shared, so compare the ratios, which are measured in one run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

RTRL_SIZE = dict(hidden=32, batch=32, T=500)
LOCAL_SIZE = dict(hidden=50, batch=128, delay=1000)


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def _gradient_fn(rule, cell, forcing, trials):
    import equinox as eqx
    import jax

    run = eqx.filter_jit(lambda c, t: rule.value_and_grad(c, forcing, t, key=jax.random.key(0))[:2])
    return lambda: run(cell, trials)


def numpy_matmul_seconds(m: int, k: int, n: int, repeats: int) -> float:
    """The best time of an [m, k] @ [k, n] float32 product in numpy."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def bench_rtrl(quick: bool = False) -> dict[str, Any]:
    import jax

    from ..forcing import NoForcing
    from ..models import LeakyRNN
    from ..tasks import DelayedXOR, sample_batch
    from . import RTRL

    N, B, T = RTRL_SIZE["hidden"], RTRL_SIZE["batch"], RTRL_SIZE["T"]
    task = DelayedXOR(delay=T - 45)
    cell = LeakyRNN(task.n_in, N, task.n_out, key=jax.random.key(0),
                    trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    trials = sample_batch(task, B, key=jax.random.key(1))
    P = N * N + N * task.n_in + N
    flops = 2.0 * N * N * P * B * T
    repeats = 2 if quick else 4
    fast = _best_seconds(_gradient_fn(RTRL(), cell, NoForcing(), trials), repeats)
    generic = _best_seconds(_gradient_fn(RTRL(fast=False), cell, NoForcing(), trials), 1 if quick else 2)
    floor_step = numpy_matmul_seconds(N, N, B * P, 20 if quick else 50)
    return dict(hidden=N, batch=B, T=T, tracked_params=P, gflop=flops / 1e9,
                seconds=fast, gflops=flops / fast / 1e9, target_seconds=2.0,
                generic_seconds=generic, generic_gflops=flops / generic / 1e9, speedup_over_generic=generic / fast,
                numpy_floor_seconds=floor_step * T, numpy_floor_gflops=flops / (floor_step * T) / 1e9,
                fraction_of_numpy_floor=floor_step * T / fast)


def bench_local_rules(quick: bool = False) -> dict[str, Any]:
    import jax

    from ..forcing import ErrorForcing
    from ..models import LeakyRNN
    from ..tasks import DelayedXOR, sample_batch
    from . import BPTT, RFLO, EProp

    N, B, delay = LOCAL_SIZE["hidden"], LOCAL_SIZE["batch"], LOCAL_SIZE["delay"]
    task = DelayedXOR(delay=delay)
    T = task.n_steps
    cell = LeakyRNN(task.n_in, N, task.n_out, key=jax.random.key(0))
    trials = sample_batch(task, B, key=jax.random.key(1))
    forcing = ErrorForcing(alpha=0.5, causal=True)
    repeats = 2 if quick else 4
    rules = {"bptt": BPTT(), "bptt_autodiff": BPTT(fast=False), "eprop": EProp(), "rflo": RFLO()}
    seconds = {name: _best_seconds(_gradient_fn(rule, cell, forcing, trials), repeats) for name, rule in rules.items()}
    result: dict[str, Any] = dict(hidden=N, batch=B, T=T, forcing="ef causal α=0.5", target_ratio=2.0,
                                  us_per_step={k: 1e6 * v / T for k, v in seconds.items()})
    for name in ("eprop", "rflo"):
        result[f"{name}_over_bptt"] = seconds[name] / seconds["bptt"]
        result[f"{name}_over_bptt_autodiff"] = seconds[name] / seconds["bptt_autodiff"]
    return result


def bench_rules(quick: bool = False) -> dict[str, Any]:
    """{"rtrl": …, "local": …} (see the module docstring)."""
    return {"rtrl": bench_rtrl(quick), "local": bench_local_rules(quick)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_rules(quick="--quick" in sys.argv), indent=2))
