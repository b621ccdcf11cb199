"""The task interface: one keyed, pure trial sampler per task."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Key


class Trials(NamedTuple):
    """One trial (or a batch of trials, with a leading batch axis).

    `mask` is 1 where the target is defined and enters the loss, 0 elsewhere.
    `info` holds the trial's latent variables (e.g. the stimulus signs), for checks and analysis.
    """

    inputs: Float[Array, "*B T n_in"]
    targets: Float[Array, "*B T n_out"]
    mask: Float[Array, "*B T n_out"]
    info: dict[str, Any]


class AbstractTask(eqx.Module):
    """A task samples one trial from a key: `sample(key=key) -> Trials` (pure, jit/vmap-able).

    Subclasses set `n_in`, `n_out`, `n_steps` and document their source.
    Class attributes: `threshold` (validation loss below which a network counts as converged,
    SPEC §5), `classification` (whether the sign of the output in the response window is
    the answer, enabling the "no errors" criterion) and `dataset_size` (the reference fixed
    data set size, 10 % of which is validation).
    """

    threshold: ClassVar[float] = 0.01
    classification: ClassVar[bool] = False
    dataset_size: ClassVar[int] = 512

    @property
    @abc.abstractmethod
    def n_in(self) -> int: ...

    @property
    @abc.abstractmethod
    def n_out(self) -> int: ...

    @property
    @abc.abstractmethod
    def n_steps(self) -> int: ...

    @abc.abstractmethod
    def sample(self, *, key: Key) -> Trials: ...

    def held_out_error(self, outputs: Float[Array, "B T n_out"], trials: Trials) -> jax.Array:
        """The validation and test error of unforced `outputs` on the batch `trials`, the number
        compared with `threshold`: the masked MSE Σ m (y − y*)² / Σ m over batch, time and outputs.
        A task that judges success otherwise overrides it (`Oscillation`: up to phase)."""
        return jnp.sum(trials.mask * (outputs - trials.targets) ** 2) / jnp.maximum(jnp.sum(trials.mask), 1.0)

    def validation_source(self) -> "AbstractTask":
        """The task validation and test trials are drawn from. A task that generates every trial
        afresh is its own source; one that samples a finite bank (`NeurogymTask`) returns a
        disjoint bank, so that held-out trials never repeat a training trial."""
        return self


def sample_batch(task: AbstractTask, batch_size: int, *, key: Key) -> Trials:
    """`batch_size` independent trials, one per split of `key`: `vmap(task.sample)(keys)`.

    Arguments:
        task: the task to sample from.
        batch_size: the number of trials B (>= 1).
        key: a JAX key; the same key gives the same batch.

    Returns:
        `Trials` with a leading batch axis: inputs [B, T, n_in], targets and mask [B, T, n_out],
        and `info` arrays [B, ...].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = jax.random.split(key, batch_size)
    return jax.vmap(lambda k: task.sample(key=k))(keys)


def window(n_steps: int, start, length) -> Float[Array, " T"]:
    """A 0/1 float vector over time that is 1 on [start, start + length)."""
    t = jnp.arange(n_steps)
    return ((t >= start) & (t < start + length)).astype(jnp.float32)
