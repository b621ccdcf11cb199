"""The cell interface: one unbatched step of a recurrent network and its readout."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Input, Output, State


class AbstractCell(eqx.Module):
    """`h = cell(h, x)` advances one step; `y = cell.readout(h)` reads the output out.

    `trainable` names the fields that learn; the others keep their initial values
    (`frozen_grads` zeros their gradients). `n_rec` is the size of the state vector.

    Capabilities are declared on the class, never probed: a cell with a linear readout is an
    `AbstractLinearReadoutCell`; `supports_teacher_forcing = False` marks a cell whose state
    holds more than the readout's row space can set (an LSTM's memory c), which teacher
    forcing would overwrite; `forcing_geometry` says how forcing reaches the outputs.
    """

    trainable: eqx.AbstractVar[tuple[str, ...]]
    forcing_geometry: ClassVar[str] = "linear"  # "linear": y = W_out h + b_out (state readout)
    supports_teacher_forcing: ClassVar[bool] = True
    # the step and readout are exactly LeakyRNN's, so the rules' hand-written leaky-RNN BPTT and
    # RTRL apply (LeakyRNN sets it; a subclass that overrides its step loses it unless it declares it)
    leaky_dynamics: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def n_rec(self) -> int: ...

    @abc.abstractmethod
    def init_state(self) -> State: ...

    @abc.abstractmethod
    def __call__(self, h: State, x: Input) -> State: ...

    @abc.abstractmethod
    def readout(self, h: State) -> Output: ...

    def recurrent_weights(self) -> jax.Array:
        """The effective unit-to-unit weight matrix of the dynamics (what a constraint such as
        Dale's law acts on), rows the receiving units."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its recurrent weights")

    def mask_grads(self, grads: "AbstractCell") -> "AbstractCell":
        """Zero the gradients of what must not learn (fields not in `trainable`)."""
        return frozen_grads(grads, self)

    def trainable_spec(self) -> "AbstractCell":
        """A bool pytree over the cell: True on the floating-point leaves that learn (of the
        fields in `trainable`). A cell that nests modules overrides it with its parts' specs."""
        names = set(self.trainable)
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: eqx.is_inexact_array(leaf) and getattr(path[0], "name", None) in names, self)


class AbstractLinearReadoutCell(AbstractCell):
    """A cell whose output is a linear map of its state (or of its rates):

        y_t = W_out r_t + b_out,   r_t = h_t (or φ(h_t) for a rate readout)

    A subclass provides `W_out` [n_out, N] and `b_out` [n_out], as fields or properties (e.g. the
    LSTM's W_out on its whole state [h; c]): what the readout-based forcings (teacher, error,
    Kalman and feedback forcing: W⁺ = W_outᵀ (W_out W_outᵀ + ε I)⁻¹) and the readout penalty use.

    They are deliberately not declared here as `eqx.AbstractVar`s: a base-class annotation
    becomes a dataclass field and moves W_out, b_out to the front of every subclass's field
    order, i.e. its pytree leaf order, which is the order of stored checkpoints
    (`tree_serialise_leaves`) and of RTRL's flattened θ (and it would make a property a field).
    `tests/test_architecture.py` checks that every registered linear-readout cell has both.
    """


def frozen_grads(grads: AbstractCell, cell: AbstractCell) -> AbstractCell:
    """Zero the gradient of every array field not named in `cell.trainable`."""

    def zero(name):
        leaf = getattr(grads, name)
        return None if leaf is None else jnp.zeros_like(leaf)

    frozen = [f for f in _array_fields(cell) if f not in cell.trainable]
    if not frozen:
        return grads
    return eqx.tree_at(lambda g: [getattr(g, f) for f in frozen], grads, [zero(f) for f in frozen],
                       is_leaf=lambda x: x is None)


def _array_fields(cell: AbstractCell) -> list[str]:
    return [f.name for f in cell.__dataclass_fields__.values()
            if isinstance(getattr(cell, f.name), jax.Array)]


ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
    "logistic": jax.nn.sigmoid,
}
