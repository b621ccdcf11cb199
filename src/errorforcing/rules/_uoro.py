"""UORO (Tallec & Ollivier 2018): an unbiased rank-1 estimate of the influence matrix."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..forcing import forced_step, process_noise
from ._influence import AbstractInfluenceRule, influence_keys
from ._kfrtrl import _KRONECKER_FIELDS, _kron_grads
from ._leaky_bptt import _DERIVATIVE_FROM_RATE
from ._leaky_rtrl import supports_fast_rtrl
from ._loss import Objective
from ._rtrl import _CarryLayout
from ._step import StepLoss, time_major


class UORO(AbstractInfluenceRule):
    """Unbiased online recurrent optimisation (Tallec & Ollivier, ICLR 2018). The influence
    matrix M_t = ∂s_t/∂θ (`RTRL`) is carried as a rank-1 product M_t ≈ s̃_t θ̃_tᵀ:

        ν ~ uniform{±1}^S (fresh each step and trial, from `value_and_grad`'s key)
        s̃_t = ρ_0 J_t s̃_{t-1} + ρ_1 ν,        θ̃_t = θ̃_{t-1} / ρ_0 + (νᵀ ∂̄s_t/∂θ) / ρ_1
        ρ_0 = √((‖θ̃_{t-1}‖ + ε) / (‖J_t s̃_{t-1}‖ + ε)),   ρ_1 = √((‖νᵀ ∂̄s_t/∂θ‖ + ε) / (‖ν‖ + ε))

    (the variance-minimising scalings of their Prop. 1), and the gradient estimate of step t is
    ((∂ℓ_t/∂s_{t-1}) s̃_{t-1}) θ̃_{t-1} + ∂̄ℓ_t/∂θ. E[ννᵀ] = I and ρ_1(ν) = ρ_1(-ν) make
    E[s̃_t θ̃_tᵀ] = J_t s̃_{t-1} θ̃_{t-1}ᵀ + ∂̄s_t/∂θ, so every gradient is unbiased. M_0 is
    estimated as ν (νᵀ M_0). Cost per step and trial: one jvp and two vjps of the forced step,
    O(N² + P), i.e. O(N²). The forced step's Jacobians are exact (autodiff of `forced_step`),
    so it works under every forcing.

    Offline on the leaky RNN under no forcing or a stopped additive correction, with no changing
    forcing carry (where `KFRTRL` takes its closed form too), the same estimate with the same
    signs is computed for the whole batch per step (`leaky_uoro`): J_t s̃ = (1 - a) s̃ + a W_rec
    (φ'(h̃_{t-1}) ⊙ s̃), and νᵀ ∂̄s_t/∂W = a ν z_tᵀ with z_t = [φ(h̃_{t-1}); x_t; 1], so θ̃'s part
    on W = [W_rec | W_in | b] is kept as an N × n_z matrix (W_out and b_out do not reach the
    state: their part stays 0); `fast=False` forces the generic path.

    `online=True` is real-time UORO (their Algorithm 1): θ is changed after every step by the
    per-step optimizer (`AbstractInfluenceRule`), s̃ and θ̃ carried on across the changes.
    """

    eps: float = 1e-7
    online: bool = eqx.field(default=False, static=True)
    fast: bool = eqx.field(default=True, static=True)
    lr: float | jax.Array | None = None
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)

    def uses_closed_form(self, cell, forcing, trials) -> bool:
        """Whether `value_and_grad` runs `leaky_uoro` (see the class docstring)."""
        return (self.fast and not self.online and supports_fast_rtrl(cell, forcing)
                and any(f in cell.trainable for f in _KRONECKER_FIELDS)
                and not _CarryLayout(cell, forcing, trials).diff_idx)

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        if self.uses_closed_form(cell, forcing, trials):
            return leaky_uoro(cell, forcing, trials, key, objective, eps=self.eps) + ({},)
        return super().value_and_grad(cell, forcing, trials, key=key, objective=objective)

    def init_estimate(self, ctx, prepared, M0, key):
        nu = jax.random.rademacher(key, (ctx.n_state,), M0.dtype)
        return nu, nu @ M0

    def update(self, ctx, prepared, step, estimate, key):
        s_tilde, theta_tilde = estimate
        J_s, dloss_s = step.tangent(s_tilde)
        nu = jax.random.rademacher(key, (ctx.n_state,), s_tilde.dtype)
        zero_s, zero = jnp.zeros_like(s_tilde), jnp.zeros((), s_tilde.dtype)
        nu_direct, dloss_direct = jax.vmap(step.pullback)(jnp.stack([nu, zero_s]), jnp.stack([zero, zero + 1]))
        g = dloss_s * theta_tilde + dloss_direct
        rho0 = jnp.sqrt((jnp.linalg.norm(theta_tilde) + self.eps) / (jnp.linalg.norm(J_s) + self.eps))
        rho1 = jnp.sqrt((jnp.linalg.norm(nu_direct) + self.eps) / (jnp.linalg.norm(nu) + self.eps))
        return (rho0 * J_s + rho1 * nu, theta_tilde / rho0 + nu_direct / rho1), g


def leaky_uoro(cell, forcing, trials, key, objective: Objective, *, eps: float):
    """(loss, Σ_t g_t shaped like `cell`): `UORO`'s estimate for the leaky RNN under no forcing
    or a stopped additive correction (∂h̃_t/∂h_t = I, h_0 = 0 so M_0 = 0), the whole batch per
    step: the same recursion, keys and noise as the generic path."""
    noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
    losses = StepLoss(objective, trials, cell.n_rec)
    B, T, n_in = trials.inputs.shape
    N, dtype = cell.n_rec, cell.W_rec.dtype
    a = cell.leak
    W = cell.recurrent_weights()
    dphi_from_rate = _DERIVATIVE_FROM_RATE[cell.activation]
    kron = [f for f in _KRONECKER_FIELDS if f in cell.trainable]
    n_z = sum({"W_rec": N, "W_in": n_in, "b": 1}[f] for f in kron)
    init_keys, step_keys = influence_keys(key, B, T)
    signs = jax.vmap(lambda k: jax.random.rademacher(k, (N,), dtype))
    step_forced = jax.vmap(lambda h, fc, x, y, m, xi: forced_step(cell, forcing, h, fc, x, y, m, xi),
                           in_axes=(0, 0, 0, 0, 0, 0 if noise is not None else None))
    penalty, penalty_grad = jax.value_and_grad(
        lambda V: losses.penalty(eqx.tree_at(lambda c: c.W_out, cell, V)))(cell.W_out)

    def scan_step(state, xs):
        h_prev, fcarry, s_tilde, Theta, g_w, g_out, g_bout, loss_sum = state
        x, target, m, xi, k = xs
        r_prev = cell.phi(h_prev)
        h, y, h_forced, fcarry = step_forced(h_prev, fcarry, x, target, m, xi)
        J_s = (1 - a) * s_tilde + a * (dphi_from_rate(r_prev) * s_tilde) @ W.T
        dy = losses.output_grad(y, target, m)  # [B, n_out]
        r = cell.phi(h) if cell.readout_mode == "rate" else h
        delta = dy @ cell.W_out  # ∂ℓ_t/∂h_t [B, N]
        if cell.readout_mode == "rate":
            delta = delta * dphi_from_rate(r)
        delta = delta + 2.0 * losses.rate_scale[:, None] * h_forced
        parts = {"W_rec": r_prev, "W_in": x, "b": jnp.ones((B, 1), dtype)}
        z = jnp.concatenate([parts[f] for f in kron], axis=1)  # [B, n_z]
        dloss_s = jnp.sum(delta * J_s, axis=1)  # (∂ℓ_t/∂s_{t-1}) s̃_{t-1} [B]
        g_w = g_w + jnp.einsum("b,bik->ik", dloss_s, Theta) + a * delta.T @ z
        g_out, g_bout = g_out + dy.T @ r, g_bout + jnp.sum(dy, axis=0)
        loss_sum = loss_sum + jnp.sum(jax.vmap(losses.term)(y, h_forced, target, m, losses.rate_scale))
        nu = signs(k)  # [B, N]
        rho0 = jnp.sqrt((jnp.linalg.norm(Theta, axis=(1, 2)) + eps) / (jnp.linalg.norm(J_s, axis=1) + eps))
        norm_nu = jnp.linalg.norm(nu, axis=1)
        rho1 = jnp.sqrt((a * norm_nu * jnp.linalg.norm(z, axis=1) + eps) / (norm_nu + eps))  # ‖a ν zᵀ‖ = a ‖ν‖ ‖z‖
        s_tilde = rho0[:, None] * J_s + rho1[:, None] * nu
        Theta = Theta / rho0[:, None, None] + (a / rho1)[:, None, None] * nu[:, :, None] * z[:, None, :]
        return (h_forced, fcarry, s_tilde, Theta, g_w, g_out, g_bout, loss_sum), None

    bcast = lambda v: jnp.broadcast_to(v, (B,) + jnp.shape(v))
    init = (bcast(cell.init_state()), jax.tree.map(bcast, forcing.init(cell)), signs(init_keys),
            jnp.zeros((B, N, n_z), dtype), jnp.zeros((N, n_z), dtype), jnp.zeros_like(cell.W_out),
            jnp.zeros_like(cell.b_out), jnp.zeros((), dtype))
    x, target, m, xi = time_major(trials, noise)
    (*_, g_w, g_out, g_bout, loss), _ = jax.lax.scan(scan_step, init, (x, target, m, xi, step_keys))
    grads = _kron_grads(cell, kron, g_w, n_in)
    readout = {"W_out": g_out + penalty_grad * T * B / losses.n_terms, "b_out": g_bout}
    names = [f for f in ("W_out", "b_out") if f in cell.trainable]
    if names:
        grads = eqx.tree_at(lambda g: [getattr(g, f) for f in names], grads, [readout[f] for f in names])
    return loss + penalty * T * B / losses.n_terms, grads
