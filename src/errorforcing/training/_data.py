"""What one ensemble member trains on: its keys, its fixed data set, each epoch's batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..rules import AbstractLearningRule, Objective
from ..tasks import AbstractTask, Trials, sample_batch


def member_keys(seed: int):
    """init, data and noise keys of a member, all derived from its seed alone (so members that
    differ only in α or lr start from the same network and see the same trials)."""
    base = jax.random.key(seed)
    return jax.random.fold_in(base, 0), jax.random.fold_in(base, 1), jax.random.fold_in(base, 2)


def fixed_dataset(task: AbstractTask, schedule, data_key) -> Trials:
    """The member's data set: `schedule.dataset_size` trials, the first `n_val` (the held-out
    part) drawn from the task's validation source. For a task that is its own source both
    draws are one and the same."""
    size, key = schedule.dataset_size, jax.random.fold_in(data_key, 0)  # epochs use 1, 2, ...
    trials = sample_batch(task, size, key=key)
    held_out = sample_batch(task.validation_source(), size, key=key)
    n_val = schedule.n_val
    return jax.tree_util.tree_map(lambda t, v: t.at[:n_val].set(v[:n_val]), trials, held_out)


def epoch_data(task: AbstractTask, schedule, data_key, epoch, fixed: Trials | None) -> tuple[Trials, Trials]:
    """The epoch's training batches [n_batches, batch_size, ...] and validation trials: fresh
    draws from fold_in(data_key, epoch), or (`fixed`) the held-out part and a reshuffle of the rest."""
    s = schedule
    k_train, k_val = jax.random.split(jax.random.fold_in(data_key, epoch))
    if fixed is None:
        train = sample_batch(task, s.n_train, key=k_train)
        val = sample_batch(task.validation_source(), s.n_val, key=k_val)
    else:
        val = jax.tree_util.tree_map(lambda x: x[: s.n_val], fixed)
        order = jax.random.permutation(k_train, s.n_train) + s.n_val
        train = jax.tree_util.tree_map(lambda x: x[order], fixed)
    return pad_into_batches(train, s.n_batches, s.batch_size), val


def batch_keys(noise_key, epoch, n_batches: int) -> jax.Array:
    """The noise key of each batch of the epoch: split(fold_in(noise_key, epoch), n_batches)."""
    return jax.random.split(jax.random.fold_in(noise_key, epoch), n_batches)


def pad_into_batches(trials: Trials, n_batches: int, batch_size: int) -> Trials:
    """[n, ...] trials → [n_batches, batch_size, ...], padding the last batch with weight-0,
    mask-0 trials so that every batch has one shape (one compiled step) and the padding
    neither enters the loss nor the gradient."""
    n = trials.inputs.shape[0]
    pad = n_batches * batch_size - n
    weight = jnp.ones(n, trials.inputs.dtype)

    def pad_leaf(x):
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
        return x.reshape((n_batches, batch_size) + x.shape[1:])

    info = dict(trials.info)
    info["weight"] = weight
    padded = Trials(trials.inputs, trials.targets, trials.mask, info)
    return jax.tree_util.tree_map(pad_leaf, padded)


def trims_padding(rule: AbstractLearningRule, objective: Objective) -> bool:
    """Whether an epoch may compute its padded last batch only up to its real trials
    (`Schedule.batch_sizes`): the rule's update ignores weight-0 trials (`rule.ignores_padding`)
    and any process noise gives the real trials the same draws at any batch size (JAX's
    partitionable threefry, the default, is prefix-stable along the leading axis)."""
    no_noise = isinstance(objective.noise_std, (int, float)) and objective.noise_std == 0
    return rule.ignores_padding and (no_noise or bool(jax.config.jax_threefry_partitionable))
