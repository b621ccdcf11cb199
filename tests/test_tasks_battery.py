"""The task battery: Williams–Zipser tasks, Romo, center-out reaching, the neurogym adapter.

Each task is checked for the interface contract (shapes, mask, determinism, batching) and
against an independent plain-Python or numpy reference of its definition."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing.tasks as T
from errorforcing.tasks._williams_zipser import _random_tape


def _sample(task, key):
    return jax.tree.map(np.asarray, _jitted(task, 0)(key))


def _batch(task, n, key):
    return jax.tree.map(np.asarray, _jitted(task, n)(key))


_COMPILED = {}


def _jitted(task, n):
    """jit(task.sample) for n = 0, jit(sample_batch(task, n)) otherwise; compiled once per
    task (eager sampling compiles every small op and is slow)."""
    if (id(task), n) not in _COMPILED:
        fn = (lambda k: task.sample(key=k)) if n == 0 else (lambda k: T.sample_batch(task, n, key=k))
        _COMPILED[id(task), n] = (task, jax.jit(fn))
    return _COMPILED[id(task), n][1]


@pytest.fixture(scope="module")
def neurogym_tasks():
    pytest.importorskip("neurogym")
    return {name: T.from_neurogym(name, seed=7, n_trials=64) for name in T.NEUROGYM_TASKS}


PARENTHESES = T.BalancedParentheses(max_pairs=4)
PURE_TASKS = [
    T.PipelinedXOR(lag=2),
    T.SequenceRecognition(),
    T.DelayedNonmatch(),
    PARENTHESES,
    T.Oscillation(pattern="01", random_phase=True),
    T.Oscillation(pattern="0011", random_phase=True),
    T.Oscillation(pattern="sine", random_phase=True),
    T.Romo(),
    T.CenterOutReach(),
    T.CenterOutReach(mode="test", rotation=45.0),
]
NEUROGYM_NAMES = list(T.NEUROGYM_TASKS)


@pytest.fixture(params=PURE_TASKS + NEUROGYM_NAMES, ids=lambda p: p if isinstance(p, str) else repr(p))
def task(request):
    if isinstance(request.param, str):
        return request.getfixturevalue("neurogym_tasks")[request.param]
    return request.param


def test_contract(task, getkey):
    key = getkey()
    trial = _sample(task, key)
    shape = (task.n_steps,)
    assert trial.inputs.shape == shape + (task.n_in,)
    assert trial.targets.shape == trial.mask.shape == shape + (task.n_out,)
    assert set(np.unique(trial.mask)) <= {0.0, 1.0} and trial.mask.any()
    assert np.isfinite(trial.inputs).all() and np.isfinite(trial.targets).all()
    assert isinstance(task.threshold, float) and isinstance(task.classification, bool)
    for a, b in zip(jax.tree.leaves(trial), jax.tree.leaves(_sample(task, key))):
        np.testing.assert_array_equal(a, b)  # same key, same trial

    key = getkey()
    batch = _batch(task, 8, key)  # = vmap(task.sample)(split(key, 8))
    assert batch.inputs.shape == (8,) + trial.inputs.shape
    for i in (0, 5):
        one = _sample(task, jax.random.split(key, 8)[i])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batch)):
            np.testing.assert_allclose(a, b[i], rtol=1e-6, atol=1e-12)
    differ = [
        not (np.array_equal(batch.inputs[0], batch.inputs[i]) and np.array_equal(batch.targets[0], batch.targets[i]))
        for i in range(1, 8)
    ]
    assert any(differ)


def test_oscillation_is_key_independent_by_default(getkey):
    task = T.Oscillation(pattern="0011")
    a, b = _sample(task, getkey()), _sample(task, getkey())
    np.testing.assert_array_equal(a.targets, b.targets)
    np.testing.assert_array_equal(a.targets[:8].T, [[0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 1, 0, 0, 1, 1, 0]])
    np.testing.assert_array_equal(_sample(T.Oscillation(), getkey()).targets[:4, 0], [0, 1, 0, 1])
    sine = _sample(T.Oscillation(pattern="sine", period=25), getkey()).targets
    assert 0.0 < sine.min() and sine.max() < 1.0
    np.testing.assert_allclose(sine[25], sine[0], atol=1e-6)  # period 25
    np.testing.assert_allclose(((sine - 0.5) ** 2).sum(-1), 0.4**2, atol=1e-6)  # sin² + cos²
    half = _sample(T.Oscillation(pattern="sine", train_partner=False), getkey()).mask
    assert half[:, 0].all() and not half[:, 1].any()


@pytest.mark.parametrize("lag", [2, 3, 4])
def test_pipelined_xor_truth_table(lag, getkey):
    batch = _batch(T.PipelinedXOR(lag=lag, n_steps=60), 16, getkey())
    a, b = batch.inputs[:, :-lag, 0], batch.inputs[:, :-lag, 1]
    d = batch.targets[:, lag:, 0]
    assert (batch.mask[:, :lag] == 0).all() and (batch.mask[:, lag:] == 1).all()
    for x, y in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        seen = (a == x) & (b == y)
        assert seen.any()
        assert (d[seen] == (x ^ y)).all()


def test_sequence_recognition_matches_scanner(getkey):
    task = T.SequenceRecognition(n_distractors=2, n_steps=200)
    batch = _batch(task, 8, getkey())
    fired = 0
    for inputs, targets in zip(batch.inputs, batch.targets[..., 0]):
        armed, expected = False, []
        for line in inputs.argmax(-1):
            if line == 0:
                armed, out = True, 0
            elif line == 1:
                out, armed = int(armed), False
            else:
                out = 0
            expected.append(out)
        np.testing.assert_array_equal(targets, expected)
        fired += sum(expected)
    assert fired > 0
    assert (batch.inputs.sum(-1) == 1).all()


def test_delayed_nonmatch_matches_reference(getkey):
    lag = 1
    batch = _batch(T.DelayedNonmatch(lag=lag, n_steps=80), 8, getkey())
    for inputs, targets, mask in zip(batch.inputs, batch.targets[..., 0], batch.mask[..., 0]):
        stored, want, defined = None, [], []
        for p, c in inputs.astype(int):
            defined.append(stored is not None)
            want.append(0 if stored is None else p ^ stored)
            if c:
                stored = p
        want, defined = [0] * lag + want[:-lag], [False] * lag + defined[:-lag]
        np.testing.assert_array_equal(mask, defined)
        np.testing.assert_array_equal(targets[mask == 1], np.array(want)[np.array(defined)])


SYMBOLS = "()X_"


def _reference_machine(tape):
    """The parenthesis checker, run in plain Python: (symbols read, actions, verdict)."""
    tape, head, state = list(tape), 1, 0
    read, actions = [], []
    while True:
        c = tape[head]
        read.append(c)
        if state == 0 and c in "(X":
            act, head = (0, 0, 0, 0), head + 1
        elif state == 0 and c == ")":
            act, tape[head], head, state = (1, 1, 0, 0), "X", head - 1, 1
        elif state == 0:
            act, head, state = (1, 0, 0, 0), head - 1, 2
        elif state == 1 and c == "X":
            act, head = (1, 0, 0, 0), head - 1
        elif state == 1 and c == "(":
            act, tape[head], head, state = (0, 1, 0, 0), "X", head + 1, 0
        elif state == 2 and c == "X":
            act, head = (1, 0, 0, 0), head - 1
        else:  # state 1 at the left blank, or state 2 on "(" or the left blank
            verdict = state == 2 and c == "_"
            actions.append((0, 0, 1, int(verdict)))
            return read, actions, verdict
        actions.append(act)


def _stack_check(string):
    depth = 0
    for c in string:
        depth += 1 if c == "(" else -1
        if depth < 0:
            return False
    return depth == 0


def test_parentheses_follow_the_reference_machine(getkey):
    batch = _batch(PARENTHESES, 200, getkey())
    verdicts = []
    for i in range(200):
        tape = "".join(SYMBOLS[s] for s in batch.info["tape"][i])
        string = tape.strip("_")
        assert set(string) <= set("()") and len(string) % 2 == 0 and 2 <= len(string) <= 8
        read, actions, verdict = _reference_machine(tape)
        assert verdict == _stack_check(string)
        n = len(read)
        assert batch.info["halted"][i] and batch.info["halt_step"][i] == n - 1
        assert "".join(SYMBOLS[s] for s in batch.inputs[i, :n].argmax(-1)) == "".join(read)
        y, m = batch.targets[i], batch.mask[i]
        np.testing.assert_array_equal(y[:n] * m[:n], np.array(actions) * m[:n])
        np.testing.assert_array_equal(m[:n, 1:3], 1)
        np.testing.assert_array_equal(m[:n, 0], [1] * (n - 1) + [0])
        np.testing.assert_array_equal(m[:n, 3], [0] * (n - 1) + [1])
        assert not m[n:].any() and not batch.inputs[i, n:].any()
        assert y[n - 1, 3] == verdict
        verdicts.append(verdict)
    assert 0.2 < np.mean(verdicts) < 0.7


def test_parentheses_stream_restarts_after_each_halt(getkey):
    task, key = PARENTHESES, getkey()
    s = jax.tree.map(np.asarray, jax.jit(T.stream, static_argnums=(0, 1))(task, 400, key=key))
    first = _sample(task, key)
    n = first.info["halt_step"] + 1
    np.testing.assert_array_equal(s.inputs[:n], first.inputs[:n])
    np.testing.assert_array_equal(s.targets[:n], first.targets[:n])
    index = s.info["tape_index"]
    assert index[-1] >= 10 and (np.diff(index) >= 0).all()
    assert (s.inputs.sum(-1) == 1).all() and (s.mask[:, 1] == 1).all()  # no padding in a stream
    random_tape = jax.jit(_random_tape, static_argnums=1)
    for i in range(index[-1]):  # every complete tape follows the reference machine
        tape, _ = random_tape(jax.random.fold_in(key, i), task.max_pairs)
        read, actions, _ = _reference_machine("".join(SYMBOLS[c] for c in np.asarray(tape)))
        steps = np.flatnonzero(index == i)
        assert len(steps) == len(read)
        assert "".join(SYMBOLS[c] for c in s.inputs[steps].argmax(-1)) == "".join(read)
        np.testing.assert_array_equal(s.targets[steps] * s.mask[steps], np.array(actions) * s.mask[steps])


def test_streams(getkey):
    key = getkey()
    stream = jax.jit(T.stream, static_argnums=(0, 1))  # the tasks are hashable, n_steps static
    xor = PURE_TASKS[0]
    np.testing.assert_array_equal(stream(xor, xor.n_steps, key=key).targets, _sample(xor, key).targets)
    for task in PURE_TASKS[:3] + [T.Oscillation(pattern="sine")]:
        long = stream(task, 5000, key=key)
        assert long.inputs.shape == (5000, task.n_in) and long.targets.shape == (5000, task.n_out)
        np.testing.assert_array_equal(long.mask[task.n_steps:], 1)
    with pytest.raises(TypeError):
        T.stream(T.Romo(), 100, key=key)


def test_romo_stimuli_and_labels(getkey):
    task = T.Romo(dt=0.1)
    assert task.n_steps == 280
    batch = _batch(task, 4000, getkey())
    f1, f2, label = batch.info["f1"], batch.info["f2"], batch.info["label"]
    assert (np.abs(f1 - f2) >= 0.2 - 1e-6).all()
    assert (np.minimum(f1, f2) >= 0.5).all() and (np.maximum(f1, f2) <= 1.5).all()
    np.testing.assert_array_equal(label, (f2 > f1).astype(int))
    assert abs(label.mean() - 0.5) < 0.05
    # The loop-free draw has the reference's rejection-sampling distribution.
    rng = np.random.default_rng(0)
    pairs = rng.uniform(0.5, 1.5, (40000, 2))
    pairs = pairs[np.abs(pairs[:, 0] - pairs[:, 1]) >= 0.2]
    assert abs(np.abs(f1 - f2).mean() - np.abs(pairs[:, 0] - pairs[:, 1]).mean()) < 0.01
    assert abs(np.abs(f1 - 1.0).mean() - np.abs(pairs[:, 0] - 1.0).mean()) < 0.01

    for i in range(50):
        x, y, m = batch.inputs[i, :, 0], batch.targets[i], batch.mask[i, :, 0]
        r = batch.info["response_start"][i]
        f2_end = r - 50
        np.testing.assert_allclose(x[30:40], f1[i], rtol=1e-6)
        np.testing.assert_allclose(x[f2_end - 10:f2_end], f2[i], rtol=1e-6)
        assert x.astype(bool).sum() == 20
        np.testing.assert_array_equal(m, np.r_[np.ones(f2_end), np.zeros(50), np.ones(100), np.zeros(280 - r - 100)])
        np.testing.assert_allclose(y[r:r + 100, label[i]], 0.5)
        assert y.sum() == pytest.approx(50.0)
        assert (batch.mask[i, :, 0] == batch.mask[i, :, 1]).all()
    delays = batch.info["response_start"] - (30 + 10 + 10 + 50)
    assert delays.min() >= 20 and delays.max() <= 79 and delays.max() - delays.min() > 50
    assert T.Romo(dt=0.5).n_steps == 56


def test_reach_reference_velocity_ends_at_target():
    start, end = jnp.array([1.0, -2.0]), jnp.array([-4.0, 3.5])
    v = T.reference_velocity(start, end, dt=0.01)
    p = T.integrate_velocity(v, 0.01, start)
    np.testing.assert_allclose(p, T.reference_position(start, end), atol=1e-9)
    np.testing.assert_allclose(p[-1], end, atol=1e-9)
    np.testing.assert_allclose(p[:20], np.broadcast_to(start, (20, 2)))
    speed = jnp.linalg.norm(v, axis=-1)
    assert int(speed.argmax()) in (70, 71) and float(speed[:20].max()) == 0.0


def test_reach_trials_and_rotation():
    theta = np.deg2rad(30.0)
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    task = T.CenterOutReach(mode="test", rotation=30.0)
    batch = jax.tree.map(np.asarray, jax.jit(task.test_trials)())
    assert batch.inputs.shape == (8, 125, 3)
    ends = batch.info["end"]
    np.testing.assert_allclose(np.linalg.norm(ends, axis=-1), 5.0, rtol=1e-6)
    np.testing.assert_allclose(np.arctan2(ends[:, 1], ends[:, 0]) % (2 * np.pi), np.arange(8) * np.pi / 4, atol=1e-6)
    np.testing.assert_array_equal(batch.inputs[:, :20, :2], 0)
    np.testing.assert_allclose(batch.inputs[:, 20:, :2], np.broadcast_to(ends[:, None], (8, 105, 2)), rtol=1e-6)
    np.testing.assert_array_equal(batch.inputs[:, :20, 2], 5.0)
    np.testing.assert_array_equal(batch.inputs[:, 20:, 2], 0.0)
    # Targets are R(-30°) v*: the network ends at R(-30°) target, the cursor R(30°) y at the target.
    produced = 0.01 * np.cumsum(batch.targets, axis=1)
    np.testing.assert_allclose(produced[:, -1], ends @ R, atol=1e-4)  # row vectors: x R = R^T x
    cursor = produced @ R.T
    np.testing.assert_allclose(cursor[:, -1], ends, atol=1e-4)
    np.testing.assert_allclose(cursor, batch.info["position"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(T.rotate(jnp.asarray(batch.targets), 30.0)), batch.targets @ R.T, atol=1e-5)
    np.testing.assert_allclose(T.rotate(jnp.array([1.0, 0.0]), 90.0), [0.0, 1.0], atol=1e-12)


def test_reach_random_mode(getkey):
    batch = _batch(T.CenterOutReach(), 64, getkey())
    start, end = batch.info["start"], batch.info["end"]
    assert (np.abs(start) <= 6).all() and (np.abs(end) <= 6).all() and np.abs(end).max() > 4
    np.testing.assert_allclose(batch.inputs[:, -1, :2], end - start, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(batch.inputs[:, 0, 2], 6.0)
    np.testing.assert_allclose(start + 0.01 * batch.targets.sum(1), end, atol=1e-4)


@pytest.mark.parametrize("name", NEUROGYM_NAMES)
def test_neurogym_bank_equals_the_package(name, neurogym_tasks):
    import warnings

    import neurogym

    task = neurogym_tasks[name]
    assert task.env_id == T.NEUROGYM_TASKS[name] and task.dt == 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        env = neurogym.make(T.NEUROGYM_TASKS[name], dt=100).unwrapped
    env.seed(7)
    assert task.n_in == env.observation_space.shape[0] and task.n_out == env.action_space.n
    for k in range(task.n_trials):
        trial = env.new_trial()
        n = len(env.ob)
        assert task.bank_lengths[k] == n
        np.testing.assert_array_equal(np.asarray(task.bank_inputs[k, :n]), env.ob)
        np.testing.assert_array_equal(np.asarray(task.bank_gt[k, :n]), env.gt)
        np.testing.assert_array_equal(np.asarray(task.bank_targets[k, :n]).argmax(-1), env.gt)
        assert np.asarray(task.bank_mask[k, :n]).all() and not np.asarray(task.bank_mask[k, n:]).any()
        assert not np.asarray(task.bank_inputs[k, n:]).any()
        assert task.bank_info["ground_truth"][k] == trial["ground_truth"]


def test_neurogym_padding_and_errors():
    pytest.importorskip("neurogym")
    task = T.from_neurogym("PerceptualDecisionMaking-v0", seed=1, n_trials=4, n_steps=40)
    assert task.n_steps == 40 and task.bank_mask[:, 22:].sum() == 0 and task.bank_mask[:, :22].all()
    with pytest.raises(ValueError, match="longer than n_steps"):
        T.from_neurogym("delay-match-sample", seed=1, n_trials=2, n_steps=10)
    other = T.from_neurogym("perceptual-decision", seed=2, n_trials=4)
    assert not np.array_equal(np.asarray(other.bank_inputs), np.asarray(task.bank_inputs[:, :22]))


def _trial_bytes(trials: T.Trials, k: int) -> bytes:
    return np.asarray(trials.inputs[k]).tobytes() + np.asarray(trials.targets[k]).tobytes()


@pytest.mark.parametrize("data", ["fresh", "fixed"])
def test_neurogym_validation_trials_never_repeat_a_training_trial(data):
    """Issue 10 item 5: validation trials come from a disjoint bank. With one bank of 16 trials
    (the old behaviour) 40 training and 8 validation draws overlap almost surely."""
    import equinox as eqx
    import optax

    import errorforcing as ef
    from errorforcing.training import EnsembleTrainer, Member, Schedule

    pytest.importorskip("neurogym")
    task = T.from_neurogym("perceptual-decision", seed=3, n_trials=16, n_val_trials=16)
    bank = {_trial_bytes(T.Trials(task.bank_inputs, task.bank_targets, task.bank_mask, {}), k)
            for k in range(task.n_trials)}
    held = task.validation_source()
    assert held.n_steps == task.n_steps and held.n_trials == 16
    assert not bank & {_trial_bytes(T.Trials(held.bank_inputs, held.bank_targets, held.bank_mask, {}), k)
                       for k in range(held.n_trials)}
    schedule = Schedule(epochs=1, batch_size=8, train_trials=40, val_trials=8, data=data, dataset_size=48)
    trainer = EnsembleTrainer(task, lambda k: ef.models.LeakyRNN(task.n_in, 4, task.n_out, key=k),
                              lambda a, cell, key: ef.forcing.NoForcing(), ef.rules.BPTT(), optax.adam,
                              [Member(0, 0.0, 1e-3)], schedule)
    key = trainer.data_keys[0]
    fixed = eqx.filter_jit(trainer._fixed_dataset)(key) if data == "fixed" else None
    batches, val = eqx.filter_jit(trainer._epoch_data)(key, 1, fixed)
    train = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:40], batches)
    trained = {_trial_bytes(train, k) for k in range(40)}
    assert len(trained) > 8  # really many distinct training trials
    assert trained <= bank
    assert not trained & {_trial_bytes(val, k) for k in range(8)}


def test_bad_arguments():
    for make in (lambda: T.PipelinedXOR(lag=-1), lambda: T.Oscillation(pattern="010"),
                 lambda: T.Romo(dt=0.0), lambda: T.Romo(min_diff=1.0),
                 lambda: T.CenterOutReach(mode="circle"), lambda: T.CenterOutReach(go=100)):
        with pytest.raises(ValueError):
            make()
    assert math.isclose(T.Romo().dt, 0.1)
