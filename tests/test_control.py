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
from errorforcing.rules import BPTT, RFLO, RTRL, EProp, Objective, OnlineBPTT, masked_mse
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


def masked_trials(key, batch=BATCH, steps=T) -> Trials:
    """Random trials whose every third step is wholly unsupervised (and the rest partly)."""
    trials = make_trials(key, batch, steps)
    mask = np.asarray(trials.mask).copy()
    mask[:, ::3] = 0.0
    return trials._replace(mask=jnp.asarray(mask))


def reference_rollout(cell, control, trials):
    """A hand-written loop of Kaleb et al.'s step (their model_def.py `f_step`): the control
    u_{t-1-d} enters step t as an input, only on supervised steps,

        h_t = (1 - a) h_{t-1} + a (W_rec φ(h_{t-1}) + W_in x_t + b + α c_t W_fb u_{t-1-d}),
        y_t = W_out φ(h_t) + b_out,   u_t = u_{t-1} + dt R(θ)(y*_t - y_t) ⊙ m_t  (or the error).

    Returns states, outputs and the applied c_t u_{t-1-d}, as numpy arrays."""
    W_rec, W_in, b = (np.asarray(v) for v in (cell.W_rec, cell.W_in, cell.b))
    W_out, b_out, W_fb = (np.asarray(v) for v in (cell.W_out, cell.b_out, control.W_fb))
    a, d, alpha = cell.leak, control.delay, float(control.alpha)
    X, Y, M = (np.asarray(v) for v in (trials.inputs, trials.targets, trials.mask))
    B, steps = X.shape[:2]
    states, outputs, applied = np.zeros((B, steps, N)), np.zeros((B, steps, N_OUT)), np.zeros((B, steps, N_OUT))
    for i in range(B):
        h, u = np.zeros(N), [np.zeros(N_OUT)] * (d + 1)  # u[k] = u_{t-1-d+k}
        for t in range(steps):
            c = M[i, t].max()
            applied[i, t] = c * u[0]
            h = (1 - a) * h + a * (W_rec @ np.tanh(h) + W_in @ X[i, t] + b + alpha * W_fb @ applied[i, t])
            y = W_out @ np.tanh(h) + b_out
            e = rotate_np((Y[i, t] - y) * M[i, t], float(control.rotation))
            u = u[1:] + [u[-1] + control.dt * e if control.signal == "integrated" else e]
            states[i, t], outputs[i, t] = h, y
    return states, outputs, applied


@pytest.mark.parametrize("signal", ["integrated", "error"])
@pytest.mark.parametrize("delay", [0, 1, 3])
@pytest.mark.parametrize("rotation", [0.0, 40.0])
def test_control_enters_the_next_step_as_an_input(getkey, signal, delay, rotation):
    cell, trials = make_cell(getkey()), masked_trials(getkey())
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), alpha=0.7, signal=signal, delay=delay,
                              rotation=rotation, dt=0.3)
    states, outputs = simulate(cell, trials, control)
    ref_states, ref_outputs, applied = reference_rollout(cell, control, trials)
    np.testing.assert_allclose(states, ref_states, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(outputs, ref_outputs, rtol=1e-10, atol=1e-12)
    # the check has teeth: the control moved the outputs, and was off on unsupervised steps
    assert np.max(np.abs(np.asarray(outputs) - np.asarray(simulate(cell, trials, NoForcing())[1]))) > 1e-3
    assert np.all(applied[:, ::3] == 0) and np.max(np.abs(applied)) > 1e-3


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


@pytest.mark.parametrize("rule", [RFLO(), EProp()], ids=["rflo", "eprop"])
def test_trace_rules_treat_a_stopped_controller_as_an_input(getkey, rule):
    """A trace rule under a stopped controller equals the same rule, unforced, on a network whose
    extra input lines carry the applied control c_t u_{t-1-d} through W_in's extra columns α W_fb:
    the control is an input, the traces are not scaled, and every trained parameter agrees."""
    trainable = ("W_rec", "W_in", "b", "W_out", "b_out")
    cell, trials = make_cell(getkey(), trainable=trainable), masked_trials(getkey(), steps=8)
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), alpha=0.8, delay=1, dt=0.5)
    key = getkey()
    loss, grads, _ = rule.value_and_grad(cell, control, trials, key=key, objective=OBJECTIVE)

    _, _, applied = reference_rollout(cell, control, trials)
    wide = LeakyRNN(N_IN + N_OUT, N, N_OUT, key=getkey(), tau=4.0, readout="rate", activation="tanh",
                    trainable=trainable)
    wide = eqx.tree_at(lambda c: (c.W_rec, c.W_in, c.b, c.W_out, c.b_out), wide,
                       (cell.W_rec, jnp.concatenate([cell.W_in, control.alpha * control.W_fb], axis=1), cell.b,
                        cell.W_out, cell.b_out))
    wide_trials = trials._replace(inputs=jnp.concatenate([trials.inputs, jnp.asarray(applied)], axis=-1))
    ref_loss, ref, _ = rule.value_and_grad(wide, NoForcing(), wide_trials, key=key, objective=OBJECTIVE)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    for name in trainable:
        got, want = getattr(grads, name), getattr(ref, name)
        if name == "W_in":
            want = want[:, :N_IN]
        assert float(jnp.max(jnp.abs(want))) > 1e-6, name
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12, err_msg=name)


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


def test_a_controlled_cell_declares_its_parts_trainable_leaves_and_the_trainer_step_learns_them(getkey):
    """`trainable_spec` of a ControlledCell is the inner cell's and W_fb (it once read only
    top-level field names, marked nothing, and the trainer's step changed no weight of it)."""
    from errorforcing.rules import trainable_spec
    from errorforcing.training import MemberState, make_step

    cell, trials = make_cell(getkey(), trainable=("W_rec", "b")), make_trials(getkey())
    for learn_feedback in (True, False):
        model = ControlledCell(cell, FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), dt=0.3),
                               learn_feedback=learn_feedback)
        spec = trainable_spec(model)
        assert spec.cell == trainable_spec(cell) and spec.control.W_fb is learn_feedback
        assert not any(jax.tree.leaves(eqx.tree_at(lambda c: c.W_fb, spec.control, False)))
        optimizer = optax.sgd(1e-2)
        state = MemberState(model, optimizer.init(eqx.filter(model, spec)), ClosedLoop(), jnp.array(True))
        new, _ = make_step(BPTT(), optimizer, OBJECTIVE)(state, trials, getkey(), 0)
        _, grads, _ = BPTT().value_and_grad(model, ClosedLoop(), trials, key=getkey(), objective=OBJECTIVE)
        grads = model.mask_grads(grads)
        for name in ("W_rec", "b"):  # plain SGD: θ' = θ - η g
            np.testing.assert_allclose(getattr(new.cell.cell, name), getattr(cell, name) - 1e-2 * getattr(grads.cell, name),
                                       rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(new.cell.cell.W_out, cell.W_out)
        fb_moved = not np.array_equal(new.cell.control.W_fb, model.control.W_fb)
        assert fb_moved is learn_feedback


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
    from errorforcing.reproductions.kaleb import ADAPT_OBJECTIVE, only_recurrent_learns

    cell = only_recurrent_learns(make_cell(getkey(), activation="relu"))
    trials = make_trials(getkey(), batch=1)
    for forcing in (NoForcing(), FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), dt=0.3)):
        eps = 1e-8
        loss, grads, _ = OnlineBPTT(lr=eps).value_and_grad(cell, forcing, trials, key=getkey(),
                                                           objective=ADAPT_OBJECTIVE)
        ref_loss, ref, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=getkey(),
                                                            objective=ADAPT_OBJECTIVE)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        np.testing.assert_allclose(grads.W_rec, ref.W_rec, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(ref.W_rec))))
        np.testing.assert_array_equal(grads.W_out, 0.0)


def test_online_bptt_learns_every_trainable_field_to_first_order(getkey):
    cell = make_cell(getkey(), trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    trials = make_trials(getkey(), batch=1)
    objective = Objective(rate_reg=0.0, readout_reg=0.0)
    _, grads, _ = OnlineBPTT(lr=1e-8).value_and_grad(cell, NoForcing(), trials, key=getkey(), objective=objective)
    _, ref, _ = BPTT(fast=False).value_and_grad(cell, NoForcing(), trials, key=getkey(), objective=objective)
    for name in ("W_rec", "W_in", "b", "W_out", "b_out"):
        want = getattr(ref, name)
        np.testing.assert_allclose(getattr(grads, name), want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))),
                                   err_msg=name)


@pytest.mark.parametrize("rotation", [0.0, 40.0])
def test_online_bptt_position_loss_is_the_bptt_gradient_of_the_squared_position_error(getkey, rotation):
    """Kaleb et al.'s adaptation loss, Σ_t mean_k p_tk², p_t = dt Σ_{s<=t} R(θ) m_s (y*_s - y_s): to
    first order in lr the online updates sum to its gradient (autodiff of a rollout), with the
    controller a stopped input; every trainable field."""
    cell = make_cell(getkey(), activation="relu", trainable=("W_rec", "W_in", "W_out", "b_out"))
    trials = masked_trials(getkey(), batch=1)
    dt = 0.3
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), dt=dt, rotation=rotation)
    for forcing in (NoForcing(), control):
        rule = OnlineBPTT(lr=1e-8, position_dt=dt, position_rotation=rotation)
        loss, grads, _ = rule.value_and_grad(cell, forcing, trials, key=getkey(),
                                             objective=Objective(rate_reg=0.0, readout_reg=0.0))

        def position_loss(c):
            _, y = rollout(c, forcing, trials.inputs[0], trials.targets[0], trials.mask[0])
            e = np.asarray(1.0) * trials.mask[0] * (trials.targets[0] - y)
            p = dt * jnp.cumsum(jnp.stack([jnp.cos(jnp.deg2rad(rotation)) * e[:, 0] - jnp.sin(jnp.deg2rad(rotation)) * e[:, 1],
                                           jnp.sin(jnp.deg2rad(rotation)) * e[:, 0] + jnp.cos(jnp.deg2rad(rotation)) * e[:, 1]],
                                          -1), axis=0)
            return jnp.sum(jnp.mean(p**2, axis=-1))

        want_loss, want = eqx.filter_value_and_grad(position_loss)(cell)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
        for name in ("W_rec", "W_in", "W_out", "b_out"):
            ref = getattr(want, name)
            np.testing.assert_allclose(getattr(grads, name), ref, rtol=1e-5,
                                       atol=1e-5 * float(jnp.max(jnp.abs(ref))), err_msg=name)
    with pytest.raises(ValueError, match="position_dt"):
        OnlineBPTT(lr=1e-3, position_rotation=30.0)


def test_online_bptt_refuses_a_controller_that_passes_gradient(getkey):
    cell = make_cell(getkey())
    trial = jax.tree.map(lambda a: a[0], make_trials(getkey(), batch=1))
    with pytest.raises(ValueError, match="stop_gradient"):
        OnlineBPTT(lr=1e-3).trial(cell, FeedbackControl(jnp.zeros((N, N_OUT)), stop_gradient=False), trial)


@pytest.mark.parametrize("control_on", [True, False])
def test_kaleb_rflo_step_is_feedback_signal_times_trace(getkey, control_on):
    """Kaleb et al.'s RFLO(+c): W_rec += lr (W_fb u_t) ⊙ P_t after every step, P_t = (1 - a) P_{t-1}
    + a φ'(h_t) φ(h_{t-1})ᵀ, u_t the integrated cursor error; by hand over 3 steps."""
    from errorforcing.reproductions.kaleb import kaleb_rflo_trial, only_recurrent_learns

    cell = only_recurrent_learns(make_cell(getkey(), activation="relu"))
    trial = jax.tree.map(lambda a: a[0], make_trials(getkey(), batch=1, steps=3))
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), rotation=30.0, dt=0.5)
    lr = 0.05
    new, _ = kaleb_rflo_trial(cell, control, trial, lr, control_on=control_on)

    W, W_in, b = np.asarray(cell.W_rec), np.asarray(cell.W_in), np.asarray(cell.b)
    W_out, b_out, W_fb = np.asarray(cell.W_out), np.asarray(cell.b_out), np.asarray(control.W_fb)
    X, Y, M = (np.asarray(v) for v in (trial.inputs, trial.targets, trial.mask))
    a, relu = cell.leak, lambda v: np.maximum(v, 0.0)
    h, u_prev, P = np.zeros(N), np.zeros(N_OUT), np.zeros((N, N))
    for t in range(3):
        drive = a * M[t].max() * W_fb @ u_prev if control_on else 0.0
        h_new = (1 - a) * h + a * (W @ relu(h) + W_in @ X[t] + b) + drive
        y = W_out @ relu(h_new) + b_out
        u = u_prev + 0.5 * rotate_np((Y[t] - y) * M[t], 30.0)
        P = (1 - a) * P + a * np.outer((h_new > 0).astype(float), relu(h))
        W = W + lr * (W_fb @ u)[:, None] * P
        h, u_prev = h_new, u
    np.testing.assert_allclose(new.W_rec, W, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(W - np.asarray(cell.W_rec))) > 1e-4
    np.testing.assert_array_equal(new.W_out, cell.W_out)


@pytest.mark.parametrize("method", ["RFLO", "RFLO+c", "BPTT+c"])
def test_kaleb_update_diagnostics_by_hand(getkey, method):
    """Update efficiency ‖Σ_t Δ_t‖ / Σ_t ‖Δ_t‖ and local alignment mean_t cos(Δ_t, g_t) on one trial
    with W_rec fixed: Δ_t = (W_fb u_t) ⊙ P_t by hand for RFLO(+c), g_t = -∂ℓ_t/∂W_rec of the
    squared position error ℓ_t = mean_k p_tk² by central finite differences."""
    from errorforcing.reproductions.kaleb import (kaleb_rflo_trial, only_recurrent_learns, position_gradients,
                                                  update_diagnostics)

    steps, rotation, dt = 5, 30.0, 0.5
    cell = only_recurrent_learns(make_cell(getkey(), activation="relu"))
    trial = jax.tree.map(lambda a: a[0], make_trials(getkey(), batch=1, steps=steps))
    control = FeedbackControl(jax.random.normal(getkey(), (N, N_OUT)), rotation=rotation, dt=dt, stop_gradient=True)
    control_on = method.endswith("+c")
    forcing = control if control_on else NoForcing()
    W_in, b, W_out, b_out, W_fb = (np.asarray(v) for v in (cell.W_in, cell.b, cell.W_out, cell.b_out, control.W_fb))
    X, Y, M = (np.asarray(v) for v in (trial.inputs, trial.targets, trial.mask))
    a, relu = cell.leak, lambda v: np.maximum(v, 0.0)

    def hand(W, drives=None):
        """Step losses, the control's drives (live unless given: a stopped input) and RFLO's directions."""
        h, u_prev, P = np.zeros(N), np.zeros(N_OUT), np.zeros((N, N))
        losses, used, directions = [], [], []
        for t in range(steps):
            drive = (a * M[t].max() * W_fb @ u_prev if control_on else np.zeros(N)) if drives is None else drives[t]
            h_new = (1 - a) * h + a * (W @ relu(h) + W_in @ X[t] + b) + drive
            u = u_prev + dt * rotate_np((Y[t] - (W_out @ relu(h_new) + b_out)) * M[t], rotation)
            P = (1 - a) * P + a * np.outer((h_new > 0).astype(float), relu(h))
            losses.append(np.mean(u**2))
            used.append(drive)
            directions.append((W_fb @ u)[:, None] * P)
            h, u_prev = h_new, u
        return np.array(losses), used, np.array(directions)

    W0, eps = np.asarray(cell.W_rec), 1e-6
    _, drives, hand_directions = hand(W0)
    exact = np.zeros((steps, N, N))
    for i in range(N):
        for j in range(N):
            up, down = W0.copy(), W0.copy()
            up[i, j] += eps
            down[i, j] -= eps
            exact[:, i, j] = -(hand(up, drives)[0] - hand(down, drives)[0]) / (2 * eps)
    np.testing.assert_allclose(position_gradients(cell, forcing, trial, rotation, dt), exact, rtol=1e-5, atol=1e-8)

    if method.startswith("RFLO"):
        new, _, (directions, _) = kaleb_rflo_trial(cell, control, trial, 0.0, control_on=control_on, record=True)
        np.testing.assert_array_equal(new.W_rec, cell.W_rec)
        np.testing.assert_allclose(directions, hand_directions, rtol=1e-10, atol=1e-12)
        hand_ = hand_directions
    else:
        hand_ = exact
    got = update_diagnostics(cell, control, trial, method, rotation, dt)
    norms = np.linalg.norm(hand_.reshape(steps, -1), axis=1)
    np.testing.assert_allclose(got["update_efficiency"], np.linalg.norm(hand_.sum(0)) / norms.sum(), rtol=1e-6)
    if method.startswith("RFLO"):
        # a zero vector (step 0: φ(h_{-1}) = 0 and h_0 does not depend on W_rec) has cosine 0, as
        # torch's cosine_similarity in the reference
        cos = [np.vdot(d, g) / (np.linalg.norm(d) * np.linalg.norm(g)) if np.linalg.norm(d) * np.linalg.norm(g) > 0
               else 0.0 for d, g in zip(hand_, exact)]
        np.testing.assert_allclose(got["local_alignment"], np.mean(cos), rtol=1e-5)
    else:
        assert "local_alignment" not in got


def test_kaleb_workflow_writes_its_summary_and_figure(tmp_path):
    """The workflow writes its summary and arrays and draws nothing; `plotting.kaleb_figures` then
    draws the figures from what it wrote."""
    from errorforcing.plotting import kaleb_figures
    from errorforcing.reproductions.kaleb import METHODS, PATH_KEYS, KalebConfig, reproduce_kaleb_adaptation

    config = KalebConfig(n_rec=8, pretrain_iterations=3, pretrain_batch=4, adapt_trials=2, rotation=45.0,
                         lr_grid={m: (1e-4, 1e-3) for m in METHODS}, heatmap_rotations=(30.0, 45.0))
    summary = reproduce_kaleb_adaptation(quick=True, out=tmp_path, progress=False, config=config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kaleb-adaptation.json", "kaleb-adaptation.npz"]
    written = json.loads((tmp_path / "kaleb-adaptation.json").read_text())
    assert not any("figure" in k for k in written), "the summary names no figure the workflow did not draw"
    arrays = np.load(tmp_path / "kaleb-adaptation.npz")
    # the 8 rotated test reaches: targets on the radius-5 circle, a path [T, 2] to each, from the centre
    np.testing.assert_allclose(np.linalg.norm(arrays["targets"], axis=1), 5.0, rtol=1e-6)
    for k in PATH_KEYS:
        assert arrays[f"path:{k}"].shape == (8, config.n_steps, 2) and np.isfinite(arrays[f"path:{k}"]).all()
    assert not np.allclose(arrays["path:before"], arrays["path:RFLO"])  # after adaptation: another network
    figures = kaleb_figures(tmp_path, "kaleb-adaptation")
    assert [f.name for f in figures] == ["kaleb-adaptation.png", "kaleb-alignment.png", "kaleb-heatmap.png"]
    assert all(f.parent == tmp_path and f.stat().st_size > 10_000 for f in figures)
    assert written["quick"] is True and set(written["methods"]) == set(METHODS)
    for m in METHODS:
        for value in (*written["methods"][m]["test_before"].values(), *written["methods"][m]["test_after"].values()):
            assert value is not None and np.isfinite(value)
        assert len(written["methods"][m]["test_after_per_target_position_mse"]) == 8
        assert len(written["methods"][m]["update_efficiency"]) == 2
        assert all(0.0 <= v <= 1.0 for v in written["methods"][m]["update_efficiency"])
        assert ("local_alignment" in written["methods"][m]) == m.startswith("RFLO")
    assert summary["before"] == written["before"]
    # the heatmap: rotation × learning rate; at the adaptation's own 45° it is that run's result
    heat = written["heatmap"]["position_mse_after"]
    assert written["heatmap"]["rotations"] == [30.0, 45.0]
    for m in METHODS:
        assert np.shape(heat[m]) == (2, 2)
        assert heat[m][1] == [e["position_mse"] for e in written["methods"][m]["test_after_per_learning_rate"]]
        assert heat[m][0] != heat[m][1]
    with pytest.raises(ValueError, match="not a Kaleb reproduction"):
        kaleb_figures(tmp_path, "marschall-alignment")
