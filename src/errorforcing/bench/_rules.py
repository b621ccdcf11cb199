"""Benchmarks of the learning rules (`errorforcing bench` shows them under "rules";
`python -m errorforcing.bench rules [--quick]` runs them alone, `… zoo` the zoo's rows alone).

- RTRL: one gradient for N = 32, batch 32, T = 500 (delayed XOR, delay 455), every leaky-RNN
  parameter tracked. FLOPs counted as the influence update alone, 2 · N · N · P per step and
  trial with P = N² + N · n_in + N (the parameters that act on the state), next to a numpy
  matmul of the same shapes ([N, N] @ [N, B · P], the product the fast path takes each step)
  timed in the same run. The generic path (`RTRL(fast=False)`) is timed too.
- e-prop and RFLO: per-step cost of one gradient relative to BPTT (`BPTT()`, the hand-written
  leaky-RNN path, and `BPTT(fast=False)`, autodiff) on the reference configuration: N = 50,
  batch 128, delayed XOR with delay 1000 (T = 1045), causal error forcing (α = 0.5) for all;
  each rule's hand-written path (the default) and its generic trace path (`fast=False`).

- The credit-assignment zoo (`bench_zoo`): one gradient of UORO, KF-RTRL and SnAp-1 next to
  RTRL (fast path), e-prop and BPTT (fast path), all on RTRL's size (N = 32, batch 32, T = 500,
  delayed XOR, no forcing, every leaky-RNN parameter tracked), in one run. Each rule's FLOPs
  are the matrix products it takes per step (`ZOO_PRODUCTS`: elementwise work not counted), and
  its numpy floor is the best time of those same products in numpy (float32, one call per
  product and step, the batch folded in as the rule folds it), so "fraction of floor" says how
  close the rule's compiled step comes to its own arithmetic done by numpy.

Every time is the minimum over repeats of a jitted call after a warm-up (compile) call; the
machine is shared, so compare the ratios, which are measured in one run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

RTRL_SIZE = dict(hidden=32, batch=32, T=500)
LOCAL_SIZE = dict(hidden=50, batch=128, delay=1000)


def _best_times(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) over `repeats` calls after a compile
    call. The CPU time is the steadier number on a loaded machine (it does not count the time
    the process waits for a core)."""
    import jax

    jax.block_until_ready(fn())  # compile
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    return _best_times(fn, repeats)[0]


def _rtrl_size_problem():
    """RTRL_SIZE's problem: (task, cell with every leaky-RNN parameter trainable, one batch)."""
    import jax

    from ..models import LeakyRNN
    from ..tasks import DelayedXOR, sample_batch

    task = DelayedXOR(delay=RTRL_SIZE["T"] - 45)
    cell = LeakyRNN(task.n_in, RTRL_SIZE["hidden"], task.n_out, key=jax.random.key(0),
                    trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    return task, cell, sample_batch(task, RTRL_SIZE["batch"], key=jax.random.key(1))


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
    from ..forcing import NoForcing
    from ..rules import RTRL

    N, B, T = RTRL_SIZE["hidden"], RTRL_SIZE["batch"], RTRL_SIZE["T"]
    task, cell, trials = _rtrl_size_problem()
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
    from ..rules import BPTT, RFLO, EProp

    N, B, delay = LOCAL_SIZE["hidden"], LOCAL_SIZE["batch"], LOCAL_SIZE["delay"]
    task = DelayedXOR(delay=delay)
    T = task.n_steps
    cell = LeakyRNN(task.n_in, N, task.n_out, key=jax.random.key(0))
    trials = sample_batch(task, B, key=jax.random.key(1))
    forcing = ErrorForcing(alpha=0.5, causal=True)
    repeats = 2 if quick else 4
    rules = {"bptt": BPTT(), "bptt_autodiff": BPTT(fast=False), "eprop": EProp(), "rflo": RFLO(),
             "eprop_generic": EProp(fast=False), "rflo_generic": RFLO(fast=False)}
    seconds = {name: _best_seconds(_gradient_fn(rule, cell, forcing, trials), repeats) for name, rule in rules.items()}
    result: dict[str, Any] = dict(hidden=N, batch=B, T=T, forcing="ef causal α=0.5", target_ratio=2.0,
                                  us_per_step={k: 1e6 * v / T for k, v in seconds.items()})
    for name in ("eprop", "rflo"):
        result[f"{name}_over_bptt"] = seconds[name] / seconds["bptt"]
        result[f"{name}_over_bptt_autodiff"] = seconds[name] / seconds["bptt_autodiff"]
        result[f"{name}_generic_over_fast"] = seconds[f"{name}_generic"] / seconds[name]
    return result


def zoo_products(N: int, B: int, n_in: int, n_out: int) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per rule, the matrix products of one step over the batch, as (batch, m, k, n) for a
    [batch, m, k] @ [batch, k, n] product (2 · batch · m · k · n FLOPs):

    - bptt: forward W φ(h̃), backward δ W, weight gradient δᵀ φ(h̃);
    - eprop: forward, and the learning signal against the traces Σ_b L_bi e_bij;
    - rtrl: J M over all B · P columns (the fast path's product);
    - snap1: e-prop's (on the leaky RNN without forcing `SnAp(order=1)` runs as e-prop's trace);
    - uoro: forward, J s̃, the two vjps (νᵀ ∂̄s/∂θ and ∂̄ℓ/∂θ through W), the rank-1 outer products;
    - kf-rtrl (closed form, `leaky_kfrtrl`): forward, W (φ' ⊙ A) over all B · N columns, δᵀ J A,
      and the two rank-1 terms of the weight gradient, Σ_b (A ᵀδ) uᵀ and Σ_b δ zᵀ.
    """
    P = N * N + N * n_in + N
    mat = (1, B, N, N)
    return {
        "bptt": [mat] * 3,
        "eprop": [mat, (N, 1, B, N)],
        "rtrl": [(1, N, N, B * P)],
        "snap1": [mat, (N, 1, B, N)],
        "uoro": [mat] * 4 + [(B, N, 1, N)] * 2,
        "kfrtrl": [mat, (1, N, N, B * N), (B, 1, N, N)] + [(1, N, B, N + n_in + 1)] * 2,
    }


def numpy_products_seconds(products: list[tuple[int, int, int, int]], repeats: int) -> float:
    """The best time of one pass over `products` (float32 numpy matmuls)."""
    import numpy as np

    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((b, m, k)).astype(np.float32), rng.standard_normal((b, k, n)).astype(np.float32))
             for b, m, k, n in products]
    best = float("inf")
    for i in range(repeats + 3):
        start = time.perf_counter()
        for a, c in pairs:
            np.matmul(a, c)
        if i >= 3:
            best = min(best, time.perf_counter() - start)
    return best


def bench_zoo(quick: bool = False) -> dict[str, Any]:
    """Per-step time and GFLOP/s of UORO, KF-RTRL, SnAp-1, RTRL, e-prop and BPTT (module docstring)."""
    from ..forcing import NoForcing
    from ..rules import BPTT, KFRTRL, RTRL, UORO, EProp, SnAp

    N, B, T = RTRL_SIZE["hidden"], RTRL_SIZE["batch"], RTRL_SIZE["T"]
    task, cell, trials = _rtrl_size_problem()
    rules = {"bptt": BPTT(), "eprop": EProp(), "rtrl": RTRL(), "uoro": UORO(), "kfrtrl": KFRTRL(),
             "snap1": SnAp(order=1)}
    products = zoo_products(N, B, task.n_in, task.n_out)
    repeats = 1 if quick else 3
    rows = {}
    for name, rule in rules.items():
        seconds, cpu = _best_times(_gradient_fn(rule, cell, NoForcing(), trials), repeats)
        flops = T * sum(2.0 * b * m * k * n for b, m, k, n in products[name])
        floor = T * numpy_products_seconds(products[name], 5 if quick else 20)
        rows[name] = dict(seconds=seconds, us_per_step=1e6 * seconds / T, cpu_seconds=cpu,
                          gflops=flops / seconds / 1e9,
                          numpy_floor_seconds=floor, numpy_floor_gflops=flops / floor / 1e9,
                          fraction_of_numpy_floor=floor / seconds)
    ratio = lambda key: {"uoro_over_bptt": rows["uoro"][key] / rows["bptt"][key],
                         "kfrtrl_over_rtrl": rows["kfrtrl"][key] / rows["rtrl"][key],
                         "snap1_over_eprop": rows["snap1"][key] / rows["eprop"][key]}
    return dict(hidden=N, batch=B, T=T, forcing="none", rows=rows, ratios=ratio("seconds"),
                cpu_ratios=ratio("cpu_seconds"),
                targets={"uoro_over_bptt": 3.0, "kfrtrl_over_rtrl": 0.25, "snap1_over_eprop": 1.0})


def bench_rules(quick: bool = False) -> dict[str, Any]:
    """{"rtrl": …, "local": …, "zoo": …} (see the module docstring)."""
    return {"rtrl": bench_rtrl(quick), "local": bench_local_rules(quick), "zoo": bench_zoo(quick)}

