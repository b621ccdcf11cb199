"""Feedback control (Kaleb et al. 2024): the controller's signal and timing against numpy,
its limits, its gradient against finite differences, learning W_fb with the cell, and the
two-phase adaptation workflow."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from errorforcing.forcing import (ClosedLoop, ControlledCell, FeedbackControl, NoForcing, readout_pinv, rollout,
                                  simulate)
from errorforcing.models import LeakyRNN, WilliamsZipserNet
from errorforcing.rules import BPTT, RFLO, RTRL, Objective, masked_mse
from errorforcing.tasks import CenterOutReach, Trials

N, N_IN, N_OUT, BATCH, T = 6, 3, 2, 3, 12
OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-2)


def make_cell(key, n=N, readout="rate", activation="tanh", **kwargs) -> LeakyRNN:
    k_cell, k_out = jax.random.split(key)
    cell = LeakyRNN(N_IN, n, N_OUT, key=k_cell, tau=4.0, readout=readout, activation=activation, **kwargs)
    return eqx.tree_at(lambda c: c.W_out, cell, jax.random.normal(k_out, (N_OUT, n)) / n**0.5)


def make_trials(key, batch=BATCH, steps=T) -> Trials:
    k_x, k_y, k_m = jax.random.split(key, 3)
    return Trials(jax.random.normal(k_x, (batch, steps, N_IN)), jax.random.normal(k_y, (batch, steps, N_OUT)),
                  jax.random.bernoulli(k_m, 0.7, (batch, steps, N_OUT)).astype(jnp.float64), {})


def rotate_np(v, degrees):
    th = np.deg2rad(degrees)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return v @ R.T


def applied_control(cell, control, trials):
    """The controls u_{t-d} the rollout applied, read back from h̃_t - h_t = α a W_fb u_{t-d};
    and the outputs y_t."""
    states, outputs = simulate(cell, trials, control)
    previous = jnp.concatenate([jnp.broadcast_to(cell.init_state(), states[:, :1].shape), states[:, :-1]], axis=1)
    pre_forcing = jax.vmap(jax.vmap(cell))(previous, trials.inputs)
    correction = np.asarray(states - pre_forcing)
    gain = control.alpha * cell.leak * np.asarray(control.W_fb)
    u = np.linalg.lstsq(gain, correction.reshape(-1, N).T, rcond=None)[0].T.reshape(correction.shape[:2] + (N_OUT,))
    return u, np.asarray(outputs)


@pytest.mark.parametrize("signal", ["integrated", "error"])
@pytest.mark.parametrize("delay", [0, 1])
def test_zero_feedback_weights_is_no_forcing_bit_for_bit(getkey, signal, delay):
    cell, trials = make_cell(getkey()), make_trials(getkey())
    control = FeedbackControl(jnp.zeros((N, N_OUT)), signal=signal, delay=delay, rotation=30.0)
    for a, b in zip(simulate(cell, trials, control), simulate(cell, trials, NoForcing())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    zero_gain = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), alpha=0.0, signal=signal, delay=delay)
    for a, b in zip(simulate(cell, trials, zero_gain), simulate(cell, trials, NoForcing())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("rotation", [0.0, 40.0])
def test_integrated_signal_is_the_cumulative_cursor_error(getkey, rotation):
    cell, trials = make_cell(getkey()), make_trials(getkey())
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), alpha=0.7, rotation=rotation, dt=0.05)
    u, y = applied_control(cell, control, trials)
    error = rotate_np((np.asarray(trials.targets) - y) * np.asarray(trials.mask), rotation)
    np.testing.assert_allclose(u, 0.05 * np.cumsum(error, axis=1), rtol=1e-9, atol=1e-11)


def test_error_signal_is_the_instantaneous_error(getkey):
    cell, trials = make_cell(getkey()), make_trials(getkey())
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), signal="error", rotation=-25.0)
    u, y = applied_control(cell, control, trials)
    expected = rotate_np((np.asarray(trials.targets) - y) * np.asarray(trials.mask), -25.0)
    np.testing.assert_allclose(u, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("delay", [1, 3])
def test_delay_shifts_the_control_by_d_steps(getkey, delay):
    cell, trials = make_cell(getkey()), make_trials(getkey())
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), delay=delay, dt=0.1)
    u, y = applied_control(cell, control, trials)
    signal = 0.1 * np.cumsum((np.asarray(trials.targets) - y) * np.asarray(trials.mask), axis=1)
    shifted = np.concatenate([np.zeros_like(signal[:, :delay]), signal[:, :-delay]], axis=1)
    np.testing.assert_allclose(u, shifted, rtol=1e-9, atol=1e-11)


def test_control_with_the_readout_inverse_corrects_an_untrained_reaching_network(getkey):
    """W_fb = c W_out⁺ turns the output error into a state change that moves the output toward
    the target; an untrained network then reaches far better with the control on than off."""
    cell = LeakyRNN(3, 64, 2, key=getkey(), tau=0.05, dt=0.01, activation="relu", readout="rate")
    test = CenterOutReach(mode="test").test_trials()
    pinv = readout_pinv(cell.W_out, 1e-7)
    off = masked_mse(simulate(cell, test, NoForcing())[1], test.targets, test.mask)
    for control in (FeedbackControl(100.0 * pinv), FeedbackControl(10.0 * pinv, signal="error")):
        on = masked_mse(simulate(cell, test, control)[1], test.targets, test.mask)
        assert float(on) < 0.3 * float(off), (control.signal, float(on), float(off))


@pytest.mark.parametrize("delay", [0, 1])
def test_bptt_gradient_of_feedback_weights_matches_finite_differences(getkey, delay):
    """Through the closed loop (stop_gradient=False) the gradient is the total derivative."""
    cell, trials = make_cell(getkey()), make_trials(getkey())
    control = FeedbackControl(0.5 * jax.random.normal(getkey(), (N, N_OUT)), alpha=0.8, rotation=20.0, delay=delay,
                              dt=0.2, stop_gradient=False)
    model = ControlledCell(cell, control)
    key = getkey()
    _, grads, _ = BPTT().value_and_grad(model, ClosedLoop(), trials, key=key, objective=OBJECTIVE)

    @jax.jit
    def loss(W_fb):
        m = eqx.tree_at(lambda mm: mm.control.W_fb, model, W_fb)
        return BPTT().value_and_grad(m, ClosedLoop(), trials, key=key, objective=OBJECTIVE)[0]

    eps = 1e-6
    W = np.asarray(control.W_fb)
    numeric = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        d = np.zeros_like(W)
        d[idx] = eps
        numeric[idx] = (loss(jnp.asarray(W + d)) - loss(jnp.asarray(W - d))) / (2 * eps)
    np.testing.assert_allclose(grads.control.W_fb, numeric, rtol=1e-6, atol=1e-9)
    assert np.max(np.abs(numeric)) > 1e-4


def test_stopping_the_signal_changes_only_the_loop_gradient(getkey):
    """With the signal stopped, W_fb still learns (it multiplies u) but the cell's gradient no
    longer sees the loop; with it flowing, the cell's gradient differs."""
    cell, trials = make_cell(getkey()), make_trials(getkey())
    W_fb = jax.random.normal(getkey(), (N, N_OUT))
    grads = {}
    for stop in (True, False):
        model = ControlledCell(cell, FeedbackControl(W_fb, stop_gradient=stop, dt=0.3))
        grads[stop] = BPTT().value_and_grad(model, ClosedLoop(), trials, key=getkey(), objective=OBJECTIVE)[1]
    assert float(jnp.max(jnp.abs(grads[True].control.W_fb))) > 0
    assert not np.allclose(grads[True].cell.W_rec, grads[False].cell.W_rec)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_rtrl_equals_bptt_under_feedback_control(getkey, stop_gradient):
    cell = make_cell(getkey(), trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    trials = make_trials(getkey())
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), alpha=0.9, delay=1, rotation=15.0, dt=0.3,
                              stop_gradient=stop_gradient)
    key = getkey()
    loss, grads, _ = RTRL().value_and_grad(cell, control, trials, key=key, objective=OBJECTIVE)
    ref_loss, ref_grads, _ = BPTT(fast=False).value_and_grad(cell, control, trials, key=key, objective=OBJECTIVE)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10)


def test_trace_rules_treat_a_stopped_controller_as_an_input(getkey):
    """RFLO under a stopped controller equals RFLO on the same forced trajectory: the traces
    are not scaled (∂h̃/∂h = I) and the learning signal is the output error."""
    cell, trials = make_cell(getkey()), make_trials(getkey(), steps=1)
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), dt=0.5)
    loss, grads, _ = RFLO().value_and_grad(cell, control, trials, key=getkey(), objective=OBJECTIVE)
    # one step: the control acts after the only readout, so the gradient is BPTT's exactly
    ref_loss, ref_grads, _ = BPTT(fast=False).value_and_grad(cell, control, trials, key=getkey(), objective=OBJECTIVE)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    np.testing.assert_allclose(grads.W_rec, ref_grads.W_rec, rtol=1e-8, atol=1e-12)


def test_controlled_cell_learns_feedback_weights_with_optax(getkey):
    cell, trials = make_cell(getkey(), trainable=("W_rec", "b")), make_trials(getkey())
    model = ControlledCell(cell, FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), dt=0.3))
    assert model.trainable == ("W_rec", "b", "W_fb")
    loss, grads, _ = BPTT().value_and_grad(model, ClosedLoop(), trials, key=getkey(), objective=OBJECTIVE)
    grads = model.mask_grads(grads)
    np.testing.assert_array_equal(grads.cell.W_out, 0.0)  # not trainable in the cell
    assert float(jnp.max(jnp.abs(grads.control.W_fb))) > 0
    params = eqx.filter(model, eqx.is_inexact_array)
    optimizer = optax.sgd(1e-2)
    updates, _ = optimizer.update(eqx.filter(grads, eqx.is_inexact_array), optimizer.init(params), params)
    new = eqx.apply_updates(model, updates)
    assert not np.allclose(new.control.W_fb, model.control.W_fb)
    np.testing.assert_array_equal(new.cell.W_out, model.cell.W_out)
    frozen = ControlledCell(cell, model.control, learn_feedback=False)
    np.testing.assert_array_equal(frozen.mask_grads(grads).control.W_fb, 0.0)
    # the trained pair comes apart: the cell runs with its controller on, or off
    states, _ = simulate(new.cell, trials, new.control)
    assert states.shape == (BATCH, T, N)


def test_closed_loop_rollout_equals_the_controller_on_the_bare_cell(getkey):
    cell, trials = make_cell(getkey()), make_trials(getkey())
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), delay=2, signal="error")
    a = rollout(ControlledCell(cell, control), ClosedLoop(), trials.inputs[0], trials.targets[0], trials.mask[0])
    b = rollout(cell, control, trials.inputs[0], trials.targets[0], trials.mask[0])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_feedback_control_arguments_are_checked(getkey):
    W = jnp.zeros((N, N_OUT))
    with pytest.raises(ValueError, match="signal"):
        FeedbackControl(W, signal="position")
    with pytest.raises(ValueError, match="delay"):
        FeedbackControl(W, delay=-1)
    with pytest.raises(ValueError, match="W_fb"):
        FeedbackControl(jnp.zeros(N))
    with pytest.raises(ValueError, match="dt"):
        FeedbackControl(W, dt=0.0)
    wz = WilliamsZipserNet(1, 3, 1, key=getkey())
    with pytest.raises(TypeError, match="leak"):
        FeedbackControl(jnp.zeros((3, 1))).init(wz)
    with pytest.raises(TypeError, match="ControlledCell"):
        ClosedLoop().init(make_cell(getkey()))
    control = FeedbackControl(jnp.zeros((N, 3)), rotation=10.0)
    with pytest.raises(ValueError, match="2-D"):
        control.error(jnp.zeros(3), jnp.zeros(3), jnp.ones(3))


# ----- the Kaleb et al. workflow -----
def test_online_bptt_is_the_bptt_gradient_to_first_order(getkey):
    from errorforcing.experiments._kaleb import ADAPT_OBJECTIVE, online_bptt_trial, only_recurrent_learns

    cell = only_recurrent_learns(make_cell(getkey(), activation="relu"))
    trials = make_trials(getkey(), batch=1)
    trial = jax.tree.map(lambda a: a[0], trials)
    for forcing in (NoForcing(), FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), dt=0.3)):
        eps = 1e-8
        new, loss = online_bptt_trial(cell, forcing, trial, eps)
        ref_loss, ref, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=getkey(),
                                                            objective=ADAPT_OBJECTIVE)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        np.testing.assert_allclose((cell.W_rec - new.W_rec) / eps, ref.W_rec, rtol=1e-5,
                                   atol=1e-5 * float(jnp.max(jnp.abs(ref.W_rec))))
        np.testing.assert_array_equal(new.W_out, cell.W_out)


def test_online_bptt_refuses_a_controller_that_passes_gradient(getkey):
    from errorforcing.experiments._kaleb import online_bptt_trial

    cell = make_cell(getkey())
    trial = jax.tree.map(lambda a: a[0], make_trials(getkey(), batch=1))
    with pytest.raises(ValueError, match="stop_gradient"):
        online_bptt_trial(cell, FeedbackControl(jnp.zeros((N, N_OUT)), stop_gradient=False), trial, 1e-3)


def test_kaleb_workflow_writes_its_summary_and_figure(tmp_path):
    from errorforcing.experiments._kaleb import METHODS, KalebConfig, reproduce_kaleb_adaptation

    config = KalebConfig(n_rec=8, pretrain_iterations=3, pretrain_batch=4, adapt_trials=2,
                         lr_grid={m: (1e-4,) for m in METHODS})
    summary = reproduce_kaleb_adaptation(quick=True, out=tmp_path, progress=False, config=config)
    written = json.loads((tmp_path / "kaleb-adaptation.json").read_text())
    assert (tmp_path / "kaleb-adaptation.png").stat().st_size > 10_000
    assert written["quick"] is True and set(written["methods"]) == set(METHODS)
    for m in METHODS:
        for value in (*written["methods"][m]["test_before"].values(), *written["methods"][m]["test_after"].values()):
            assert value is not None and np.isfinite(value)
    assert summary["before"] == written["before"]
