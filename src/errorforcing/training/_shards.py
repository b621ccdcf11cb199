"""Run an ensemble as a few equal-size shards, one per CPU core, in parallel threads.

Why: XLA on the CPU runs one program's scan on one core; the per-step matmuls of a recurrent
network (batch × N × N, N ≈ 50) are too small for its intra-op threads to help. Two programs
dispatched from two threads do run on two cores, so an ensemble split into one shard per core
trains nearly that many times faster. Shards have one size (the last padded with copies of the
last member, whose results are dropped), so the epoch program compiles once.

Known: XLA's CPU SVD (jaxlib 0.10) hung when two shards ran it at the same time, so the code
the trainer runs avoids it (`analysis.jacobian_norms` uses the symmetric eigensolver).
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
        """fn(*args of shard k) for every shard, the shards in parallel threads; waits for all."""
        call = lambda args: jax.block_until_ready(fn(*args))
        if self._pool is None:
            return [call(args) for args in zip(*shard_args)]
        return list(self._pool.map(call, zip(*shard_args)))

    def __enter__(self) -> "Shards":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()
