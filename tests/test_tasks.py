"""The three Error Forcing tasks against independent checks of SPEC §4."""

import jax
import numpy as np
import pytest

from errorforcing.tasks import DelayedXOR, EvidenceIntegration, SineGeneration, sample_batch

TASKS = [DelayedXOR(delay=30), EvidenceIntegration(delay=20), SineGeneration()]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
def test_shapes_and_determinism(task, getkey):
    key = getkey()
    a, b = task.sample(key=key), task.sample(key=key)
    assert a.inputs.shape == (task.n_steps, task.n_in)
    assert a.targets.shape == a.mask.shape == (task.n_steps, task.n_out)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    batch = sample_batch(task, 64, key=getkey())
    assert batch.inputs.shape == (64, task.n_steps, task.n_in)
    assert len({np.asarray(batch.inputs[i]).tobytes() for i in range(64)}) > 1  # different keys differ
    jitted = jax.jit(lambda k: task.sample(key=k))(key)
    np.testing.assert_array_equal(jitted.inputs, a.inputs)


def test_delayed_xor_timing_and_truth_table(getkey):
    d, D = 10, 30
    task = DelayedXOR(delay=D)
    assert task.n_steps == 45 + D
    batch = sample_batch(task, 400, key=getkey())
    seen = set()
    for i in range(400):
        x, y, m = (np.asarray(v[i]) for v in (batch.inputs, batch.targets, batch.mask))
        s1, s2 = x[0, 0], x[2 * d, 1]
        assert s1 in (-1, 1) and s2 in (-1, 1)
        np.testing.assert_array_equal(x[:d, 0], s1)
        assert np.all(x[d:, 0] == 0)
        np.testing.assert_array_equal(x[2 * d:3 * d, 1], s2)
        assert np.all(x[:2 * d, 1] == 0) and np.all(x[3 * d:, 1] == 0)
        on = np.flatnonzero(m[:, 0])
        assert len(on) == d and np.all(np.diff(on) == 1)
        jitter = on[0] - (3 * d + D)
        assert -d // 2 <= jitter <= d // 2 - 1
        seen.add(jitter)
        # report cue: channel 2 is 0 exactly in the response window
        np.testing.assert_array_equal(x[:, 2], 1 - m[:, 0])
        expected = 1.0 if s1 == s2 else -1.0  # XOR truth table in ±1 coding
        np.testing.assert_array_equal(y[on, 0], expected)
        assert np.all(y[m[:, 0] == 0] == 0)
    assert seen == set(range(-5, 5))


def test_evidence_integration_majority_rule(getkey):
    D = 20
    task = EvidenceIntegration(delay=D)
    assert task.n_steps == 70 + D
    batch = sample_batch(task, 300, key=getkey())
    counts = set()
    for i in range(300):
        x, y, m = (np.asarray(v[i]) for v in (batch.inputs, batch.targets, batch.mask))
        assert np.all(x.sum(1) <= 1)  # one channel at a time
        c = [0, 0]
        for k in range(7):
            seg = x[10 * k:10 * k + 5]
            ch = int(np.argmax(seg[0]))
            assert np.all(seg[:, ch] == 1) and np.all(seg[:, 1 - ch] == 0)
            assert np.all(x[10 * k + 5:10 * k + 10] == 0)
            c[ch] += 1
        assert np.all(x[70:] == 0)
        assert 1 <= c[0] <= 6
        counts.add(c[0])
        on = np.flatnonzero(m[:, 0])
        np.testing.assert_array_equal(on, np.arange(65 + D, 70 + D))
        np.testing.assert_array_equal(y[on, 0], 1.0 if c[0] > c[1] else -1.0)
    assert counts == set(range(1, 7))


def test_sine_period_and_phase(getkey):
    task = SineGeneration()
    batch = sample_batch(task, 100, key=getkey())
    periods = set()
    t = np.arange(500)
    for i in range(100):
        x, y = np.asarray(batch.inputs[i]), np.asarray(batch.targets[i])
        P = x[0, 0] * 90
        assert np.allclose(x, x[0, 0])
        assert round(P) in range(90, 181, 15)
        periods.add(round(P))
        np.testing.assert_allclose(y[:, 0], np.cos(2 * np.pi * t / P), atol=1e-5)
        np.testing.assert_allclose(y[:, 1], np.cos(2 * np.pi * t / P + np.pi / 4), atol=1e-5)
        # independent check of the period: first return of cos to 1 after t = 0
        assert abs(np.argmax(y[10:, 0]) + 10 - P) <= 1
    assert periods == set(range(90, 181, 15))
    assert np.all(np.asarray(batch.mask) == 1)


def test_bad_task_arguments():
    with pytest.raises(ValueError, match="delay"):
        DelayedXOR(delay=-1)
    with pytest.raises(ValueError, match="delay"):
        EvidenceIntegration(delay=-5)
    with pytest.raises(ValueError, match="batch_size"):
        sample_batch(DelayedXOR(), 0, key=jax.random.key(0))


# Issue 10 item 6: each task's reference data set size (SPEC §5), floor(10 %) held out.
EPOCHS = {  # task config -> (training trials, validation trials, batch sizes)
    "delayed-xor": ({"delay": 0}, 461, 51, [128, 128, 128, 77]),
    "evidence-integration": ({"delay": 0}, 195, 21, [128, 67]),
    "sine": ({"options": {"length": 4}}, 4500, 500, [128] * 35 + [20]),
}


def _epoch(config):
    """The schedule `train` builds, the real trials per batch of an epoch and its validation count.
    Shapes by tracing the epoch's data (no compile); the batch split by the trainer's own
    padding of that many trials (weight 1 = a real trial)."""
    import equinox as eqx
    import jax.numpy as jnp

    from errorforcing.experiments import TrainConfig
    from errorforcing.experiments._train import build_trainer
    from errorforcing.tasks import Trials
    from errorforcing.training import pad_into_batches

    trainer = build_trainer(TrainConfig.model_validate(config | {"seeds": 1, "model": {"hidden": 2}}))
    s, key = trainer.schedule, trainer.data_keys[0]
    fixed = eqx.filter_eval_shape(trainer._fixed_dataset, key) if s.data == "fixed" else None
    batches, val = eqx.filter_eval_shape(trainer._epoch_data, key, 1, fixed)
    assert batches.inputs.shape[:2] == (s.n_batches, s.batch_size)
    ones = jnp.ones((s.n_train, 1, 1))
    weights = pad_into_batches(Trials(ones, ones, ones, {}), s.n_batches, s.batch_size).info["weight"]
    return s, [int(w) for w in np.asarray(weights).sum(axis=1)], val.inputs.shape[0]


@pytest.mark.parametrize("name", list(EPOCHS))
def test_fresh_epochs_have_each_tasks_reference_size(name):
    task, n_train, n_val, batches = EPOCHS[name]
    schedule, sizes, val = _epoch({"task": {"name": name} | task})
    assert (schedule.n_train, schedule.n_val, val) == (n_train, n_val, n_val)
    assert sizes == batches and sum(sizes) == n_train


def test_fixed_data_holds_out_floor_ten_percent():
    schedule, sizes, val = _epoch({"task": {"name": "evidence-integration", "delay": 0}, "data": "fixed"})
    assert (schedule.dataset_size, schedule.n_train, val, sizes) == (216, 195, 21, [128, 67])


def test_user_trial_counts_override_the_tasks_size():
    schedule, sizes, val = _epoch({"task": {"name": "sine", "options": {"length": 4}},
                                   "train_trials": 100, "val_trials": 7, "batch": 64})
    assert (schedule.n_train, val, sizes) == (100, 7, [64, 36])
    schedule, sizes, val = _epoch({"task": {"name": "sine", "options": {"length": 4}}, "dataset_size": 300})
    assert (schedule.n_train, val, sizes) == (270, 30, [128, 128, 14])


def test_trial_counts_with_fixed_data_are_an_error():
    from pydantic import ValidationError

    from errorforcing.experiments import TrainConfig

    with pytest.raises(ValidationError, match="train_trials applies only to data = 'fresh'"):
        TrainConfig(data="fixed", train_trials=100)
