"""The fast BPTT's weight sums two ways, back to back in one process (issue 15 item 2): in the
reverse scan (T small [N,B]·[B,N] products, the default) or as one [N,T·B]·[T·B,N] GEMM over
the stored δ after the scan. EF-BPTT gradient at the reference size (N = 50, batch 128,
T = 1045), `--members` members vmapped as in one training shard; interleaved repeats, best of
each; wall and process-CPU µs per member-step.

    python benchmarks/bench_weight_sums.py [--members 10] [--repeats 5] [--delay 1000]
"""

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import errorforcing as ef
from errorforcing.rules import Objective
from errorforcing.rules._leaky_bptt import leaky_bptt


def main(members: int, repeats: int, hidden: int = 50, batch: int = 128, delay: int = 1000) -> list[dict]:
    task = ef.tasks.DelayedXOR(delay=delay)
    keys = jax.random.split(jax.random.key(0), members)
    cells = eqx.filter_vmap(lambda k: ef.models.LeakyRNN(task.n_in, hidden, task.n_out, key=k))(keys)
    forcing = ef.forcing.ErrorForcing(alpha=0.5)
    trials = jax.vmap(lambda k: ef.tasks.sample_batch(task, batch, key=k))(keys)
    trials = trials._replace(info=dict(trials.info, weight=jnp.ones((members, batch))))
    T = trials.inputs.shape[2]

    def gradient(how):
        def one(cell, tr, key):
            return leaky_bptt(cell, forcing, tr, Objective(), weight_sums=how)
        return eqx.filter_jit(eqx.filter_vmap(one))

    fns = {how: gradient(how) for how in ("scan", "gemm")}
    for f in fns.values():
        jax.block_until_ready(f(cells, trials, keys))
    best = {how: [float("inf")] * 2 for how in fns}
    for _ in range(repeats):
        for how, f in fns.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(f(cells, trials, keys))
            best[how] = [min(best[how][0], time.perf_counter() - t), min(best[how][1], time.process_time() - c)]
    steps = members * T
    return [dict(weight_sums=how, members=members, hidden=hidden, batch=batch, T=T,
                 wall_us_per_member_step=w / steps * 1e6, cpu_us_per_member_step=c / steps * 1e6,
                 device=jax.devices()[0].device_kind, load=os.getloadavg()[0]) for how, (w, c) in best.items()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--delay", type=int, default=1000, help="delayed XOR delay (T = delay + 45)")
    args = parser.parse_args()
    for row in main(args.members, args.repeats, delay=args.delay):
        print(json.dumps(row))
