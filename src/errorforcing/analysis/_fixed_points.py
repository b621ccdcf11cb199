"""Fixed and slow points of a recurrent cell and their linearisation (Sussillo & Barak 2013).

For the discrete map h ↦ F(h) = cell(h, x) with a constant input x, a fixed point solves
F(h*) = h*. The finder minimises the speed

    q(h) = ½ ‖F(h, x) − h‖²

from many initial states at once, keeps the points with q < tol, merges the ones closer than
`unique_tol`, and linearises each:  h_{t+1} − h* ≈ J (h_t − h*),  J = ∂F/∂h (h*).  A point is
stable when every eigenvalue of J lies inside the unit circle (|λ| < 1).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Bool, Complex, Int

from .._types import Array, Float, Input, Key
from ..models import AbstractCell


class FixedPoints(NamedTuple):
    """The distinct fixed (or slow) points found, sorted by speed (slowest first).

    `eigenvalues[k]` are sorted by modulus, largest first, and `eigenvectors[k][:, i]` is the
    right eigenvector of `eigenvalues[k, i]`. `counts[k]`: how many initial states converged to
    point k. `n_initial`: how many initial states were tried; `n_converged`: how many of them
    reached q < tol (before merging).
    """

    states: Float[np.ndarray, "K N"]
    speeds: Float[np.ndarray, " K"]
    jacobians: Float[np.ndarray, "K N N"]
    eigenvalues: Complex[np.ndarray, "K N"]
    eigenvectors: Complex[np.ndarray, "K N N"]
    stable: Bool[np.ndarray, " K"]
    n_unstable: Int[np.ndarray, " K"]
    counts: Int[np.ndarray, " K"]
    n_initial: int
    n_converged: int

    def __len__(self) -> int:  # the number of points, not of fields
        return int(self.states.shape[0])


def find_fixed_points(
    cell: AbstractCell,
    x: Input,
    initial_states: Float[Array, "B N"],
    *,
    tol: float = 1e-8,
    max_iters: int = 200,
    unique_tol: float = 1e-3,
) -> FixedPoints:
    """Fixed points of h ↦ cell(h, x), searched from every row of `initial_states`.

    Method: Levenberg–Marquardt on the residual r(h) = F(h) − h, all initial states in one
    vmapped, jitted `while_loop`. Each iteration solves (JᵀJ + μ I) δ = −Jᵀ r with J = ∂r/∂h
    (from `jax.linearize`, so every cell works) and adapts the damping μ by the gain ratio
    (Nielsen 1999). Chosen over Adam (FixedPointFinder's default) because the state sizes here
    are small (N ≲ a few hundred), so an N × N solve per step is cheap, and near a fixed point
    the step becomes Newton's: convergence is quadratic, reaching q ~ machine precision in tens
    of iterations where Adam needs thousands and a learning rate to tune. Far from a fixed
    point a large μ makes the step a short gradient step on q, so it also settles into slow
    points (local minima of q with q > 0), which are returned when `tol` admits them.

    Iteration of each state stops when q ≤ tol·1e-8, when the step is below 100 machine
    epsilons relative to ‖h‖, when q fell by less than 1 % over the last 10 iterations (no
    further progress: the precision floor, or a slow point), or after `max_iters`.

    `x` is the constant input, e.g. zeros or a task's input during the delay. Points with
    q < `tol` are kept; two points closer than `unique_tol` (Euclidean) are merged into the
    slower one. The Jacobians and their eigen-decompositions are computed for the distinct
    points only (eigenvalues on the host with numpy, which handles non-symmetric matrices on
    every backend).

    Arguments:
        cell: any `AbstractCell` (its flat state: [h; c] for the LSTM).
        x: the constant input [n_in].
        initial_states: where the searches start [B, N] (e.g. from `sample_states`).
        tol: the largest q(h) = ½‖F(h, x) − h‖² of a point that is kept.
        max_iters: Levenberg–Marquardt iterations per initial state at most.
        unique_tol: points closer than this (Euclidean) are merged.

    Returns:
        `FixedPoints` of K distinct points, slowest first: states [K, N], speeds [K],
        jacobians [K, N, N], eigenvalues [K, N] and eigenvectors [K, N, N] (by modulus,
        largest first), stable [K], n_unstable [K], counts [K], n_initial, n_converged.
    """
    h0 = jnp.asarray(initial_states)
    if h0.ndim != 2 or h0.shape[1] != cell.n_rec:
        raise ValueError(f"initial_states must have shape [B, N = {cell.n_rec}], got {tuple(h0.shape)}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if not unique_tol >= 0:
        raise ValueError(f"unique_tol must be >= 0, got {unique_tol}")
    x = jnp.asarray(x, h0.dtype)
    states, speeds = _solve_all(cell, x, h0, jnp.asarray(tol, h0.dtype), jnp.asarray(max_iters))
    states, speeds = np.asarray(states), np.asarray(speeds)
    ok = np.isfinite(speeds) & (speeds < tol) & np.all(np.isfinite(states), axis=1)
    unique, counts = _deduplicate(states[ok], speeds[ok], unique_tol)
    return linearise(cell, x, states[ok][unique], speeds[ok][unique], counts,
                     n_initial=int(h0.shape[0]), n_converged=int(ok.sum()))


def linearise(cell: AbstractCell, x: Input, states: Float[ArrayLike, "K N"], speeds: Float[ArrayLike, " K"] | None = None,
              counts: Int[ArrayLike, " K"] | None = None, *, n_initial: int | None = None,
              n_converged: int | None = None) -> FixedPoints:
    """Jacobians J = ∂cell(h, x)/∂h at `states` and their eigen-decompositions."""
    states = np.asarray(states)
    K, N = states.shape
    if K:
        jacobians = np.asarray(_jacobians(cell, jnp.asarray(x, states.dtype), jnp.asarray(states)))
        eigenvalues, eigenvectors = np.linalg.eig(jacobians)
        order = np.argsort(-np.abs(eigenvalues), axis=1, kind="stable")
        eigenvalues = np.take_along_axis(eigenvalues, order, axis=1)
        eigenvectors = np.take_along_axis(eigenvectors, order[:, None, :], axis=2)
    else:
        jacobians = np.zeros((0, N, N), states.dtype)
        eigenvalues, eigenvectors = np.zeros((0, N), np.complex128), np.zeros((0, N, N), np.complex128)
    n_unstable = np.sum(np.abs(eigenvalues) >= 1.0, axis=1).astype(np.int64)
    if speeds is None:
        speeds = np.asarray(_speeds(cell, jnp.asarray(x, states.dtype), jnp.asarray(states))) if K else np.zeros(0)
    counts = np.ones(K, np.int64) if counts is None else np.asarray(counts, np.int64)
    return FixedPoints(states, np.asarray(speeds), jacobians, eigenvalues.astype(np.complex128),
                       eigenvectors.astype(np.complex128), n_unstable == 0, n_unstable, counts,
                       K if n_initial is None else n_initial, K if n_converged is None else n_converged)


def speed(cell: AbstractCell, x: Input, h: Float[Array, " N"]) -> Float[Array, ""]:
    """q(h) = ½ ‖cell(h, x) − h‖²."""
    r = cell(h, x) - h
    return 0.5 * jnp.vdot(r, r)


def sample_states(cell: AbstractCell, trials, n: int, *, key: Key, noise: float = 0.0) -> Float[Array, "n N"]:
    """`n` initial states for `find_fixed_points` drawn from the network's own trajectories
    (the FixedPointFinder convention): the unforced rollouts of `trials` (a batched `Trials`,
    from `cell.init_state()`) are run, `n` of their (trial, step) states are picked uniformly
    (without replacement when there are enough), and `noise`·N(0, I) is added to each."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    trajectories = unforced_states(cell, trials.inputs)
    flat = trajectories.reshape(-1, trajectories.shape[-1])
    k_pick, k_noise = jax.random.split(key)
    picked = flat[jax.random.choice(k_pick, flat.shape[0], (n,), replace=n > flat.shape[0])]
    if noise:
        picked = picked + noise * jax.random.normal(k_noise, picked.shape, picked.dtype)
    return picked


@eqx.filter_jit
def unforced_states(cell: AbstractCell, inputs: Float[Array, "B T n_in"]) -> Float[Array, "B T N"]:
    """States h_t = cell(h_{t-1}, x_t) from h_{-1} = `cell.init_state()`, no forcing."""

    def one(xs):
        def step(h, x):
            h = cell(h, x)
            return h, h

        h0 = cell.init_state()
        return jax.lax.scan(step, h0, xs.astype(h0.dtype))[1]

    return jax.vmap(one)(inputs)


# ----- the solver -----
# A state whose q fell by less than 1 % over the last 10 iterations has settled: at a fixed
# point to the precision of its dtype, or at a slow point (a local minimum of q above 0). In
# a vmapped while_loop every lane runs until the last one stops, so these must stop.
STALL_WINDOW, STALL_FRACTION = 10, 0.99


@eqx.filter_jit
def _solve_all(cell, x, h0, tol, max_iters):
    return jax.vmap(lambda h: _levenberg_marquardt(cell, x, h, tol, max_iters))(h0)


def _levenberg_marquardt(cell, x, h, tol, max_iters):
    N = h.shape[0]
    eye = jnp.eye(N, dtype=h.dtype)
    eps = jnp.finfo(h.dtype).eps
    q_stop = tol * 1e-8

    def residual(s):
        return cell(s, x) - s

    def linear_system(s):
        r, jvp = jax.linearize(residual, s)
        J = jax.vmap(jvp, out_axes=1)(eye)
        return r, J.T @ J, J.T @ r

    r, A, g = linear_system(h)
    q = 0.5 * jnp.vdot(r, r)
    mu = 1e-3 * jnp.max(jnp.diag(A))
    init = (h, q, A, g, mu, jnp.asarray(2.0, h.dtype), q, jnp.asarray(0), q <= q_stop)

    def cond(state):
        *_, it, done = state
        return (~done) & (it < max_iters)

    def body(state):
        h, q, A, g, mu, nu, q_mark, it, _ = state
        c, lower = jax.scipy.linalg.cho_factor(A + mu * eye)
        step = -jax.scipy.linalg.cho_solve((c, lower), g)
        h_new = h + step
        r_new, A_new, g_new = linear_system(h_new)
        q_new = 0.5 * jnp.vdot(r_new, r_new)
        predicted = 0.5 * jnp.vdot(step, mu * step - g)  # decrease of the local quadratic model
        rho = (q - q_new) / predicted
        accept = jnp.isfinite(q_new) & (q_new < q) & jnp.all(jnp.isfinite(step))
        mu_accept = mu * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        h, q, A, g = jax.tree_util.tree_map(lambda new, old: jnp.where(accept, new, old),
                                            (h_new, q_new, A_new, g_new), (h, q, A, g))
        mu = jnp.where(accept, mu_accept, mu * nu)
        nu = jnp.where(accept, 2.0, 2.0 * nu)
        tiny_step = jnp.linalg.norm(step) <= 100 * eps * (jnp.linalg.norm(h) + 100 * eps)
        mark = (it + 1) % STALL_WINDOW == 0
        stalled = mark & (q > STALL_FRACTION * q_mark)
        q_mark = jnp.where(mark, q, q_mark)
        done = (q <= q_stop) | tiny_step | stalled | ~jnp.isfinite(mu)
        return h, q, A, g, mu, nu, q_mark, it + 1, done

    h, q, *_ = jax.lax.while_loop(cond, body, init)
    return h, q


@eqx.filter_jit
def _jacobians(cell, x, states):
    return jax.vmap(jax.jacfwd(lambda h: cell(h, x)))(states)


@eqx.filter_jit
def _speeds(cell, x, states):
    return jax.vmap(lambda h: speed(cell, x, h))(states)


def _deduplicate(states: np.ndarray, speeds: np.ndarray, unique_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the distinct points (slowest first) and how many states each absorbed: every
    point within `unique_tol` of an already kept, slower point joins that point."""
    order = np.argsort(speeds, kind="stable")
    keep: list[int] = []
    counts: list[int] = []
    for i in order:
        if keep:
            d = np.linalg.norm(states[keep] - states[i], axis=1)
            j = int(np.argmin(d))
            if d[j] <= unique_tol:
                counts[j] += 1
                continue
        keep.append(int(i))
        counts.append(1)
    return np.asarray(keep, np.int64), np.asarray(counts, np.int64)
