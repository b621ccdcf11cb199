"""Bio-plausible error forcing: the correction arrives through feedback weights F (SPEC §2, §3)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Key, Scalar
from ..models import AbstractCell, AbstractLinearReadoutCell
from ..tasks import Trials
from ._base import AbstractAdditiveForcing, AbstractForcing, readout_pinv, require_linear_readout
from ._forcings import _check_alpha


class FeedbackForcing(AbstractAdditiveForcing):
    """Error forcing through feedback synapses F instead of the readout's pseudoinverse W⁺
    (EF paper, "bio-plausible EF"):

        h̃_t = h_t + c_t sg(F e_t),    e_t = (y*_t - y_t) ⊙ m_t,    F: N × n_out

    F is fixed (`learn=False`; build a random one with `FeedbackForcing.random`) or learned
    with a local rule (`learn=True`), applied by `update` / `feedback_update` once per batch:

        F ← F + η [ Σ_{b,t} r_t e_tᵀ / Σ m  -  λ F ]      (η = `lr`, λ = `decay`)

    where r_t is what the readout multiplies (h_t, or φ(h_t) for a "rate" readout) before
    forcing. The rule is the transpose of the readout's own delta rule (ΔW_out ∝ e rᵀ): the
    synapse F_ik sees only the error e_k it carries and the activity r_i of the unit it drives
    (Hebbian, error × rate), never W_out or W⁺. Because F and W_outᵀ are driven by the same
    products, F turns toward the decoder as W_out learns, and with decay λ > 0 the part of F
    that is not driven is forgotten (as in Kolen & Pollack's weight mirroring). Report the
    alignment with `forcing_alignment` (cos(F, W⁺)) and `decoder_alignment` (cos(F, W_outᵀ)).

    `causal=True` forces with the previous step's error gated by the current mask,
    h̃_t = h_t + c_t sg(F e_{t-1}), as for `ErrorForcing`.
    """

    F: Float[Array, "N n_out"]
    alpha: float | jax.Array
    learn: bool = eqx.field(static=True)
    causal: bool = eqx.field(static=True)
    stop_gradient: bool = eqx.field(static=True)
    lr: float | jax.Array
    decay: float | jax.Array

    def __init__(self, F: Float[Array, "N n_out"], alpha: float | jax.Array = 0.5, *, learn: bool = False,
                 causal: bool = False, stop_gradient: bool = True, lr: float | jax.Array = 1e-3,
                 decay: float | jax.Array = 0.0):
        self.F = F
        self.alpha = alpha
        self.learn = learn
        self.causal = causal
        self.stop_gradient = stop_gradient
        self.lr = lr
        self.decay = decay

    def __check_init__(self):
        _check_alpha("FeedbackForcing", self.alpha)
        if jnp.ndim(self.F) != 2:
            raise ValueError(f"FeedbackForcing.F must be a matrix N × n_out, got shape {jnp.shape(self.F)}")

    @classmethod
    def random(cls, cell: AbstractCell, *, key: Key, alpha: float | jax.Array = 0.5, eps: float = 1e-7,
               **kwargs) -> "FeedbackForcing":
        """F with i.i.d. Gaussian entries, scaled to the Frobenius norm of the cell's W⁺, so the
        correction has the size error forcing would give (for `LeakyRNN`'s default init the
        entries are ≈ N(0, 1))."""
        if not isinstance(cell, AbstractLinearReadoutCell):
            raise TypeError(f"FeedbackForcing needs a cell with a linear readout W_out; {type(cell).__name__} has none")
        pinv = readout_pinv(cell.W_out, eps)
        F = jax.random.normal(key, pinv.shape, pinv.dtype)
        F = F * jnp.linalg.norm(pinv) / jnp.linalg.norm(F)
        return cls(F, alpha, **kwargs)

    def gain(self, cell) -> Float[Array, "N n_out"]:
        return self.F

    def diagnostics(self, cell: AbstractCell) -> dict[str, Scalar]:
        """cos(F, W⁺) and cos(F, W_outᵀ) (EF paper, bio-plausible EF)."""
        return {"cos_F_Wpinv": forcing_alignment(self, cell), "cos_F_Wout": decoder_alignment(self, cell)}

    def update(self, cell: AbstractCell, trials: Trials) -> "FeedbackForcing":
        """One step of F's local rule over a batch of trials, on the forced (training)
        trajectory without process noise. A fixed F (`learn=False`) is returned unchanged."""
        if not self.learn:
            return self
        require_linear_readout(cell, self)
        hebb = jax.vmap(lambda x, y, m: _error_activity(self, cell, x, y, m))(
            trials.inputs, trials.targets, trials.mask)
        hebb = jnp.sum(hebb, axis=0) / jnp.maximum(jnp.sum(trials.mask), 1.0)
        F = self.F + self.lr * (hebb - self.decay * self.F)
        return eqx.tree_at(lambda f: f.F, self, F)


def _error_activity(forcing: AbstractForcing, cell: AbstractCell, inputs, targets, mask) -> Float[Array, "N n_out"]:
    """Σ_t r_t e_tᵀ over one forced trial."""

    def readout_with(W_out, h):
        return eqx.tree_at(lambda c: c.W_out, cell, W_out).readout(h)

    def step(state, xs):
        h_prev, fcarry, acc = state
        x, target, m = xs
        h = cell(h_prev, x)
        y = cell.readout(h)
        e = (target - y) * m
        # e rᵀ is the readout's cotangent for W_out given output cotangent e, whatever r is
        _, pullback = jax.vjp(lambda W: readout_with(W, h), cell.W_out)
        (e_r,) = pullback(e)
        h_forced, fcarry = forcing(h, y, target, m, cell, fcarry)
        return (h_forced, fcarry, acc + e_r.T), None

    acc0 = jnp.zeros(cell.W_out.shape[::-1], cell.W_out.dtype)
    (_, _, acc), _ = jax.lax.scan(step, (cell.init_state(), forcing.init(cell), acc0), (inputs, targets, mask))
    return acc


def feedback_update(forcing: AbstractForcing, cell: AbstractCell, trials: Trials) -> AbstractForcing:
    """`forcing.update(cell, trials)` for a learned `FeedbackForcing`; any other forcing is
    returned as it is, so a trainer can call this once per batch unconditionally."""
    if isinstance(forcing, FeedbackForcing):
        return forcing.update(cell, trials)
    return forcing


def alignment(a: Array, b: Array) -> Scalar:
    """Cosine similarity of two arrays flattened: ⟨a, b⟩ / (‖a‖ ‖b‖); NaN if either is zero."""
    a, b = jnp.ravel(a), jnp.ravel(b)
    norms = jnp.linalg.norm(a) * jnp.linalg.norm(b)
    return jnp.where(norms > 0, jnp.vdot(a, b) / jnp.where(norms > 0, norms, 1.0), jnp.nan)


def forcing_alignment(forcing: FeedbackForcing, cell: AbstractCell, eps: float = 1e-7) -> Scalar:
    """cos(F, W⁺): how close the feedback correction is to error forcing's."""
    return alignment(forcing.F, readout_pinv(cell.W_out, eps))


def decoder_alignment(forcing: FeedbackForcing, cell: AbstractCell) -> Scalar:
    """cos(F, W_outᵀ): how far the decoder and the feedback synapses agree."""
    return alignment(forcing.F, cell.W_out.T)
