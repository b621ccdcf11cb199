"""What the rules with a real-time form (RTRL, e-prop, RFLO) share: θ changed at every step."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable

import equinox as eqx
import jax
import optax

from .._types import Key, Scalar
from ..forcing import AbstractForcing
from ..models import AbstractCell
from ..tasks import Trials
from ._base import AbstractLearningRule
from ._loss import Objective
from ._step import trainable_spec


class AbstractOnlineRule(AbstractLearningRule):
    """A rule that can learn in real time (SPEC §3): with `online=True` the weights change at
    every step while the network runs,

        u_t = optimizer.update(g_t, state_t, θ_t),    θ_{t+1} = θ_t + u_t

    g_t the rule's update of step t (summed over the batch, masked by `cell.mask_grads`), the
    step's forward pass and the rule's traces (or influence matrix) run on the changing θ.
    `optimizer` is an optax alias taking `learning_rate` (default `optax.sgd`: θ_{t+1} = θ_t -
    lr g_t), applied with learning rate `lr` to the trainable leaves only.

    `online_run` is the real-time learner: it returns the end-of-trial cell and optimizer
    state, and the network's running state, so that the next trial, or the next segment of one
    continual stream, picks up where this one stopped. `value_and_grad` with `online=True`
    starts a fresh optimizer state and returns Σ_t g_t (with SGD: θ_end = θ_0 - lr Σ_t g_t).
    """

    online: eqx.AbstractVar[bool]
    lr: eqx.AbstractVar[float | jax.Array | None]
    optimizer: eqx.AbstractVar[Callable[..., optax.GradientTransformation] | None]

    def __check_init__(self):
        name = type(self).__name__
        if self.online and self.lr is None:
            raise ValueError(f"{name}(online=True) needs a learning rate lr")
        if self.optimizer is not None and not self.online:
            raise ValueError(f"{name}: optimizer is the per-step optimizer of online learning; needs online=True")

    @property
    def learns_online(self) -> bool:
        return self.online

    def offline(self) -> "AbstractOnlineRule":
        """The same rule with θ fixed over a trial (no per-step optimizer)."""
        return dataclasses.replace(self, online=False, optimizer=None)

    def step_optimizer(self) -> optax.GradientTransformation:
        """The optimizer applied at every step (plain SGD unless `optimizer` says otherwise)."""
        return (optax.sgd if self.optimizer is None else self.optimizer)(learning_rate=self.lr)

    def online_init(self, cell: AbstractCell) -> optax.OptState:
        """The per-step optimizer's state over the trainable leaves of `cell`."""
        return self.step_optimizer().init(eqx.filter(cell, trainable_spec(cell)))

    def online_run(self, cell: AbstractCell, opt_state: optax.OptState, forcing: AbstractForcing, trials: Trials,
                   *, key: Key, objective: Objective = Objective(), carry: Any = None,
                   per_step_loss: bool = False) -> tuple[Scalar, AbstractCell, optax.OptState, Any]:
        """Run `trials` learning at every step: (Σ_t ℓ_t as incurred, the cell at the end,
        the optimizer state at the end, the running state at the end).

        `carry=None` starts the network (and the traces) at rest; pass the returned carry to
        continue the same streams. `per_step_loss=True` normalises every step's loss terms on
        their own (masked error over batch · n_out, the rate penalty over batch · N, the readout
        penalty once per step), so that the per-step rate does not depend on the length of the
        segment (continual learning); otherwise the terms are the trial objective's (`StepLoss`)."""
        if not self.online:
            raise ValueError(f"{type(self).__name__}.online_run needs online=True")
        return self._online_run(cell, opt_state, forcing, trials, key, objective, carry, per_step_loss)

    @abc.abstractmethod
    def _online_run(self, cell, opt_state, forcing, trials, key, objective, carry, per_step_loss):
        """`online_run` of this rule."""


def online_step(optimizer: optax.GradientTransformation, spec, c, grads, opt_state):
    """One real-time update of the trainable leaves of `c` (`spec`), the rest untouched."""
    updates, opt_state = optimizer.update(eqx.filter(grads, spec), opt_state, eqx.filter(c, spec))
    return eqx.apply_updates(c, updates), opt_state
