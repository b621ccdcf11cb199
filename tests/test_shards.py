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
