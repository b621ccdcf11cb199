"""Benchmarks of the analysis functions (`errorforcing bench` shows them under "lyapunov" and
"fixed_points"): the Lyapunov spectrum (k = 50 exponents, N = 50, T = 1000, batch 32) and the
fixed-point finder (N = 50, 1,024 initial states) next to scipy."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ..analysis import find_fixed_points, lyapunov_spectrum, sample_states
from ..models import LeakyRNN


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


def bench_fixed_points(*, n_rec: int = 50, n_initial: int = 1024, n_in: int = 3, tol: float = 1e-8,
                       repeats: int = 2, baseline_states: int = 64, seed: int = 0) -> dict:
    """Time `find_fixed_points` (float32, default LeakyRNN, g = 1.5, the delay input [0, 0, 1],
    `n_initial` states sampled from its trajectories on delayed-XOR inputs, jittered by 0.01)
    to converged, de-duplicated, linearised points, after a warm-up call that compiles it.

    The first `baseline_states` of the same states (0: none) go through a plain loop of
    `scipy.optimize.minimize` (BFGS, analytic gradient of q in numpy float64, gtol 1e-10)
    followed by the same de-duplication and numpy linearisation, measured in the same run. That
    loop costs the same for every state (≈ 0.1–0.4 s each here), so its time for all
    `n_initial` states is reported as the measured time per state × `n_initial`
    (`scipy_seconds_all_states`), and the speed-up against that.
    """
    from ..tasks import DelayedXOR, sample_batch

    key = jax.random.key(seed)
    k_cell, k_trials, k_states = jax.random.split(key, 3)
    cell = LeakyRNN(n_in, n_rec, 1, key=k_cell, dtype=jnp.float32)
    trials = sample_batch(DelayedXOR(delay=100), 32, key=k_trials)
    h0 = jax.block_until_ready(sample_states(cell, trials, n_initial, key=k_states, noise=0.01))
    x = jnp.asarray([0.0, 0.0, 1.0], jnp.float32)

    t0 = time.perf_counter()
    fp = find_fixed_points(cell, x, h0, tol=tol)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fp = find_fixed_points(cell, x, h0, tol=tol)
        times.append(time.perf_counter() - t0)
    result = {
        "name": "find_fixed_points", "seconds": min(times), "first_call_seconds": first,
        "n_rec": n_rec, "n_initial": n_initial, "dtype": "float32", "tol": tol,
        "n_converged": fp.n_converged, "n_fixed_points": len(fp), "n_stable": int(fp.stable.sum()),
        "backend": jax.default_backend(),
    }
    if baseline_states:
        sub = np.asarray(h0[:baseline_states], np.float64)
        result |= _scipy_baseline(cell, np.asarray(x, np.float64), sub, tol)
        result["scipy_seconds_all_states"] = result["scipy_seconds"] / len(sub) * n_initial
        result["speedup_vs_scipy"] = result["scipy_seconds_all_states"] / result["seconds"]
    return result


def _scipy_baseline(cell: LeakyRNN, x: np.ndarray, h0: np.ndarray, tol: float) -> dict:
    """One `scipy.optimize.minimize` per initial state on q(h) = ½‖F(h) − h‖² of the leaky tanh
    cell, written out in numpy; then the same merging and numpy Jacobians and eigenvalues."""
    from scipy.optimize import minimize

    a = cell.leak
    W, drive = np.asarray(cell.W_rec, np.float64), np.asarray(cell.W_in @ x + cell.b, np.float64)
    N = W.shape[0]

    def q_and_grad(h):
        t = np.tanh(h)
        r = a * (W @ t + drive - h)  # F(h) − h
        J = a * (W * (1 - t ** 2)) - a * np.eye(N)  # ∂r/∂h
        return 0.5 * r @ r, J.T @ r

    t0 = time.perf_counter()
    found, speeds, nit = [], [], 0
    for h in h0:
        res = minimize(q_and_grad, h, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 2000})
        found.append(res.x)
        speeds.append(res.fun)
        nit += res.nit
    found, speeds = np.asarray(found), np.asarray(speeds)
    ok = speeds < tol
    points = _distinct(found[ok], speeds[ok], 1e-3)
    t = np.tanh(points)
    jacobians = (1 - a) * np.eye(N) + a * W[None] * (1 - t ** 2)[:, None, :]
    eigenvalues = np.linalg.eigvals(jacobians) if len(points) else np.zeros((0, N))
    seconds = time.perf_counter() - t0
    return {"scipy_states": len(h0), "scipy_seconds": seconds, "scipy_method": "BFGS", "scipy_n_converged": int(ok.sum()),
            "scipy_n_fixed_points": len(points),
            "scipy_n_stable": int(np.sum(np.all(np.abs(eigenvalues) < 1, axis=1))) if len(points) else 0,
            "scipy_mean_iterations": nit / len(h0)}


def _distinct(points: np.ndarray, speeds: np.ndarray, tol: float) -> np.ndarray:
    """The baseline's own merge, by the rule `find_fixed_points` uses: slowest first, a point
    within `tol` of a point already kept joins it."""
    kept: list[int] = []
    for i in np.argsort(speeds, kind="stable"):
        if not kept or np.min(np.linalg.norm(points[kept] - points[i], axis=1)) > tol:
            kept.append(int(i))
    return points[kept]
