"""A hand-written BPTT for the leaky RNN under no forcing, stopped additive forcing (EF, Kalman
EF, feedback EF, their causal variants) and teacher forcing (gradient through W⁺ or stopped) —
the configurations of the Error Forcing paper — with or without sparse (`interval`) and
partial (`units`) forcing.

With its credit through W_rec truncated (`recurrent="diagonal" | "none"`) and a feedback
matrix in place of W_outᵀ it is also e-prop's and RFLO's offline gradient (`AbstractTraceRule`).

Why: `jax.grad` of the `lax.scan` stores and differentiates every intermediate of the step.
Here the forward pass stores r = φ(h̃) (or, with the rate penalty, h̃ alone: the reverse scan
recomputes r = φ(h̃) from it, one stored [T,N,B] array instead of two) and sums the readout
gradient, and the reverse scan carries the state adjoint (one [N,N]·[N,B] matmul per step) and
the weight sums. Same gradient as autodiff (tests compare them in float64); `BPTT(fast=False)`
forces the autodiff path.

Every per-step array is batch-minor, [·, B]: the elementwise work (leak, tanh, φ′, the
forcing's correction) then runs over rows of B = 128, whole vector registers, instead of rows
of N = 50 with a remainder. Measured at the reference size (N = 50, batch 128, T = 1045, EF,
rate penalty on, 10 members vmapped on one core, quiet machine, `benchmarks/bench_fast_bptt.py`):
77.6 µs per member-step batch-major with r and h̃ stored, 66.7 batch-minor, 48.8 batch-minor
storing h̃ alone. Unrolling the scans (2 or 4 steps: 98, 91 µs), writing the rank-n_out
products (forcing, readout adjoint) as broadcast sums (52 µs), carrying the bias sum as a
[N,B] array (54 µs) and the XLA CPU flags for XNNPACK, oneDNN, fast math and 512-bit vectors
(77–84 µs, measured on the batch-major kernel) were all slower or no faster.

The weight sums Σ_t δ_t r_{t-1}ᵀ (and Σ_t δ_t x_tᵀ) are accumulated inside the reverse scan,
one small [N,B]·[B,N] product per step (`weight_sums="scan"`, the default). The alternative,
`weight_sums="gemm"`, stores δ_t for all steps and forms each sum as one product over time and
batch after the scan: 208 µs per member-step against 48.8 in the measurement above (and, in
the earlier batch-major kernel, 277 against 238 at load ≈ 12). Storing δ writes and re-reads a
[T,N,B] array per member, and the product over (T, B) needs it transposed; that costs more than
the GEMM saves. The in-scan sums reuse δ_t and r_t while they are in cache. (An accelerator may
rank them the other way; measure there.)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float
from ..forcing import AbstractAdditiveForcing, AbstractForcing, AbstractTeacherForcing
from ..models import LeakyRNN
from ..tasks import Trials
from ._loss import Objective, readout_penalty, trial_weights

# φ'(h) written in terms of r = φ(h), so the backward pass needs only the stored rates.
_DERIVATIVE_FROM_RATE = {
    "tanh": lambda r: 1.0 - r * r,
    "logistic": lambda r: r * (1.0 - r),
    "relu": lambda r: (r > 0).astype(r.dtype),
    "softplus": lambda r: -jnp.expm1(-r),
    "identity": lambda r: jnp.ones_like(r),
}


def supports_fast_path(cell, forcing: AbstractForcing) -> bool:
    if not cell.leaky_dynamics or cell.dale_sign is not None:  # Dale's law: autodiff through |V| diag(σ)
        return False
    if forcing.is_identity or isinstance(forcing, AbstractTeacherForcing):
        return True
    return isinstance(forcing, AbstractAdditiveForcing) and forcing.stop_gradient


RECURRENT_CREDIT = ("full", "diagonal", "none")


def leaky_bptt(cell: LeakyRNN, forcing: AbstractForcing, trials: Trials, objective: Objective,
               noise=None, *, weight_sums: str = "scan", recurrent: str = "full",
               feedback: Float[Array, "N n_out"] | None = None):
    """(loss, grads) of `objective` for the forced rollout; grads shaped like `cell`.

    `weight_sums`: "scan" accumulates the weight sums in the reverse scan, "gemm" stores δ and
    forms them as single products after it (same gradient; see the module docstring).

    `recurrent` and `feedback` truncate the credit, for the trace rules' offline gradient
    (`AbstractTraceRule`): "full" (BPTT) carries δ back through W_recᵀ; "diagonal" (e-prop)
    through its diagonal alone, a φ'(h̃_t) ⊙ diag(W_rec) ⊙ δ_{t+1}; "none" (RFLO) through the
    leak alone, (1 - a) δ_{t+1}. `feedback` (N × n_out, default W_outᵀ) replaces W_outᵀ on the
    output error's path to the state. Truncated credit does not follow a teacher forcing's
    dependence on W_out (the non-local path through W⁺).

    With g̃_t = ∂L/∂h̃_t and δ_t = ∂L/∂h_t (both total derivatives):
        g̃_t = ∂ℓ_reg/∂h̃_t + (1 - a) δ_{t+1} + a φ'(h̃_t) ⊙ W_recᵀ δ_{t+1}
        δ_t = κ_t ⊙ g̃_t + W_outᵀ ∂ℓ/∂y_t    (κ = 1 - c_t p for teacher forcing, else 1)
        ∂L/∂W_rec = a Σ_t δ_t φ(h̃_{t-1})ᵀ,  ∂L/∂W_in = a Σ_t δ_t x_tᵀ,  ∂L/∂b = a Σ_t δ_t
    and, for teacher forcing whose target flows, with teacher state W_outᵀ v_t (v_t the masked
    solve of `TeacherForcing.teacher_coefficients`): ∂L/∂W_out gains Σ_t v_t (c_t p ⊙ g̃_t)ᵀ
    directly and ∂L/∂v_t = W_out (c_t p ⊙ g̃_t) through v's own dependence on (W_out, b_out).
    c_t carries the interval gate 1[t mod k = 0]; p is the forced units' selection (1 when all
    are forced) and an additive forcing's gain is the applied P G.
    """
    a = cell.leak
    phi = cell.phi
    dphi = _DERIVATIVE_FROM_RATE[cell.activation]
    rate_readout = cell.readout_mode == "rate"
    W, W_out, b_out = cell.W_rec, cell.W_out, cell.b_out
    dtype = W.dtype
    B, T, _ = trials.inputs.shape
    N = cell.n_rec
    teacher = isinstance(forcing, AbstractTeacherForcing)
    additive = isinstance(forcing, AbstractAdditiveForcing)
    if recurrent not in RECURRENT_CREDIT:
        raise ValueError(f"recurrent must be one of {RECURRENT_CREDIT}, got {recurrent!r}")
    teacher_flows = teacher and not forcing.stop_gradient and recurrent == "full"
    W_back = W_out.T if feedback is None else feedback  # [N, n_out]: the output error's way back
    W_diag = jnp.diagonal(W)[:, None]
    causal = additive and forcing.causal

    # Time-major, batch-minor: every per-step array is [·, B], so the elementwise work runs over
    # rows of B = 128 (whole vector registers) rather than of N = 50, and the N×N products are
    # W·[N,B]. Measured at the reference size: see the module docstring. Per-step input products
    # are computed inside the scans: a drive precomputed in the same program gets fused into the
    # loop by XLA and runs 2x slower.
    tb = lambda Z: jnp.transpose(Z, (1, 2, 0))  # [B,T,k] -> [T,k,B]
    X = tb(trials.inputs)  # [T,n_in,B]
    Y_star, M = tb(trials.targets), tb(trials.mask)
    Xi = jnp.zeros((T, 0, B), dtype) if noise is None else tb(noise)
    C = jnp.zeros((T, 1, B), dtype)
    if additive:
        G = jax.lax.stop_gradient(forcing.selected_gain(cell))  # P G [N, n_out]
    V = jnp.zeros((T, 0, B), dtype)
    if teacher:  # teacher states W_S⁺ (s ⊙ (y* - b_out)) = W_outᵀ v, from the supervised rows only
        teacher_coefficients = lambda Wo, bo: tb(forcing.teacher_coefficients(Wo, bo, trials.targets, trials.mask))
        V = teacher_coefficients(W_out, b_out)  # [T,n_out,B]
    if additive or teacher:
        C = forcing.alpha * jnp.max(M, axis=1, keepdims=True)  # c_t [T,1,B]
        gates = forcing.step_gates(T, dtype)  # sparse forcing: 1[t mod k = 0]
        if gates is not None:
            C = C * gates[:, None, None]
        p = forcing.selection(N, dtype) if teacher else None
        if p is not None:  # partial teacher forcing: c_t p [T,N,B]
            C = C * p[:, None]
    h0 = jnp.broadcast_to(cell.init_state()[:, None], (N, B))
    m_total = jnp.maximum(jnp.sum(M), 1.0)
    W_in, b = cell.W_in, cell.b[:, None]

    # The readout gradient Σ_t dy_t (φ(h_t) or h_t)ᵀ is summed in the forward pass, where h_t is
    # at hand, not afterwards from h = h̃ - G (c e) (which XLA materialised as one more [T,N,B]
    # array): the plan for 100 members at T = 1045 fell from 8.9 to 6.7 GiB (4.2 batch-minor,
    # storing h̃ alone with the rate penalty).
    def forward(carry, xs):
        h_prev, r_prev, e_prev, gW_out = carry
        x, xi, y_star, m, c, v = xs
        h = (1 - a) * h_prev + a * (W @ r_prev + W_in @ x + b)
        if noise is not None:
            h = h + xi
        read = phi(h) if rate_readout else h
        y = W_out @ read + b_out[:, None]
        gW_out = gW_out + (2.0 * m * (y - y_star) / m_total) @ read.T
        e, h_forced = (y_star - y) * m, h
        if additive:  # causal: the previous step's error, gated by this step's c_t
            h_forced = h + c * (G @ (e_prev if causal else e))
        elif teacher:
            h_forced = (1 - c) * h + c * (W_out.T @ v)
        r = phi(h_forced)
        # with the rate penalty the backward pass needs h̃ and recomputes r = φ(h̃) from it:
        # one stored [T,N,B] array instead of two
        return (h_forced, r, e, gW_out), (h_forced if objective.rate_reg else h[:0],
                                          r[:0] if objective.rate_reg else r, y, h if rate_readout else h[:0])

    carry0 = (h0, phi(h0), jnp.zeros((W_out.shape[0], B), dtype), jnp.zeros_like(W_out))
    (_, _, _, gW_out), (H_forced, R, Y, H) = jax.lax.scan(forward, carry0, (X, Xi, Y_star, M, C, V))

    # ----- the loss and its direct derivatives -----
    err = Y - Y_star
    loss = jnp.sum(M * err**2) / m_total
    dY = 2.0 * M * err / m_total  # [T,n_out,B]
    w = trial_weights(trials)
    w_total = jnp.maximum(jnp.sum(w), 1.0)
    reg_scale = 0.0
    if objective.rate_reg:
        loss = loss + objective.rate_reg * jnp.sum(w * jnp.mean(H_forced**2, axis=(0, 1))) / w_total
        reg_scale = 2.0 * objective.rate_reg / (T * N * w_total)
    if rate_readout:  # H: the pre-forcing states h_t
        dH_from_y = jnp.einsum("no,tob->tnb", W_back, dY) * dphi(phi(H))
    else:
        dH_from_y = jnp.zeros((T, 0, B), dtype)  # computed per step below (see forward)

    # ----- reverse scan: the state adjoint, accumulating the recurrent-weight gradients -----
    # At step t the carry holds δ_{t+1}, which pairs with r_t and x_{t+1}:
    # Σ_t δ_t r_{t-1}ᵀ = Σ_t δ_{t+1} r_tᵀ + δ_0 r_{-1}ᵀ. Accumulating in the scan keeps memory
    # at the stored [T,N,B] arrays (r, or h̃ alone with the rate penalty; h with a rate readout).
    if weight_sums not in ("scan", "gemm"):
        raise ValueError(f"weight_sums must be 'scan' or 'gemm', got {weight_sums!r}")
    in_scan = weight_sums == "scan"
    wt = w[None, :]
    learn_in = "W_in" in cell.trainable
    X_next = jnp.concatenate([X[1:], jnp.zeros_like(X[:1])]) if learn_in else X[:, :0]

    def backward(carry, xs):
        dh_next, gW, gWin, dWV = carry
        h_forced, r, x_next, dy, dh_y, c, v = xs
        if objective.rate_reg:
            r = phi(h_forced)
        if in_scan:
            gW = gW + dh_next @ r.T
            if learn_in:
                gWin = gWin + dh_next @ x_next.T
        if recurrent == "full":  # g̃_t
            g = (1 - a) * dh_next + a * dphi(r) * (W.T @ dh_next)
        elif recurrent == "diagonal":
            g = (1 - a) * dh_next + a * dphi(r) * (W_diag * dh_next)
        else:
            g = (1 - a) * dh_next
        if objective.rate_reg:
            g = g + reg_scale * wt * h_forced
        dh = (1 - c) * g if teacher else g
        dh = dh + (dh_y if rate_readout else W_back @ dy)
        dv = v[:0]
        if teacher_flows:  # cotangent c_t g̃_t of the teacher states W_outᵀ v_t
            cg = c * g
            dWV = dWV + v @ cg.T
            dv = W_out @ cg
        return (dh, gW, gWin, dWV), (jnp.sum(dh_next, axis=1) if in_scan else dh_next, dv)

    n_out = W_out.shape[0]
    zeros = lambda *shape: jnp.zeros(shape, dtype)
    carry_b = (zeros(N, B), zeros(N, N), zeros(N, X.shape[1]), zeros(n_out, N))
    (dh_0, gW, gWin, dWV), (db_next, dV) = jax.lax.scan(
        backward, carry_b, (H_forced, R, X_next, dY, dH_from_y, C, V), reverse=True)

    if not in_scan:  # db_next[t] = δ_{t+1} [N,B]: the sums as single [N,T·B]·[T·B,·] products
        gW = jnp.einsum("tnb,tkb->nk", db_next, phi(H_forced) if objective.rate_reg else R)
        if learn_in:
            gWin = jnp.einsum("tnb,tkb->nk", db_next, X_next)
        db_next = jnp.sum(db_next, axis=2)
    gW_rec = a * (gW + dh_0 @ carry0[1].T)
    gb = a * (jnp.sum(db_next, axis=0) + jnp.sum(dh_0, axis=1))
    # W_in frozen (the default): its gradient would be discarded anyway
    gW_in = a * (gWin + dh_0 @ X[0].T) if learn_in else jnp.zeros_like(cell.W_in)
    gb_out = jnp.sum(dY, axis=(0, 2))
    if teacher_flows:
        _, pullback = jax.vjp(teacher_coefficients, W_out, b_out)
        dW_v, db_v = pullback(dV)
        gW_out = gW_out + dWV + dW_v
        gb_out = gb_out + db_v
    if objective.readout_reg:  # a function of W_out alone, tiny: autodiff it
        penalty, penalty_grad = jax.value_and_grad(readout_penalty)(W_out)
        loss = loss + objective.readout_reg * penalty
        gW_out = gW_out + objective.readout_reg * penalty_grad

    grads = jax.tree_util.tree_map(lambda _: None, eqx.filter(cell, eqx.is_inexact_array))
    grads = eqx.tree_at(lambda g: (g.W_rec, g.W_in, g.b, g.W_out, g.b_out), grads,
                        (gW_rec, gW_in, gb, gW_out, gb_out), is_leaf=lambda x: x is None)
    if cell.rec_mask is not None:
        grads = eqx.tree_at(lambda g: g.rec_mask, grads, jnp.zeros_like(cell.rec_mask),
                            is_leaf=lambda x: x is None)
    return loss, grads
