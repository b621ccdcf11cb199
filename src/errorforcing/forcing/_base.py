"""The forcing interface: feedback that moves the state during training (SPEC §2)."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp

from .._types import Array, Float, Output, State
from ..models import AbstractCell


class AbstractForcing(eqx.Module):
    """`h̃, carry = forcing(h, y, target, mask, cell, carry)` after each step of a training rollout.

    `carry = forcing.init(cell)` is computed once per trial (e.g. the readout pseudoinverse,
    the previous step's error for causal variants). Corrections act only where `mask` is on:
    c_t = α · max_k m_tk. Evaluation passes `NoForcing()`.
    """

    def init(self, cell: AbstractCell) -> Any:
        return None

    def drive(self, cell: AbstractCell, mask: Output, carry: Any) -> State | None:
        """An input the forcing adds to step t's dynamics before its readout, from the carry
        the previous step left (e.g. feedback control's a W_fb u_{t-1-d}); None: no input.
        `forced_step` adds it: h_t = cell(h̃_{t-1}, x_t) + drive."""
        return None

    @abc.abstractmethod
    def __call__(self, h: State, y: Output, target: Output, mask: Output, cell: AbstractCell,
                 carry: Any) -> tuple[State, Any]: ...


class NoForcing(AbstractForcing):
    """No feedback on the state: h̃_t = h_t."""

    def __call__(self, h, y, target, mask, cell, carry):
        return h, carry


def readout_pinv(W_out: Float[Array, "n_out N"], ridge: float) -> Float[Array, "N n_out"]:
    """W_outᵀ (W_out W_outᵀ + ridge · I)⁻¹: the (regularised) minimum-norm right inverse."""
    n_out = W_out.shape[0]
    gram = W_out @ W_out.T + ridge * jnp.eye(n_out, dtype=W_out.dtype)
    return jnp.linalg.solve(gram, W_out).T


def forcing_strength(alpha, mask: Output):
    """c_t = α m_t, one scalar per trial and step (on if any output is supervised)."""
    return alpha * jnp.max(mask)


def require_linear_readout(cell: AbstractCell, forcing: AbstractForcing) -> None:
    if not hasattr(cell, "W_out"):
        raise TypeError(f"{type(forcing).__name__} needs a cell with a linear readout W_out; "
                        f"{type(cell).__name__} has none")
