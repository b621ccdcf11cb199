"""Update diagnostics of Kaleb et al. (2024): alignment and efficiency of weight updates.

Updates are arrays or pytrees (e.g. a gradient-shaped cell); for the per-step quantities
every leaf carries a leading time axis T. A pytree is treated as one flat vector, and
`None` and non-float leaves (static fields) are ignored.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float

PyTree = Any


def _leaves(tree: PyTree) -> list[Array]:
    return jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))


def _vdot(a: PyTree, b: PyTree) -> Float[Array, ""]:
    return sum(jnp.vdot(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _norm(a: PyTree) -> Float[Array, ""]:
    return jnp.sqrt(_vdot(a, a))


def _safe_ratio(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def cosine(a: PyTree, b: PyTree) -> Float[Array, ""]:
    """cos(a, b) = ⟨a, b⟩ / (‖a‖ ‖b‖) over all float leaves; 0 if either is zero."""
    return _safe_ratio(_vdot(a, b), _norm(a) * _norm(b))


def _sum_over_time(updates: PyTree) -> PyTree:
    return jax.tree.map(lambda u: u.sum(0), eqx.filter(updates, eqx.is_inexact_array))


def update_efficiency(updates: PyTree) -> Float[Array, ""]:
    """Efficiency = ‖Σ_t ΔW_t‖ / Σ_t ‖ΔW_t‖ ∈ [0, 1] (Kaleb et al.).

    1 when every step pushes the same way, 0 when the steps cancel; 0 if all updates are zero.
    Leaves are [T, ...].
    """
    per_step = jax.vmap(_norm)(eqx.filter(updates, eqx.is_inexact_array))
    return _safe_ratio(_norm(_sum_over_time(updates)), per_step.sum())


def local_alignment(updates_a: PyTree, updates_b: PyTree) -> Float[Array, " T"]:
    """cos(ΔW^a_t, ΔW^b_t) for every step t, e.g. a rule's update against the exact online
    gradient (Kaleb et al.'s local alignment). Leaves are [T, ...]."""
    fa = eqx.filter(updates_a, eqx.is_inexact_array)
    fb = eqx.filter(updates_b, eqx.is_inexact_array)
    return jax.vmap(cosine)(fa, fb)


def global_alignment(updates_a: PyTree, updates_b: PyTree) -> Float[Array, ""]:
    """cos(Σ_t ΔW^a_t, Σ_t ΔW^b_t): alignment of the whole trial's updates (Kaleb et al.)."""
    return cosine(_sum_over_time(updates_a), _sum_over_time(updates_b))
