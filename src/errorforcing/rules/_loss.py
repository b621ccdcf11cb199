"""The training objective (SPEC §3 and §5)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from .._types import Array, Float, Scalar
from ..models import AbstractLinearReadoutCell
from ..tasks import Trials


class Objective(eqx.Module):
    """L = Σ_{b,t,k} m (y - y*)² / Σ m  +  rate_reg · mean(h̃²)  +  readout_reg · R(W_out)

    with R from `readout_penalty`: (1 - ‖W_out‖)² for one output, the condition-number penalty
    (1 - s_max / (s_min + 1e-8))² for several. Reference values: rate_reg = 1e-5 over the forced
    states, readout_reg = 1e-6. `noise_std` is the process noise σ added to the state during training rollouts.
    Trials may carry `info["weight"]` (0 for padding trials), which removes them from the loss.
    """

    rate_reg: float = 1e-5
    readout_reg: float = 1e-6
    noise_std: float = 0.0

    def __call__(self, cell, states: Float[Array, "B T N"], outputs: Float[Array, "B T n_out"],
                 trials: Trials) -> Scalar:
        loss = masked_mse(outputs, trials.targets, trials.mask)
        if self.rate_reg:
            per_trial = jnp.mean(states**2, axis=(1, 2))
            w = trial_weights(trials)
            loss = loss + self.rate_reg * jnp.sum(w * per_trial) / jnp.maximum(jnp.sum(w), 1.0)
        if self.readout_reg and isinstance(cell, AbstractLinearReadoutCell):
            loss = loss + self.readout_reg * readout_penalty(cell.W_out)
        return loss


def readout_penalty(W_out: Float[Array, "n_out N"]) -> Scalar:
    """R(W_out) of the Error Forcing reference code (its `svd_ratio_loss`), by output count:

        n_out = 1:  R = (1 - ‖W_out‖)²
        n_out > 1:  R = (1 - s_max / (s_min + 1e-8))²,   s the singular values of W_out

    The singular values come from the eigenvalues of the smaller Gram matrix (s² = λ(W Wᵀ)):
    XLA's CPU SVD has hung under concurrent ensemble shards, its symmetric eigensolver has not.
    """
    n_out, N = W_out.shape
    if n_out == 1:
        return (1.0 - jnp.linalg.norm(W_out)) ** 2
    gram = W_out @ W_out.T if n_out <= N else W_out.T @ W_out
    s = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram), 0.0))  # ascending
    return (1.0 - s[-1] / (s[0] + 1e-8)) ** 2


def masked_mse(outputs, targets, mask) -> Scalar:
    """Σ m (y - y*)² / Σ m over everything (batch, time, outputs)."""
    return jnp.sum(mask * (outputs - targets) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)


def trial_weights(trials: Trials) -> Float[Array, " B"]:
    w = trials.info.get("weight") if isinstance(trials.info, dict) else None
    return jnp.ones(trials.inputs.shape[0], trials.inputs.dtype) if w is None else w


def sign_correct(outputs, targets, mask) -> Float[Array, " B"]:
    """1 per trial where sign(y) == sign(y*) on every supervised step ("no errors" criterion)."""
    wrong = (mask > 0) & (jnp.sign(outputs) != jnp.sign(targets))
    return 1.0 - jnp.any(wrong, axis=(-2, -1)).astype(outputs.dtype)
