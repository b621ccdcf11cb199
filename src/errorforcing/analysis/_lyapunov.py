"""Lyapunov spectrum of a driven recurrent cell by the QR (Benettin) method (SPEC §6).

Engelken (2024, gradient flossing); Vogt et al. (2022). For the map h_t = f(h_{t-1}, x_t)
with one-step Jacobians J_t = ∂f(h_{t-1}, x_t)/∂h_{t-1}:

    Q_0 R_0 = qr(Z),  Z ~ N(0, 1)^{N×k}
    Q_t R_t = qr(J_t J_{t-1} … J_{t-n+1} Q_{t-n})           (every n = `reortho_every` steps)
    λ_i = (1 / M) Σ_{re-orthonormalisations after the transient} log |R_ii|

M is the number of steps after the transient, so λ_i is in units of *per step* (divide by
dt for per unit time). Since QR of a product factors as the product of the R's, the estimate
does not depend on n in exact arithmetic; n > 1 only saves QR calls (and overflows if the
product grows too fast between two calls).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Key
from ..models import AbstractCell


def lyapunov_spectrum(
    cell: AbstractCell,
    inputs: Float[Array, "T n_in"] | Float[Array, "B T n_in"],
    k: int,
    *,
    key: Key,
    transient: int = 0,
    reortho_every: int = 1,
    h0: Float[Array, " N"] | Float[Array, "B N"] | None = None,
) -> Float[Array, " k"] | Float[Array, "B k"]:
    """The k leading Lyapunov exponents (per step) of `cell` driven by `inputs`.

    The trajectory starts at `h0` (default `cell.init_state()`; a fixed point such as h = 0
    with zero input gives the exponents of that fixed point — pass a random `h0` or a
    `transient` to measure an attractor). The first `transient` steps evolve the state and
    the basis Q but are not counted. Tangent vectors are pushed with `jax.linearize` of the
    cell step, so any `AbstractCell` works. Batched inputs `[B, T, n_in]` give `[B, k]`, each
    trial with its own random initial basis (from a split of `key`).

    Exponents come in the order of the QR columns, which is descending up to the estimation
    error. Differentiable in the cell's parameters: QR's reverse mode is well defined for
    N ≥ k and R's diagonal is made positive, so Q is a smooth function of its input.

    Arguments:
        cell: any `AbstractCell`.
        inputs: the driving inputs [T, n_in], or a batch [B, T, n_in].
        k: how many exponents, 1 <= k <= N.
        key: the key of the random initial basis Q_0.
        transient: steps at the start that are run but not counted.
        reortho_every: steps between QR re-orthonormalisations.
        h0: the initial state [N] (or [B, N]); default `cell.init_state()`.

    Returns:
        The exponents per step [k], or [B, k] for batched inputs.
    """
    return _spectrum(cell, inputs, k, key=key, transient=transient,
                     reortho_every=reortho_every, h0=h0, detach_state=False)


def max_lyapunov(
    cell: AbstractCell,
    inputs: Float[Array, "T n_in"] | Float[Array, "B T n_in"],
    *,
    key: Key,
    transient: int = 0,
    reortho_every: int = 1,
    h0: Float[Array, " N"] | Float[Array, "B N"] | None = None,
) -> Float[Array, ""] | Float[Array, " B"]:
    """The largest Lyapunov exponent λ_1 (per step): `lyapunov_spectrum` with k = 1."""
    return lyapunov_spectrum(cell, inputs, 1, key=key, transient=transient,
                             reortho_every=reortho_every, h0=h0)[..., 0]


@eqx.filter_jit
def _spectrum(cell, inputs, k, *, key, transient, reortho_every, h0, detach_state):
    n = cell.n_rec
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n_rec={n}], got {k}")
    if reortho_every < 1:
        raise ValueError(f"reortho_every must be >= 1, got {reortho_every}")
    if inputs.ndim not in (2, 3):
        raise ValueError(f"inputs must be [T, n_in] or [B, T, n_in], got shape {inputs.shape}")
    n_steps = inputs.shape[-2]
    if not 0 <= transient < n_steps:
        raise ValueError(f"transient must be in [0, T={n_steps}), got {transient}")
    h_init = cell.init_state() if h0 is None else h0

    def one(x, h, k_q):
        return _spectrum_one(cell, x, h, _random_basis(k_q, n, k, h_init.dtype),
                             transient, reortho_every, detach_state)

    if inputs.ndim == 2:
        if h_init.ndim != 1:
            raise ValueError(f"unbatched inputs need h0 of shape [N], got {h_init.shape}")
        return one(inputs, h_init, key)
    batch = inputs.shape[0]
    h_axis = 0 if h_init.ndim == 2 else None
    return jax.vmap(one, in_axes=(0, h_axis, 0))(inputs, h_init, jax.random.split(key, batch))


def _random_basis(key: Key, n: int, k: int, dtype) -> Float[Array, "N k"]:
    q, _ = _qr_positive(jax.random.normal(key, (n, k), dtype))
    return q


def _qr_positive(a: Float[Array, "N k"]) -> tuple[Float[Array, "N k"], Float[Array, " k"]]:
    """Reduced QR with diag(R) > 0; returns Q and diag(R).

    The sign fix makes the factorisation unique, so Q varies smoothly with `a` (the LAPACK
    sign convention can flip columns from one step to the next).
    """
    q, r = jnp.linalg.qr(a)
    d = jnp.diagonal(r)
    sign = jnp.where(d < 0, -1.0, 1.0).astype(a.dtype)
    return q * sign, d * sign


def _spectrum_one(cell, inputs, h, q, transient, every, detach_state) -> Float[Array, " k"]:
    def tangent_step(carry, x):
        h, q = carry
        if detach_state:
            # Liu et al.'s hidden.detach(): the state is a constant for the gradient, so
            # J_t depends on θ only explicitly, never through h_{t-1}(θ).
            h = jax.lax.stop_gradient(h)
        h_next, push = jax.linearize(lambda s: cell(s, x), h)
        return (h_next, jax.vmap(push, in_axes=1, out_axes=1)(q)), None

    def block(carry, xs):
        """`len(xs)` steps of the tangent map, then one re-orthonormalisation."""
        if xs.shape[0] == 1:
            (h, q), _ = tangent_step(carry, xs[0])
        else:
            (h, q), _ = jax.lax.scan(tangent_step, carry, xs)
        q, r_diag = _qr_positive(q)
        return (h, q), jnp.log(r_diag)

    carry = (h, q)
    carry, _ = _run_blocks(block, carry, inputs[:transient], every)
    _, log_growth = _run_blocks(block, carry, inputs[transient:], every)
    return log_growth / (inputs.shape[0] - transient)


def _run_blocks(block: Callable, carry, xs, every: int):
    """Scan `block` over consecutive chunks of `every` steps (the last one may be shorter);
    returns the final carry and the summed log-growth rates."""
    n_steps, n_in = xs.shape
    k = carry[1].shape[1]
    total = jnp.zeros((k,), carry[1].dtype)
    n_full, rest = divmod(n_steps, every)
    if n_full:
        chunks = xs[: n_full * every].reshape(n_full, every, n_in)
        carry, logs = jax.lax.scan(block, carry, chunks)
        total = total + logs.sum(0)
    if rest:
        carry, logs = block(carry, xs[n_full * every:])
        total = total + logs
    return carry, total
