"""Network dynamics inside training: gradient flossing, members' Lyapunov exponents, the test
loss after training and the adaptive forcing strength (SPEC §2, §6).

Functions of one member (one cell, one key); the trainer `vmap`s and `jit`s them. Every
random draw comes from the member's `analysis_key`, itself derived from its seed alone.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Float, Key
from ..analysis import (DEFAULT_ALPHA_ESTIMATOR, AdaptiveAlpha, alpha_from_growth, floss, growth_estimate,
                        jacobian_norms, jacobian_upper_bound, jacobians, lyapunov_spectrum, update_alpha)
from ..forcing import AbstractForcing, NoForcing, simulate
from ..models import AbstractCell
from ..tasks import AbstractTask, Trials, sample_batch

# Adaptive α estimates ‖J‖ only on the batches where α changes (every ADAPTIVE_EVERY-th), on a
# subsample: the first ADAPTIVE_TRIALS trials at ADAPTIVE_STEPS evenly spaced steps. ‖J‖ is a
# geometric mean over time (a smooth average), so a few dozen steps give it to a few per cent;
# each step costs an N × N SVD, which over a whole batch would cost more than the batch itself.
ADAPTIVE_EVERY = 5
ADAPTIVE_TRIALS = 8
ADAPTIVE_STEPS = 32


@dataclasses.dataclass(frozen=True)
class Flossing:
    """Gradient flossing during training (Engelken 2024; Liu et al.): Adam (learning rate
    `lr`) on L = mean_i (λ_i − target)² over the k leading exponents, `trials` fresh task
    trials per iteration. `pre` iterations before epoch 1; `steps` iterations after every
    `every`-th epoch (0: never). `local=True` detaches the state (Liu et al.)."""

    pre: int = 0
    every: int = 0
    steps: int = 10
    k: int = 1
    lr: float = 1e-3
    local: bool = False
    target: float = 0.0
    trials: int = 8

    def __post_init__(self):
        if min(self.pre, self.every) < 0 or self.steps < 1 or self.k < 1 or self.trials < 1 or self.lr <= 0:
            raise ValueError(f"invalid flossing settings: {self}")

    @property
    def enabled(self) -> bool:
        return self.pre > 0 or self.every > 0


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What the trainer measures beyond the loss (all off: no extra work at all).

    `lyapunov`: λ_max of every member before epoch 1 (after pre-flossing) and after the last
    epoch, on `lyapunov_trials` task trials (`task_lyapunov`, k = 1). `diagnostics`: the
    per-epoch curves of `dynamics_diagnostics`."""

    lyapunov: bool = False
    lyapunov_trials: int = 8
    diagnostics: bool = False


def analysis_key(seed: int) -> Key:
    """The member's key for flossing inputs, Lyapunov and test trials: fold_in(key(seed), 3),
    beside the init (0), data (1) and noise (2) keys of `member_keys`. Its streams: 0
    pre-flossing, 1 inter-flossing (then folded with the epoch), 2 Lyapunov exponents, 3 the
    test trials of the test loss after training."""
    return jax.random.fold_in(jax.random.key(seed), 3)


PRE_FLOSS, INTER_FLOSS, LYAPUNOV, TEST_LOSS = 0, 1, 2, 3


def analysis_streams(analysis_keys: Key, stream: int, epoch: int | None = None) -> Key:
    """Every member's key of analysis stream `stream` (folded with `epoch` if given), from the
    members' `analysis_key`s [M]."""
    keys = jax.vmap(lambda k: jax.random.fold_in(k, stream))(analysis_keys)
    return keys if epoch is None else jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys)


def evaluation_key(seed: int) -> Key:
    """The key of a member's test trials: fold_in(analysis_key(seed), 3), split from its
    training and validation trials (those come from the data key, fold_in(key(seed), 1))."""
    return jax.random.fold_in(analysis_key(seed), TEST_LOSS)


def lyapunov_key(seed: int) -> Key:
    """The key of a member's Lyapunov trials and bases (before and after training alike)."""
    return jax.random.fold_in(analysis_key(seed), LYAPUNOV)


def transient_steps(task: AbstractTask) -> int:
    """Steps left out of Lyapunov estimates: the first T/5, while the state leaves h = 0."""
    return task.n_steps // 5


def task_lyapunov(cell: AbstractCell, task: AbstractTask, k: int, *, key: Key,
                  trials: int = 8) -> Float[Array, " k"]:
    """The k leading Lyapunov exponents (per step) of the *unforced* network driven by task
    inputs, from h = 0, after a transient of T/5 steps; the mean over `trials` trials
    (each with its own random initial basis)."""
    k_data, k_basis = jax.random.split(key)
    inputs = sample_batch(task, trials, key=k_data).inputs
    lam = lyapunov_spectrum(cell, inputs, k, key=k_basis, transient=transient_steps(task))
    return jnp.mean(lam, axis=0)


def held_out_loss(cell: AbstractCell, task: AbstractTask, trials: int, *, key: Key) -> Float[Array, ""]:
    """The test loss of the reference code: the unforced masked MSE, Σ m (y − y*)² / Σ m, of
    `cell` on `trials` fresh trials from the task's validation source, from h = 0, no noise
    (`task.held_out_error`: a task may judge otherwise, e.g. `Oscillation` up to phase).
    The trainer evaluates it once after training, with the member's `evaluation_key`."""
    test = sample_batch(task.validation_source(), trials, key=key)
    _, outputs = simulate(cell, test, NoForcing())
    return task.held_out_error(outputs, test)


def floss_cell(cell: AbstractCell, task: AbstractTask, flossing: Flossing, steps: int, *,
               key: Key) -> tuple[AbstractCell, Float[Array, " steps"]]:
    """`steps` flossing iterations on fresh task inputs (`analysis.floss`); returns the cell and
    the loss history."""
    draw = lambda k: sample_batch(task, flossing.trials, key=k).inputs  # noqa: E731
    return floss(cell, draw, steps=steps, lr=flossing.lr, k=flossing.k, key=key, target=flossing.target,
                 local=flossing.local, transient=transient_steps(task))


def forced_jacobian_norms(cell: AbstractCell, forcing: AbstractForcing, batch: Trials, *,
                          trials: int = ADAPTIVE_TRIALS, steps: int = ADAPTIVE_STEPS) -> Float[Array, "b S"]:
    """‖J_t‖₂ = ‖∂cell(h̃_{t−1}, x_t)/∂h̃_{t−1}‖₂ along the batch's forced trajectory (no process
    noise), on its first `trials` trials at `steps` evenly spaced steps. Padding trials
    (weight 0) get ‖J‖ = 1, which can never raise α* = max(0, 1 − 1/‖J‖) above the real ones'."""
    sub = jax.tree_util.tree_map(lambda a: a[:trials], batch)
    states, _ = simulate(cell, sub, forcing)
    norms = jax.vmap(lambda h, x: sampled_jacobian_norms(cell, h, x, steps))(states, sub.inputs)
    real = sub.info["weight"] > 0 if "weight" in sub.info else jnp.ones(norms.shape[0], bool)
    return jnp.where(real[:, None], norms, 1.0)


def sampled_jacobian_norms(cell: AbstractCell, states: Float[Array, "T N"], inputs: Float[Array, "T n_in"],
                           steps: int) -> Float[Array, " S"]:
    """`jacobian_norms` of one trajectory at `steps` evenly spaced steps (all if T <= steps)."""
    n_steps = states.shape[0]
    n = min(steps, n_steps)
    idx = np.arange(n) * n_steps // n
    prev = jnp.concatenate([cell.init_state()[None], states[:-1]])[idx]
    # T = 1 trajectories that start at h̃_{t−1}: `jacobian_norms` evaluates J_t there
    return jax.vmap(lambda h, x: jacobian_norms(cell, h[None], x[None], h0=h)[0])(prev, inputs[idx])


def forced_jacobians(cell: AbstractCell, forcing: AbstractForcing, batch: Trials, *,
                     trials: int = ADAPTIVE_TRIALS, steps: int = ADAPTIVE_STEPS) -> Float[Array, "b S N N"]:
    """The Jacobians J_t = ∂cell(h̃_{t−1}, x_t)/∂h̃_{t−1} themselves, at the steps and trials of
    `forced_jacobian_norms`; padding trials (weight 0) get J = I, which no estimator can turn
    into α* > 0."""
    sub = jax.tree_util.tree_map(lambda a: a[:trials], batch)
    states, _ = simulate(cell, sub, forcing)
    n_steps = states.shape[1]
    n = min(steps, n_steps)
    idx = np.arange(n) * n_steps // n

    def one(h, x):
        prev = jnp.concatenate([cell.init_state()[None], h[:-1]])[idx]
        return jax.vmap(lambda hp, xt: jacobians(cell, hp[None], xt[None], h0=hp)[0])(prev, x[idx])

    jac = jax.vmap(one)(states, sub.inputs)
    real = sub.info["weight"] > 0 if "weight" in sub.info else jnp.ones(jac.shape[0], bool)
    eye = jnp.eye(jac.shape[-1], dtype=jac.dtype)
    return jnp.where(real[:, None, None, None], jac, eye)


def estimated_alpha(cell: AbstractCell, forcing: AbstractForcing, batch: Trials,
                    estimator: str = DEFAULT_ALPHA_ESTIMATOR) -> Float[Array, ""]:
    """α* = max(0, 1 − 1/𝒩) with 𝒩 from the named estimator (`analysis.growth_estimate`,
    `analysis.jacobian_upper_bound`) on this batch's forced trajectory."""
    if estimator == "product-upper-bound":  # from the norms alone, as before the other estimators
        return alpha_from_growth(jnp.exp(jnp.max(jnp.mean(jnp.log(forced_jacobian_norms(cell, forcing, batch)), -1))))
    if estimator == "jacobian-upper-bound":
        return alpha_from_growth(jacobian_upper_bound(cell))
    return alpha_from_growth(growth_estimate(forced_jacobians(cell, forcing, batch), estimator))


def adapt_alpha(forcing: AbstractForcing, cell: AbstractCell, batch: Trials, batches_seen,
                estimator: str | bool = DEFAULT_ALPHA_ESTIMATOR) -> Float[Array, ""]:
    """The forcing strength after one more batch (Hess et al. 2023; `analysis.AdaptiveAlpha`).

    On every ADAPTIVE_EVERY-th batch since training began (`batches_seen` counts the earlier
    ones): α ← α* if α* > α else 0.999 α + 0.001 α*, with

        α* = max(0, 1 − 1/𝒩),   𝒩 = max_b exp(mean_t log ‖J_bt‖₂)   (the default estimator)

    and J_bt the cell step's Jacobian along this batch's forced trajectory
    (`forced_jacobian_norms`): forcing with α scales it by (1 − α), so α* is the least forcing
    that keeps the forced map from expanding. `estimator` names another 𝒩 of GTF
    (`analysis.ALPHA_ESTIMATORS`, formulas in `analysis.growth_estimate`; True means the
    default). 𝒩 is computed only on those batches (when the count is not vmapped; under vmap
    `cond` evaluates both branches)."""
    estimator = DEFAULT_ALPHA_ESTIMATOR if estimator is True else estimator
    state = AdaptiveAlpha(jnp.asarray(forcing.alpha), jnp.asarray(batches_seen, jnp.int32))

    def update(_):
        if estimator == DEFAULT_ALPHA_ESTIMATOR:  # the original program, unchanged
            return state.update(forced_jacobian_norms(cell, forcing, batch), every=ADAPTIVE_EVERY).alpha
        star = estimated_alpha(cell, forcing, batch, estimator).astype(state.alpha.dtype)
        return update_alpha(state.alpha, star)

    return jax.lax.cond((state.count + 1) % ADAPTIVE_EVERY == 0, update, lambda _: state.alpha, None)
