"""A hand-written RTRL for the leaky RNN under no forcing or stopped additive forcing (EF, Kalman
EF, feedback forcing, their causal variants).

Why: the generic `RTRL` takes ∂s_t/∂s_{t-1} · M_{t-1} as a `jvp` vmapped over the columns of M,
which XLA lays out with transposes of the whole influence matrix at every step (≈ 8x the cost
of the product itself). Here the recursion is written out for the leaky RNN,

    M_t = J_t M_{t-1} + a [δ_ij φ(h̃_{t-1})_k | δ_ij x_t,k | δ_ij],
    J_t = (1 - a) I + a W_rec diag(φ'(h̃_{t-1}))

with one influence block per tracked parameter (W_rec, W_in, b: [B, N, N · width]). The leak
and φ' are folded into the small per-trial J_t so that each step makes one batched GEMM pass
over M, and the direct term, nonzero only where i = j, is a scatter onto that diagonal rather
than another pass. A stopped additive correction leaves M unchanged (M̃ = M). The
state-free parameters (W_out, b_out) get their direct gradient. Same gradient as the generic
path (tests compare them in float64); `RTRL(fast=False)` forces the generic path.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..forcing import AbstractAdditiveForcing, AbstractForcing, forced_step
from ..models import LeakyRNN
from ..tasks import Trials
from ._leaky_bptt import _DERIVATIVE_FROM_RATE
from ._loss import Objective
from ._online import online_step
from ._step import StepLoss, time_major, trainable_spec

_STATE_PARAMS = ("W_rec", "W_in", "b")


def supports_fast_rtrl(cell, forcing: AbstractForcing) -> bool:
    if not cell.leaky_dynamics or cell.dale_sign is not None:  # Dale's law: the generic path, exact in V
        return False
    if forcing.is_identity:
        return True
    return isinstance(forcing, AbstractAdditiveForcing) and forcing.stop_gradient


def leaky_rtrl(cell: LeakyRNN, forcing: AbstractForcing, trials: Trials, objective: Objective, noise=None, *,
               optimizer: optax.GradientTransformation | None = None, opt_state=None, carry=None,
               per_step: bool = False, per_step_loss: bool = False):
    """(loss, Σ_t g_t, [g_t]_t or None, (cell, opt_state, carry) at the end), gradients shaped
    like `cell` (zeros where nothing trains).

    g_t = Σ_b ∂ℓ_b,t/∂θ = Σ_b (∂ℓ_b,t/∂h_b,t) M_b,t + direct terms. With an `optimizer` (online
    learning) the cell's trainable leaves are changed by its update of mask_grads(g_t) after
    every step, M carried across the changing weights. `carry` (h̃, forcing carry, M) continues
    a stream; None starts at rest.
    """
    online = optimizer is not None
    spec = trainable_spec(cell)
    losses = StepLoss(objective, trials, cell.n_rec, per_step=per_step_loss)
    B, T, n_in = trials.inputs.shape
    N = cell.n_rec
    dtype = cell.W_rec.dtype
    dphi_from_rate = _DERIVATIVE_FROM_RATE[cell.activation]
    tracked = [n for n in _STATE_PARAMS if n in cell.trainable]
    widths = {"W_rec": N, "W_in": n_in, "b": 1}  # M[name]: [B, N, N, width] viewed as [B, N, N·width]
    eye = jnp.eye(N, dtype=dtype)
    diagonal = jnp.arange(N)

    def add_direct(M, a, r_prev, x):
        """M_t += a ∂̄h_t/∂θ, nonzero only on the diagonal blocks i = j (a scatter, not a pass over M)."""
        factor = {"W_rec": r_prev, "W_in": x, "b": jnp.ones((B, 1), dtype)}
        out = {}
        for name, block in M.items():
            w = widths[name]
            view = block.reshape(B, N, N, w).at[:, diagonal, diagonal, :].add(a * factor[name][:, None, :])
            out[name] = view.reshape(B, N, N * w)
        return out

    def to_cell(g_state, g_out, g_bout):
        grads = jax.tree.map(lambda leaf: jnp.zeros_like(leaf) if eqx.is_inexact_array(leaf) else None, cell)
        names = list(g_state) + [n for n in ("W_out", "b_out") if n in cell.trainable]
        values = [g.reshape(getattr(cell, n).shape) for n, g in g_state.items()]
        values += [{"W_out": g_out, "b_out": g_bout}[n] for n in names[len(g_state):]]
        if not names:
            return grads
        return eqx.tree_at(lambda g: [getattr(g, n) for n in names], grads, values)

    step_forced = jax.vmap(lambda c, h, fc, x, y, m, xi: forced_step(c, forcing, h, fc, x, y, m, xi),
                           in_axes=(None, 0, 0, 0, 0, 0, 0 if noise is not None else None))

    def scan_step(state, xs):
        c, opt_state, h_prev, fcarry, M, g_sum, loss_sum = state
        x, target, m, xi = xs
        a = c.leak
        r_prev = c.phi(h_prev)
        if online and isinstance(forcing, AbstractAdditiveForcing):  # the gain (W⁺) follows the changing W_out
            fcarry = forcing.with_current_gain(c, fcarry)
        h, y, h_forced, fcarry = step_forced(c, h_prev, fcarry, x, target, m, xi)
        # the per-trial Jacobian ∂h_t/∂h̃_{t-1} = (1 - a) I + a W_rec diag(φ'(h̃_{t-1})) is small
        # (B N²); folding the leak and φ' into it leaves one pass over M for the product
        J = (1 - a) * eye + a * c.W_rec[None] * dphi_from_rate(r_prev)[:, None, :]
        M = add_direct({k: jnp.einsum("bij,bjp->bip", J, v) for k, v in M.items()}, a, r_prev, x)
        # ∂ℓ_t/∂h_t: through the readout and the rate penalty (h̃_t - h_t is stopped)
        dy = losses.output_grad(y, target, m)  # [B, n_out]
        r = c.phi(h) if c.readout_mode == "rate" else h
        dh = dy @ c.W_out
        if c.readout_mode == "rate":
            dh = dh * dphi_from_rate(r)
        dh = dh + 2.0 * losses.rate_scale[:, None] * h_forced
        g_state = {k: jnp.einsum("bi,bip->p", dh, v) for k, v in M.items()}
        penalty, penalty_grad = jax.value_and_grad(lambda W: losses.penalty(eqx.tree_at(lambda cc: cc.W_out, c, W)))(
            c.W_out)
        g = to_cell(g_state, dy.T @ r + penalty_grad * (B / losses.n_terms), jnp.sum(dy, axis=0))
        loss = jnp.sum(jax.vmap(losses.term)(y, h_forced, target, m, losses.rate_scale)) + penalty * B / losses.n_terms
        if online:
            g = cell.mask_grads(g)
            c, opt_state = online_step(optimizer, spec, c, g, opt_state)
        g_sum = jax.tree.map(jnp.add, g_sum, g)
        return (c, opt_state, h_forced, fcarry, M, g_sum, loss_sum + loss), (g if per_step else None)

    bcast = lambda v: jnp.broadcast_to(v, (B,) + jnp.shape(v))
    M0 = {k: jnp.zeros((B, N, N * widths[k]), dtype) for k in tracked}  # h_{-1} = 0 does not depend on θ
    g0 = to_cell({k: jnp.zeros((N * widths[k],), dtype) for k in tracked}, jnp.zeros_like(cell.W_out),
                 jnp.zeros_like(cell.b_out))
    if carry is None:
        carry = (bcast(cell.init_state()), jax.tree.map(bcast, forcing.init(cell)), M0)
    init = (cell, opt_state) + tuple(carry) + (g0, jnp.zeros((), dtype))
    (c, opt_state, h, fcarry, M, g_sum, loss), steps = jax.lax.scan(scan_step, init, time_major(trials, noise))
    return loss, g_sum, steps, (c, opt_state, (h, fcarry, M))
