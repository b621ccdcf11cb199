"""Benchmark of the Lyapunov spectrum: k = 50 exponents, N = 50, T = 1000, batch 32."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from ..models import LeakyRNN
from ._lyapunov import lyapunov_spectrum


def bench_lyapunov(*, n_rec: int = 50, k: int = 50, n_steps: int = 1000, batch: int = 32,
                   n_in: int = 3, repeats: int = 3, seed: int = 0) -> dict:
    """Time `lyapunov_spectrum` (float32, default LeakyRNN, Gaussian inputs) after a
    warm-up call that compiles it; returns the best of `repeats` timed calls.

    Keys: seconds, us_per_step (per time step of the whole batch), the shape parameters,
    backend, and lambda_max (mean over trials, a sanity value).
    """
    key = jax.random.key(seed)
    k_cell, k_x, k_q = jax.random.split(key, 3)
    cell = LeakyRNN(n_in, n_rec, 1, key=k_cell, dtype=jnp.float32)
    inputs = jax.random.normal(k_x, (batch, n_steps, n_in), jnp.float32)

    def call():
        return jax.block_until_ready(lyapunov_spectrum(cell, inputs, k, key=k_q))

    t0 = time.perf_counter()
    lam = call()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    seconds = min(times)
    return {
        "name": "lyapunov_spectrum",
        "seconds": seconds,
        "first_call_seconds": compile_s,
        "us_per_step": 1e6 * seconds / n_steps,
        "n_rec": n_rec, "k": k, "n_steps": n_steps, "batch": batch,
        "backend": jax.default_backend(),
        "lambda_max": float(jnp.mean(lam[:, 0])),
    }
