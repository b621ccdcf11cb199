"""Teacher forcing, error forcing and its Kalman (stochastic) variant (SPEC §2)."""

from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float

from ._base import AbstractAdditiveForcing, AbstractTeacherForcing, readout_pinv
from ._spd_solve import spd_solve


def _check_alpha(name, alpha, upper=1.0):
    # alpha may be a traced/vmapped array inside jit; only check concrete Python numbers.
    if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= upper:
        raise ValueError(f"{name}.alpha must be in [0, {upper}], got {alpha}")


class TeacherForcing(AbstractTeacherForcing):
    """Generalized teacher forcing (Hess et al. 2023; EF paper eq. 2), on the supervised outputs:

        h̃_t = (1 - c_t) h_t + c_t W_S⁺ (s_t ⊙ (y*_t - b_out)),   c_t = α max_k m_tk
        W_S = diag(s_t) W_out,   W_S⁺ = W_Sᵀ (W_S W_Sᵀ + ε I)⁻¹,   s_t = 1[m_t > 0]

    Sparse and partial forcing (`AbstractSelectiveForcing`; GTF's `teacher_forcing_interval`
    and `partial_forcing`): with `interval = k`, c_t = α max_k m_tk · 1[t mod k = 0]; with
    `units`, only the selected units move toward the teacher state,

        h̃_t = h_t + c_t P (W_S⁺ (s_t ⊙ (y*_t - b_out)) - h_t),   P = diag(p), p_i = 1[i forced]

    so an unforced unit keeps h̃_i,t = h_i,t. For a readout that reads exactly the forced
    units (W_out = [I 0], GTF's identity observation model) this sets them to the targets and
    leaves the rest, GTF's partial forcing; for a general W_out the forced readout is not on
    target even at c_t = 1.

    The teacher state is the smallest state whose readout puts the *supervised* components on
    their targets: with c_t = 1, (W_out h̃_t + b_out)_k = y*_tk wherever m_tk > 0 (up to ε), and
    an unsupervised component's target (a placeholder) has no influence. Fully supervised steps
    give the paper's W⁺ (y*_t - b_out), W⁺ = W_outᵀ (W_out W_outᵀ + ε I)⁻¹; the mask's support,
    not its value, selects the rows, so a weighted mask weighs the loss, not the teacher.
    The teacher state's gradient flows through W_S⁺ as in the reference code;
    `stop_gradient=True` stops it.
    """

    alpha: float | jax.Array = 0.5
    eps: float = 1e-7
    stop_gradient: bool = False

    def __check_init__(self):
        _check_alpha("TeacherForcing", self.alpha)

    def teacher_coefficients(self, W_out: Float[Array, "n_out N"], b_out: Float[Array, " n_out"],
                             target: Float[Array, "*batch n_out"], mask: Float[Array, "*batch n_out"]
                             ) -> Float[Array, "*batch n_out"]:
        """v with teacher state W_S⁺ (s ⊙ (y* - b_out)) = W_outᵀ v, for any leading batch axes:
        v = s ⊙ (diag(s) W_out W_outᵀ diag(s) + ε I)⁻¹ (s ⊙ (y* - b_out)), an n_out-sized solve."""
        s = (mask > 0).astype(W_out.dtype)
        n_out = W_out.shape[0]
        gram = s[..., :, None] * (W_out @ W_out.T) * s[..., None, :] + self.eps * jnp.eye(n_out, dtype=W_out.dtype)
        rhs = s * (target - b_out)
        return s * spd_solve(gram, rhs[..., None])[..., 0]

    def gain(self, cell):
        return readout_pinv(cell.W_out, self.eps)


class ErrorForcing(AbstractAdditiveForcing):
    """Error forcing (Sağtekin, Bredenberg & Savin; EF paper eq. 4):

        h̃_t = h_t + c_t sg(W⁺ e_t),   e_t = (y*_t - y_t) ⊙ m_t,   W⁺ = W_outᵀ (W_out W_outᵀ + ε I)⁻¹

    the orthogonal projection of h_t onto the zero-error manifold when c_t = 1. The correction
    is stopped (sg) as in the reference code; `stop_gradient=False` lets gradients flow.
    """

    alpha: float | jax.Array = 0.5
    eps: float = 1e-7
    stop_gradient: bool = True
    causal: bool = False

    def __check_init__(self):
        _check_alpha("ErrorForcing", self.alpha)

    def gain(self, cell):
        return readout_pinv(cell.W_out, self.eps)


class KalmanErrorForcing(AbstractAdditiveForcing):
    """Stochastic error forcing (EF paper eq. 5), the MAP / Kalman-gain correction:

        h̃_t = h_t + c_t sg(W_outᵀ (W_out W_outᵀ + (σ_o² / σ²) I)⁻¹ e_t)

    for a network trained with process noise σ ξ_t (`process_noise`, σ > 0) whose readout is
    observed with noise σ_o (`obs_noise`). The forcing owns σ: train with
    `Objective(noise_std=forcing.process_noise)` (the trainer does). As σ_o → 0 (ratio → 0) it
    becomes ErrorForcing with α = 1.
    """

    process_noise: float
    obs_noise: float
    alpha: float | jax.Array
    stop_gradient: bool = eqx.field(static=True)
    causal: bool = eqx.field(static=True)

    def __init__(self, *, process_noise: float, obs_noise: float, alpha: float | jax.Array = 1.0,
                 stop_gradient: bool = True, causal: bool = False, interval: int = 1,
                 units: int | tuple[int, ...] | None = None):
        self.process_noise = process_noise
        self.obs_noise = obs_noise
        self.alpha = alpha
        self.stop_gradient = stop_gradient
        self.causal = causal
        self.interval = interval
        self.units = tuple(int(i) for i in units) if isinstance(units, (list, tuple)) else units

    def __check_init__(self):
        _check_alpha("KalmanErrorForcing", self.alpha)
        # like alpha, only concrete Python numbers are checked (arrays may be traced)
        if isinstance(self.process_noise, (int, float)) and not self.process_noise > 0:
            raise ValueError(f"KalmanErrorForcing.process_noise (σ) must be > 0, got {self.process_noise}")
        if isinstance(self.obs_noise, (int, float)) and not self.obs_noise >= 0:
            raise ValueError(f"KalmanErrorForcing.obs_noise (σ_o) must be >= 0, got {self.obs_noise}")

    @property
    def ratio(self) -> float:
        """σ_o² / σ², the ridge of the Kalman gain."""
        return self.obs_noise**2 / self.process_noise**2

    def gain(self, cell):
        return readout_pinv(cell.W_out, self.ratio)
