"""RFLO (Murray 2019): random feedback local online learning."""

from __future__ import annotations

from typing import Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._types import Key
from ._eprop import AbstractTraceRule


class RFLO(AbstractTraceRule):
    """Random feedback local online learning (Murray 2019, eLife) for the leaky RNN (SPEC §3):
    the eligibility trace is a plain low-pass filter of the presynaptic rate,

        P_ij,t = (1 - a) P_ij,t-1 + a φ(h̃_j,t-1)

    (likewise for W_in with x_j,t and for b with 1), ΔW_ij ∝ -Σ_t L_i,t P_ij,t with
    L_t = B ∂ℓ_t/∂y_t. Murray's rule uses a fixed random B (`feedback="random", key=...`);
    `feedback="symmetric"` uses W_outᵀ. See `AbstractTraceRule` for the learning signal,
    forcing, online mode and the scale of B.
    """

    feedback: str = eqx.field(default="symmetric", static=True)
    key: Key | None = None
    feedback_scale: float | None = None
    online: bool = eqx.field(default=False, static=True)
    lr: float | jax.Array | None = None
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)
    fast: bool = eqx.field(default=True, static=True)
    recurrent_credit: ClassVar[str] = "none"

    def trace_decay(self, cell, h_prev):
        return jnp.full(h_prev.shape, 1 - cell.leak, h_prev.dtype)
