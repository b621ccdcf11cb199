"""The fast BPTT gradient alone (`rules._leaky_bptt`), as one training shard runs it: `members`
networks vmapped in one jitted program, one batch of the delayed XOR task; prints wall µs per
member-step (best of `--repeats` after a compiling call). Pin it to one core to compare kernel
versions without the second shard's contention:

    taskset -c 0 python benchmarks/bench_fast_bptt.py [--members 10] [--delay 1000]
        [--forcing ef|tf|none] [--rate-reg 1e-5]
"""

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp

import errorforcing as ef
from errorforcing.rules import BPTT, Objective
from errorforcing.training import usable_cores

FORCINGS = {"ef": lambda: ef.forcing.ErrorForcing(alpha=0.5), "tf": lambda: ef.forcing.TeacherForcing(alpha=0.5),
            "none": lambda: ef.forcing.NoForcing()}


def main(members: int, delay: int, forcing: str, rate_reg: float, hidden: int, batch: int, repeats: int) -> dict:
    task = ef.tasks.DelayedXOR(delay=delay)
    cells = eqx.filter_vmap(lambda k: ef.models.LeakyRNN(task.n_in, hidden, task.n_out, key=k))(
        jax.random.split(jax.random.key(0), members))
    force = FORCINGS[forcing]()
    trials = ef.tasks.sample_batch(task, batch, key=jax.random.key(1))
    trials = trials._replace(info=dict(trials.info, weight=jnp.ones(batch)))
    rule, objective = BPTT(), Objective(rate_reg=rate_reg)
    if not rule.uses_fast_path(ef.models.LeakyRNN(task.n_in, hidden, task.n_out, key=jax.random.key(0)), force):
        raise SystemExit("the fast BPTT does not apply to this configuration")

    def grad(cell):
        return rule.value_and_grad(cell, force, trials, key=jax.random.key(2), objective=objective)[:2]

    f = eqx.filter_jit(eqx.filter_vmap(grad))
    start = time.perf_counter()
    jax.block_until_ready(f(cells))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(cells))
        best = min(best, time.perf_counter() - start)
    T = trials.inputs.shape[1]
    return dict(members=members, T=T, hidden=hidden, batch=batch, forcing=forcing, rate_reg=rate_reg,
                us_per_member_step=best / T / members * 1e6, first_call_seconds=first, load=os.getloadavg()[0],
                cores=usable_cores())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--delay", type=int, default=1000)
    parser.add_argument("--forcing", choices=sorted(FORCINGS), default="ef")
    parser.add_argument("--rate-reg", type=float, default=1e-5)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=4)
    a = parser.parse_args()
    print(json.dumps(main(a.members, a.delay, a.forcing, a.rate_reg, a.hidden, a.batch, a.repeats)))
