"""The forcing interface: feedback that moves the state during training (SPEC §2)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxtyping import Int

from .._types import Array, Float, Output, Scalar, State
from ..models import AbstractCell, AbstractLinearReadoutCell
from ._spd_solve import spd_solve


class AbstractForcing(eqx.Module):
    """`h̃, carry = forcing(h, y, target, mask, cell, carry)` after each step of a training rollout.

    `carry = forcing.init(cell)` is computed once per trial (e.g. the readout pseudoinverse,
    the previous step's error for causal variants). Corrections act only where `mask` is on:
    c_t = α · max_k m_tk. Evaluation passes `NoForcing()`.

    What a rule may assume about a forcing is declared, not guessed: the families
    `AbstractAdditiveForcing` (h̃ = h + c P G e) and `AbstractTeacherForcing`
    (h̃ = h + c P (W_outᵀ v - h)) carry the structure that hand-written gradients use;
    `is_identity` marks the forcing that changes nothing; `state_jacobian_diagonal` is
    diag(∂h̃/∂h), which trace rules need.
    """

    is_identity: ClassVar[bool] = False  # True: h̃_t = h_t and no drive (the rollout is the cell's own)

    def init(self, cell: AbstractCell) -> Any:
        return None

    def state_jacobian_diagonal(self, h: State, target: Output, mask: Output, cell: AbstractCell,
                                carry: Any) -> State:
        """κ_t = diag(∂h̃_t/∂h_t) at this step, including the dependence through y_t =
        readout(h_t); `carry` is the forcing's carry before the step. By default the diagonal
        of the forcing's Jacobian (forward mode); the families below give it in closed form."""
        forced = lambda hh: self(hh, cell.readout(hh), target, mask, cell, carry)[0]
        return jnp.diagonal(jax.jacfwd(forced)(h))

    def diagnostics(self, cell: AbstractCell) -> dict[str, Scalar]:
        """Cheap per-epoch figures of the forcing's own parameters (e.g. feedback forcing's
        alignments); none by default."""
        return {}

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

    is_identity: ClassVar[bool] = True

    def __call__(self, h, y, target, mask, cell, carry):
        return h, carry

    def state_jacobian_diagonal(self, h, target, mask, cell, carry):
        return jnp.ones_like(h)


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


class AbstractTeacherForcing(AbstractSelectiveForcing):
    """A forcing that pulls the forced units toward a teacher state in the readout's row space:

        h̃_t = h_t + c_t P (W_outᵀ v_t - h_t),   v_t = teacher_coefficients(W_out, b_out, y*_t, m_t)

    c_t = α max_k m_tk (times 1[t mod k = 0] with `interval = k`), P = diag(p) the forced units
    (`AbstractSelectiveForcing`). The teacher state depends on the readout and the targets, not
    on h_t, so diag(∂h̃_t/∂h_t) = 1 - c_t p. Its dependence on (W_out, b_out) is differentiated
    unless `stop_gradient`. A hand-written gradient (the leaky RNN's BPTT) can use exactly this
    structure; a subclass gives `teacher_coefficients` and `gain`, the teacher's gain under full
    supervision (teacher state = G (y* - b_out)).
    """

    # `alpha` is AbstractSelectiveForcing's; a subclass also has the field `stop_gradient` (not
    # declared here as an AbstractVar, which would move it in the subclass's field order)

    @abc.abstractmethod
    def teacher_coefficients(self, W_out: Float[Array, "n_out N"], b_out: Float[Array, " n_out"],
                             target: Float[Array, "*batch n_out"], mask: Float[Array, "*batch n_out"]
                             ) -> Float[Array, "*batch n_out"]:
        """v with teacher state W_outᵀ v, for any leading batch axes."""

    @abc.abstractmethod
    def gain(self, cell: AbstractLinearReadoutCell) -> Float[Array, "N n_out"]:
        """G with teacher state G (y* - b_out) on a fully supervised step."""

    def init(self, cell):
        require_linear_readout(cell, self)
        if not cell.supports_teacher_forcing:
            raise TypeError(f"{type(self).__name__} does not work with {type(cell).__name__}: it would overwrite "
                            "the cell memory; use ErrorForcing or KalmanErrorForcing")
        self.selection(cell.n_rec, cell.W_out.dtype)  # a unit index outside the network is refused here
        return self.step_count()

    def __call__(self, h, y, target, mask, cell, carry):
        teacher = self.teacher_coefficients(cell.W_out, cell.b_out, target, mask) @ cell.W_out
        if self.stop_gradient:
            teacher = jax.lax.stop_gradient(teacher)
        c = self.strength(mask, carry)
        p = self.selection(h.shape[-1], h.dtype)
        if p is not None:
            c = c * p
        return (1 - c) * h + c * teacher, (None if carry is None else carry + 1)

    def state_jacobian_diagonal(self, h, target, mask, cell, carry):
        c = self.strength(mask, carry)  # the carry before this step holds its count t
        p = self.selection(h.shape[-1], h.dtype)
        return jnp.broadcast_to(1 - (c if p is None else c * p), h.shape)


class AbstractAdditiveForcing(AbstractSelectiveForcing):
    """h̃_t = h_t + c_t sg(P G e_t) with e_t = (y*_t - y_t) ⊙ m_t and a gain G (N × n_out).

    A new additive forcing is a subclass that gives `gain` (and the fields `alpha`,
    `stop_gradient`, `causal`): rollouts, every rule, the leaky RNN's hand-written BPTT and
    RTRL, the trace rules' κ and the diagnostics then work with it unchanged.

    P = diag(p) selects the forced units (`units`; P = I by default) and c_t = α max_k m_tk,
    times 1[t mod k = 0] with `interval = k` (`AbstractSelectiveForcing`): the applied gain
    is P G (`selected_gain`), so an unforced unit keeps h̃_i,t = h_i,t.

    `causal=True` (needed by online rules, where e_t is not yet known when h_t is formed; the
    reference EF-RFLO cell) forces with the previous step's error, gated by the *current* mask:

        h̃_t = h_t + c_t sg(G e_{t-1}),   c_t = α max_k m_tk,   e_{-1} = 0

    so nothing is forced at t = 0 nor on an unsupervised step that follows a supervised one.
    The carry holds (P G, e_{t-1}) (not a correction). With `interval = k` the gate is the current
    step's: h̃_t = h_t + c_t sg(P G e_{t-1}) on the steps t with t mod k = 0, the error of the
    step before each forced step (which is itself unforced for k > 1); e_{t-1} is carried at
    every step.

    The state Jacobian: with the correction stopped, ∂h̃_t/∂h_t = I; otherwise
    I - c_t P G diag(m_t) ∂y_t/∂h_t (non-causal), whose diagonal the default computes.
    """

    alpha: eqx.AbstractVar[float | jax.Array]
    stop_gradient: eqx.AbstractVar[bool]
    causal: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def gain(self, cell: AbstractLinearReadoutCell) -> Float[Array, "N n_out"]:
        """G, the gain from the output error to the state (before the unit selection P)."""

    def selected_gain(self, cell) -> Float[Array, "N n_out"]:
        """P G, the gain as applied (G itself when every unit is forced)."""
        gain = self.gain(cell)
        p = self.selection(gain.shape[0], gain.dtype)
        return gain if p is None else p[:, None] * gain

    def init(self, cell):
        require_linear_readout(cell, self)
        gain = self.selected_gain(cell)
        carry = (gain, jnp.zeros((gain.shape[1],), gain.dtype)) if self.causal else (gain, None)
        step = self.step_count()
        return carry if step is None else carry + (step,)

    def with_current_gain(self, cell, carry):
        """`carry` (possibly with leading batch axes) with P G recomputed from `cell`: for a
        learner that changes W_out within a trial, so that the gain (W⁺) follows it."""
        return (jnp.broadcast_to(self.selected_gain(cell), carry[0].shape),) + tuple(carry[1:])

    def __call__(self, h, y, target, mask, cell, carry):
        gain, previous_error, *count = carry  # count: [t] with interval > 1
        step = count[0] if count else None
        error = (target - y) * mask
        correction = self.strength(mask, step) * (gain @ (previous_error if self.causal else error))
        if self.stop_gradient:
            correction = jax.lax.stop_gradient(correction)
        if step is None:
            return h + correction, ((gain, error) if self.causal else carry)
        return h + correction, (gain, error if self.causal else previous_error, step + 1)

    def state_jacobian_diagonal(self, h, target, mask, cell, carry):
        if self.stop_gradient:
            return jnp.ones_like(h)
        return super().state_jacobian_diagonal(h, target, mask, cell, carry)


def readout_pinv(W_out: Float[Array, "n_out N"], ridge: float) -> Float[Array, "N n_out"]:
    """W_outᵀ (W_out W_outᵀ + ridge · I)⁻¹: the (regularised) minimum-norm right inverse."""
    n_out = W_out.shape[0]
    gram = W_out @ W_out.T + ridge * jnp.eye(n_out, dtype=W_out.dtype)
    return spd_solve(gram, W_out).T


def forcing_strength(alpha, mask: Output):
    """c_t = α m_t, one scalar per trial and step (on if any output is supervised)."""
    return alpha * jnp.max(mask)


def require_linear_readout(cell: AbstractCell, forcing: AbstractForcing) -> None:
    if not isinstance(cell, AbstractLinearReadoutCell):
        raise TypeError(f"{type(forcing).__name__} needs a cell with a linear readout W_out; "
                        f"{type(cell).__name__} has none")
