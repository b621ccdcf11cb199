"""The learning-rule interface: a rule owns the time loop and returns a gradient pytree."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx

from .._types import Key, Scalar
from ..forcing import AbstractForcing
from ..models import AbstractCell
from ..tasks import Trials
from ._loss import Objective


class AbstractLearningRule(eqx.Module):
    """`loss, grads, aux = rule.value_and_grad(cell, forcing, trials, key=key)`.

    `trials` is a batch. `grads` has the cell's pytree structure (None or zeros where nothing
    learns) and goes straight to optax. `aux` is a dict of diagnostics (at least "states" and
    "outputs" of the forced rollout are not required; rules return what they have cheaply).

    Rules whose update is a sum over steps (e-prop, RFLO, RTRL) are `AbstractStepwiseRule`s and
    also offer their per-step updates (used by the learning diagnostics).
    """

    @property
    def learns_online(self) -> bool:
        """True for a rule that changes θ at every step (an `AbstractOnlineRule` with online=True):
        the trainer then takes its end-of-trial weights instead of applying an optimizer."""
        return False

    @property
    def ignores_padding(self) -> bool:
        """True for a rule whose update on a batch is unchanged, up to float rounding, when the
        batch's weight-0 padding trials are dropped: its normalisers count Σ mask or Σ weight
        (never the batch size) and none of its random draws depends on the batch size. The
        trainer then computes an epoch's padded last batch only up to its real trials
        (`training.trims_padding`). False unless a rule declares it."""
        return False

    def for_member(self, key: Key) -> "AbstractLearningRule":
        """This rule as one ensemble member's copy, anything random in it (e.g. a random feedback
        matrix B) drawn from `key`, which the trainer derives from the member's own seed. A rule
        with nothing random returns itself."""
        return self

    @abc.abstractmethod
    def value_and_grad(self, cell: AbstractCell, forcing: AbstractForcing, trials: Trials, *,
                       key: Key, objective: Objective = Objective()) -> tuple[Scalar, AbstractCell, dict[str, Any]]:
        """The loss of a batch and this rule's weight update direction.

        Arguments:
            cell: the network (unbatched step).
            forcing: the forcing acting on the state during the training rollout.
            trials: a batch: inputs [B, T, n_in], targets and mask [B, T, n_out].
            key: randomness of the rule and of the objective's process noise.
            objective: the training objective (masked MSE plus the regularisers).

        Returns:
            (loss, grads, aux): the scalar objective of the forced rollout; grads with the cell's
            pytree structure (leaves like the parameters, zeros where nothing learns), the
            rule's estimate of ∂loss/∂θ; a dict of diagnostics.
        """


class AbstractStepwiseRule(AbstractLearningRule):
    """A rule whose update is a sum of per-step updates, u = Σ_t u_t (e-prop, RFLO, RTRL):
    `rule.step_updates(cell, forcing, trials, key=key, objective=objective)` returns the u_t."""

    @abc.abstractmethod
    def step_updates(self, cell: AbstractCell, forcing: AbstractForcing, trials: Trials, *, key: Key,
                     objective: Objective = Objective()) -> AbstractCell:
        """The update at every step, summed over the batch: cell-shaped, every leaf with a
        leading time axis T, frozen fields zero; Σ_t u_t is `value_and_grad`'s grads."""
