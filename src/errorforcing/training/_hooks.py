"""What the trainer measures or changes inside its compiled epoch program besides the step, all
through one interface (what runs on the host between the programs: `_host_hooks`)."""

from __future__ import annotations

import equinox as eqx
import jax

from ..rules import AbstractLearningRule, AbstractTraceRule, Objective, feedback_alignment
from ..tasks import Trials
from ._diagnostics import dynamics_diagnostics
from ._dynamics import adapt_alpha
from ._step import MemberState


class AbstractEpochHook(eqx.Module):
    """A hook of the compiled epoch program of one member (vmapped over members like it).

    `before_epoch(state, rule, batches, keys, objective)`: curves measured on the epoch's data
    before it trains (batches [n_batches, batch_size, ...], keys [n_batches], both the ones
    the epoch trains on, the last batch padded to `batch_size`). `after_batch(before, after,
    batch, index)`: the state after one step, changed or not, on the batch the step trained on
    (the last one without most of its padding when the rule `ignores_padding`:
    `Schedule.batch_sizes`; index: batches seen since training began). `after_epoch(state,
    rule)`: curves measured after the epoch's last step. The curves are named scalars, recorded
    as `EnsembleResult.extra_curves` (NaN for a member frozen before the epoch). Every
    method defaults to doing nothing."""

    def before_epoch(self, state: MemberState, rule: AbstractLearningRule, batches: Trials, keys: jax.Array,
                     objective: Objective) -> dict[str, jax.Array]:
        return {}

    def after_batch(self, before: MemberState, after: MemberState, batch: Trials, index) -> MemberState:
        return after

    def after_epoch(self, state: MemberState, rule: AbstractLearningRule) -> dict[str, jax.Array]:
        return {}


class GradientAlignment(AbstractEpochHook):
    """cos(this rule's gradient, the exact BPTT gradient) per parameter group, on the epoch's
    first batch with its noise key (`Schedule.log_alignment`)."""

    def before_epoch(self, state, rule, batches, keys, objective):
        from ..rules import BPTT, gradient_alignment

        cell, forcing = state.cell, state.forcing
        batch, key = jax.tree_util.tree_map(lambda x: x[0], batches), keys[0]
        _, g_rule, _ = rule.value_and_grad(cell, forcing, batch, key=key, objective=objective)
        _, g_exact, _ = BPTT().value_and_grad(cell, forcing, batch, key=key, objective=objective)
        aligned = gradient_alignment(cell.mask_grads(g_rule), cell.mask_grads(g_exact))
        return {f"grad_alignment_{k}": v for k, v in aligned.items() if k in cell.trainable or k == "all"}


class DynamicsDiagnostics(AbstractEpochHook):
    """`dynamics_diagnostics` on the epoch's first trial (`Analysis.diagnostics`)."""

    def before_epoch(self, state, rule, batches, keys, objective):
        trial = jax.tree_util.tree_map(lambda x: x[0, 0], batches)
        return dynamics_diagnostics(state.cell, state.forcing, rule, trial, key=keys[0], objective=objective)


class AdaptiveAlpha(AbstractEpochHook):
    """The forcing's α adapted after every batch (`adapt_alpha`, Hess et al.), on the
    trajectory the batch trained on; recorded as the curve "alpha"."""

    estimator: str | bool = eqx.field(static=True, default=True)

    def after_batch(self, before, after, batch, index):
        alpha = adapt_alpha(before.forcing, before.cell, batch, index, self.estimator)
        return after._replace(forcing=eqx.tree_at(lambda f: f.alpha, after.forcing, alpha))

    def after_epoch(self, state, rule):
        return {"alpha": state.forcing.alpha}


class FeedbackDiagnostics(AbstractEpochHook):
    """Cheap per-epoch alignment figures: the forcing's own (`forcing.diagnostics`, e.g.
    feedback forcing's cos(F, W⁺), cos(F, W_outᵀ)) and cos(B, W_outᵀ) for rules with random
    feedback. Always on (nothing to compute when neither applies)."""

    def after_epoch(self, state, rule):
        return epoch_diagnostics(state.cell, state.forcing, rule)


def epoch_diagnostics(cell, forcing, rule) -> dict[str, jax.Array]:
    """cos(F, W⁺) and cos(F, W_outᵀ) for feedback forcing (EF paper, bio-plausible EF),
    cos(B, W_outᵀ) for rules with random feedback."""
    out = dict(forcing.diagnostics(cell))
    if isinstance(rule, AbstractTraceRule) and rule.feedback == "random":
        out["cos_B_Wout"] = feedback_alignment(rule, cell)
    return out
