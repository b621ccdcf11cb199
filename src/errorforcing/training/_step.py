"""One member's state and its pure per-batch training step (optax style: a NamedTuple state
and functions of it), with the gradient clip as an optax transformation."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..forcing import AbstractForcing, feedback_update
from ..models import AbstractCell
from ..rules import AbstractLearningRule, Objective, trainable_spec
from ..tasks import Trials


class MemberState(NamedTuple):
    """What one member carries from batch to batch: its network, its optimizer state (the
    epoch optimizer's, or an online rule's per-step one), its forcing (learned feedback
    weights and adaptive α included) and whether it still trains (False once it converged or
    diverged: the step then leaves every leaf as it was)."""

    cell: AbstractCell
    opt_state: Any
    forcing: AbstractForcing
    active: jax.Array  # bool scalar


def tree_where(flag, new, old):
    """`new` where `flag`, else `old`, on array leaves; static leaves (flags, names) stay as they are."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b) if eqx.is_array(a) else a, new, old)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """g ← g · min(1, c / (‖g‖ + 1e-12)), ‖g‖ the global norm of all leaves.

    Not `optax.clip_by_global_norm`: that computes (g / ‖g‖) · c, which differs from this
    scale in the last bits (float64 too), and this is the clip every stored result used."""

    def update(updates, state, params=None):
        del params
        scale = jnp.minimum(1.0, max_norm / (optax.global_norm(updates) + 1e-12))
        return jax.tree_util.tree_map(lambda g: g * scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def with_clip(optimizer: optax.GradientTransformation, clip_norm: float | None) -> optax.GradientTransformation:
    """`optimizer`, preceded by the global-norm clip when `clip_norm` is set."""
    return optimizer if clip_norm is None else optax.chain(clip_by_global_norm(clip_norm), optimizer)


def trainable_params(cell: AbstractCell) -> AbstractCell:
    """The leaves an optimizer may change (floating-point leaves of `cell.trainable`), None elsewhere."""
    return eqx.filter(cell, trainable_spec(cell))


Step = Callable[[MemberState, Trials, jax.Array, jax.Array], tuple[MemberState, jax.Array]]


def make_step(rule: AbstractLearningRule, optimizer: optax.GradientTransformation | None,
              objective: Objective = Objective(), hooks: tuple = ()) -> Step:
    """The pure training step of one member on one batch:

        state', loss = step(state, batch, key, index)

    An offline rule's gradient (frozen fields zeroed, `cell.mask_grads`) goes through
    `optimizer` (clip included, `with_clip`), which sees only the trainable leaves, so weight
    decay cannot move W_in or rec_mask (`cell.trainable_spec()`: the cell's `trainable` fields;
    a cell that nests modules, such as `ControlledCell`, declares its parts'). A rule that
    learns online (`rule.learns_online`) changes θ at every step of the trial with its own per-step optimizer (`optimizer` unused):
    the step keeps the weights where the trial ended. Then learned feedback weights update
    (`feedback_update`), every hook's `after_batch` sees the step (`index`: batches seen
    since training began), and a member that is not `active` keeps its state."""

    def step(state: MemberState, batch: Trials, key, index) -> tuple[MemberState, jax.Array]:
        cell, opt_state, forcing, active = state
        if rule.learns_online:
            loss, new_cell, new_opt_state, _ = rule.online_run(cell, opt_state, forcing, batch, key=key,
                                                               objective=objective)
        else:
            loss, grads, _ = rule.value_and_grad(cell, forcing, batch, key=key, objective=objective)
            grads = cell.mask_grads(grads)
            spec = trainable_spec(cell)
            updates, new_opt_state = optimizer.update(eqx.filter(grads, spec), opt_state, eqx.filter(cell, spec))
            new_cell = eqx.apply_updates(cell, updates)
        new = MemberState(new_cell, new_opt_state, feedback_update(forcing, cell, batch), active)
        for hook in hooks:
            new = hook.after_batch(state, new, batch, index)
        return MemberState(tree_where(active, new.cell, cell), tree_where(active, new.opt_state, opt_state),
                           tree_where(active, new.forcing, forcing), active), loss

    return step
