"""Learning diagnostics recorded per epoch (Kaleb et al. 2024; SPEC §6), on one training trial.

For the trial (the first of the epoch's first batch, the cell as the epoch starts, the forcing
as trained, no process noise):

- "jacobian_norm": mean_t ‖J_t‖₂, J_t = ∂cell(h̃_{t−1}, x_t)/∂h̃_{t−1} along the forced trajectory
  (the cell step's Jacobian; the forcing's own factor is not included, as in `jacobian_norms`),
  averaged over 64 evenly spaced steps (all steps if T <= 64: one N × N SVD per step).
- "cos_G_Wout": cos(G, W_outᵀ) for a forcing with a gain G (N × n_out) from the error to the
  state: W⁺ for teacher and error forcing, the Kalman gain, the feedback weights F.
- For rules with per-step updates (`AbstractStepwiseRule`: e-prop, RFLO, RTRL; offline or online,
  always evaluated with θ held fixed within the trial):
  "update_efficiency" = ‖Σ_t u_t‖ / Σ_t ‖u_t‖ over all T steps of the rule's updates u_t;
  "local_alignment" = mean over S = 16 sampled steps of cos(u_t, g_t), where the exact online
  gradient g_t = dℓ_t/dθ is the total derivative of step t's loss terms through the whole
  forced past (what RTRL and online BPTT apply at step t), computed by reverse-mode autodiff
  of the rollout, one backward pass per sampled step; the steps are spread evenly over the
  supervised steps (mask on; all steps if none);
  "global_alignment" = cos(Σ_t u_t, Σ_t g_t) over the whole trial (Σ_t g_t is BPTT's gradient).
  All three are taken over the trainable fields other than the readout (W_out, b_out), as one
  flat vector: every rule gives the readout its exact local gradient, which would otherwise
  dominate the cosines (the readout is used only when nothing else trains). For RTRL,
  u_t = g_t, so both alignments are 1 (a check of the diagnostic itself).

BPTT and truncated BPTT have no per-step updates and get only the first two curves.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Key
from ..analysis import cosine, local_alignment, update_efficiency
from ..forcing import AbstractAdditiveForcing, AbstractForcing, AbstractTeacherForcing, alignment, rollout
from ..models import AbstractCell, AbstractLinearReadoutCell
from ..rules import AbstractLearningRule, AbstractStepwiseRule, Objective
from ..rules import StepLoss
from ..tasks import Trials
from ._dynamics import sampled_jacobian_norms

ALIGNMENT_STEPS = 16
JACOBIAN_STEPS = 64


def dynamics_diagnostics(cell: AbstractCell, forcing: AbstractForcing, rule: AbstractLearningRule, trial: Trials,
                         *, key: Key, objective: Objective = Objective()) -> dict[str, Float[Array, ""]]:
    """The per-epoch diagnostics of the module docstring on one (unbatched) trial."""
    states, _ = rollout(cell, forcing, trial.inputs, trial.targets, trial.mask)
    out = {"jacobian_norm": jnp.mean(sampled_jacobian_norms(cell, states, trial.inputs, JACOBIAN_STEPS))}
    gain = forcing_gain(forcing, cell)
    if gain is not None:
        out["cos_G_Wout"] = alignment(gain, cell.W_out.T)
    if isinstance(rule, AbstractStepwiseRule):
        out |= update_diagnostics(cell, forcing, rule, trial, key=key, objective=objective)
    return out


def forcing_gain(forcing: AbstractForcing, cell: AbstractCell) -> Float[Array, "N n_out"] | None:
    """P G, the matrix that carries the output error (or target) into the state as applied
    (the forced units' rows of G under partial forcing), if any."""
    if isinstance(forcing, (AbstractTeacherForcing, AbstractAdditiveForcing)) and \
            isinstance(cell, AbstractLinearReadoutCell):
        gain = forcing.gain(cell)
        p = forcing.selection(gain.shape[0], gain.dtype)
        return gain if p is None else p[:, None] * gain
    return None


def update_diagnostics(cell: AbstractCell, forcing: AbstractForcing, rule: AbstractLearningRule, trial: Trials,
                       *, key: Key, objective: Objective = Objective()) -> dict[str, Float[Array, ""]]:
    """update_efficiency, local_alignment, global_alignment of a rule with `step_updates`."""
    batch = jax.tree_util.tree_map(lambda a: a[None], trial)
    objective = Objective(objective.rate_reg, objective.readout_reg, 0.0)  # both see one trajectory
    if rule.learns_online:  # the updates of one fixed θ, comparable with the exact ones
        rule = rule.offline()
    updates = jax.vmap(cell.mask_grads)(rule.step_updates(cell, forcing, batch, key=key, objective=objective))
    steps = sampled_steps(trial.mask, ALIGNMENT_STEPS)
    exact_steps, exact_total = exact_step_gradients(cell, forcing, batch, objective, steps)
    updates, exact_steps, exact_total = (_approximated(cell, t) for t in (updates, exact_steps, exact_total))
    at_steps = jax.tree_util.tree_map(lambda u: u[steps], updates)
    total = jax.tree_util.tree_map(lambda u: u.sum(0), updates)
    return {"update_efficiency": update_efficiency(updates),
            "local_alignment": jnp.mean(local_alignment(at_steps, exact_steps)),
            "global_alignment": cosine(total, exact_total)}


READOUT_FIELDS = ("W_out", "b_out")


def _approximated(cell: AbstractCell, grads: Any) -> dict[str, Any]:
    """The trainable fields of a cell-shaped gradient tree whose update a rule approximates:
    all but the readout's, unless only the readout trains."""
    names = [n for n in cell.trainable if getattr(grads, n, None) is not None]
    inner = [n for n in names if n not in READOUT_FIELDS]
    return {n: getattr(grads, n) for n in (inner or names)}


def sampled_steps(mask: Float[Array, "T n_out"], n: int) -> Array:
    """`n` step indices spread evenly over the supervised steps (any output masked on), or
    over all steps if none is supervised; repeats when there are fewer than `n`."""
    T = mask.shape[0]
    n = min(n, T)
    on = jnp.max(mask, axis=-1) > 0
    count = jnp.cumsum(on)
    n_on = count[-1]
    ranks = jnp.floor((jnp.arange(n) + 0.5) * n_on / n).astype(count.dtype)
    supervised = jnp.searchsorted(count, ranks + 1)  # the first step with rank + 1 supervised steps
    return jnp.where(n_on > 0, supervised, jnp.arange(n) * T // n)


def exact_step_gradients(cell: AbstractCell, forcing: AbstractForcing, batch: Trials, objective: Objective,
                         steps: Array) -> tuple[Any, Any]:
    """(g_t at `steps`, Σ_t g_t) for one trial (batch of 1), g_t = dℓ_t/dθ with ℓ_t step t's
    terms of the rules' `StepLoss` (masked error, rate penalty, readout penalty / T), through
    the forced rollout (corrections stopped or not, as the forcing says); masked like grads."""
    losses = StepLoss(objective, batch, cell.n_rec)
    x, y, m = batch.inputs[0], batch.targets[0], batch.mask[0]
    T = x.shape[0]
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def step_losses(p):
        c = eqx.combine(p, static)
        states, outputs = rollout(c, forcing, x, y, m)
        terms = jax.vmap(losses.term, in_axes=(0, 0, 0, 0, None))(outputs, states, y, m, losses.rate_scale[0])
        return terms + losses.penalty(c) / T

    terms, pullback = jax.vjp(step_losses, params)
    mask = lambda g: eqx.filter(cell.mask_grads(eqx.combine(g, static)), eqx.is_inexact_array)  # noqa: E731
    (at_steps,) = jax.vmap(pullback)(jax.nn.one_hot(steps, T, dtype=terms.dtype))
    (total,) = pullback(jnp.ones_like(terms))
    return jax.vmap(mask)(at_steps), mask(total)
