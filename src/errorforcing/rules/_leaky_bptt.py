"""A hand-written BPTT for the leaky RNN under additive, stopped forcing (none, EF, Kalman EF,
their causal variants) — the reference configuration of the Error Forcing paper.

Why: `jax.grad` of the `lax.scan` accumulates the weight gradients inside the reverse scan,
one small outer product per step. Here the reverse scan carries only the state adjoint
(one [B,N]×[N,N] matmul per step) and the weight gradients are computed afterwards as single
large matmuls over all steps and trials, which run near the BLAS peak. Same gradient as
autodiff (tests compare them in float64); `BPTT(fast=False)` forces the autodiff path.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ..forcing import AbstractForcing, NoForcing
from ..forcing._forcings import _AdditiveErrorForcing
from ..models import LeakyRNN
from ..tasks import Trials
from ._loss import Objective, trial_weights

# φ'(h) written in terms of r = φ(h), so the backward pass needs only the stored rates.
_DERIVATIVE_FROM_RATE = {
    "tanh": lambda r: 1.0 - r * r,
    "logistic": lambda r: r * (1.0 - r),
    "relu": lambda r: (r > 0).astype(r.dtype),
    "softplus": lambda r: -jnp.expm1(-r),
    "identity": lambda r: jnp.ones_like(r),
}


def supports_fast_path(cell, forcing: AbstractForcing) -> bool:
    if type(cell) is not LeakyRNN:
        return False
    if isinstance(forcing, NoForcing):
        return True
    return isinstance(forcing, _AdditiveErrorForcing) and forcing.stop_gradient


def leaky_bptt(cell: LeakyRNN, forcing: AbstractForcing, trials: Trials, objective: Objective,
               noise=None):
    """(loss, grads) of `objective` for the forced rollout; grads shaped like `cell`."""
    a = cell.leak
    phi = cell.phi
    dphi = _DERIVATIVE_FROM_RATE[cell.activation]
    rate_readout = cell.readout_mode == "rate"
    W, W_out, b_out = cell.W_rec, cell.W_out, cell.b_out
    dtype = W.dtype
    B, T, _ = trials.inputs.shape
    N = cell.n_rec

    # Time-major inputs. Per-step input products are computed inside the scans: a drive
    # precomputed in the same program gets fused into the loop by XLA and runs 2x slower.
    X = jnp.swapaxes(trials.inputs, 0, 1)  # [T,B,n_in]
    Y_star = jnp.swapaxes(trials.targets, 0, 1)
    M = jnp.swapaxes(trials.mask, 0, 1)
    Xi = jnp.zeros((T, B, 0), dtype) if noise is None else jnp.swapaxes(noise, 0, 1)

    forced = not isinstance(forcing, NoForcing)
    if forced:
        G = jax.lax.stop_gradient(forcing.gain(cell))  # [N, n_out]
        C = forcing.alpha * jnp.max(M, axis=-1, keepdims=True)  # [T,B,1]
        causal = forcing.causal
    else:
        C = jnp.zeros((T, B, 1), dtype)
    h0 = jnp.broadcast_to(cell.init_state(), (B, N))

    def forward(carry, xs):
        h_prev, r_prev, corr_prev = carry
        x, xi, y_star, m, c = xs
        h = (1 - a) * h_prev + a * (r_prev @ W.T + x @ cell.W_in.T + cell.b)
        if noise is not None:
            h = h + xi
        y = (phi(h) if rate_readout else h) @ W_out.T + b_out
        if forced:
            corr = c * (((y_star - y) * m) @ G.T)
            h_forced = h + (corr_prev if causal else corr)
        else:
            corr, h_forced = corr_prev, h
        r = phi(h_forced)
        return (h_forced, r, corr), (h_forced, r, y)

    carry0 = (h0, phi(h0), jnp.zeros((B, N), dtype))
    _, (H_forced, R, Y) = jax.lax.scan(forward, carry0, (X, Xi, Y_star, M, C))

    # ----- the loss and its direct derivatives -----
    m_total = jnp.maximum(jnp.sum(M), 1.0)
    err = Y - Y_star
    mse = jnp.sum(M * err**2) / m_total
    dY = 2.0 * M * err / m_total  # [T,B,n_out]
    w = trial_weights(trials)
    w_total = jnp.maximum(jnp.sum(w), 1.0)
    loss = mse
    reg_scale = 0.0
    if objective.rate_reg:
        per_trial = jnp.mean(H_forced**2, axis=(0, 2))
        loss = loss + objective.rate_reg * jnp.sum(w * per_trial) / w_total
        reg_scale = 2.0 * objective.rate_reg / (T * N * w_total)
    if rate_readout or forced:
        E = -err * M  # e_t = (y* - y) ⊙ m
        CE = C * E if forced else None
    if rate_readout:
        corr = 0.0
        if forced:
            corr_now = CE @ G.T
            corr = jnp.concatenate([jnp.zeros_like(corr_now[:1]), corr_now[:-1]]) if causal else corr_now
        H = H_forced - corr  # pre-forcing states h_t
        R_h = phi(H)
        dH_from_y = (dY @ W_out) * dphi(R_h)
    else:
        dH_from_y = jnp.zeros((T, B, 0), dtype)  # computed per step below (see forward)

    # ----- reverse scan: only the state adjoint -----
    wt = w[None, :, None]

    def backward(dh_next, xs):
        h_forced, r, dy, dh_y = xs
        d_forced = (1 - a) * dh_next + a * dphi(r) * (dh_next @ W)
        if objective.rate_reg:
            d_forced = d_forced + reg_scale * wt[0] * h_forced
        dh = d_forced + (dh_y if rate_readout else dy @ W_out)
        return dh, dh_next

    # The scan emits dh_{t+1} at step t, so that it lines up with r_t for the W_rec gradient
    # (Σ_t dh_t r_{t-1}ᵀ = Σ_t dh_{t+1} r_tᵀ + dh_0 r_{-1}ᵀ) without shifting a large array:
    # XLA runs a matmul on a concatenated/sliced operand several times slower.
    dh_0, DH_next = jax.lax.scan(backward, jnp.zeros((B, N), dtype), (H_forced, R, dY, dH_from_y), reverse=True)

    # ----- weight gradients as large matmuls over all (t, b) -----
    flat = lambda Z: Z.reshape(-1, Z.shape[-1])
    r_init = carry0[1]
    gW_rec = a * (flat(DH_next).T @ flat(R) + dh_0.T @ r_init)
    gb = a * (jnp.sum(DH_next, axis=(0, 1)) + jnp.sum(dh_0, axis=0))
    if "W_in" in cell.trainable:
        X_next = jnp.concatenate([X[1:], jnp.zeros_like(X[:1])])  # small: n_in channels
        gW_in = a * (flat(DH_next).T @ flat(X_next) + dh_0.T @ X[0])
    else:
        gW_in = jnp.zeros_like(cell.W_in)  # frozen: its gradient is discarded anyway
    if rate_readout:
        gW_out = flat(dY).T @ flat(R_h)
    else:
        gW_out = flat(dY).T @ flat(H_forced)
        if forced:  # y_t reads h_t = h̃_t - correction_t; the correction is low-rank: (c e) Gᵀ
            CE_applied = jnp.concatenate([jnp.zeros_like(CE[:1]), CE[:-1]]) if causal else CE
            gW_out = gW_out - (flat(dY).T @ flat(CE_applied)) @ G.T
    gb_out = jnp.sum(dY, axis=(0, 1))
    if objective.readout_reg:
        norm = jnp.linalg.norm(W_out)
        loss = loss + objective.readout_reg * (1.0 - norm) ** 2
        gW_out = gW_out - 2.0 * objective.readout_reg * (1.0 - norm) * W_out / norm

    grads = jax.tree_util.tree_map(lambda _: None, eqx.filter(cell, eqx.is_inexact_array))
    grads = eqx.tree_at(lambda g: (g.W_rec, g.W_in, g.b, g.W_out, g.b_out), grads,
                        (gW_rec, gW_in, gb, gW_out, gb_out), is_leaf=lambda x: x is None)
    if cell.rec_mask is not None:
        grads = eqx.tree_at(lambda g: g.rec_mask, grads, jnp.zeros_like(cell.rec_mask),
                            is_leaf=lambda x: x is None)
    return loss, grads
