"""The leaky rate RNN of the Error Forcing reference code (SPEC §1.1)."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Input, Key, Output, State
from ._base import ACTIVATIONS, AbstractLinearReadoutCell

# what the rules' hand-written leaky-RNN paths compute in closed form instead of calling
_FAST_PATH_METHODS = {"__call__", "phi", "readout", "init_state", "recurrent_weights", "recurrent_weights_grad",
                      "mask_grads", "n_rec"}

DEFAULT_TRAINABLE = ("W_rec", "b", "W_out", "b_out")


class LeakyRNN(AbstractLinearReadoutCell):
    """Leaky rate RNN with a linear readout.

        h_t = (1 - a) h_{t-1} + a (W_rec φ(h_{t-1}) + W_in x_t + b),    a = dt / τ
        y_t = W_out h_t + b_out          readout = "state" (default, Error Forcing code)
        y_t = W_out φ(h_t) + b_out       readout = "rate"  (Liu et al.; Kaleb et al.)

    Initialisation (reference defaults): W_rec ~ N(0, g²/(p N)) on a random fraction p of
    connections (p = 1: dense), W_in ~ N(0, 1), W_out ~ N(0, 1/N²), b = 0, b_out = 0.
    W_in does not train by default. `W_rec` holds the effective (already masked) weights;
    `rec_mask` keeps absent connections at zero during learning.

    Dale's law (`excitatory=f`, e.g. 0.8): the first round(f N) units are excitatory, the rest
    inhibitory, and every unit's outgoing weights have its sign. The field `W_rec` is then the
    underlying parameter V and the dynamics use

        W = |V| diag(σ),   σ_j = +1 (j < f N), -1 otherwise        (`recurrent_weights()`)

    so the constraint holds after any update of V (optax, online rules), and every rule's
    gradient and trace is taken with respect to V. Initialisation (balanced E/I, after Rajan &
    Abbott 2006): |V_ij| = s_j |ξ_ij| (ξ ~ N(0, 1), on the p N² present connections) with
    column scales s_I = s_E f / (1 - f), so excitation and inhibition cancel on average; each
    row's inhibitory weights are then rescaled so that Σ_j W_ij = 0 exactly (Rajan & Abbott's
    balance condition, which removes the outlier eigenvalue of the mean), and s_E is chosen so
    that the bulk radius √(N Σ_groups f_k Var(W_ij | k)) is g:
    s_E² = g² (1 - f) / (N (p - 2p²/π) f). The spectral radius is then ≈ g, as for the
    unconstrained network.

    Arguments:
        n_in: input size.
        n_rec: number of recurrent units N (the state h is [N]).
        n_out: output size.
        key: the key of the initialisation.
        gain: g, the scale of the initial recurrent weights.
        tau: the time constant τ (a = dt / τ).
        dt: the time step.
        activation: φ, one of `ACTIVATIONS` ("tanh", "relu", "softplus", "identity", "logistic").
        readout: "state" (y = W_out h + b_out) or "rate" (y = W_out φ(h) + b_out).
        density: p, the fraction of recurrent connections present.
        trainable: the fields that learn (W_in does not by default).
        excitatory: f, the excitatory fraction under Dale's law (None: unconstrained).
        dtype: the parameters' float dtype (default: JAX's default float).

    Calling `cell(h, x)` maps h [N] and x [n_in] to the next state [N]; `cell.readout(h)`
    gives y [n_out].
    """

    W_rec: Float[Array, "N N"]
    W_in: Float[Array, "N n_in"]
    b: Float[Array, " N"]
    W_out: Float[Array, "n_out N"]
    b_out: Float[Array, " n_out"]
    rec_mask: Float[Array, "N N"] | None
    dale_sign: Float[Array, " N"] | None  # σ under Dale's law (None: unconstrained)
    leak: float = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    readout_mode: str = eqx.field(static=True)
    trainable: tuple[str, ...] = eqx.field(static=True)
    leaky_dynamics: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        # the hand-written BPTT/RTRL hard-code these methods: a subclass that overrides one has
        # other dynamics, unless it says otherwise by declaring `leaky_dynamics` itself
        super().__init_subclass__(**kwargs)
        if "leaky_dynamics" not in cls.__dict__ and _FAST_PATH_METHODS & set(cls.__dict__):
            cls.leaky_dynamics = False

    def __init__(
        self,
        n_in: int,
        n_rec: int,
        n_out: int,
        *,
        key: Key,
        gain: float = 1.5,
        tau: float = 10.0,
        dt: float = 1.0,
        activation: str = "tanh",
        readout: str = "state",
        density: float = 1.0,
        trainable: tuple[str, ...] = DEFAULT_TRAINABLE,
        excitatory: float | None = None,
        dtype=None,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if readout not in ("state", "rate"):
            raise ValueError(f"readout must be 'state' or 'rate', got {readout!r}")
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if not 0.0 < dt <= tau:
            raise ValueError(f"need 0 < dt <= tau, got dt={dt}, tau={tau}")
        if excitatory is not None and not 0.0 < excitatory < 1.0:
            raise ValueError(f"excitatory (the fraction of excitatory units) must be in (0, 1), got {excitatory}")
        unknown = set(trainable) - {"W_rec", "W_in", "b", "W_out", "b_out"}
        if unknown:
            raise ValueError(f"trainable has unknown fields {sorted(unknown)}")
        dtype = dtype or jnp.zeros(()).dtype
        k_rec, k_in, k_out, k_mask = jax.random.split(key, 4)
        w_rec = gain / math.sqrt(density * n_rec) * jax.random.normal(k_rec, (n_rec, n_rec), dtype)
        if density < 1.0:
            mask = jax.random.bernoulli(k_mask, density, (n_rec, n_rec)).astype(dtype)
            self.rec_mask = mask
            w_rec = w_rec * mask
        else:
            self.rec_mask = None
        if excitatory is None:
            self.dale_sign = None
        else:
            w_rec, self.dale_sign = _balanced_dale_init(k_rec, n_rec, gain, density, excitatory, self.rec_mask, dtype)
        self.W_rec = w_rec
        self.W_in = jax.random.normal(k_in, (n_rec, n_in), dtype)
        self.b = jnp.zeros((n_rec,), dtype)
        self.W_out = jax.random.normal(k_out, (n_out, n_rec), dtype) / n_rec
        self.b_out = jnp.zeros((n_out,), dtype)
        self.leak = dt / tau
        self.activation = activation
        self.readout_mode = readout
        self.trainable = tuple(trainable)

    @property
    def n_rec(self) -> int:
        return self.W_rec.shape[0]

    def phi(self, h):
        return ACTIVATIONS[self.activation](h)

    def init_state(self) -> State:
        return jnp.zeros((self.n_rec,), self.W_rec.dtype)

    def recurrent_weights(self) -> Float[Array, "N N"]:
        """The effective recurrent matrix of the dynamics: W_rec, or |W_rec| diag(σ) under Dale's law."""
        if self.dale_sign is None:
            return self.W_rec
        return jnp.abs(self.W_rec) * self.dale_sign[None, :]

    def recurrent_weights_grad(self, grad: Float[Array, "N N"]) -> Float[Array, "N N"]:
        """∂L/∂W_rec (the stored parameter) from ∂L/∂W of the effective matrix: the pullback
        through `recurrent_weights()` (the identity without Dale's law)."""
        if self.dale_sign is None:
            return grad
        return grad * jnp.sign(self.W_rec) * self.dale_sign[None, :]

    def __call__(self, h: State, x: Input) -> State:
        a = self.leak
        return (1 - a) * h + a * (self.recurrent_weights() @ self.phi(h) + self.W_in @ x + self.b)

    def mask_grads(self, grads: "LeakyRNN") -> "LeakyRNN":
        grads = super().mask_grads(grads)
        if self.rec_mask is None:
            return grads
        return eqx.tree_at(lambda g: g.W_rec, grads, grads.W_rec * self.rec_mask)

    def readout(self, h: State) -> Output:
        r = h if self.readout_mode == "state" else self.phi(h)
        return self.W_out @ r + self.b_out


def _balanced_dale_init(key, n: int, gain: float, density: float, excitatory: float, mask, dtype):
    """(V ≥ 0, σ): the balanced E/I initialisation of the class docstring."""
    n_exc = int(round(excitatory * n))
    if not 0 < n_exc < n:
        raise ValueError(f"excitatory={excitatory} leaves no excitatory or no inhibitory unit among {n}")
    f = n_exc / n
    sign = jnp.where(jnp.arange(n) < n_exc, 1.0, -1.0).astype(dtype)
    s_exc = gain * math.sqrt((1 - f) / (n * (density - 2 * density**2 / math.pi) * f))
    scale = jnp.where(sign > 0, s_exc, s_exc * f / (1 - f)).astype(dtype)
    V = jnp.abs(jax.random.normal(key, (n, n), dtype)) * scale[None, :]
    if mask is not None:
        V = V * mask
    exc_sum = jnp.sum(jnp.where(sign > 0, V, 0), axis=1, keepdims=True)
    inh_sum = jnp.sum(jnp.where(sign < 0, V, 0), axis=1, keepdims=True)
    V = jnp.where(sign[None, :] < 0, V * exc_sum / jnp.maximum(inh_sum, jnp.finfo(dtype).tiny), V)
    return V, sign
