"""Truncated backpropagation through time."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ..forcing import process_noise
from ._base import AbstractLearningRule
from ._loss import Objective
from ..forcing import forced_step


class TruncatedBPTT(AbstractLearningRule):
    """BPTT with the trial cut into windows of k steps (Williams & Peng's TBPTT(k, k)):

        h_t = cell(h̃_{t-1}, x_t)   with   h̃_{t-1} ← sg(h̃_{t-1})   when t ≡ 0 (mod k), t > 0

    so the loss at step t sends gradient back to the start of its window, at most k steps.
    k ≥ T is exact BPTT; k = 1 keeps only each step's direct dependence on the parameters,
    ∂L/∂θ = Σ_t (∂ℓ_t/∂h_t) ∂̄h_t/∂θ. Only the state is cut: the forcing's carry (W⁺, a causal
    variant's previous correction) keeps its gradient, which is none for stopped corrections.
    """

    k: int = eqx.field(static=True)
    checkpoint: bool = eqx.field(default=False, static=True)

    @property
    def ignores_padding(self) -> bool:
        return True

    def __check_init__(self):
        if self.k < 1:
            raise ValueError(f"TruncatedBPTT.k must be >= 1, got {self.k}")

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
        T = trials.inputs.shape[1]
        k = self.k

        def trial(c, x, target, m, xi):
            def step(state, xs):
                h_prev, fcarry = state
                t, x_t, y_t, m_t, xi_t = xs
                cut = (t % k == 0) & (t > 0)
                h_prev = jnp.where(cut, jax.lax.stop_gradient(h_prev), h_prev)
                _, y, h_forced, fcarry = forced_step(c, forcing, h_prev, fcarry, x_t, y_t, m_t, xi_t)
                return (h_forced, fcarry), (h_forced, y)

            if self.checkpoint:
                step = jax.checkpoint(step)
            xs = (jnp.arange(T), x, target, m, xi)
            _, (states, outputs) = jax.lax.scan(step, (c.init_state(), forcing.init(c)), xs)
            return states, outputs

        def loss_fn(c):
            states, outputs = jax.vmap(lambda x, y, m, n: trial(c, x, y, m, n))(
                trials.inputs, trials.targets, trials.mask, noise)
            return objective(c, states, outputs, trials)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(cell)
        return loss, grads, {}
