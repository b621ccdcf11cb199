"""The test loss of every member (issue 10, "a test-error figure like the paper's"): the unforced
masked MSE on 200 fresh trials after training, from the member's own key stream."""

import sqlite3

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import errorforcing as ef
from errorforcing.experiments import TrainConfig, train
from errorforcing.experiments._train import build_trainer
from errorforcing.store import RunStore
from errorforcing.tasks import AbstractTask, Trials, sample_batch
from errorforcing.training import EnsembleTrainer, Member, Schedule, analysis_streams, evaluation_key

SMALL = dict(seeds=2, epochs=2, batch=16, train_trials=32, val_trials=8, model={"hidden": 6},
             task={"name": "delayed-xor", "delay": 4, "options": {"pulse": 2}}, forcing={"kind": "ef", "alpha": [0.5]})


def _documented_key(seed: int):
    """fold_in(analysis key, 3), the analysis key being fold_in(key(seed), 3) (README, store columns)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 3), 3)


def _leaky_unforced_mse(cell, trials: Trials) -> float:
    """A hand loop of the leaky RNN, h_t = (1 − a) h_{t−1} + a (W_rec tanh(h_{t−1}) + W_in x_t + b),
    y_t = W_out h_t + b_out, from h = 0, then Σ m (y − y*)² / Σ m."""
    W_rec, W_in, b, W_out, b_out = (np.asarray(getattr(cell, n), np.float64) for n in ("W_rec", "W_in", "b", "W_out", "b_out"))
    x, target, mask = (np.asarray(a, np.float64) for a in (trials.inputs, trials.targets, trials.mask))
    a = cell.leak
    h = np.zeros((x.shape[0], W_rec.shape[0]))
    total = 0.0
    for t in range(x.shape[1]):
        h = (1 - a) * h + a * (np.tanh(h) @ W_rec.T + x[:, t] @ W_in.T + b)
        total += np.sum(mask[:, t] * (h @ W_out.T + b_out - target[:, t]) ** 2)
    return total / mask.sum()


def test_stored_test_loss_equals_an_independent_computation(tmp_path):
    """Members at lr 1e-3 train normally (loss ≈ 1); at lr 50 they blow up in epoch 1 (loss
    ≈ 1e6 > divergence 1e3) and must have no test loss."""
    config = TrainConfig.model_validate(SMALL | {"optim": {"lr": [1e-3, 50.0]}, "divergence": 1e3, "out": str(tmp_path)})
    result = train(config, progress=False)
    rows = RunStore(tmp_path).members(result.run_id)
    assert [r["test_loss"] for r in rows] == [r["test_loss"] for r in result.rows]
    assert [(r["lr"], r["diverged"]) for r in rows] == [(1e-3, 0)] * 2 + [(50.0, 1)] * 2
    trainer = build_trainer(config)
    cells = RunStore(tmp_path).load_params(result.run_id, eqx.filter_vmap(trainer.make_cell)(trainer.init_keys))
    task = ef.tasks.DelayedXOR(delay=4, pulse=2)
    for i, row in enumerate(rows[:2]):
        cell = jax.tree_util.tree_map(lambda x: x[i] if eqx.is_array(x) else x, cells)
        trials = sample_batch(task, 200, key=_documented_key(row["seed"]))
        expected = _leaky_unforced_mse(cell, trials)
        np.testing.assert_allclose(row["test_loss"], expected, rtol=1e-6)
        assert row["test_loss"] != row["final_val_loss"]
    assert rows[0]["test_loss"] != rows[1]["test_loss"]  # each member its own trials and weights
    # diverged: NULL in the store (a final validation loss, but no test loss), NaN in the result
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    assert db.execute("SELECT test_loss IS NULL, final_val_loss IS NULL FROM members WHERE diverged = 1").fetchall() \
        == [(1, 0), (1, 0)]
    assert np.isnan(result.ensemble.test_loss[2:]).all() and np.isfinite(result.ensemble.test_loss[:2]).all()


def test_an_older_store_gets_the_column(tmp_path):
    RunStore(tmp_path)
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        db.execute("ALTER TABLE members DROP COLUMN test_loss")
    RunStore(tmp_path)
    columns = [r[1] for r in sqlite3.connect(tmp_path / "runs.sqlite").execute("PRAGMA table_info(members)")]
    assert "test_loss" in columns


class NoisyEcho(AbstractTask):
    """Gaussian inputs, target = the input: no two keys give the same trial."""

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 1

    @property
    def n_steps(self) -> int:
        return 5

    def sample(self, *, key) -> Trials:
        x = jax.random.normal(key, (5, 1))
        return Trials(x, x, jnp.ones((5, 1)), {})


def test_test_trials_are_a_stream_of_their_own():
    task = NoisyEcho()
    schedule = Schedule(epochs=1, batch_size=8, train_trials=16, val_trials=8, test_trials=200)
    trainer = EnsembleTrainer(task, lambda k: ef.models.LeakyRNN(1, 4, 1, key=k),
                              lambda a, cell, key: ef.forcing.NoForcing(), ef.rules.BPTT(), optax.adam,
                              [Member(5, 0.0, 1e-3)], schedule)
    key = analysis_streams(trainer.analysis_keys, 3)[0]  # what HeldOutLoss draws its trials from
    assert (jax.random.key_data(key) == jax.random.key_data(evaluation_key(5))).all()
    assert (jax.random.key_data(key) == jax.random.key_data(_documented_key(5))).all()
    batches, val = eqx.filter_jit(trainer._epoch_data)(trainer.data_keys[0], 1, None)
    test = sample_batch(task, 200, key=key)
    rows = lambda a: {r.tobytes() for r in np.asarray(a).reshape(-1, 5)}  # noqa: E731
    held = rows(test.inputs)
    assert len(held) == 200
    assert not held & rows(val.inputs)
    assert not held & rows(batches.inputs[batches.info["weight"] > 0])
