"""Backpropagation through time through the forced trajectory."""

from __future__ import annotations

import equinox as eqx
import jax

from ..forcing import process_noise, rollout
from ._base import AbstractLearningRule
from ._leaky_bptt import leaky_bptt, supports_fast_path
from ._loss import Objective


class BPTT(AbstractLearningRule):
    """Exact gradient of the objective through the forced rollout (`jax.grad` of a `lax.scan`).

    Corrections are differentiated or stopped as the forcing method says. `checkpoint=True`
    recomputes each step in the backward pass instead of storing its intermediates, bounding
    memory at long delays; it always runs the autodiff path (`jax.checkpoint` around each
    step), never the hand-written one. For the leaky RNN under no forcing, teacher forcing or
    stopped additive forcing (EF, Kalman EF, feedback EF) a hand-written reverse pass computes
    the same gradient faster (`fast=False` forces plain autodiff, the oracle it is tested against).
    """

    checkpoint: bool = False
    fast: bool = True

    @property
    def ignores_padding(self) -> bool:
        return True

    def uses_fast_path(self, cell, forcing) -> bool:
        """Whether `value_and_grad` runs the hand-written reverse pass for this cell and forcing."""
        return self.fast and not self.checkpoint and supports_fast_path(cell, forcing)

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
        if self.uses_fast_path(cell, forcing):
            loss, grads = leaky_bptt(cell, forcing, trials, objective, noise)
            return loss, grads, {}

        def loss_fn(c):
            states, outputs = jax.vmap(
                lambda x, y, m, n: rollout(c, forcing, x, y, m, n, checkpoint=self.checkpoint)
            )(trials.inputs, trials.targets, trials.mask, noise)
            return objective(c, states, outputs, trials), (states, outputs)

        (loss, (states, outputs)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(cell)
        return loss, grads, {}
