"""Host hooks (`AbstractHostHook`) run between the compiled programs: a custom one sees, and may
change, the cells the next epoch starts from; its measurements land at their epoch's column;
the built-in ones (inter-flossing, λ_max before/after, the test loss) equal the hand-run
functions on the members' own keys; with compaction a custom hook's curves stay bit-identical."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import errorforcing as ef
from errorforcing.training import (AbstractEpochHook, AbstractHostHook, Analysis, EnsembleTrainer, Flossing,
                                   GradientFlossing, HeldOutLoss, LyapunovExponents, Member, Schedule, analysis_key,
                                   evaluation_key, floss_cell, held_out_loss, lyapunov_key, task_lyapunov)
from errorforcing.training._dynamics import INTER_FLOSS

# float64 throughout: tests/conftest.py enables jax_enable_x64 for the suite
TASK = ef.tasks.DelayedXOR(delay=4, pulse=4)
MEMBERS = [Member(4, 0.5, 3e-2), Member(7, 0.5, 3e-2)]


def _trainer(*, hooks=(), epochs=3, flossing=None, analysis=Analysis(), **kw):
    schedule = Schedule(epochs=epochs, batch_size=16, train_trials=32, val_trials=8, test_trials=16, threshold=1e-12)
    return EnsembleTrainer(TASK, lambda k: ef.models.LeakyRNN(3, 8, 1, key=k, dtype=jnp.float64),
                           lambda a, cell, key: ef.forcing.ErrorForcing(alpha=a), ef.rules.BPTT(), optax.adam,
                           MEMBERS, schedule, flossing=flossing, analysis=analysis, shards=1, hooks=hooks, **kw)


def _member(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, tree)


class _EpochSums(AbstractEpochHook):
    """Σ W_rec when an epoch starts and when it ends, inside the epoch program."""

    def before_epoch(self, state, rule, batches, keys, objective):
        return {"W_rec_start": state.cell.W_rec.sum()}

    def after_epoch(self, state, rule):
        return {"W_rec_end": state.cell.W_rec.sum()}


class _DoubleBetweenEpochs(AbstractHostHook):
    """Doubles W_rec between epochs and measures Σ W_rec of what it returns."""

    def between_epochs(self, run, epoch, cells):
        cells = run.map(self.double, cells)
        return cells, {"W_rec_between": run.join(run.map(self.total, cells))}

    def double(self, cell):
        return eqx.tree_at(lambda c: c.W_rec, cell, 2.0 * cell.W_rec)

    def total(self, cell):
        return cell.W_rec.sum()


class _Between(AbstractHostHook):
    """Σ W_rec between epochs, on the cells the hooks before it returned."""

    def between_epochs(self, run, epoch, cells):
        return cells, {"W_rec_between": run.join(run.map(self.total, cells))}

    def total(self, cell):
        return cell.W_rec.sum()


def test_a_host_hook_changes_the_cells_the_next_epoch_starts_from_and_records_between_epochs():
    result = _trainer(hooks=(_EpochSums(), _DoubleBetweenEpochs())).run()
    c = result.extra_curves
    assert c["W_rec_between"].shape == (2, 3)
    # the hook's measurement: twice Σ W_rec at the end of the epoch, at that epoch's column
    np.testing.assert_allclose(c["W_rec_between"][:, :2], 2.0 * c["W_rec_end"][:, :2], rtol=1e-13)
    # the next epoch starts from the doubled cells
    np.testing.assert_allclose(c["W_rec_start"][:, 1:], c["W_rec_between"][:, :2], rtol=1e-13)
    assert np.isnan(c["W_rec_between"][:, 2]).all()  # no next epoch after the last: nothing between
    np.testing.assert_allclose(c["W_rec_end"][:, 2], np.asarray(result.cells.W_rec).sum((1, 2)), rtol=1e-13)


@pytest.fixture(scope="module")
def flossed():
    """Two epochs with inter-flossing after epoch 1, λ_max before/after, and a custom hook after
    the flossing one; beside it the same training for one epoch without flossing."""
    flossing = Flossing(every=1, steps=2, trials=4, lr=1e-2)
    trainer = _trainer(epochs=2, flossing=flossing, analysis=Analysis(lyapunov=True, lyapunov_trials=4),
                       hooks=(_Between(),))
    plain = _trainer(epochs=1)
    return trainer, trainer.run(), plain.run(), flossing


def test_inter_flossing_is_floss_cell_on_the_members_own_key_between_epochs(flossed):
    trainer, result, one_epoch, flossing = flossed
    between = result.extra_curves["W_rec_between"]
    for i, m in enumerate(MEMBERS):
        cell = _member(one_epoch.cells, i)  # the cell after epoch 1 (no flossing before it)
        key = jax.random.fold_in(jax.random.fold_in(analysis_key(m.seed), INTER_FLOSS), 1)
        by_hand, _ = eqx.filter_jit(floss_cell)(cell, TASK, flossing, flossing.steps, key=key)
        np.testing.assert_allclose(between[i, 0], float(by_hand.W_rec.sum()), rtol=1e-10)
        assert abs(between[i, 0] - float(cell.W_rec.sum())) > 1e-6  # flossing moved it
    assert np.isnan(between[:, 1]).all()


def test_lyapunov_and_test_loss_hooks_are_the_hand_computed_values(flossed):
    trainer, result, _, _ = flossed
    start = trainer.init()[0]
    assert result.analyses.keys() == {"lyap_max_before", "lyap_max_after", "test_loss"}
    assert result.lyap_max_before is result.analyses["lyap_max_before"]
    lyapunov, loss = eqx.filter_jit(task_lyapunov), eqx.filter_jit(held_out_loss)  # one member, not vmapped
    for i, m in enumerate(MEMBERS):
        before = lyapunov(_member(start, i), TASK, 1, key=lyapunov_key(m.seed), trials=4)[0]
        after = lyapunov(_member(result.cells, i), TASK, 1, key=lyapunov_key(m.seed), trials=4)[0]
        test = loss(_member(result.cells, i), TASK, 16, key=evaluation_key(m.seed))
        np.testing.assert_allclose(result.lyap_max_before[i], before, rtol=1e-10)
        np.testing.assert_allclose(result.lyap_max_after[i], after, rtol=1e-10)
        np.testing.assert_allclose(result.test_loss[i], test, rtol=1e-10)
    assert not np.allclose(result.lyap_max_before, result.lyap_max_after)


def test_hooks_of_either_kind_go_where_they_run_built_in_first():
    epoch_hook, host_hook = _EpochSums(), _Between()
    trainer = _trainer(hooks=(host_hook, epoch_hook), flossing=Flossing(pre=1),
                       analysis=Analysis(lyapunov=True))
    assert trainer.hooks[-1] is epoch_hook and host_hook not in trainer.hooks
    assert [type(h) for h in trainer.host_hooks] == [GradientFlossing, LyapunovExponents, HeldOutLoss, _Between]
    assert [type(h) for h in _trainer().host_hooks] == [HeldOutLoss]  # everything else off
    with pytest.raises(TypeError, match="AbstractHostHook"):
        _trainer(hooks=(object(),))


class _TestLossAgain(AbstractHostHook):
    def after_training(self, run, cells):
        return {"test_loss": np.zeros(run.shards.members)}


def test_a_name_measured_twice_is_an_error():
    with pytest.raises(ValueError, match="measured twice: test_loss"):
        _trainer(hooks=(_TestLossAgain(),), epochs=1).run()


@pytest.mark.slow
def test_a_custom_host_hook_is_bit_identical_with_compaction(monkeypatch):
    from errorforcing.experiments._train import build_trainer

    # the ensemble of tests/test_compaction.py: members freeze at epochs 1 to 8 (2×4 → 2×2 → 1×2)
    config = ef.TrainConfig(task={"name": "delayed-xor", "delay": 4}, model={"hidden": 8},
                            forcing={"kind": "ef", "alpha": [0.5]}, seeds=8, epochs=10, batch=16, train_trials=32,
                            val_trials=16, test_trials=16, threshold=0.8, patience=1, divergence=1.45,
                            optim={"lr": [3e-2]})
    monkeypatch.setenv("ERRORFORCING_THREADS", "2")
    results = []
    for compact in ("off", "always"):
        trainer = build_trainer(config)
        trainer.compact = compact
        trainer.host_hooks += (_Between(),)
        results.append(trainer.run())
    plain, compact = results
    assert plain.layouts == [(1, 2, 4)] and len(compact.layouts) > 1
    between = plain.extra_curves["W_rec_between"]
    np.testing.assert_array_equal(compact.extra_curves["W_rec_between"], between)
    # measured after every epoch a member trained in, but not after the last one of all
    for i, n in enumerate(plain.tracker.epochs_run):
        measured = min(n, plain.epochs_done - 1)
        assert np.isfinite(between[i, :measured]).all() and np.isnan(between[i, measured:]).all()
