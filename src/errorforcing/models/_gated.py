"""Gated baselines (SPEC §1.3): GRU and LSTM cells with a linear readout, trained with BPTT."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Input, Key, Output, State
from ._base import AbstractLinearReadoutCell

GATED_TRAINABLE = ("W_x", "W_h", "bias", "W_out", "b_out")


def _init_gated(key: Key, n_in: int, n_rec: int, n_out: int, gates: int, dtype):
    """W_x [gates·H, n_in], W_h [gates·H, H], bias [4H] ~ U(-1/√H, 1/√H); W_out ~ N(0, 1/H²)."""
    dtype = dtype or jnp.zeros(()).dtype
    k1, k2, k3, k4 = jax.random.split(key, 4)
    bound = 1 / math.sqrt(n_rec)
    uniform = lambda k, shape: jax.random.uniform(k, shape, dtype, -bound, bound)
    return (uniform(k1, (gates * n_rec, n_in)), uniform(k2, (gates * n_rec, n_rec)), uniform(k3, (4 * n_rec,)),
            jax.random.normal(k4, (n_out, n_rec), dtype) / n_rec, jnp.zeros((n_out,), dtype))


class GRU(AbstractLinearReadoutCell):
    """Gated recurrent unit (Cho et al. 2014) with a linear readout of the state:

        z = σ(W_xz x + W_hz h + b_z),   r = σ(W_xr x + W_hr h + b_r)
        n = tanh(W_xn x + b_xn + r ⊙ (W_hn h + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h,       y = W_out h' + b_out

    Weights U(-1/√H, 1/√H) (the common default); W_out ~ N(0, 1/H²) as for the leaky RNN.
    """

    W_x: Float[Array, "3H n_in"]
    W_h: Float[Array, "3H H"]
    bias: Float[Array, " 4H"]
    W_out: Float[Array, "n_out H"]
    b_out: Float[Array, " n_out"]
    trainable: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, n_in: int, n_rec: int, n_out: int, *, key: Key, trainable=GATED_TRAINABLE, dtype=None):
        self.W_x, self.W_h, self.bias, self.W_out, self.b_out = _init_gated(key, n_in, n_rec, n_out, 3, dtype)
        self.trainable = tuple(trainable)

    @property
    def n_rec(self) -> int:
        return self.W_h.shape[1]

    def init_state(self) -> State:
        return jnp.zeros((self.n_rec,), self.W_h.dtype)

    def recurrent_weights(self) -> Float[Array, "3H H"]:
        """W_h: the hidden-to-hidden weights of the three gates [z; r; n], stacked."""
        return self.W_h

    def __call__(self, h: State, x: Input) -> State:
        H = self.n_rec
        gx = self.W_x @ x + self.bias[: 3 * H]
        gh = self.W_h @ h
        z = jax.nn.sigmoid(gx[:H] + gh[:H])
        r = jax.nn.sigmoid(gx[H:2 * H] + gh[H:2 * H])
        n = jnp.tanh(gx[2 * H:] + r * (gh[2 * H:] + self.bias[3 * H:]))
        return (1 - z) * n + z * h

    def readout(self, h: State) -> Output:
        return self.W_out @ h + self.b_out


class LSTM(AbstractLinearReadoutCell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997) with a linear readout of h.

        [i, f, g, o] = W_x x + W_h h + bias;   c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g);   h' = σ(o) ⊙ tanh(c')
        y = W_out h' + b_out

    The state vector is [h; c] (2H). Forcing acts through the readout, so error forcing moves only
    h (the readout's row space); teacher forcing would overwrite the cell memory c and is refused.
    """

    W_x: Float[Array, "4H n_in"]
    W_h: Float[Array, "4H H"]
    bias: Float[Array, " 4H"]
    W_out_h: Float[Array, "n_out H"]
    b_out: Float[Array, " n_out"]
    trainable: tuple[str, ...] = eqx.field(static=True)
    supports_teacher_forcing: ClassVar[bool] = False  # it would overwrite the memory c

    def __init__(self, n_in: int, n_rec: int, n_out: int, *, key: Key,
                 trainable=("W_x", "W_h", "bias", "W_out_h", "b_out"), dtype=None):
        self.W_x, self.W_h, self.bias, self.W_out_h, self.b_out = _init_gated(key, n_in, n_rec, n_out, 4, dtype)
        self.trainable = tuple(trainable)

    @property
    def hidden(self) -> int:
        return self.W_h.shape[1]

    @property
    def n_rec(self) -> int:
        return 2 * self.hidden

    @property
    def W_out(self) -> Float[Array, "n_out N"]:  # N = 2H, the state [h; c]
        """The readout as a map of the whole state [h; c] (zeros on c), used by forcing."""
        return jnp.concatenate([self.W_out_h, jnp.zeros_like(self.W_out_h)], axis=1)

    def init_state(self) -> State:
        return jnp.zeros((self.n_rec,), self.W_h.dtype)

    def recurrent_weights(self) -> Float[Array, "4H H"]:
        """W_h: the hidden-to-hidden weights of the four gates [i; f; g; o], stacked."""
        return self.W_h

    def __call__(self, state: State, x: Input) -> State:
        H = self.hidden
        h, c = state[:H], state[H:]
        g = self.W_x @ x + self.W_h @ h + self.bias
        i, f, u, o = (g[k * H:(k + 1) * H] for k in range(4))
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return jnp.concatenate([h, c])

    def readout(self, state: State) -> Output:
        return self.W_out_h @ state[: self.hidden] + self.b_out
