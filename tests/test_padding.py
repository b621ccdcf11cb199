"""The padded last batch computed only up to its real trials: the rules that declare
`ignores_padding` give the padded batch's step when its padding is dropped (float64, process
noise on, through the trainer's own `make_step`), a rule that does not declare it would not; the
trainer then trims the last batch, and its run equals a hand-written loop over the padded
batches."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import errorforcing as ef
from errorforcing.rules import Objective
from errorforcing.training._step import trainable_params
from errorforcing.training import (AbstractEpochHook, EnsembleTrainer, Member, MemberState, Schedule, batch_keys,
                                   epoch_data, make_step, member_keys, pad_into_batches,
                                   trims_padding, with_clip)

OBJECTIVE = Objective(noise_std=0.05)  # the noise key draws [B, T, N]: trimming must keep the real trials' draws
TASK = ef.tasks.DelayedXOR(delay=3, pulse=2)

IGNORING = {
    "bptt": ef.rules.BPTT(),
    "bptt-autodiff": ef.rules.BPTT(fast=False),
    "tbptt": ef.rules.TruncatedBPTT(k=3),
    "eprop": ef.rules.EProp(),
    "eprop-generic": ef.rules.EProp(fast=False),
    "rflo": ef.rules.RFLO(),
    "eprop-online": ef.rules.EProp(online=True, lr=0.05),
    "rtrl": ef.rules.RTRL(),
    "rtrl-online": ef.rules.RTRL(online=True, lr=0.05),
}


def _step_on(rule, batch, key):
    cell = ef.models.LeakyRNN(TASK.n_in, 6, TASK.n_out, key=jax.random.key(0), dtype=jnp.float64)
    forcing = ef.forcing.ErrorForcing(alpha=0.5)
    update_rule = with_clip(optax.inject_hyperparams(optax.adam)(learning_rate=1e-2), None)
    opt_state = rule.online_init(cell) if rule.learns_online else update_rule.init(trainable_params(cell))
    state = MemberState(cell, opt_state, forcing, jnp.asarray(True))
    return make_step(rule, update_rule, OBJECTIVE)(state, batch, key, 0)


def _padded_and_trimmed(real: int, size: int, trimmed: int):
    trials = ef.tasks.sample_batch(TASK, real, key=jax.random.key(1))
    padded = jax.tree_util.tree_map(lambda x: x[0], pad_into_batches(trials, 1, size))
    return padded, jax.tree_util.tree_map(lambda x: x[:trimmed], padded)


@pytest.mark.parametrize("name", sorted(IGNORING))
def test_a_rule_that_ignores_padding_steps_alike_on_the_trimmed_batch(name):
    rule = IGNORING[name]
    assert rule.ignores_padding and trims_padding(rule, OBJECTIVE)
    padded, trimmed = _padded_and_trimmed(5, 16, 8)  # 5 real trials, 11 (or 3) padding
    key = jax.random.key(2)
    (full, loss_full), (short, loss_short) = _step_on(rule, padded, key), _step_on(rule, trimmed, key)
    np.testing.assert_allclose(loss_short, loss_full, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(short), jax.tree_util.tree_leaves(full)):  # cell and optimizer
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-15)
    cell0 = ef.models.LeakyRNN(TASK.n_in, 6, TASK.n_out, key=jax.random.key(0), dtype=jnp.float64)
    assert not np.allclose(full.cell.W_rec, cell0.W_rec)  # the step learned something


def test_a_rule_that_draws_per_trial_keys_does_not_ignore_padding():
    """UORO's random signs come from split(key, T·B): dropping trials changes every draw, so its
    step on the trimmed batch differs and it must not (and does not) declare `ignores_padding`."""
    rule = ef.rules.UORO()
    assert not rule.ignores_padding and not trims_padding(rule, OBJECTIVE)
    padded, trimmed = _padded_and_trimmed(5, 16, 8)
    key = jax.random.key(2)
    full, short = _step_on(rule, padded, key)[0], _step_on(rule, trimmed, key)[0]
    assert not np.allclose(full.cell.W_rec, short.cell.W_rec, rtol=1e-8, atol=0)


def test_noise_without_prefix_stable_draws_keeps_the_padding():
    previous = jax.config.jax_threefry_partitionable
    try:
        jax.config.update("jax_threefry_partitionable", False)
        assert not trims_padding(ef.rules.BPTT(), OBJECTIVE)
        assert trims_padding(ef.rules.BPTT(), Objective())  # without noise nothing is drawn per trial
    finally:
        jax.config.update("jax_threefry_partitionable", previous)


def test_batch_sizes_round_the_last_batch_up_to_sixteen_trials():
    s = Schedule(batch_size=128)  # 512 trials, 51 held out: 461 = 3 · 128 + 77
    assert s.batch_sizes(True) == (128, 128, 128, 80) and s.batch_sizes(False) == (128,) * 4
    assert Schedule(batch_size=32, train_trials=40).batch_sizes(True) == (32, 16)
    assert Schedule(batch_size=16, train_trials=40).batch_sizes(True) == (16, 16, 16)  # 8 real → 16: no trim
    assert Schedule(batch_size=64, train_trials=64).batch_sizes(True) == (64,)
    assert Schedule(batch_size=64, train_trials=3).batch_sizes(True) == (16,)  # one batch, trimmed


class _LastBatchSize(AbstractEpochHook):
    """α ← the size of the batch the step just trained on (so α after the run is the last one's)."""

    def after_batch(self, before, after, batch, index):
        size = jnp.asarray(batch.inputs.shape[0], after.forcing.alpha.dtype)
        return after._replace(forcing=eqx.tree_at(lambda f: f.alpha, after.forcing, size))


def _trainer(rule, train_trials, hooks=()):
    schedule = Schedule(epochs=2, batch_size=32, train_trials=train_trials, val_trials=8, threshold=1e-12)
    return EnsembleTrainer(TASK, lambda k: ef.models.LeakyRNN(TASK.n_in, 6, TASK.n_out, key=k, dtype=jnp.float64),
                           lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a), rule, optax.adam,
                           [Member(4, 0.5, 3e-2)], schedule, OBJECTIVE, shards=1, hooks=hooks)


@pytest.mark.parametrize("train_trials", [40, 3], ids=["last-of-two", "only-batch"])
def test_the_trainer_trims_and_equals_a_hand_loop_over_the_padded_batches(train_trials):
    rule = ef.rules.BPTT()
    trainer = _trainer(rule, train_trials)
    assert trainer.batch_sizes[-1] == 16 < trainer.schedule.batch_size
    seen = _trainer(rule, train_trials, hooks=(_LastBatchSize(),)).run()
    np.testing.assert_array_equal(np.asarray(seen.forcings.alpha), [16.0])  # the trimmed batch ran
    result = trainer.run()
    cells, forcings, opt_states, _, _ = trainer.init()
    member = lambda tree: jax.tree_util.tree_map(lambda x: x[0] if eqx.is_array(x) else x, tree)  # noqa: E731
    state = MemberState(member(cells), member(opt_states), member(forcings), jnp.asarray(True))
    step = eqx.filter_jit(make_step(rule, trainer.update_rule, OBJECTIVE))
    _, data_key, noise_key = member_keys(4)
    s = trainer.schedule
    for epoch in (1, 2):
        batches, _ = epoch_data(TASK, s, data_key, epoch, None)
        keys = batch_keys(noise_key, epoch, s.n_batches)
        losses, sizes = [], []
        for i in range(s.n_batches):
            batch = jax.tree_util.tree_map(lambda x: x[i], batches)
            assert batch.inputs.shape[0] == 32  # the hand loop steps on the padded batch
            state, loss = step(state, batch, keys[i], (epoch - 1) * s.n_batches + i)
            losses.append(float(loss))
            sizes.append(float(batch.info["weight"].sum()))
        np.testing.assert_allclose(np.dot(losses, sizes) / sum(sizes), result.train_curves[0, epoch - 1], rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(state.cell), jax.tree_util.tree_leaves(member(result.cells))):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


def test_a_rule_that_does_not_ignore_padding_trains_on_the_full_batch():
    trainer = _trainer(ef.rules.UORO(), 40, hooks=(_LastBatchSize(),))
    assert trainer.batch_sizes == (32, 32)
    np.testing.assert_array_equal(np.asarray(trainer.run().forcings.alpha), [32.0])
