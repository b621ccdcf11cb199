"""Run an ensemble as a few equal-size shards, one per CPU core, in parallel threads.

Why: XLA on the CPU runs one program's scan on one core; the per-step matmuls of a recurrent
network (batch × N × N, N ≈ 50) are too small for its intra-op threads to help. Two programs
dispatched from two threads do run on two cores, so an ensemble split into one shard per core
trains nearly that many times faster. Shards have one size (the last padded with copies of the
last member, whose results are dropped), so the epoch program compiles once.

Known: a batched LAPACK call on the CPU (jaxlib 0.10: solve, eigh, svd, eig, …) splits its batch
over XLA's intra-op thread pool and waits for it; two shards doing so at once can each hold a
pool thread while waiting for the other's work, and never finish (seen with adaptive α's
eigensolver and teacher forcing's solve). So a program that contains a LAPACK call runs its
shards one after another; the trainer's common programs contain none (`forcing.spd_solve`).
`ERRORFORCING_THREADS=1` runs one program, as before sharding.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

THREADS_ENV = "ERRORFORCING_THREADS"


def threads_from_env() -> int | None:
    """$ERRORFORCING_THREADS as a count (None when unset)."""
    value = os.environ.get(THREADS_ENV)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_shards() -> int:
    """Parallel programs per ensemble: $ERRORFORCING_THREADS, else one per usable CPU core on
    the CPU backend and one on an accelerator (which runs one program across all its cores)."""
    threads = threads_from_env()
    if threads is not None:
        return threads
    return usable_cores() if jax.default_backend() == "cpu" else 1


class Shards:
    """`members` ensemble members as `count` shards of `size` members each (padding ≤ size - 1)."""

    def __init__(self, members: int, shards: int):
        self.members = members
        self.size = math.ceil(members / max(1, min(shards, members)))
        self.count = math.ceil(members / self.size)
        padded = np.minimum(np.arange(self.count * self.size), members - 1)
        self._index = [padded[k * self.size:(k + 1) * self.size] for k in range(self.count)]
        self._pool = ThreadPoolExecutor(self.count) if self.count > 1 else None
        self._lapack: dict[int, bool] = {}

    def split(self, tree) -> list:
        """A tree whose array leaves lead with the member axis → one tree per shard."""
        return [jax.tree_util.tree_map(lambda x: x[idx] if eqx.is_array(x) else x, tree) for idx in self._index]

    def split_mask(self, flags: np.ndarray) -> list[jax.Array]:
        """Per-member booleans → per shard, False for the padding (padded members never update)."""
        padded = np.zeros(self.count * self.size, bool)
        padded[: self.members] = flags
        return [jnp.asarray(padded[k * self.size:(k + 1) * self.size]) for k in range(self.count)]

    def join(self, trees: list):
        """The inverse of `split`: one tree over all members, the padding dropped."""
        return jax.tree_util.tree_map(
            lambda *xs: jnp.concatenate(xs)[: self.members] if eqx.is_array(xs[0]) else xs[0], *trees)

    def map(self, fn: Callable[..., Any], *shard_args: list) -> list:
        """fn(*args of shard k) for every shard, in parallel threads unless fn calls LAPACK; waits for all.

        `fn` is a jitted function (`eqx.filter_jit`), lowered once to look for LAPACK calls."""
        call = lambda args: jax.block_until_ready(fn(*args))
        per_shard = list(zip(*shard_args))
        if self._pool is None or self.calls_lapack(fn, per_shard[0]):
            return [call(args) for args in per_shard]
        return list(self._pool.map(call, per_shard))

    def calls_lapack(self, fn, args: tuple) -> bool:
        """Whether the program fn(*args) contains a LAPACK custom call (decided once per fn)."""
        if id(fn) not in self._lapack:
            self._lapack[id(fn)] = "lapack_" in fn.lower(*args).as_text()
        return self._lapack[id(fn)]

    def __enter__(self) -> "Shards":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()
