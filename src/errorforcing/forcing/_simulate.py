"""Forced rollouts: run a cell over a trial with a forcing method acting after each step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._types import Array, Float
from ..models import AbstractCell
from ..tasks import Trials
from ._base import AbstractForcing, NoForcing


def forced_step(cell: AbstractCell, forcing: AbstractForcing, h_prev, fcarry, x, target, mask, xi):
    """`h_t = cell(h̃_{t-1}, x_t) [+ drive_t] [+ ξ_t]`;  `y_t = readout(h_t)`;  `h̃_t = forcing(h_t, y_t, ...)`.

    drive_t = `forcing.drive(cell, m_t, carry)`: an input the forcing feeds into the step (feedback
    control), None for the others. Returns (h_t, y_t, h̃_t, forcing carry). Every rule that runs
    its own time loop uses this step, so that all of them differentiate the same trajectory.
    """
    h = cell(h_prev, x)
    drive = forcing.drive(cell, mask, fcarry)
    if drive is not None:
        h = h + drive
    if xi is not None:
        h = h + xi
    y = cell.readout(h)
    h_forced, fcarry = forcing(h, y, target, mask, cell, fcarry)
    return h, y, h_forced, fcarry


def rollout(
    cell: AbstractCell,
    forcing: AbstractForcing,
    inputs: Float[Array, "T n_in"],
    targets: Float[Array, "T n_out"],
    mask: Float[Array, "T n_out"],
    noise: Float[Array, "T N"] | None = None,
    *,
    checkpoint: bool = False,
) -> tuple[Float[Array, "T N"], Float[Array, "T n_out"]]:
    """One trial. Returns the forced states h̃_t and the outputs y_t = readout(h_t).

    h_t = cell(h̃_{t-1}, x_t) [+ noise_t];  y_t = readout(h_t);  h̃_t = forcing(h_t, y_t, ...).
    `checkpoint=True` rematerialises each step in the backward pass (memory O(T·N)).
    """
    carry0 = forcing.init(cell)

    def step(state, xs):
        h_prev, fcarry = state
        _, y, h_forced, fcarry = forced_step(cell, forcing, h_prev, fcarry, *xs)
        return (h_forced, fcarry), (h_forced, y)

    if checkpoint:
        step = jax.checkpoint(step)
    _, (states, outputs) = jax.lax.scan(step, (cell.init_state(), carry0), (inputs, targets, mask, noise))
    return states, outputs


def simulate(
    cell: AbstractCell,
    trials: Trials,
    forcing: AbstractForcing | None = None,
    *,
    noise_std: float = 0.0,
    key=None,
) -> tuple[Float[Array, "B T N"], Float[Array, "B T n_out"]]:
    """Forced rollout of a batch of trials: states [B, T, N] (after forcing), outputs [B, T, n_out].

    `forcing=None` means `NoForcing()`. Process noise σ ξ_t (ξ ~ N(0, I)) is added to h_t when
    `noise_std > 0`, which needs `key`.

    Arguments:
        cell: the network (one unbatched step, `AbstractCell`).
        trials: a batch of trials: inputs [B, T, n_in], targets and mask [B, T, n_out].
        forcing: the forcing applied after every step (None: no forcing).
        noise_std: process noise σ added to h_t at every step.
        key: the key of the noise (needed when `noise_std > 0`).

    Returns:
        (states, outputs): the forced states h̃_t [B, T, N] and the outputs y_t = readout(h_t)
        [B, T, n_out].
    """
    forcing = NoForcing() if forcing is None else forcing
    noise = process_noise(trials, cell.n_rec, noise_std, key)
    return jax.vmap(lambda x, y, m, n: rollout(cell, forcing, x, y, m, n))(
        trials.inputs, trials.targets, trials.mask, noise)


def process_noise(trials: Trials, n_rec: int, noise_std, key) -> Float[Array, "B T N"] | None:
    if isinstance(noise_std, (int, float)) and noise_std == 0:
        return None
    if key is None:
        raise ValueError("process noise needs an explicit key")
    B, T = trials.inputs.shape[:2]
    return noise_std * jax.random.normal(key, (B, T, n_rec), trials.inputs.dtype)
