"""Online BPTT: after every step, that step's loss back-propagated through the trial so far."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Key
from ..forcing import AbstractForcing, forced_step
from ..models import AbstractCell, frozen_grads
from ..tasks import Trials, rotate
from ._base import AbstractLearningRule
from ._loss import Objective
from ._step import trainable_spec


class OnlineBPTT(AbstractLearningRule):
    """Per-step gradient descent with the exact gradient of the step's loss through the
    trajectory so far (the reference code of Kaleb et al. calls `autograd.grad` on each step's
    loss during adaptation): after step t,

        θ ← θ - lr Σ_{s<=t} (∂ℓ_t/∂h_s) ∂̄h_s/∂θ  (+ ∂̄ℓ_t/∂θ through the readout),
        ∂ℓ_t/∂h_{s-1} = (∂ℓ_t/∂h_s) ∂h_s/∂h_{s-1}

    along the states the network actually went through and with the current θ, for every
    trainable field. ℓ_t = Σ_k m_tk (y_tk - y*_tk)² / Σ m (the trial's masked MSE, term by term),
    or, with `position_dt` set, the squared position error of an integrated output (Kaleb et
    al.'s adaptation loss, their cursor):

        ℓ_t = mean_k p_tk²,   p_t = dt Σ_{s<=t} R(θ) m_s ⊙ (y*_s - y_s)   (θ = `position_rotation`),

    which depends on every output so far: ∂ℓ_t/∂y_s = -dt m_s ⊙ R(θ)ᵀ (2/K) p_t for all s <= t.
    O(t) backward steps at step t, O(T²) per trial. Batch 1 (one trial at a time, as the
    reference's adaptation). The forcing must leave the state as it is and feed any control in
    as a stopped input (`NoForcing()`, `FeedbackControl(stop_gradient=True)`).

    `value_and_grad` returns Σ_t ℓ_t and the total applied update: θ_end = θ_0 - lr · grads.
    """

    lr: float | jax.Array
    position_dt: float | None = eqx.field(default=None, static=True)
    position_rotation: float = eqx.field(default=0.0, static=True)

    def __check_init__(self):
        if self.position_dt is None and self.position_rotation != 0.0:
            raise ValueError("OnlineBPTT: position_rotation applies only to the position loss (set position_dt)")
        if self.position_dt is not None and not self.position_dt > 0:
            raise ValueError(f"OnlineBPTT: position_dt must be > 0, got {self.position_dt}")

    def value_and_grad(self, cell, forcing, trials, *, key: Key, objective: Objective = Objective()):
        if trials.inputs.shape[0] != 1:
            raise ValueError(f"OnlineBPTT learns one trial at a time (batch 1), got batch {trials.inputs.shape[0]}")
        if objective.rate_reg or objective.readout_reg or objective.noise_std:
            raise ValueError("OnlineBPTT learns the masked MSE alone: use Objective(rate_reg=0, readout_reg=0)")
        new, loss = self.trial(cell, forcing, jax.tree.map(lambda a: a[0], trials))
        params = lambda c: eqx.filter(c, eqx.is_inexact_array)
        grads = jax.tree.map(lambda a, b: (a - b) / self.lr, params(cell), params(new))
        return loss, frozen_grads(grads, cell), {}

    def trial(self, cell: AbstractCell, forcing: AbstractForcing, trial: Trials) -> tuple[AbstractCell, jax.Array]:
        """One unbatched trial, learning at every step. Returns the cell at its end and Σ_t ℓ_t."""
        if not getattr(forcing, "stop_gradient", True):
            raise ValueError("OnlineBPTT treats the controller as an input: use FeedbackControl(stop_gradient=True)")
        spec = trainable_spec(cell)
        T, N = trial.inputs.shape[0], cell.n_rec
        dtype = cell.init_state().dtype
        X = trial.inputs.astype(dtype)
        mse_scale = 1.0 / jnp.maximum(jnp.sum(trial.mask), 1.0)
        M = jnp.broadcast_to(trial.mask, trial.targets.shape).astype(dtype)
        params0, static = eqx.partition(cell, spec)

        def step(carry, xs):
            # H[s] = h_{s-1} (H[0] = h_{-1}), the input state of step s; S[s] = h_s; p: the position error
            params, h_prev, fcarry, H, S, p = carry
            t, x, target, m = xs
            c = eqx.combine(params, static)
            H = H.at[t].set(h_prev)
            h, y, h_forced, fcarry = forced_step(c, forcing, h_prev, fcarry, x, target, m, None)
            if h_forced is not h:
                raise ValueError(f"OnlineBPTT needs a forcing that leaves the state as it is; "
                                 f"{type(forcing).__name__} changes it")
            S = S.at[t].set(h)
            err = y - target.astype(dtype)
            if self.position_dt is None:
                loss = mse_scale * jnp.sum(m * err**2)
                dY = jnp.zeros_like(M).at[t].set(2.0 * mse_scale * m * err)  # ∂ℓ_t/∂y_s, s = t only
            else:
                p = p + self.position_dt * rotate(-m * err, self.position_rotation)
                loss = jnp.mean(p**2)
                (back_rotated,) = jax.vjp(lambda v: rotate(v, self.position_rotation), p)[1](2.0 * p / p.shape[-1])
                past = (jnp.arange(T) <= t)[:, None]
                dY = jnp.where(past, -self.position_dt * M * back_rotated, 0.0)  # ∂ℓ_t/∂y_s, every s <= t
            readout = lambda q, SS: jax.vmap(eqx.combine(q, static).readout)(SS)
            g_readout, direct = jax.vjp(readout, params, S)[1](dY)  # direct[s] = ∂ℓ_t/∂h_s through y_s

            def back(i, state):
                delta, D = state
                s = t - i
                delta = delta + direct[s]
                D = D.at[s].set(delta)
                (delta,) = jax.vjp(lambda hh: c(hh, X[s]), H[s])[1](delta)
                return delta, D

            _, D = jax.lax.fori_loop(0, t + 1, back, (jnp.zeros(N, dtype), jnp.zeros((T, N), dtype)))
            # D is zero after t, so one batched pullback over all steps gives Σ_{s<=t}
            (g_cell,) = jax.vjp(lambda p: jax.vmap(eqx.combine(p, static))(H, X), params)[1](D)
            grads = c.mask_grads(eqx.combine(jax.tree.map(jnp.add, g_cell, g_readout), static))
            grads = eqx.filter(grads, spec)
            params = jax.tree.map(lambda p, g: p - self.lr * g, params, grads)
            return (params, h_forced, fcarry, H, S, p), loss

        init = (params0, cell.init_state(), forcing.init(cell), jnp.zeros((T, N), dtype), jnp.zeros((T, N), dtype),
                jnp.zeros(trial.targets.shape[-1], dtype))
        (params, *_), losses = jax.lax.scan(step, init, (jnp.arange(T), X, trial.targets, trial.mask))
        return eqx.combine(params, static), jnp.sum(losses)
