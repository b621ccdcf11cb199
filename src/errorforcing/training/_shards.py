"""Run an ensemble as a few equal-size shards, one per CPU core, in parallel threads.

Why: XLA on the CPU runs one program's scan on one core; the per-step matmuls of a recurrent
network (batch × N × N, N ≈ 50) are too small for its intra-op threads to help. Two programs
dispatched from two threads do run on two cores, so an ensemble split into one shard per core
trains nearly that many times faster. A large ensemble is split further, so that no program
holds over `MAX_SHARD_SIZE` members (measured faster and smaller, see there). Shards have one
size (the last padded with copies of the last member, whose results are dropped), so the epoch
program compiles once.

Known: a batched LAPACK call on the CPU (jaxlib 0.10: solve, eigh, svd, eig, …) splits its batch
over XLA's intra-op thread pool and waits for it; two shards doing so at once can each hold a
pool thread while waiting for the other's work, and never finish (seen with adaptive α's
eigensolver and teacher forcing's solve). So a program that contains a LAPACK call runs its
shards one after another; the trainer's common programs contain none (`forcing.spd_solve`).
`ERRORFORCING_THREADS=1` runs one program, as before sharding.

Compaction: members that converged or diverged are frozen, and computing them is waste. The
trainer takes them out of the epoch programs in one of two ways. "exact" (the default) packs
the active members into fewer shards of the same size: the program is the one already
compiled, and a member's step depends only on its own state and keys, so the numbers are
bit for bit those of not compacting in float32 as in float64 (tests/test_compaction.py; measured
on EF-BPTT, N = 50, batch 128, delayed XOR 100, 16 seeds as 4 shards of 4 → 3 → 2). It saves a
shard's compute each time a shard's worth of members has frozen: CPU time always, wall time
where there are more shards than cores or a lone shard no longer shares memory bandwidth.
"auto" and "always" also shrink the shards, to sizes from a short list (`bucket_sizes`: the
full size halved, rounded up, down to 2; at most log2(size) + 1 programs are ever compiled),
which saves wall time on as many cores as before but changes the numbers by rounding: XLA
compiles a program of another batch size into kernels that round differently. Measured: a
batch of 1 is simplified into other kernels, so 1 is not a bucket unless the ensemble started
with shards of 1; in float64 bit for bit for BPTT with error/teacher forcing, adaptive α,
flossing, diagnostics and fixed data, RFLO to rounding (~1e-16); in float32 at the reference
size (EF-BPTT, N = 50, batch 128, delayed XOR 100, 16 seeds, shards of 8 → 4) ~1e-6 relative
after the first compaction (converged epochs equal). A new size costs a compilation, so "auto"
compacts into a size it has not compiled yet only when the epoch time that saves over the
remaining epochs exceeds the compilation time it measured on the first layout
(`worth_compiling`); "always" compacts at every smaller bucket (deterministic layouts, for
tests); "off" never compacts. `ERRORFORCING_COMPACT` (exact, auto, always, off; 1 = auto,
0 = off) sets the trainer's default.
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
COMPACT_ENV = "ERRORFORCING_COMPACT"


def threads_from_env() -> int | None:
    """$ERRORFORCING_THREADS as a count (None when unset)."""
    value = os.environ.get(THREADS_ENV)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return int(value)


COMPACT_MODES = ("exact", "auto", "always", "off")


def compact_mode(value: str | bool | None) -> str:
    """A compaction mode from `value` (True = auto, False = off), else from $ERRORFORCING_COMPACT (default exact)."""
    if value is None:
        value = os.environ.get(COMPACT_ENV, "").strip().lower() or "exact"
        value = {"1": "auto", "0": "off"}.get(value, value)
    if isinstance(value, bool):
        value = "auto" if value else "off"
    if value not in COMPACT_MODES:
        raise ValueError(f"compaction ({COMPACT_ENV}) must be one of {', '.join(COMPACT_MODES)} (or 1/0), got {value!r}")
    return value


def worth_compiling(epoch_seconds: float | None, compile_seconds: float | None, size: int, new_size: int,
                    remaining: int) -> bool:
    """Whether shards of `new_size` instead of `size` save more wall time over `remaining`
    epochs than a compilation costs (wall time taken proportional to the shard size); False
    until both times have been measured."""
    if epoch_seconds is None or compile_seconds is None:
        return False
    return epoch_seconds * (1 - new_size / size) * remaining > compile_seconds


def bucket_sizes(full: int) -> list[int]:
    """The shard sizes a compacted ensemble may use: `full`, then halved (rounded up) down to 2."""
    sizes = [full]
    while sizes[-1] > 2:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def compact_layout(active: int, count: int, full: int, exact: bool = False) -> tuple[int, int]:
    """(shards, size) for `active` members with at most `count` shards of at most `full`, sizes
    from `bucket_sizes(full)` (`full` alone when `exact`): the smallest size (the wall time of
    shards run in parallel), then the fewest member slots (the CPU time)."""
    buckets = [full] if exact else bucket_sizes(full)
    options = []
    for c in range(1, count + 1):
        fitting = [b for b in buckets if b * c >= active]
        if fitting:
            size = min(fitting)
            options.append((size, c * size, c))
    size, _, c = min(options)
    return math.ceil(active / size), size


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# CPU: the most members one program takes before the ensemble is split into more shards than
# cores. Measured (fast EF-BPTT, N = 50, batch 128, T = 1045): 61–62 µs per member-step at 10–25
# members on one core, 68 at 50; 100 members on 2 cores as 4 shards of 25 were 1.25x faster and
# peaked at 2.7 instead of 4.8 GiB (docs/performance.md, "Scaling").
MAX_SHARD_SIZE = 25


def default_shards(members: int | None = None) -> int:
    """Programs per ensemble of `members`: $ERRORFORCING_THREADS, else on the CPU one per
    usable core, or more where that would put over `MAX_SHARD_SIZE` members in one program
    (the threads then share the cores), and one on an accelerator (which runs one program
    across all its cores)."""
    threads = threads_from_env()
    if threads is not None:
        return threads
    if jax.default_backend() != "cpu":
        return 1
    return max(usable_cores(), math.ceil((members or 0) / MAX_SHARD_SIZE))


class Shards:
    """`members` ensemble members as `count` shards of `size` members each (padding ≤ size - 1).

    A compacted layout (`compact`) holds only some of the members (`held`, indices into the
    ensemble), in shards of a chosen size; trees are still split from, and `scatter`ed back
    into, trees over the whole ensemble.
    """

    def __init__(self, members: int, shards: int):
        self.members = members
        size = math.ceil(members / max(1, min(shards, members)))
        self._layout(np.arange(members), size)
        self._pool = ThreadPoolExecutor(self.count) if self.count > 1 else None
        self._lapack: dict[int, bool] = {}

    def _layout(self, held: np.ndarray, size: int) -> None:
        self.held, self.size = np.asarray(held, np.int64), size
        self.count = math.ceil(len(self.held) / size)
        padded = self.held[np.minimum(np.arange(self.count * size), len(self.held) - 1)]
        self._index = [padded[k * size:(k + 1) * size] for k in range(self.count)]

    def compact(self, held: np.ndarray, size: int) -> "Shards":
        """The members `held` only, in shards of `size` (at most as many shards as this layout
        has; the thread pool and the LAPACK verdicts are shared)."""
        layout = object.__new__(Shards)
        layout.members, layout._pool, layout._lapack = self.members, self._pool, self._lapack
        layout._layout(held, size)
        if layout.count > self.count:
            raise ValueError(f"{len(held)} members in shards of {size} need more than {self.count} shards")
        return layout

    def regroup(self, trees: list, layout: "Shards") -> list:
        """Shard trees of this layout → those of `layout`, whose members this one holds."""
        position = {m: i for i, m in enumerate(self.held.tolist())}
        joined = self.join(trees)
        return [jax.tree_util.tree_map(lambda x: x[np.array([position[m] for m in idx])] if eqx.is_array(x) else x,
                                       joined) for idx in layout._index]

    def split(self, tree) -> list:
        """A tree whose array leaves lead with the member axis → one tree per shard."""
        return [jax.tree_util.tree_map(lambda x: x[idx] if eqx.is_array(x) else x, tree) for idx in self._index]

    def split_mask(self, flags: np.ndarray) -> list[jax.Array]:
        """Per-member booleans → per shard, False for the padding (padded members never update)."""
        padded = np.zeros(self.count * self.size, bool)
        padded[: len(self.held)] = np.asarray(flags, bool)[self.held]
        return [jnp.asarray(padded[k * self.size:(k + 1) * self.size]) for k in range(self.count)]

    def join(self, trees: list):
        """The inverse of `split`: one tree over the held members (in `held` order), the padding dropped."""
        n = len(self.held)
        return jax.tree_util.tree_map(
            lambda *xs: jnp.concatenate(xs)[:n] if eqx.is_array(xs[0]) else xs[0], *trees)

    def join_numpy(self, trees: list, fill=np.nan):
        """`join` over the whole ensemble as float64 numpy arrays, `fill` for members not held."""
        def full(x):
            x = np.asarray(x, np.float64)
            out = np.full((self.members,) + x.shape[1:], fill, np.float64)
            out[self.held] = x
            return out
        return jax.tree_util.tree_map(full, self.join(trees))

    def scatter(self, whole, trees: list):
        """`whole` (a tree over the ensemble) with the held members replaced by theirs in `trees`."""
        held = jnp.asarray(self.held)
        return jax.tree_util.tree_map(lambda w, x: w.at[held].set(x) if eqx.is_array(w) else w,
                                      whole, self.join(trees))

    def map(self, fn: Callable[..., Any], *shard_args: list) -> list:
        """fn(*args of shard k) for every shard, in parallel threads unless fn calls LAPACK; waits for all.

        `fn` is a jitted function (`eqx.filter_jit`), lowered once to look for LAPACK calls."""
        call = lambda args: jax.block_until_ready(fn(*args))
        per_shard = list(zip(*shard_args))
        if self._pool is None or self.count == 1 or self.calls_lapack(fn, per_shard[0]):
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
