"""The fast leaky-RNN RTRL against the generic one, and learning tests: real-time
teacher-forced RTRL learns Williams & Zipser's oscillation; RFLO and EF-RFLO learn delayed XOR
at a short delay, converged at the reference threshold (the learning tests are slow)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.forcing import (ErrorForcing, FeedbackForcing, KalmanErrorForcing, NoForcing,
                                  WilliamsZipserTeacherForcing, simulate)
from errorforcing.models import LeakyRNN, WilliamsZipserNet
from errorforcing.rules import RTRL, Objective
from errorforcing.tasks import Oscillation, Trials, stream

N, N_IN, N_OUT, BATCH, T = 5, 2, 2, 3, 9
ALL = ("W_rec", "W_in", "b", "W_out", "b_out")
OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.05)


def make_cell(key, readout="state", trainable=ALL, **kwargs):
    k_cell, k_out, k_b = jax.random.split(key, 3)
    cell = LeakyRNN(N_IN, N, N_OUT, key=k_cell, tau=3.0, readout=readout, trainable=trainable, **kwargs)
    return eqx.tree_at(lambda c: (c.W_out, c.b, c.b_out), cell,
                       (0.5 * jax.random.normal(k_out, (N_OUT, N)), 0.1 * jax.random.normal(k_b, (N,)),
                        jnp.array([0.1, -0.2])))


def make_trials(key, batch=BATCH, steps=T):
    k_x, k_y, k_m = jax.random.split(key, 3)
    return Trials(jax.random.normal(k_x, (batch, steps, N_IN)), jax.random.normal(k_y, (batch, steps, N_OUT)),
                  jax.random.bernoulli(k_m, 0.6, (batch, steps, N_OUT)).astype(jnp.float64), {})


FAST_CASES = {
    "state-none": ("state", ALL, {}, "none"),
    "rate-none-tanh": ("rate", ALL, {}, "none"),
    "rate-relu-ef": ("rate", ALL, {"activation": "relu"}, "ef"),
    "state-ef-causal": ("state", ALL, {}, "ef-causal"),
    "rate-kalman": ("rate", ALL, {"activation": "softplus"}, "kalman"),
    "state-feedback-causal": ("state", ALL, {}, "feedback"),
    "default-trainable-sparse": ("state", ("W_rec", "b", "W_out", "b_out"), {"density": 0.6}, "ef"),
    "only-recurrent": ("rate", ("W_rec",), {}, "none"),
    "only-readout": ("state", ("W_out", "b_out"), {}, "ef"),
}


def _forcing(kind, cell, key):
    return {"none": NoForcing(), "ef": ErrorForcing(alpha=0.6), "ef-causal": ErrorForcing(alpha=0.8, causal=True),
            "kalman": KalmanErrorForcing(alpha=0.7, process_noise=1.0, obs_noise=0.4 ** 0.5),
            "feedback": FeedbackForcing.random(cell, key=key, alpha=0.9, causal=True)}[kind]


@pytest.fixture
def fast_compile():
    """Many tiny programs: XLA's optimisations cost more than they save."""
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("case", FAST_CASES)
def test_fast_leaky_rtrl_equals_the_generic_path(case, getkey):
    readout, trainable, kwargs, kind = FAST_CASES[case]
    cell = make_cell(getkey(), readout=readout, trainable=trainable, **kwargs)
    forcing, trials, key = _forcing(kind, cell, getkey()), make_trials(getkey()), getkey()
    for rule, generic in ((RTRL(), RTRL(fast=False)),
                          (RTRL(online=True, lr=0.3), RTRL(online=True, lr=0.3, fast=False))):
        loss, grads, _ = rule.value_and_grad(cell, forcing, trials, key=key, objective=OBJECTIVE)
        ref_loss, ref_grads, _ = generic.value_and_grad(cell, forcing, trials, key=key, objective=OBJECTIVE)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
        assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    steps = RTRL().step_updates(cell, forcing, trials, key=key, objective=OBJECTIVE)
    ref_steps = RTRL(fast=False).step_updates(cell, forcing, trials, key=key, objective=OBJECTIVE)
    for a, b in zip(jax.tree.leaves(steps), jax.tree.leaves(ref_steps)):
        assert a.shape[0] == T
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


# ----- learning (slow) -----
@pytest.mark.slow
def test_real_time_teacher_forced_rtrl_learns_to_oscillate():
    """Williams & Zipser §3.5: a 2-unit net learns 0101… on its output unit from one continual
    stream of 4000 steps, θ changed at every step, with their teacher forcing. Afterwards it
    runs free (no forcing): from rest it alternates, and once a single teacher-forced step has
    set the phase, it follows the target exactly."""
    task = Oscillation(pattern="01")
    cell = WilliamsZipserNet(task.n_in, 2, task.n_out, key=jax.random.key(0), init_scale=0.1)
    data = jax.tree.map(lambda a: a[None], stream(task, 4000, key=jax.random.key(1)))
    # the step losses are normalised by the stream's Σ m = 4000; lr = 2000 is 0.5 per step
    lr = 2000.0
    loss, grads, _ = eqx.filter_jit(RTRL(online=True, lr=lr).value_and_grad)(
        cell, WilliamsZipserTeacherForcing(), data, key=jax.random.key(2), objective=Objective(0.0, 0.0))
    trained = eqx.apply_updates(cell, jax.tree.map(lambda g: -lr * g, grads))
    test = jax.tree.map(lambda a: a[None], stream(task, 60, key=jax.random.key(3)))

    _, free = simulate(trained, test, NoForcing())
    y = np.asarray(free[0, :, 0])
    assert np.all(np.abs(np.diff(y)) > 0.7), np.round(y, 2)

    cue = test._replace(mask=test.mask.at[:, 1:].set(0.0))  # teacher-force step 0 only
    _, cued = simulate(trained, cue, WilliamsZipserTeacherForcing())
    y, target = np.asarray(cued[0, 1:, 0]), np.asarray(test.targets[0, 1:, 0])
    np.testing.assert_array_equal(y > 0.5, target > 0.5)
    assert np.max(np.abs(y - target)) < 0.2, np.round(y, 2)


def _xor_config(forcing: dict, seeds: int = 8):
    from errorforcing import TrainConfig

    return TrainConfig(task={"name": "delayed-xor", "delay": 10}, model={"hidden": 50}, rule={"kind": "rflo"},
                       forcing=forcing, seeds=seeds, epochs=50, batch=128, threshold=0.01,
                       optim={"name": "adam", "lr": [1e-2]})


@pytest.mark.slow
@pytest.mark.parametrize("forcing,at_least",
                         [({"kind": "none"}, 4), ({"kind": "ef", "alpha": [0.5], "causal": True}, 5)],
                         ids=["rflo", "ef-rflo"])
def test_rflo_and_ef_rflo_learn_delayed_xor(forcing, at_least):
    """Delay 10, 50 units, 8 seeds, Adam 1e-2, 50 epochs: networks *learn* (SPEC §5: unforced
    validation loss below 0.01 for 10 consecutive epochs). Which seeds converge moves with float
    rounding (the shard count): measured RFLO 5/8 (one shard; at least 4/8 with two),
    EF-RFLO (causal, α = 0.5) 8/8 with one shard, 6/8 with two (epochs 23-45)."""
    from errorforcing import train

    result = train(_xor_config(forcing), progress=False)
    tracker = result.ensemble.tracker
    assert not tracker.diverged.any()
    assert int(tracker.converged.sum()) >= at_least, tracker.converged_epoch
    converged = result.ensemble.val_curves[tracker.converged]
    assert np.all(np.nanmin(converged, axis=1) < 0.01)
