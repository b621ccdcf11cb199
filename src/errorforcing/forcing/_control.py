"""Feedback control of the network state (Kaleb et al. 2024, SPEC §2 "Feedback control")."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Input, Key, Output, State
from ..models import AbstractCell, AbstractLinearReadoutCell
from ..tasks import rotate
from ._base import AbstractForcing

_SIGNALS = ("integrated", "error")


class FeedbackControl(AbstractForcing):
    """Feedback control (Kaleb, Feulner, Gallego & Clopath 2024, "Feedback control guides
    credit assignment in recurrent neural networks"): a control signal u_t, made from the
    output error, enters the *next* steps' dynamics as an input through feedback weights
    W_fb (N × n_out),

        h_t = (1 - a) h_{t-1} + a (W_rec φ(h_{t-1}) + W_in x_t + b + α c_t W_fb u_{t-1-d}),
        y_t = readout(h_t)                    (the control's effect is in y_t)
        e_t = R(θ) (y*_t - y_t) ⊙ m_t         (the error in cursor space, θ = `rotation`)
        u_t = u_{t-1} + dt e_t                signal = "integrated" (position error; default)
        u_t = e_t                             signal = "error"      (velocity error)
        u_{-1} = … = u_{-1-d} = 0,  c_t = max_k m_tk (the control acts on supervised steps only)

    Timing as in the reference code (klarakaleb/feedback-control, `model_def.py`): step t takes
    the signal computed after step t - 1 - d (`fb_delay = d`; the first d steps get none), so
    with d = 0 the error made at step t reaches the state at t + 1. The control is the step's
    input (`drive`, added by `forced_step` before the readout), not a correction of the state
    after it; `__call__` only updates the signal. The carry is [u_{t-1-d}, …, u_{t-1}] (d + 1 rows).

    Visuomotor rotation. `CenterOutReach(rotation=θ)` moves the cursor with R(θ) y, and its
    targets are R(-θ) v*; the cursor's error is v* - R(θ) y = R(θ)(y* - y), which is what a
    controller that watches the cursor feeds back: set `rotation` to the task's θ. With θ = 0
    it is the output error y* - y.

    Gradients. W_fb gets its gradient from every rule that differentiates the forced rollout
    (see `ControlledCell` to learn it with the cell). `stop_gradient=True` (default) treats u as
    an external input (the reference code's `error_detach` during adaptation): no gradient
    flows back through the loop y → e → u → h, and trace rules see the control as an input
    (∂h̃_t/∂h_t = I). `stop_gradient=False` differentiates the closed loop. With W_fb = 0 or
    α = 0 this is `NoForcing()`. Evaluation with the control off is `NoForcing()`.
    """

    W_fb: Float[Array, "N n_out"]
    alpha: float | jax.Array = 1.0
    signal: str = eqx.field(default="integrated", static=True)
    delay: int = eqx.field(default=0, static=True)
    rotation: float | jax.Array = 0.0
    dt: float = 0.01
    stop_gradient: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if self.signal not in _SIGNALS:
            raise ValueError(f"FeedbackControl.signal must be one of {_SIGNALS}, got {self.signal!r}")
        if not isinstance(self.delay, int) or self.delay < 0:
            raise ValueError(f"FeedbackControl.delay must be an integer >= 0, got {self.delay!r}")
        if jnp.ndim(self.W_fb) != 2:
            raise ValueError(f"FeedbackControl.W_fb must be a matrix N × n_out, got shape {jnp.shape(self.W_fb)}")
        if isinstance(self.dt, (int, float)) and self.dt <= 0:
            raise ValueError(f"FeedbackControl.dt must be > 0, got {self.dt}")

    @classmethod
    def random(cls, cell: AbstractCell, n_out: int, *, key: Key, scale: float | None = None,
               **kwargs) -> "FeedbackControl":
        """W_fb with i.i.d. entries U(-s, s), s = 1/√n_out by default (PyTorch's `nn.Linear(n_out, N)`
        initialisation, which the reference code starts pre-training from)."""
        s = 1.0 / n_out**0.5 if scale is None else scale
        dtype = cell.init_state().dtype
        return cls(jax.random.uniform(key, (cell.n_rec, n_out), dtype, -s, s), **kwargs)

    def init(self, cell: AbstractCell) -> Float[Array, "d+1 n_out"]:
        _leak(cell)  # fail early for cells without a leak
        n_out = self.W_fb.shape[1]
        dtype = jnp.result_type(self.W_fb, cell.init_state())
        return jnp.zeros((self.delay + 1, n_out), dtype)

    def error(self, y: Output, target: Output, mask: Output) -> Output:
        """e_t = R(θ)(y*_t - y_t) ⊙ m_t."""
        e = (target - y) * mask
        if isinstance(self.rotation, (int, float)) and self.rotation == 0:
            return e
        if e.shape[-1] != 2:
            raise ValueError(f"FeedbackControl.rotation needs 2-D outputs, got n_out = {e.shape[-1]}")
        return rotate(e, self.rotation)

    def drive(self, cell: AbstractCell, mask: Output, carry: Float[Array, "d+1 n_out"]) -> State:
        """α c_t a W_fb u_{t-1-d}: the control's input to step t."""
        applied = carry[0]
        if self.stop_gradient:
            applied = jax.lax.stop_gradient(applied)
        gate = self.alpha * jnp.max(mask)
        return (gate * _leak(cell)) * (self.W_fb @ applied)

    def __call__(self, h: State, y: Output, target: Output, mask: Output, cell: AbstractCell,
                 carry: Float[Array, "d+1 n_out"]) -> tuple[State, Any]:
        e = self.error(y, target, mask).astype(carry.dtype)
        u = carry[-1] + self.dt * e if self.signal == "integrated" else e
        return h, jnp.concatenate([carry[1:], u[None]], axis=0)


def _leak(cell: AbstractCell):
    if isinstance(cell, ControlledCell):
        cell = cell.cell
    leak = getattr(cell, "leak", None)
    if leak is None:
        raise TypeError(f"FeedbackControl needs a leaky cell (a field `leak` = dt/τ); {type(cell).__name__} has none")
    return leak


class ControlledCell(AbstractLinearReadoutCell):
    """A cell and its feedback controller as one module, so that a rule that differentiates the
    rollout learns W_fb together with the cell (Kaleb et al. pre-train W_fb with BPTT):

        loss, grads, _ = BPTT().value_and_grad(ControlledCell(cell, control), ClosedLoop(), trials, key=key)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(both, eqx.is_inexact_array))

    The dynamics and readout are the cell's; `ClosedLoop()` is the forcing that runs the
    cell's own controller. `mask_grads` keeps the cell's own rule for its fields and lets only
    W_fb of the controller learn (`learn_feedback=False` freezes it too). Afterwards take
    `.cell` and `.control` apart: the controller is fixed from then on, and the trained cell
    runs with `control` (control on) or `NoForcing()` (control off).
    """

    cell: AbstractCell
    control: FeedbackControl
    learn_feedback: bool = eqx.field(static=True)
    trainable: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, cell: AbstractCell, control: FeedbackControl, *, learn_feedback: bool = True):
        if not isinstance(cell, AbstractLinearReadoutCell):
            raise TypeError(f"ControlledCell reads out through its cell's linear readout; {type(cell).__name__} has none")
        self.cell = cell
        self.control = control
        self.learn_feedback = learn_feedback
        self.trainable = tuple(cell.trainable) + (("W_fb",) if learn_feedback else ())

    @property
    def n_rec(self) -> int:
        return self.cell.n_rec

    @property
    def W_out(self):
        # so that the objective's readout penalty sees the inner cell's decoder
        return self.cell.W_out

    @property
    def b_out(self):
        return self.cell.b_out

    def init_state(self) -> State:
        return self.cell.init_state()

    def __call__(self, h: State, x: Input) -> State:
        return self.cell(h, x)

    def readout(self, h: State) -> Output:
        return self.cell.readout(h)

    def trainable_spec(self) -> "ControlledCell":
        # the inner cell's learning leaves and, with learn_feedback, the controller's W_fb
        spec = jax.tree.map(lambda _: False, self)
        return eqx.tree_at(lambda m: (m.cell, m.control.W_fb), spec, (self.cell.trainable_spec(), self.learn_feedback))

    def mask_grads(self, grads: "ControlledCell") -> "ControlledCell":
        control = jax.tree.map(lambda g: jnp.zeros_like(g) if eqx.is_array(g) else g, grads.control)
        if self.learn_feedback:
            control = eqx.tree_at(lambda c: c.W_fb, control, grads.control.W_fb)
        return eqx.tree_at(lambda g: (g.cell, g.control), grads, (self.cell.mask_grads(grads.cell), control))


class ClosedLoop(AbstractForcing):
    """The forcing of a `ControlledCell`: its own controller, `cell.control`, acting on
    `cell.cell`. Gradients reach the controller's W_fb through the cell argument."""

    def init(self, cell: ControlledCell):
        if not isinstance(cell, ControlledCell):
            raise TypeError(f"ClosedLoop runs the controller of a ControlledCell, got {type(cell).__name__}")
        return cell.control.init(cell.cell)

    def drive(self, cell: ControlledCell, mask, carry):
        return cell.control.drive(cell.cell, mask, carry)

    def __call__(self, h, y, target, mask, cell: ControlledCell, carry):
        return cell.control(h, y, target, mask, cell.cell, carry)
