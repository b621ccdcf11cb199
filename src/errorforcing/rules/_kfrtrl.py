"""KF-RTRL (Mujika, Meier & Steger 2018): a Kronecker-factored unbiased estimate of the influence."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import numpy as np

from ._influence import AbstractInfluenceRule
from ._step import trainable_spec

_KRONECKER_FIELDS = ("W_rec", "W_in", "b")  # the leaky RNN's pre-activation W_rec φ(h̃) + W_in x + b = W z


class KFRTRL(AbstractInfluenceRule):
    """Kronecker-factored RTRL (Mujika, Meier & Steger, NeurIPS 2018) for the leaky RNN.

    The recurrent weights enter through one pre-activation, pre_t = W z_t with W = [W_rec | W_in |
    b] and z_t = [φ(h̃_{t-1}); x_t; 1] (the parts that train), so the direct term of the forced
    state is a Kronecker product, ∂̄s_t/∂W_jk = D_t[:, j] z_t,k with D_t = ∂s_t/∂pre_t = ∂s_t/∂b.
    The influence of W is carried as u_t ⊗ A_t (M[i, (j, k)] ≈ A_ij u_k, u ∈ R^{n_z}, A ∈ R^{S×N}):

        c_1, c_2 ~ uniform{±1} (fresh each step and trial, from `value_and_grad`'s key)
        u_t = c_1 ρ_0 u_{t-1} + c_2 ρ_1 z_t,      A_t = c_1 J_t A_{t-1} / ρ_0 + c_2 D_t / ρ_1
        ρ_0 = √((‖J_t A_{t-1}‖ + ε) / (‖u_{t-1}‖ + ε)),   ρ_1 = √((‖D_t‖ + ε) / (‖z_t‖ + ε))

    E[c_1 c_2] = 0 makes E[u_t ⊗ A_t] = u_{t-1} ⊗ J_t A_{t-1} + z_t ⊗ D_t (unbiased), with the
    variance-minimising ρ's. Step t's gradient of W is (A_{t-1}ᵀ ∂ℓ_t/∂s_{t-1}) u_{t-1}ᵀ +
    (∂̄ℓ_t/∂b) z_tᵀ. The other trainable leaves (W_out, b_out; they reach the state only through a
    forcing, e.g. teacher forcing's W⁺) keep their exact influence rows, as in RTRL. Under Dale's
    law the estimate is of the effective W_rec and its gradient is pulled back to the underlying
    parameter through `cell.recurrent_weights()` (a fixed elementwise map). The state starts at
    rest (∂h_0/∂W = 0). Cost per step and trial: N jvps for J_t A_{t-1} and N for D_t, O(N³)
    (vs RTRL's O(N⁴)); memory O(N²).

    `online=True` is real-time KF-RTRL: θ is changed after every step by the per-step optimizer
    (`AbstractInfluenceRule`), u and A carried on across the changes.
    """

    eps: float = 1e-7
    online: bool = eqx.field(default=False, static=True)
    lr: float | jax.Array | None = None
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)

    def prepare(self, ctx):
        cell = ctx.cell
        missing = [f for f in _KRONECKER_FIELDS if f not in cell.__dataclass_fields__]
        if missing or not callable(getattr(cell, "phi", None)):
            raise TypeError(f"KFRTRL is written for the leaky RNN (pre-activation W_rec φ(h) + W_in x + b); "
                            f"{type(cell).__name__} lacks {missing or ['phi']}")
        kron = [f for f in _KRONECKER_FIELDS if f in cell.trainable]
        # positions in θ of the other trainable leaves (exact rows), from the leaves' order in θ
        params = eqx.filter(cell, trainable_spec(cell))
        positions, offset = [], 0
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            if path[0].name not in kron:
                positions.extend(range(offset, offset + leaf.size))
            offset += leaf.size
        return kron, np.asarray(positions, dtype=np.int32)

    def init_estimate(self, ctx, prepared, M0, key):
        kron, rest = prepared
        N, dtype = ctx.cell.n_rec, M0.dtype
        n_z = sum({"W_rec": N, "W_in": ctx.n_in, "b": 1}[f] for f in kron)
        return jnp.zeros((n_z,), dtype), jnp.zeros((ctx.n_state, N), dtype), M0[:, rest]

    def update(self, ctx, prepared, step, estimate, key):
        kron, rest = prepared
        u, A, M_rest = estimate
        cell, S = step.cell, ctx.n_state
        N = cell.n_rec
        tangents = jax.vmap(step.tangent, in_axes=1, out_axes=(1, 0))
        JA, dloss_A = tangents(A)
        D, dloss_b = jax.jacfwd(lambda b: step.step_cell(eqx.tree_at(lambda c: c.b, cell, b), step.s))(cell.b)
        parts = {"W_rec": cell.phi(step.s[:N]), "W_in": step.x, "b": jnp.ones((1,), u.dtype)}
        z = jnp.concatenate([parts[f] for f in kron]) if kron else u
        g_w = jnp.outer(dloss_A, u) + jnp.outer(dloss_b, z)  # [N, n_z]: ∂ℓ_t/∂W, W = [W_rec | W_in | b]
        g = ctx.flatten(_kron_grads(cell, kron, g_w, ctx.n_in))
        # the other leaves: exact RTRL rows
        JM, dloss_M = tangents(M_rest)
        _, vjp = jax.vjp(lambda th_r: step.step(step.theta.at[rest].set(th_r), step.s), step.theta[rest])
        eye = jnp.eye(S + 1, dtype=u.dtype)
        (direct,) = jax.vmap(lambda v: vjp((v[:S], v[S])))(eye)
        g = g.at[rest].add(dloss_M + direct[S])
        c1, c2 = jax.random.rademacher(key, (2,), u.dtype)
        rho0 = jnp.sqrt((jnp.linalg.norm(JA) + self.eps) / (jnp.linalg.norm(u) + self.eps))
        rho1 = jnp.sqrt((jnp.linalg.norm(D) + self.eps) / (jnp.linalg.norm(z) + self.eps))
        new = (c1 * rho0 * u + c2 * rho1 * z, c1 * JA / rho0 + c2 * D / rho1, JM + direct[:S])
        return new, g


def _kron_grads(cell, kron, g_w, n_in):
    """The cell-shaped gradient of the Kronecker fields from ∂ℓ/∂[W_rec | W_in | b] (zeros
    elsewhere); W_rec's is pulled back through `recurrent_weights()` onto the stored parameter."""
    N = cell.n_rec
    widths = {"W_rec": N, "W_in": n_in, "b": 1}
    grads = jax.tree.map(lambda leaf: jnp.zeros_like(leaf) if eqx.is_inexact_array(leaf) else None, cell)
    values, col = [], 0
    for f in kron:
        block = g_w[:, col:col + widths[f]]
        col += widths[f]
        if f == "W_rec":
            _, pull = jax.vjp(lambda V: eqx.tree_at(lambda c: c.W_rec, cell, V).recurrent_weights(), cell.W_rec)
            block = pull(block)[0]
        values.append(block[:, 0] if f == "b" else block)
    if not kron:
        return grads
    return eqx.tree_at(lambda g: [getattr(g, f) for f in kron], grads, values)
