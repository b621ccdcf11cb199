"""Pieces shared by the rules that run their own time loop (truncated BPTT, RTRL, e-prop, RFLO):
the objective split into per-step terms and the trainable-parameter bookkeeping. The forced
step itself is `forcing.forced_step`, the one `forcing.rollout` takes."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Output, Scalar, State
from ..forcing import AbstractForcing, forced_step  # noqa: F401  (re-exported for the rules)
from ..models import AbstractCell, AbstractLinearReadoutCell
from ..tasks import Trials
from ._loss import Objective, readout_penalty, trial_weights


class StepLoss(eqx.Module):
    """The objective as a sum of per-(trial, step) terms plus the readout penalty:

        L = Σ_{b,t} ℓ_{b,t} + readout_reg R(W_out)       (R: `readout_penalty`)
        ℓ_{b,t} = Σ_k m_btk (y_btk - y*_btk)² / max(Σ m, 1)  +  rate_scale_b ‖h̃_bt‖²
        rate_scale_b = rate_reg · w_b / (T · N · max(Σ_b w_b, 1))

    which is `Objective` term by term (the normalisers are fixed by the batch up front).

    `per_step=True` (continual streams): every step is normalised on its own, whatever the
    length of the segment: mse_scale = 1 / (B · n_out), rate_scale_b = rate_reg · w_b / (N ·
    max(Σ_b w_b, 1)), and the readout penalty counted once per step (n_terms = B).
    """

    mse_scale: Scalar
    rate_scale: Float[Array, " B"]
    readout_reg: float | Array
    n_terms: int = eqx.field(static=True)  # B · T: the readout penalty is spread over all terms

    def __init__(self, objective: Objective, trials: Trials, n_rec: int, per_step: bool = False):
        B, T = trials.inputs.shape[:2]
        # the normalisers in the default float precision (float64 under x64), as `Objective`
        # divides: float32 trial masks must not round them
        w = trial_weights(trials).astype(jnp.result_type(float))
        if per_step:
            self.mse_scale = jnp.asarray(1.0 / (B * trials.targets.shape[-1]), w.dtype)
            T = 1
        else:
            self.mse_scale = 1.0 / jnp.maximum(jnp.sum(trials.mask, dtype=w.dtype), 1.0)
        self.rate_scale = objective.rate_reg * w / (T * n_rec * jnp.maximum(jnp.sum(w), 1.0))
        self.readout_reg = objective.readout_reg
        self.n_terms = B * T

    def term(self, y: Output, h_forced: State, target: Output, mask: Output, rate_scale: Scalar) -> Scalar:
        """ℓ_{b,t} for one trial and step (without the readout penalty)."""
        return self.mse_scale * jnp.sum(mask * (y - target) ** 2) + rate_scale * jnp.sum(h_forced**2)

    def output_grad(self, y: Float[Array, "*B n_out"], target: Float[Array, "*B n_out"],
                    mask: Float[Array, "*B n_out"]) -> Float[Array, "*B n_out"]:
        """∂ℓ_{b,t}/∂y_t (of one trial, or of a batch at once)."""
        return 2.0 * self.mse_scale * mask * (y - target)

    def penalty(self, cell: AbstractCell) -> Scalar:
        """readout_reg R(W_out) (zero for cells without a linear readout)."""
        if not isinstance(cell, AbstractLinearReadoutCell):
            return jnp.zeros((), jnp.result_type(float))
        return self.readout_reg * readout_penalty(cell.W_out)


def time_major(trials: Trials, noise):
    """The per-step inputs (x, y*, m, ξ) with time first, for `lax.scan`."""
    swap = lambda a: None if a is None else jnp.swapaxes(a, 0, 1)
    return swap(trials.inputs), swap(trials.targets), swap(trials.mask), swap(noise)


def trainable_spec(cell: AbstractCell):
    """A bool pytree over `cell`: True on the floating-point leaves that learn (`cell.trainable_spec()`)."""
    return cell.trainable_spec()


def full_grads(cell: AbstractCell, spec, trainable_grads) -> AbstractCell:
    """The gradient pytree BPTT returns (`eqx.filter_value_and_grad` structure: an array on
    every floating-point leaf, None elsewhere), with zeros on the leaves that do not train."""
    zeros = jax.tree.map(lambda leaf, s: jnp.zeros_like(leaf) if (eqx.is_inexact_array(leaf) and not s) else None,
                         cell, spec)
    return eqx.combine(trainable_grads, zeros)
