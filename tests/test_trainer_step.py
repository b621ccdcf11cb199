"""The trainer is `make_step` scanned over `_data`'s batches plus hooks: a hand-written loop of
the step equals `EnsembleTrainer.run`; hooks see the documented arguments, in order; the clip
is the hand formula; frozen weights stay bit-unchanged."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import errorforcing as ef
from errorforcing.training import (AbstractEpochHook, EnsembleTrainer, Member, MemberState, Schedule, batch_keys,
                                   clip_by_global_norm, epoch_data, make_step, member_keys, with_clip)


# float64 throughout: tests/conftest.py enables jax_enable_x64 for the suite


def _trainer(*, clip=None, optimizer=optax.adam, trainable=None, hooks=(), epochs=2, members=None):
    task = ef.tasks.DelayedXOR(delay=4, pulse=4)
    kw = {} if trainable is None else dict(trainable=trainable)
    schedule = Schedule(epochs=epochs, batch_size=16, train_trials=40, val_trials=8, threshold=1e-12,
                        clip_norm=clip)
    return EnsembleTrainer(task, lambda k: ef.models.LeakyRNN(3, 8, 1, key=k, dtype=jnp.float64, **kw),
                           lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a), ef.rules.BPTT(), optimizer,
                           members or [Member(4, 0.5, 3e-2)], schedule, shards=1, hooks=hooks)


def _member(tree, i=0):
    return jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, tree)


def test_hand_loop_of_the_step_equals_the_trainer():
    trainer = _trainer(clip=0.05)
    result = trainer.run()
    cells, forcings, opt_states, _, _ = trainer.init()
    state = MemberState(_member(cells), _member(opt_states), _member(forcings), jnp.asarray(True))
    step = eqx.filter_jit(make_step(ef.rules.BPTT(), trainer.update_rule, trainer.objective))
    _, data_key, noise_key = member_keys(4)
    s = trainer.schedule
    for epoch in (1, 2):
        batches, _ = epoch_data(trainer.task, s, data_key, epoch, None)
        keys = batch_keys(noise_key, epoch, s.n_batches)
        losses, sizes = [], []
        for i in range(s.n_batches):
            batch = jax.tree_util.tree_map(lambda x: x[i], batches)
            state, loss = step(state, batch, keys[i], (epoch - 1) * s.n_batches + i)
            losses.append(float(loss))
            sizes.append(float(batch.info["weight"].sum()))
        assert s.n_batches == 3 and sizes == [16.0, 16.0, 8.0]  # the padded last batch counts its 8 trials
        np.testing.assert_allclose(np.dot(losses, sizes) / sum(sizes), result.train_curves[0, epoch - 1], rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(state.cell), jax.tree_util.tree_leaves(_member(result.cells))):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)
    assert not np.allclose(state.cell.W_rec, _member(cells).W_rec)  # it trained


class _Add(AbstractEpochHook):
    def after_batch(self, before, after, batch, index):
        return after._replace(forcing=eqx.tree_at(lambda f: f.alpha, after.forcing, after.forcing.alpha + 1.0))


class _Double(AbstractEpochHook):
    def after_batch(self, before, after, batch, index):
        return after._replace(forcing=eqx.tree_at(lambda f: f.alpha, after.forcing, after.forcing.alpha * 2.0))


class _SetIndex(AbstractEpochHook):
    def after_batch(self, before, after, batch, index):
        return after._replace(forcing=eqx.tree_at(lambda f: f.alpha, after.forcing, jnp.asarray(index, jnp.float64)))


class _Record(AbstractEpochHook):
    """Records what it is called with, as curves."""

    def before_epoch(self, state, rule, batches, keys, objective):
        return {"weight_sum": batches.info["weight"].sum(), "n_keys": jnp.asarray(keys.shape[0], jnp.float64),
                "alpha_before": state.forcing.alpha, "W_rec_before": state.cell.W_rec.sum()}

    def after_epoch(self, state, rule):
        return {"W_rec_after": state.cell.W_rec.sum(), "alpha_after": state.forcing.alpha}


@pytest.mark.parametrize("order", [(_Add, _Double), (_Double, _Add)])
def test_hooks_fire_in_order(order):
    first, second = order
    result = _trainer(hooks=(first(), second()), epochs=2).run()
    alpha = 0.5
    for _ in range(6):  # 2 epochs × 3 batches: each step runs the first hook, then the second
        alpha = (alpha + 1.0) * 2.0 if first is _Add else alpha * 2.0 + 1.0
    np.testing.assert_array_equal(np.asarray(result.forcings.alpha), [alpha])


def test_a_custom_hook_is_called_with_the_documented_arguments():
    result = _trainer(hooks=(_SetIndex(), _Record()), epochs=2).run()
    c = result.extra_curves
    np.testing.assert_array_equal(c["weight_sum"], [[40.0, 40.0]])  # the epoch's batches, padding weighted 0
    np.testing.assert_array_equal(c["n_keys"], [[3.0, 3.0]])  # one noise key per batch
    # index = batches seen since training began: the last step of epoch 1 is batch 2, of epoch 2 batch 5
    np.testing.assert_array_equal(c["alpha_before"], [[0.5, 2.0]])
    np.testing.assert_array_equal(c["alpha_after"], [[2.0, 5.0]])
    np.testing.assert_array_equal(c["W_rec_before"][0, 1], c["W_rec_after"][0, 0])  # after_epoch: the epoch's end
    np.testing.assert_allclose(c["W_rec_after"][0, 1], np.asarray(result.cells.W_rec[0]).sum(), rtol=1e-13)


def test_clip_is_the_hand_formula():
    grads = {"a": jnp.asarray([3.0, -4.0]), "b": jnp.asarray([[12.0]])}  # global norm 13
    for c in (1.0, 13.0, 50.0):
        clipped, _ = clip_by_global_norm(c).update(grads, optax.EmptyState())
        scale = min(1.0, c / (13.0 + 1e-12))
        for k in grads:
            np.testing.assert_array_equal(clipped[k], np.asarray(grads[k]) * scale)
    # in the chain the clip comes first: sgd(1) then moves θ by −clip(g)
    chain = with_clip(optax.sgd(1.0), 1.0)
    updates, _ = chain.update(grads, chain.init(grads))
    scale = min(1.0, 1.0 / (13.0 + 1e-12))
    np.testing.assert_array_equal(updates["a"], [-3.0 * scale, 4.0 * scale])


def test_a_frozen_weight_is_bit_unchanged_by_clipped_decayed_training():
    trainer = _trainer(clip=0.01, optimizer=lambda learning_rate: optax.adamw(learning_rate, weight_decay=0.5),
                       trainable=("W_rec", "b"))
    before = trainer.init()[0]
    after = trainer.run().cells
    np.testing.assert_array_equal(after.W_out, before.W_out)
    np.testing.assert_array_equal(after.b_out, before.b_out)
    np.testing.assert_array_equal(after.W_in, before.W_in)
    assert not np.array_equal(after.W_rec, before.W_rec)
