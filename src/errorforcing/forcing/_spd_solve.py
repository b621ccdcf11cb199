"""Solve small symmetric positive-definite systems with plain array operations.

Why: the teacher state and the readout's right inverse solve n_out-sized systems (n_out = 1 or
2 for the reference tasks) inside every training program. `jnp.linalg.solve` lowers them to a
LAPACK custom call, which on the CPU costs ~30× the arithmetic for systems this small, and
ensemble shards running LAPACK calls in parallel threads have hung (jaxlib 0.10; see
`training/_shards.py`). An unrolled Cholesky of an n ≤ `UNROLLED_MAX` system is a few dozen
elementwise operations, exact to rounding, differentiable, and compiles into the program.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._types import Array, Float

UNROLLED_MAX = 8


def spd_solve(A: Float[Array, "*batch n n"], b: Float[Array, "*batch n k"]) -> Float[Array, "*batch n k"]:
    """x = A⁻¹ b for symmetric positive-definite A (any leading batch axes, broadcast).

    A = L Lᵀ (Cholesky), then L y = b and Lᵀ x = y by substitution, unrolled over n. Systems
    larger than `UNROLLED_MAX` go to `jnp.linalg.solve`. Only A's symmetric part is read.
    """
    n = A.shape[-1]
    if n > UNROLLED_MAX:
        return jnp.linalg.solve(A, b)
    A = 0.5 * (A + jnp.swapaxes(A, -1, -2))  # both triangles, so gradients are those of a symmetric A
    L = [[None] * n for _ in range(n)]
    for j in range(n):
        L[j][j] = jnp.sqrt(A[..., j, j] - sum(L[j][k] ** 2 for k in range(j)))
        for i in range(j + 1, n):
            L[i][j] = (A[..., i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    col = lambda v: v[..., None]
    y = []
    for i in range(n):
        y.append((b[..., i, :] - sum(col(L[i][k]) * y[k] for k in range(i))) / col(L[i][i]))
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(col(L[k][i]) * x[k] for k in range(i + 1, n))) / col(L[i][i])
    return jnp.stack(jnp.broadcast_arrays(*x), axis=-2)
