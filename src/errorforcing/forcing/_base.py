"""The forcing interface: feedback that moves the state during training (SPEC §2)."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxtyping import Int

from .._types import Array, Float, Output, State
from ..models import AbstractCell
from ._spd_solve import spd_solve


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


class AbstractSelectiveForcing(AbstractForcing):
    """A forcing that can act on a subset of the supervised steps and of the units.

    `interval = k` (GTF's `teacher_forcing_interval`) forces only the steps t with
    t mod k == 0, t counted from 0 at the start of the rollout (of the stream, for an online
    learner that carries its state across chunks); the others pass unforced, h̃_t = h_t. The
    step's strength becomes c_t = α max_k m_tk · 1[t mod k = 0]. k = 1 forces every supervised step.

    `units` (GTF's `partial_forcing`) selects the forced units through the diagonal selection
    P = diag(p): p_i = 1 for a forced unit, 0 otherwise, where `units = M` forces the first
    M units (GTF forces the first M latent units, the observed ones) and a tuple of indices
    forces those. The correction is multiplied by P, so an unforced unit keeps h̃_i,t = h_i,t.
    None forces all units (P = I).

    With interval > 1 the forcing's carry holds the step count t (an int32 scalar).
    """

    alpha: eqx.AbstractVar[float | jax.Array]
    interval: int = eqx.field(default=1, static=True, kw_only=True)
    units: int | tuple[int, ...] | None = eqx.field(default=None, static=True, kw_only=True,
                                                     converter=lambda u: tuple(int(i) for i in u)
                                                     if isinstance(u, (list, tuple)) else u)

    def __check_init__(self):
        name = type(self).__name__
        k = self.interval
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{name}.interval must be an integer >= 1, got {k!r}")
        u = self.units
        if isinstance(u, bool) or not (u is None or isinstance(u, (int, tuple))):
            raise ValueError(f"{name}.units must be None, a count M >= 1 or a tuple of unit indices, got {u!r}")
        if isinstance(u, int) and u < 1:
            raise ValueError(f"{name}.units (a count of leading units) must be >= 1, got {u}")
        if isinstance(u, tuple) and (not u or len(set(u)) != len(u) or min(u) < 0):
            raise ValueError(f"{name}.units must be distinct non-negative unit indices, got {u}")

    def selection(self, n_rec: int, dtype) -> Float[Array, " N"] | None:
        """p, the diagonal of P (1 on the forced units), or None when every unit is forced."""
        u = self.units
        if u is None:
            return None
        idx = tuple(range(u)) if isinstance(u, int) else u
        if max(idx) >= n_rec:
            raise ValueError(f"{type(self).__name__}.units selects unit {max(idx)} of a network with {n_rec} units")
        return jnp.zeros((n_rec,), dtype).at[jnp.asarray(idx)].set(1.0)

    def step_count(self) -> Int[Array, ""] | None:
        """The carry's initial step count t = 0, or None when every step is forced."""
        return jnp.zeros((), jnp.int32) if self.interval > 1 else None

    def strength(self, mask: Output, step: Int[Array, ""] | None):
        """c_t = α max_k m_tk · 1[t mod k = 0] (`step` = t, None when interval = 1)."""
        c = forcing_strength(self.alpha, mask)
        if step is None:
            return c
        return c * (step % self.interval == 0).astype(jnp.result_type(c))

    def step_gates(self, n_steps: int, dtype) -> Float[Array, " T"] | None:
        """1[t mod k = 0] for t = 0 … T-1, or None when every step is forced."""
        if self.interval == 1:
            return None
        return (jnp.arange(n_steps) % self.interval == 0).astype(dtype)


def readout_pinv(W_out: Float[Array, "n_out N"], ridge: float) -> Float[Array, "N n_out"]:
    """W_outᵀ (W_out W_outᵀ + ridge · I)⁻¹: the (regularised) minimum-norm right inverse."""
    n_out = W_out.shape[0]
    gram = W_out @ W_out.T + ridge * jnp.eye(n_out, dtype=W_out.dtype)
    return spd_solve(gram, W_out).T


def forcing_strength(alpha, mask: Output):
    """c_t = α m_t, one scalar per trial and step (on if any output is supervised)."""
    return alpha * jnp.max(mask)


def require_linear_readout(cell: AbstractCell, forcing: AbstractForcing) -> None:
    if not hasattr(cell, "W_out"):
        raise TypeError(f"{type(forcing).__name__} needs a cell with a linear readout W_out; "
                        f"{type(cell).__name__} has none")
