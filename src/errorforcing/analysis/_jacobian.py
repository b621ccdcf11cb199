"""Jacobian norms along a trajectory and the adaptive forcing strength (SPEC §2, §6).

Kaleb et al. (2024) report ‖∂h_t/∂h_{t-1}‖ during adaptation; Hess et al. (2023) choose the
generalized-teacher-forcing strength from it: forcing with α scales the forced map's
Jacobian by (1 − α), so α* = 1 − 1/‖J‖ is the least forcing that keeps it from expanding.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Int

from .._types import Array, Float
from ..models import AbstractCell


def jacobian_norms(
    cell: AbstractCell,
    states: Float[Array, "T N"] | Float[Array, "B T N"],
    inputs: Float[Array, "T n_in"] | Float[Array, "B T n_in"],
    *,
    h0: Float[Array, " N"] | None = None,
) -> Float[Array, " T"] | Float[Array, "B T"]:
    """‖J_t‖₂ = ‖∂cell(h_{t-1}, x_t)/∂h_{t-1}‖₂ (largest singular value) for every step.

    `states[t]` is the state after consuming `inputs[t]` (what `rollout`/`simulate` return,
    forced states included), so J_t is evaluated at h_{t-1} = states[t-1], and at
    h_{-1} = `h0` (default `cell.init_state()`) for t = 0. This is the Jacobian of the cell
    step itself; a forcing's own factor (e.g. 1 − α for teacher forcing) is not included.
    """
    h_init = cell.init_state() if h0 is None else h0

    def one(states, inputs):
        prev = jnp.concatenate([h_init[None], states[:-1]], axis=0)

        def norm(h, x):
            jac = jax.jacfwd(lambda s: cell(s, x))(h)
            # σ_max = √λ_max(JᵀJ): XLA's CPU SVD (gesdd) hung here when two ensemble shards
            # ran at once (jaxlib 0.10); the symmetric eigensolver does not
            return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(jac.T @ jac)[-1], 0.0))

        return jax.vmap(norm)(prev, inputs)

    if states.ndim == 2:
        return one(states, inputs)
    return jax.vmap(one)(states, inputs)


def adaptive_alpha(norms: Float[Array, " T"] | Float[Array, "B T"]) -> Float[Array, ""]:
    """α* = max(0, 1 − 1/‖J‖) (Hess et al. 2023).

    ‖J‖ = exp(mean_t log ‖J_t‖₂), the geometric mean over time (the per-step growth rate of
    a product of Jacobians), taken per trial and then maximised over the batch.
    """
    log_growth = jnp.mean(jnp.log(norms), axis=-1)
    growth = jnp.exp(jnp.max(log_growth))
    return jnp.maximum(0.0, 1.0 - 1.0 / growth)


# The α estimators of GTF (DurstewitzLab, `alpha_estimation.jl`): each turns the Jacobians
# J_bt = ∂cell(h̃_{b,t-1}, x_bt)/∂h̃_{b,t-1} along a batch's forced trajectory into a growth
# estimate 𝒩, and α* = max(0, 1 − 1/𝒩). "product-upper-bound" is the one this package has
# always used (`adaptive_alpha`), hence the default.
ALPHA_ESTIMATORS = ("product-upper-bound", "batch-maximum", "arithmetic-mean", "explog-approx",
                    "jacobian-upper-bound")
DEFAULT_ALPHA_ESTIMATOR = "product-upper-bound"

# sup_h |φ'(h)| of each activation, for the parameter bound
_SLOPE_BOUND = {"tanh": 1.0, "logistic": 0.25, "relu": 1.0, "softplus": 1.0, "identity": 1.0}


def jacobians(cell: AbstractCell, states: Float[Array, "T N"], inputs: Float[Array, "T n_in"], *,
              h0: Float[Array, " N"] | None = None) -> Float[Array, "T N N"]:
    """J_t = ∂cell(h_{t-1}, x_t)/∂h_{t-1} for every step, evaluated as in `jacobian_norms`."""
    h_init = cell.init_state() if h0 is None else h0
    prev = jnp.concatenate([h_init[None], states[:-1]], axis=0)
    return jax.vmap(lambda h, x: jax.jacfwd(lambda s: cell(s, x))(h))(prev, inputs)


def spectral_norm(J: Array) -> Float[Array, "..."]:
    """‖J‖₂ = √λ_max(Jᴴ J) over the last two axes (real or complex J)."""
    gram = jnp.conj(jnp.swapaxes(J, -1, -2)) @ J
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[..., -1], 0.0))


def _matrix_log(J: Float[Array, "N N"]) -> Array:
    """The principal matrix logarithm V diag(log λ) V⁻¹ (complex where J has eigenvalues on the
    negative real axis), from the eigendecomposition. An eigenvalue of modulus below 1e-12
    (a singular J) is taken at modulus 1e-12, so that log stays finite."""
    lam, V = jnp.linalg.eig(J)
    lam = jnp.where(jnp.abs(lam) < 1e-12, 1e-12 * jnp.exp(1j * jnp.angle(lam)), lam)
    return (V * jnp.log(lam)[None, :]) @ jnp.linalg.inv(V)


def growth_estimate(jac: Float[Array, "B T N N"], estimator: str) -> Float[Array, ""]:
    """𝒩, the Jacobians' growth per step by the named estimator (trials b, steps t):

        product-upper-bound   𝒩 = max_b exp(mean_t log ‖J_bt‖₂)   (geometric mean of the norms)
        batch-maximum         𝒩 = max_{b,t} ‖J_bt‖₂
        arithmetic-mean       𝒩 = max_b ‖mean_t J_bt‖₂
        explog-approx         𝒩 = max_b ‖exp(mean_t log J_bt)‖₂   (matrix log / exp, `_matrix_log`)

    ("jacobian-upper-bound" needs no trajectory: `jacobian_upper_bound`).
    """
    if estimator == "product-upper-bound":
        return jnp.exp(jnp.max(jnp.mean(jnp.log(spectral_norm(jac)), axis=-1)))
    if estimator == "batch-maximum":
        return jnp.max(spectral_norm(jac))
    if estimator == "arithmetic-mean":
        return jnp.max(spectral_norm(jnp.mean(jac, axis=-3)))
    if estimator == "explog-approx":
        mean_log = jnp.mean(jax.vmap(jax.vmap(_matrix_log))(jac), axis=-3)
        return jnp.max(spectral_norm(jax.vmap(jax.scipy.linalg.expm)(mean_log)))
    raise ValueError(f"unknown α estimator {estimator!r}; choose one of: {', '.join(ALPHA_ESTIMATORS)}")


def jacobian_upper_bound(cell: AbstractCell) -> Float[Array, ""]:
    """𝒩 = (1 − a) + a ‖W‖₂ sup|φ'| ≥ ‖J_t‖₂ for every state of the leaky RNN
    (J_t = (1 − a) I + a W diag(φ'(h̃_{t-1})), W the effective recurrent matrix), from the
    parameters alone: GTF's "jacobian_upper_bound" (theirs bounds the PLRNN's J the same way)."""
    activation = getattr(cell, "activation", None)
    if activation not in _SLOPE_BOUND:
        raise TypeError(f"the jacobian-upper-bound α estimator is written for the leaky RNN; "
                        f"{type(cell).__name__} has no bounded activation")
    a = cell.leak
    W = cell.recurrent_weights()
    return (1 - a) + a * spectral_norm(W) * _SLOPE_BOUND[activation]


def alpha_from_growth(growth: Float[Array, ""]) -> Float[Array, ""]:
    """α* = max(0, 1 − 1/𝒩) (GTF's `opt_α`)."""
    return jnp.maximum(0.0, 1.0 - 1.0 / growth)


def update_alpha(alpha: Float[Array, ""], alpha_star: Float[Array, ""], *,
                 decay: float = 0.999) -> Float[Array, ""]:
    """α ← α* if α* > α, else decay · α + (1 − decay) · α* (decay = 0.999, Hess et al.).

    Forcing rises at once when the dynamics need more of it and relaxes slowly otherwise.
    """
    return jnp.where(alpha_star > alpha, alpha_star, decay * alpha + (1.0 - decay) * alpha_star)


class AdaptiveAlpha(NamedTuple):
    """State of the adaptive forcing strength: the current α and the batches seen.

    Start with `AdaptiveAlpha.init()` (α = 1); call `state.update(norms)` after every batch
    with that batch's `jacobian_norms`: α changes by `update_alpha` on every `every`-th batch
    (5 in Hess et al.) and stays put otherwise. A pytree, so it lives inside `jit` and can be
    `vmap`ped over ensemble members.
    """

    alpha: Float[Array, ""]
    count: Int[Array, ""]

    @classmethod
    def init(cls, alpha: float = 1.0, dtype=None) -> "AdaptiveAlpha":
        dtype = dtype or jnp.zeros(()).dtype
        return cls(jnp.asarray(alpha, dtype), jnp.asarray(0, jnp.int32))

    def update(self, norms: Float[Array, " T"] | Float[Array, "B T"], *, every: int = 5,
               decay: float = 0.999) -> "AdaptiveAlpha":
        count = self.count + 1
        due = count % every == 0
        new = update_alpha(self.alpha, adaptive_alpha(norms).astype(self.alpha.dtype), decay=decay)
        return AdaptiveAlpha(jnp.where(due, new, self.alpha), count)
