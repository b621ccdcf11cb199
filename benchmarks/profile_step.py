"""Per-step breakdown of the reference EF-BPTT training step (issue 15 item 3).

Each piece of one training step (leaky RNN, N = 50, batch 128, T = 1045, EF α = 0.5, one
member) is compiled alone as a `lax.scan` over T steps (or, for the once-per-batch parts, on
its own) and timed; next to it, XLA's HLO cost analysis of the same program
(`jax.jit(f).lower(...).compile().cost_analysis()`: FLOPs and bytes accessed; XLA counts a
loop body once, which for a scan is one step; once-per-batch parts are divided by T). The pieces are
measured in isolation, so they need not add up to the whole (fusion across pieces, loop
overhead); the whole fast gradient and the whole optimizer step are measured too.

    python benchmarks/profile_step.py [--repeats 5] [--json]
"""

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import errorforcing as ef
from errorforcing.bench import numpy_matmul_gflops
from errorforcing.rules import BPTT, Objective

N, B, DELAY = 50, 128, 1000


def _scan(step, carry, xs):
    """A scan over T steps whose carry depends on every step (so nothing is hoisted out)."""
    return jax.lax.scan(step, carry, xs)


def pieces(cell, trials, forcing):
    T = trials.inputs.shape[1]
    W, W_in, b, W_out, b_out, a = cell.W_rec, cell.W_in, cell.b, cell.W_out, cell.b_out, cell.leak
    X = jnp.swapaxes(trials.inputs, 0, 1)
    Y_star, M = jnp.swapaxes(trials.targets, 0, 1), jnp.swapaxes(trials.mask, 0, 1)
    G = forcing.selected_gain(cell)
    h0 = jnp.zeros((B, N))
    R = jnp.tanh(jax.random.normal(jax.random.key(3), (T, B, N)))
    D = jax.random.normal(jax.random.key(4), (T, B, N)) * 1e-3
    E = jax.random.normal(jax.random.key(5), (T, B, 1))
    out = {}
    out["recurrent matmul, forward (r W_recᵀ)"] = (
        lambda W, R: _scan(lambda h, r: (h + r @ W.T, None), h0, R)[0], (W, R), "scan")
    out["input drive (x W_inᵀ + b)"] = (
        lambda W_in, X: _scan(lambda h, x: (h + x @ W_in.T + b, None), h0, X)[0], (W_in, X), "scan")
    out["leak and tanh"] = (
        lambda R: _scan(lambda h, r: ((1 - a) * h + a * r, jnp.tanh(h)), h0, R), (R,), "scan")
    out["readout (h W_outᵀ + b_out)"] = (
        lambda W_out, R: _scan(lambda s, h: (s, h @ W_out.T + b_out), 0.0, R)[1], (W_out, R), "scan")
    out["forcing correction (c e Gᵀ, error, mask)"] = (
        lambda G, R, Y, M: _scan(lambda s, xs: (s, xs[0] + 0.5 * (((xs[1] - xs[0][:, :1]) * xs[2]) @ G.T)), 0.0,
                                 (R, Y, M))[1], (G, R, Y_star, M), "scan")
    out["recurrent matmul, backward (δ W_rec)"] = (
        lambda W, D: _scan(lambda g, d: (g * 0.5 + d @ W, None), h0, D)[0], (W, D), "scan")
    out["weight sum in the reverse scan (δᵀ r)"] = (
        lambda D, R: _scan(lambda g, xs: (g + xs[0].T @ xs[1], None), jnp.zeros((N, N)), (D, R))[0], (D, R), "scan")
    out["loss and its derivative (masked MSE)"] = (
        lambda Y, Ys, M: (jnp.sum(M * (Y - Ys) ** 2) / jnp.sum(M), 2 * M * (Y - Ys) / jnp.sum(M)), (E, Y_star, M), "once")
    out["readout gradient (Σ dy hᵀ)"] = (
        lambda E, R: E.reshape(-1, 1).T @ R.reshape(-1, N), (E, R), "once")
    return out


def measure(fn, args, repeats):
    f = jax.jit(fn)
    compiled = f.lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    jax.block_until_ready(f(*args))
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(*args))
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return dict(wall=wall, cpu=cpu, flops=float(cost.get("flops", 0.0)), bytes=float(cost.get("bytes accessed", 0.0)))


def main(repeats: int) -> dict:
    task = ef.tasks.DelayedXOR(delay=DELAY)
    key = jax.random.key(0)
    cell = ef.models.LeakyRNN(task.n_in, N, task.n_out, key=key)
    forcing = ef.forcing.ErrorForcing(alpha=0.5)
    trials = ef.tasks.sample_batch(task, B, key=key)
    trials = trials._replace(info=dict(trials.info, weight=jnp.ones(B)))
    T = trials.inputs.shape[1]
    rows = []
    for name, (fn, args, per) in pieces(cell, trials, forcing).items():
        r = measure(fn, args, repeats)
        # XLA's cost analysis counts a while loop's body once: for a scan that is one step
        hlo = 1 if per == "scan" else T
        rows.append(dict(piece=name, wall=r["wall"] / T, cpu=r["cpu"] / T, flops=r["flops"] / hlo,
                         bytes=r["bytes"] / hlo))
    rule = BPTT()
    assert rule.uses_fast_path(cell, forcing)
    whole = measure(lambda c, t: rule.value_and_grad(c, forcing, t, key=key, objective=Objective())[:2],
                    (cell, trials), repeats)
    # its HLO figures mix loop bodies (counted once) with whole-array products: not shown
    rows.append(dict(piece="whole fast EF-BPTT gradient", wall=whole["wall"] / T, cpu=whole["cpu"] / T,
                     flops=float("nan"), bytes=float("nan")))
    optimizer = optax.adam(1e-3)
    params = eqx.filter(cell, eqx.is_inexact_array)
    state = optimizer.init(params)
    adam = measure(lambda g, s, p: optimizer.update(g, s, p), (params, state, params), repeats)
    rows.append(dict(piece="Adam update (once per batch, shown per step)", **{k: adam[k] / T for k in adam}))
    gflops = numpy_matmul_gflops(B, N, repeats=5000)  # the floor, in this run
    matmul = 2 * B * N * N / gflops / 1e9
    rows.append(dict(piece="floor: one numpy [128,50]·[50,50] matmul", wall=matmul, cpu=matmul,
                     flops=2.0 * B * N * N, bytes=float("nan")))
    return dict(device=jax.devices()[0].device_kind, platform=jax.devices()[0].platform, N=N, batch=B, T=T,
                repeats=repeats, load=os.getloadavg(), rows=rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = main(args.repeats)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"device {result['platform']} ({result['device']}), N={N}, batch {B}, T={result['T']}, "
              f"load {result['load'][0]:.1f}; per step, one member, best of {args.repeats}")
        print(f"{'piece':<48} {'wall µs':>8} {'CPU µs':>8} {'kFLOP':>8} {'kB':>8} {'GFLOP/s':>8}")
        for r in result["rows"]:
            print(f"{r['piece']:<48} {r['wall'] * 1e6:8.1f} {r['cpu'] * 1e6:8.1f} {r['flops'] / 1e3:8.1f} "
                  f"{r['bytes'] / 1e3:8.1f} {r['flops'] / max(r['cpu'], 1e-12) / 1e9:8.1f}")
