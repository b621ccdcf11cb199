"""Ensemble shards in parallel threads never run a LAPACK program concurrently: two shards
inside batched LAPACK calls starve XLA's intra-op pool and hang (jaxlib 0.10, adaptive α's
eigensolver; this test timed out before the guard)."""

import json
import os
import subprocess
import sys

import equinox as eqx
import jax.numpy as jnp

from errorforcing.training._shards import Shards


def test_a_program_with_a_lapack_call_runs_its_shards_one_after_another():
    with Shards(4, 2) as shards:
        eig = eqx.filter_jit(jnp.linalg.eigvalsh)
        plain = eqx.filter_jit(jnp.tanh)
        assert shards.calls_lapack(eig, (jnp.eye(3)[None].repeat(2, 0),))
        assert not shards.calls_lapack(plain, (jnp.eye(3),))
        out = shards.map(eig, [jnp.eye(2)[None] * k for k in (1.0, 2.0)])
        assert [float(o.max()) for o in out] == [1.0, 2.0]


def test_adaptive_alpha_trains_on_two_shards(tmp_path):
    env = os.environ | {"ERRORFORCING_THREADS": "2"}
    args = ["train", "--task", "delayed-xor", "--delay", "3", "--forcing", "tf", "--adaptive-alpha",
            "--hidden", "4", "--seeds", "2", "--epochs", "2", "--batch", "8", "--out", str(tmp_path), "--json"]
    r = subprocess.run([sys.executable, "-m", "errorforcing.cli", *args], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(json.loads(r.stdout)["members"]) == 2


def test_default_shards_one_per_core_and_no_program_over_the_size_cap(monkeypatch):
    """On the CPU: one shard per core, more where a shard would hold over MAX_SHARD_SIZE
    members; $ERRORFORCING_THREADS sets the count exactly; an accelerator runs one program."""
    from errorforcing.training import _shards

    monkeypatch.delenv(_shards.THREADS_ENV, raising=False)
    monkeypatch.setattr(_shards, "usable_cores", lambda: 2)
    cap = _shards.MAX_SHARD_SIZE
    assert [_shards.default_shards(m) for m in (1, 20, 2 * cap, 2 * cap + 1, 4 * cap)] == [2, 2, 2, 3, 4]
    assert _shards.default_shards() == 2
    layout = Shards(4 * cap, _shards.default_shards(4 * cap))
    assert (layout.count, layout.size) == (4, cap)
    monkeypatch.setenv(_shards.THREADS_ENV, "2")
    assert _shards.default_shards(4 * cap) == 2
    monkeypatch.delenv(_shards.THREADS_ENV)
    monkeypatch.setattr(_shards.jax, "default_backend", lambda: "gpu")
    assert _shards.default_shards(4 * cap) == 1


def test_a_large_ensemble_trains_in_shards_of_at_most_the_cap(monkeypatch):
    """The trainer asks default_shards for its own member count (not the core count alone)."""
    import optax

    import errorforcing as ef
    from errorforcing.training import EnsembleTrainer, Member, Schedule, _shards

    monkeypatch.delenv(_shards.THREADS_ENV, raising=False)
    monkeypatch.setattr(_shards, "usable_cores", lambda: 2)
    monkeypatch.setattr(_shards, "MAX_SHARD_SIZE", 3)
    trainer = EnsembleTrainer(ef.tasks.DelayedXOR(delay=4, pulse=4), lambda k: ef.models.LeakyRNN(3, 4, 1, key=k),
                              lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a), ef.rules.BPTT(), optax.adam,
                              [Member(s, 0.5, 1e-2) for s in range(7)], Schedule(epochs=1, batch_size=4))
    assert trainer.shards == 3
