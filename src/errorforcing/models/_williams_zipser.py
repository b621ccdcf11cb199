"""The fully recurrent network of Williams & Zipser (1989) (SPEC §1.2)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Input, Key, Output, State
from ._base import ACTIVATIONS, AbstractCell


class WilliamsZipserNet(AbstractCell):
    """n fully connected units, each seeing every input line, a bias line and every unit:

        z(t) = [x(t); 1; y(t)],    s_k(t) = Σ_l w_kl z_l(t),    y_k(t+1) = f(s_k(t))   (eqs. 2.1-2.3)

    with f the logistic function. There is no separate readout: the first `n_out` units are
    the output units (`readout(h) = h[:n_out]`), so forcing acts on units, not through W⁺
    (`forcing_geometry = "units"`). In this package's step convention h_t = cell(h̃_{t-1}, x_t),
    the input given at step t is the one Williams & Zipser index t - 1. The state starts at 0.
    Initial weights are small: w_kl ~ U(-init_scale, init_scale).
    """

    W: Float[Array, "n n_in+1+n"]
    n_out: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    trainable: tuple[str, ...] = eqx.field(static=True)
    forcing_geometry: ClassVar[str] = "units"

    def __init__(self, n_in: int, n_rec: int, n_out: int, *, key: Key, init_scale: float = 0.1,
                 activation: str = "logistic", trainable: tuple[str, ...] = ("W",), dtype=None):
        if not 1 <= n_out <= n_rec:
            raise ValueError(f"need 1 <= n_out <= n_rec, got n_out={n_out}, n_rec={n_rec}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if set(trainable) - {"W"}:
            raise ValueError(f"trainable may only name 'W', got {trainable}")
        dtype = dtype or jnp.zeros(()).dtype
        self.W = jax.random.uniform(key, (n_rec, n_in + 1 + n_rec), dtype, -init_scale, init_scale)
        self.n_out = n_out
        self.activation = activation
        self.trainable = tuple(trainable)

    @property
    def n_rec(self) -> int:
        return self.W.shape[0]

    @property
    def n_in(self) -> int:
        return self.W.shape[1] - 1 - self.W.shape[0]

    def recurrent_weights(self) -> Float[Array, "n n"]:
        """The unit-to-unit block of W (columns of the units' own outputs y(t))."""
        return self.W[:, self.n_in + 1:]

    def init_state(self) -> State:
        return jnp.zeros((self.n_rec,), self.W.dtype)

    def __call__(self, h: State, x: Input) -> State:
        z = jnp.concatenate([x, jnp.ones((1,), h.dtype), h])
        return ACTIVATIONS[self.activation](self.W @ z)

    def readout(self, h: State) -> Output:
        return h[: self.n_out]
