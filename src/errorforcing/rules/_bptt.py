"""Backpropagation through time through the forced trajectory."""

from __future__ import annotations

import equinox as eqx
import jax

from ..forcing import process_noise, rollout
from ._base import AbstractLearningRule
from ._loss import Objective


class BPTT(AbstractLearningRule):
    """Exact gradient of the objective through the forced rollout (`jax.grad` of a `lax.scan`).

    Corrections are differentiated or stopped as the forcing method says. `checkpoint=True`
    recomputes each step in the backward pass instead of storing its intermediates, bounding
    memory at long delays.
    """

    checkpoint: bool = False

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)

        def loss_fn(c):
            states, outputs = jax.vmap(
                lambda x, y, m, n: rollout(c, forcing, x, y, m, n, checkpoint=self.checkpoint)
            )(trials.inputs, trials.targets, trials.mask, noise)
            return objective(c, states, outputs, trials), (states, outputs)

        (loss, (states, outputs)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(cell)
        return loss, grads, {}
