"""How well one rule's gradient, or a rule's feedback, lines up with the exact one."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .._types import Scalar
from ..forcing import alignment
from ..models import AbstractCell


def gradient_alignment(grads_a: AbstractCell, grads_b: AbstractCell) -> dict[str, Scalar]:
    """cos(grads_a, grads_b) per parameter group (each field holding arrays, e.g. W_rec, W_in,
    b, W_out, b_out) and over all of them ("all"). Compare any rule's gradient with BPTT's:
    `gradient_alignment(rule_grads, bptt_grads)`. NaN where either gradient is zero."""
    out = {}
    for f in dataclasses.fields(grads_a):
        a, b = getattr(grads_a, f.name), getattr(grads_b, f.name)
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        if la and lb and all(isinstance(x, jax.Array) for x in la + lb):
            out[f.name] = _cosine(_flat(la), _flat(lb))
    out["all"] = _cosine(_flat(jax.tree.leaves(grads_a)), _flat(jax.tree.leaves(grads_b)))
    return out


def _cosine(a, b) -> Scalar:
    """cos(a, b), rounding kept inside [-1, 1] (equal directions give 1 + ε otherwise)."""
    return jnp.clip(alignment(a, b), -1.0, 1.0)


def feedback_alignment(rule, cell: AbstractCell) -> Scalar:
    """cos(B, W_outᵀ) for a rule with a feedback matrix (`EProp`, `RFLO`)."""
    return alignment(rule.feedback_matrix(cell), cell.W_out.T)


def _flat(leaves) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in leaves]) if leaves else jnp.zeros((0,))
