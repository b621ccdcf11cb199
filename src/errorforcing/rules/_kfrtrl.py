"""KF-RTRL (Mujika, Meier & Steger 2018): a Kronecker-factored unbiased estimate of the influence."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import numpy as np

from ..forcing import forced_step, process_noise
from ._influence import AbstractInfluenceRule, influence_keys
from ._leaky_bptt import _DERIVATIVE_FROM_RATE
from ._leaky_rtrl import supports_fast_rtrl
from ._loss import Objective
from ._rtrl import _CarryLayout
from ._step import StepLoss, time_major, trainable_spec

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

    Offline on the leaky RNN under no forcing or a stopped additive correction (where `RTRL`
    takes its fast path) and no changing forcing carry, the same estimate, with the same random signs, is computed in closed
    form for the whole batch (`leaky_kfrtrl`): J_t A = (1 - a) A + a W_rec (φ'(h̃_{t-1}) ⊙ A),
    D_t = a I, ∂ℓ_t/∂s_{t-1} A = δ_tᵀ J_t A with δ_t = ∂ℓ_t/∂h_t, so a step is a few batched
    products instead of ≈ 2N + 2 derivative passes per trial; `fast=False` forces the generic
    path (tests compare the two in float64).

    `online=True` is real-time KF-RTRL: θ is changed after every step by the per-step optimizer
    (`AbstractInfluenceRule`), u and A carried on across the changes.
    """

    eps: float = 1e-7
    online: bool = eqx.field(default=False, static=True)
    fast: bool = eqx.field(default=True, static=True)
    lr: float | jax.Array | None = None
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)

    def uses_closed_form(self, cell, forcing, trials) -> bool:
        """Whether `value_and_grad` runs `leaky_kfrtrl` (see the class docstring). Not when the
        forcing carries a state that changes over time (e.g. causal EF's last error): the generic
        estimate's A then has rows for it, which enter its scalings ρ."""
        return (self.fast and not self.online and supports_fast_rtrl(cell, forcing)
                and any(f in cell.trainable for f in _KRONECKER_FIELDS)
                and not _CarryLayout(cell, forcing, trials).diff_idx)

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        if self.uses_closed_form(cell, forcing, trials):
            return leaky_kfrtrl(cell, forcing, trials, key, objective, eps=self.eps) + ({},)
        return super().value_and_grad(cell, forcing, trials, key=key, objective=objective)

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


def leaky_kfrtrl(cell, forcing, trials, key, objective: Objective, *, eps: float):
    """(loss, Σ_t g_t shaped like `cell`): `KFRTRL`'s estimate for the leaky RNN under no forcing
    or a stopped additive correction (h̃_t - h_t stopped, so ∂h̃_t/∂h_t = I), the whole batch
    per step: the same recursion, keys and noise as the generic path."""
    run = LeakyKroneckerRun.start(cell, forcing, trials, key, objective)
    B, T, N, dtype, a, W, n_z = run.B, run.T, run.N, run.dtype, run.a, run.W, run.n_z
    dphi_from_rate = run.dphi_from_rate
    norm_D = a * jnp.sqrt(jnp.asarray(N, dtype))  # ‖D_t‖ = ‖a I‖ (Frobenius)
    eye = jnp.eye(N, dtype=dtype)
    _, step_keys = influence_keys(key, B, T)

    def scan_step(state, xs):
        h_prev, fcarry, u, A, g_w, g_out, g_bout, loss_sum = state
        x, target, m, xi, k = xs
        r_prev, h_forced, fcarry, delta, z, (g_out, g_bout, loss_sum) = run.step(
            h_prev, fcarry, (x, target, m, xi), (g_out, g_bout, loss_sum))
        JA = (1 - a) * A + a * jnp.einsum("ij,bjk->bik", W, dphi_from_rate(r_prev)[:, :, None] * A)
        dloss_A = jnp.einsum("bi,bij->bj", delta, JA)
        g_w = g_w + jnp.einsum("bi,bk->ik", dloss_A, u) + a * jnp.einsum("bi,bk->ik", delta, z)
        c = jax.vmap(lambda kk: jax.random.rademacher(kk, (2,), dtype))(k)  # [B, 2]
        c1, c2 = c[:, 0], c[:, 1]
        rho0 = jnp.sqrt((jnp.linalg.norm(JA, axis=(1, 2)) + eps) / (jnp.linalg.norm(u, axis=1) + eps))
        rho1 = jnp.sqrt((norm_D + eps) / (jnp.linalg.norm(z, axis=1) + eps))
        u = (c1 * rho0)[:, None] * u + (c2 * rho1)[:, None] * z
        A = (c1 / rho0)[:, None, None] * JA + (c2 / rho1)[:, None, None] * (a * eye)
        return (h_forced, fcarry, u, A, g_w, g_out, g_bout, loss_sum), None

    bcast = lambda v: jnp.broadcast_to(v, (B,) + jnp.shape(v))
    init = (bcast(cell.init_state()), jax.tree.map(bcast, forcing.init(cell)), jnp.zeros((B, n_z), dtype),
            jnp.zeros((B, N, N), dtype), jnp.zeros((N, n_z), dtype), jnp.zeros_like(cell.W_out),
            jnp.zeros_like(cell.b_out), jnp.zeros((), dtype))
    x, target, m, xi = time_major(trials, run.noise)
    (_, _, _, _, g_w, g_out, g_bout, loss), _ = jax.lax.scan(scan_step, init, (x, target, m, xi, step_keys))
    return run.finish(g_w, g_out, g_bout, loss)


class LeakyKroneckerRun(eqx.Module):
    """What the closed forms of KF-RTRL and UORO share on the leaky RNN: the set-up, the
    forward step with its learning signal δ_t = ∂ℓ_t/∂h_t and Kronecker input z_t = [φ(h̃_{t-1}) | x_t | 1],
    the readout's gradient and loss sums, and the cell-shaped result."""

    cell: Any
    losses: StepLoss
    noise: Any
    step_forced: Callable
    penalty: Any
    penalty_grad: Any
    kron: tuple[str, ...] = eqx.field(static=True)
    B: int = eqx.field(static=True)
    T: int = eqx.field(static=True)
    n_in: int = eqx.field(static=True)
    n_z: int = eqx.field(static=True)

    @classmethod
    def start(cls, cell, forcing, trials, key, objective: Objective) -> "LeakyKroneckerRun":
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
        losses = StepLoss(objective, trials, cell.n_rec)
        B, T, n_in = trials.inputs.shape
        kron = tuple(f for f in _KRONECKER_FIELDS if f in cell.trainable)
        n_z = sum({"W_rec": cell.n_rec, "W_in": n_in, "b": 1}[f] for f in kron)
        step_forced = jax.vmap(lambda h, fc, x, y, m, xi: forced_step(cell, forcing, h, fc, x, y, m, xi),
                               in_axes=(0, 0, 0, 0, 0, 0 if noise is not None else None))
        penalty, penalty_grad = jax.value_and_grad(
            lambda V: losses.penalty(eqx.tree_at(lambda c: c.W_out, cell, V)))(cell.W_out)
        return cls(cell, losses, noise, step_forced, penalty, penalty_grad, kron, B, T, n_in, n_z)

    @property
    def N(self) -> int:
        return self.cell.n_rec

    @property
    def dtype(self):
        return self.cell.W_rec.dtype

    @property
    def a(self):
        return self.cell.leak

    @property
    def W(self):
        return self.cell.recurrent_weights()

    @property
    def dphi_from_rate(self) -> Callable:
        return _DERIVATIVE_FROM_RATE[self.cell.activation]

    def step(self, h_prev, fcarry, xs, sums):
        """One step for the batch: (φ(h̃_{t-1}), h̃_t, forcing carry, δ_t [B, N], z_t [B, n_z],
        the readout gradient and loss sums with step t added)."""
        cell, losses, dphi_from_rate = self.cell, self.losses, self.dphi_from_rate
        x, target, m, xi = xs
        g_out, g_bout, loss_sum = sums
        r_prev = cell.phi(h_prev)
        h, y, h_forced, fcarry = self.step_forced(h_prev, fcarry, x, target, m, xi)
        dy = losses.output_grad(y, target, m)  # [B, n_out]
        r = cell.phi(h) if cell.readout_mode == "rate" else h
        delta = dy @ cell.W_out  # ∂ℓ_t/∂h_t [B, N]
        if cell.readout_mode == "rate":
            delta = delta * dphi_from_rate(r)
        delta = delta + 2.0 * losses.rate_scale[:, None] * h_forced
        parts = {"W_rec": r_prev, "W_in": x, "b": jnp.ones((self.B, 1), self.dtype)}
        z = jnp.concatenate([parts[f] for f in self.kron], axis=1)  # [B, n_z]
        g_out, g_bout = g_out + dy.T @ r, g_bout + jnp.sum(dy, axis=0)
        loss_sum = loss_sum + jnp.sum(jax.vmap(losses.term)(y, h_forced, target, m, losses.rate_scale))
        return r_prev, h_forced, fcarry, delta, z, (g_out, g_bout, loss_sum)

    def finish(self, g_w, g_out, g_bout, loss):
        """(loss, cell-shaped gradient) from ∂ℓ/∂[W_rec | W_in | b] and the readout sums."""
        cell, T, B, n_terms = self.cell, self.T, self.B, self.losses.n_terms
        grads = _kron_grads(cell, self.kron, g_w, self.n_in)
        readout = {"W_out": g_out + self.penalty_grad * T * B / n_terms, "b_out": g_bout}
        names = [f for f in ("W_out", "b_out") if f in cell.trainable]
        if names:
            grads = eqx.tree_at(lambda g: [getattr(g, f) for f in names], grads, [readout[f] for f in names])
        return loss + self.penalty * T * B / n_terms, grads


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
