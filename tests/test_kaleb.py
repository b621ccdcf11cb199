"""Kaleb et al. (2024) reproduction: the second-order (Gauss–Newton) alignment against an
independent numpy computation, the control's induced update by hand, the sine frequency-shift
task against hand-written trials, `reproduce kaleb-adaptation` end to end on a tiny setting, and the
sine frequency-shift adaptation (`reproduce kaleb-sine-shift`): its learning signals by hand, its
pushes, the workflow end to end and its refusal of options that do not apply.
(The RFLO+c one-step update (W_fb u_t) ⊙ P_t by hand is tests/test_control.py::
test_kaleb_rflo_step_is_feedback_signal_times_trace.)"""

import json
import types
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.forcing import FeedbackControl, NoForcing
from errorforcing.models import LeakyRNN
from errorforcing.tasks import SineFrequencyShift, Trials

N, N_IN, K, STEPS = 4, 3, 2, 5


def tiny(key):
    from errorforcing.reproductions.kaleb import only_recurrent_learns

    k_cell, k_out, k_x, k_y, k_fb = jax.random.split(key, 5)
    cell = LeakyRNN(N_IN, N, K, key=k_cell, tau=2.0, activation="relu", readout="rate")
    cell = only_recurrent_learns(eqx.tree_at(lambda c: c.W_out, cell, jax.random.normal(k_out, (K, N)) / N**0.5))
    trial = Trials(jax.random.normal(k_x, (STEPS, N_IN)), jax.random.normal(k_y, (STEPS, K)),
                   jnp.ones((STEPS, K)), {})
    return cell, trial, jax.random.normal(k_fb, (N, K))


def rotate_np(v, degrees):
    th = np.deg2rad(degrees)
    return v @ np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]).T


def positions_np(cell, trial, W, dt, rotation):
    """The cursor's position error p_t = dt Σ_{s<=t} R(θ)(y*_s - y_s) of a hand-written leaky ReLU
    rollout from h_{-1} = 0, control off: [T, K]."""
    a = cell.leak
    W_in, b, W_out, b_out = (np.asarray(v) for v in (cell.W_in, cell.b, cell.W_out, cell.b_out))
    X, Y = np.asarray(trial.inputs), np.asarray(trial.targets)
    h, p, out = np.zeros(N), np.zeros(K), []
    for t in range(STEPS):
        h = (1 - a) * h + a * (W @ np.maximum(h, 0) + W_in @ X[t] + b)
        p = p + dt * rotate_np(Y[t] - (W_out @ np.maximum(h, 0) + b_out), rotation)
        out.append(p.copy())
    return np.array(out)


def test_gauss_newton_direction_matches_numpy_with_finite_difference_jacobian(getkey):
    """d_t = -(G_t + λI)⁻¹ ∇ℓ_t with G_t = (2/K) J_tᵀ J_t over all N² entries of W_rec, J_t by
    central finite differences of a numpy rollout, solved as an N² × N² system (no push-through)."""
    from errorforcing.reproductions.kaleb import gauss_newton_directions, position_gradients

    cell, trial, _ = tiny(getkey())
    dt, rotation, damping, eps = 0.3, 30.0, 1e-3, 1e-6
    W0 = np.asarray(cell.W_rec)
    p0 = positions_np(cell, trial, W0, dt, rotation)
    J = np.zeros((STEPS, K, N * N))
    for idx in range(N * N):
        up, down = W0.copy().ravel(), W0.copy().ravel()
        up[idx] += eps
        down[idx] -= eps
        J[:, :, idx] = (positions_np(cell, trial, up.reshape(N, N), dt, rotation)
                        - positions_np(cell, trial, down.reshape(N, N), dt, rotation)) / (2 * eps)
    grad, newton = np.zeros((STEPS, N * N)), np.zeros((STEPS, N * N))
    for t in range(STEPS):
        grad[t] = (2 / K) * J[t].T @ p0[t]
        G = (2 / K) * J[t].T @ J[t]
        newton[t] = -np.linalg.solve(G + damping * np.eye(N * N), grad[t])

    # compiled: eager, their rollouts compile op by op (seconds)
    exact, got = eqx.filter_jit(gauss_newton_directions)(cell, NoForcing(), trial, rotation, dt, damping)
    np.testing.assert_allclose(exact, -grad.reshape(STEPS, N, N), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got, newton.reshape(STEPS, N, N), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(exact, eqx.filter_jit(position_gradients)(cell, NoForcing(), trial, rotation, dt),
                               rtol=1e-10, atol=1e-12)
    # the preconditioning changes the direction (it is not a rescaled gradient)
    late = STEPS - 1
    cos = np.vdot(newton[late], -grad[late]) / (np.linalg.norm(newton[late]) * np.linalg.norm(grad[late]))
    assert cos < 0.999


def test_second_order_alignment_in_the_diagnostics_by_hand(getkey):
    """update_diagnostics' second_order_alignment = mean_t cos(Δ_t, d_t), and the control's induced
    update (a c_t W_fb u_{t-1-d}) φ(h_{t-1})ᵀ / ‖φ(h_{t-1})‖² (0 where φ(h_{t-1}) = 0), by hand."""
    from errorforcing.reproductions.kaleb import gauss_newton_directions, kaleb_rflo_trial, update_diagnostics

    cell, trial, W_fb = tiny(getkey())
    dt, rotation = 0.3, 0.0
    control = FeedbackControl(W_fb, rotation=rotation, dt=dt, stop_gradient=True)
    _, newton = eqx.filter_jit(gauss_newton_directions)(cell, NoForcing(), trial, rotation, dt)
    _, _, (directions, induced) = eqx.filter_jit(kaleb_rflo_trial)(cell, control, trial, 0.0, control_on=False,
                                                                   record=True)

    # the control's induced update by hand (control off: the signal is computed, not applied)
    a = cell.leak
    W, W_in, b, W_out, b_out = (np.asarray(v) for v in (cell.W_rec, cell.W_in, cell.b, cell.W_out, cell.b_out))
    X, Y = np.asarray(trial.inputs), np.asarray(trial.targets)
    h, u_prev, expected = np.zeros(N), np.zeros(K), []
    for t in range(STEPS):
        r = np.maximum(h, 0)
        drive = a * W_fb @ u_prev
        expected.append(np.outer(drive, r) / (r @ r) if r @ r > 0 else np.zeros((N, N)))
        h = (1 - a) * h + a * (W @ r + W_in @ X[t] + b)
        u_prev = u_prev + dt * (Y[t] - (W_out @ np.maximum(h, 0) + b_out))
    np.testing.assert_allclose(induced, np.array(expected), rtol=1e-10, atol=1e-12)

    def mean_cos(A, B):
        out = []
        for x, y in zip(np.asarray(A), np.asarray(B)):
            n = np.linalg.norm(x) * np.linalg.norm(y)
            out.append(np.vdot(x, y) / n if n > 0 else 0.0)
        return np.mean(out)

    got = eqx.filter_jit(update_diagnostics)(cell, control, trial, "RFLO", rotation, dt)
    np.testing.assert_allclose(got["second_order_alignment"], mean_cos(directions, newton), rtol=1e-6)
    np.testing.assert_allclose(got["control_second_order_alignment"], mean_cos(induced, newton), rtol=1e-6)
    assert -1.0 <= float(got["second_order_alignment"]) <= 1.0


def test_sine_frequency_shift_trial_by_hand():
    """The reference's Sinewave trial: cue f from the warm-up on, sin/cos of the shifted frequency
    over τ_t = 2π (t - warmup) / T, the cosine channel silent until warmup + ⌊0.99 + T / (4 f')⌋."""
    task = SineFrequencyShift(shift=1.0, n_steps=40, warmup=5)
    f = 2.0
    trial = task.trial(f)
    T, warm, shifted = 40, 5, 3.0
    x = np.zeros((T, 1))
    y = np.zeros((T, 2))
    onset = warm + int(0.99 + T / (4 * shifted))  # 5 + 4 = 9
    for t in range(warm, T):
        x[t, 0] = f
        tau = 2 * np.pi * (t - warm) / T
        y[t, 0] = np.sin(shifted * tau)
        if t >= onset:
            y[t, 1] = np.cos(shifted * tau)
    np.testing.assert_allclose(trial.inputs, x, rtol=1e-6)
    np.testing.assert_allclose(trial.targets, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(trial.mask, np.ones((T, 2)))
    assert float(trial.info["shifted"]) == 3.0 and float(trial.info["frequency"]) == 2.0
    # unshifted (pre-training): the same cue asks for the slower oscillation
    base = SineFrequencyShift(n_steps=40, warmup=5).trial(f)
    np.testing.assert_array_equal(base.inputs, trial.inputs)
    assert not np.allclose(base.targets, trial.targets)


def test_sine_frequency_shift_samples_checks_and_registry():
    from errorforcing.experiments._registry import TASKS

    task = SineFrequencyShift()
    trials = jax.jit(jax.vmap(lambda k: task.sample(key=k)))(jax.random.split(jax.random.key(0), 64))
    cue = np.asarray(trials.inputs[:, -1, 0])
    assert cue.min() >= 1.0 and cue.max() <= 4.0 and cue.std() > 0.5
    assert np.all(np.asarray(trials.inputs[:, :20]) == 0.0)
    np.testing.assert_allclose(np.asarray(trials.info["shifted"]), cue)  # shift 0
    for bad in ({"warmup": 125}, {"freq_low": 0.0}, {"freq_low": 2.0, "freq_high": 1.0}, {"shift": -1.5}):
        with pytest.raises(ValueError):
            SineFrequencyShift(**bad)
    built = TASKS["sine-shift"].build(types.SimpleNamespace(options={"shift": 1.0}))
    assert isinstance(built, SineFrequencyShift) and built.shift == 1.0


@pytest.mark.slow  # compiles the whole workflow: ≈ 1 min on 2 idle cores (tests/test_control.py covers it in CI)
def test_reproduce_kaleb_adaptation_end_to_end_writes_claims(tmp_path, monkeypatch):
    """`reproduce kaleb-adaptation --quick` (the CLI) on a tiny quick setting: summary, figures and
    claims.json with a verdict for every claim, the second-order claim among them."""
    from errorforcing.cli import main
    from errorforcing.reproductions import kaleb

    tiny_quick = kaleb.KalebConfig(n_rec=6, n_steps=125, pretrain_iterations=2, pretrain_batch=2, adapt_trials=2,
                                   diagnostic_trials=2, lr_grid={m: (1e-4,) for m in kaleb.METHODS},
                                   heatmap_rotations=())
    monkeypatch.setattr(kaleb, "QUICK", tiny_quick)
    assert main(["reproduce", "kaleb-adaptation", "--quick", "--out", str(tmp_path)]) in (0, None)
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert [c["claim"] for c in claims] == [c.claim for c in kaleb.CLAIMS]
    assert all(c["verdict"] in ("reproduced", "not reproduced", "inconclusive") for c in claims)
    assert any("Fig. 5b" in c["source"] for c in claims)
    summary = json.loads((tmp_path / "kaleb-adaptation.json").read_text())
    for m in kaleb.METHODS:
        values = summary["methods"][m]["second_order_alignment"]
        assert len(values) == 2 and all(v is not None and -1 <= v <= 1 for v in values)
    assert (tmp_path / "kaleb-alignment.png").stat().st_size > 10_000


# ----- the sine frequency-shift variant (kaleb-sine-shift) -----
def _sine_tiny(key, steps=3):
    """A tiny relu net (1 input, 2 outputs, W_rec alone trainable), a controller of the direct
    output error and a trial of `steps` steps (mask 1)."""
    from errorforcing.reproductions.kaleb import only_recurrent_learns

    k_cell, k_out, k_x, k_y, k_fb = jax.random.split(key, 5)
    cell = LeakyRNN(1, N, K, key=k_cell, tau=2.0, activation="relu", readout="rate")
    cell = only_recurrent_learns(eqx.tree_at(lambda c: (c.W_out, c.b), cell,
                                             (jax.random.normal(k_out, (K, N)) / N**0.5, 0.3 * jnp.ones(N))))
    trial = Trials(jnp.abs(jax.random.normal(k_x, (steps, 1))) + 1.0, jax.random.normal(k_y, (steps, K)),
                   jnp.ones((steps, K)), {})
    control = FeedbackControl(jax.random.normal(k_fb, (N, K)), signal="error", stop_gradient=True)
    return cell, trial, control


def test_sine_shift_rflo_c_step_is_feedback_of_the_direct_error_times_trace(getkey):
    """RFLO+c on the sine task: W_rec ← W_rec + lr (W_fb e_t) ⊙ P_t after every step, e_t = y*_t - y_t
    the direct output error (the reference's pos_err = False), which also drives the next step
    as a W_fb e_{t-1}; a numpy loop."""
    from errorforcing.reproductions.kaleb import kaleb_rflo_trial

    cell, trial, control = _sine_tiny(getkey())
    lr, a = 0.05, cell.leak
    W, W_in, b, W_out, b_out, W_fb = (np.array(v, np.float64) for v in
                                      (cell.W_rec, cell.W_in, cell.b, cell.W_out, cell.b_out, control.W_fb))
    X, Y = np.asarray(trial.inputs), np.asarray(trial.targets)
    h, e_prev, P = np.zeros(N), np.zeros(K), np.zeros((N, N))
    for t in range(len(X)):
        r = np.maximum(h, 0)
        h = (1 - a) * h + a * (W @ r + W_in @ X[t] + b) + a * W_fb @ e_prev
        e = Y[t] - (W_out @ np.maximum(h, 0) + b_out)
        P = (1 - a) * P + a * np.outer((h > 0).astype(float), r)
        W = W + lr * (W_fb @ e)[:, None] * P
        e_prev = e
    new, _ = kaleb_rflo_trial(cell, control, trial, lr, control_on=True)
    np.testing.assert_allclose(new.W_rec, W, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(W - np.asarray(cell.W_rec))) > 1e-4


def test_sine_shift_bptt_step_is_the_references_direct_error_loss_gradient(getkey):
    """The BPTT arm of the sine task (`sine_adaptation(...).bptt`): after step t,
    W_rec ← W_rec - lr ∂ℓ_t/∂W_rec with the reference's ℓ_t = mean_k (y*_tk - y_tk)² (not the
    trial-normalised MSE). Two steps from h = 0: step 0 cannot change W_rec (φ(h_{-1}) = 0), step 1
    by hand, ∂ℓ_1/∂W = -(2/K) a (φ'(h_1) ⊙ W_outᵀ e_1) φ(h_0)ᵀ, the control a stopped input."""
    from errorforcing.reproductions.kaleb import SineShiftConfig, sine_adaptation

    steps = 2
    cell, trial, control = _sine_tiny(getkey(), steps=steps)
    lr, a = 0.05, cell.leak
    rule = sine_adaptation(SineShiftConfig(n_steps=steps, warmup=0), trial).bptt(lr)
    new, _ = rule.trial(cell, control, trial)
    W, W_in, b, W_out, b_out, W_fb = (np.array(v, np.float64) for v in
                                      (cell.W_rec, cell.W_in, cell.b, cell.W_out, cell.b_out, control.W_fb))
    X, Y = np.asarray(trial.inputs), np.asarray(trial.targets)
    h0 = a * (W_in @ X[0] + b)
    e0 = Y[0] - (W_out @ np.maximum(h0, 0) + b_out)
    h1 = (1 - a) * h0 + a * (W @ np.maximum(h0, 0) + W_in @ X[1] + b) + a * W_fb @ e0
    e1 = Y[1] - (W_out @ np.maximum(h1, 0) + b_out)
    grad = -(2 / K) * a * np.outer((h1 > 0) * (W_out.T @ e1), np.maximum(h0, 0))
    np.testing.assert_allclose(new.W_rec, W - lr * grad, rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(lr * grad)) > 1e-4


def test_sine_shift_pushes_as_the_reference():
    """Per trial and channel, with probability p, a constant push of A/4 over [c - 5, c + 5), c in
    [20, 190) (cut at the trial's end), subtracted from the targets (the output moves with y + push)."""
    from errorforcing.reproductions.kaleb import sine_push_trials

    task = SineFrequencyShift()
    trials = sample_batch_of(task, 400)
    push = eqx.filter_jit(sine_push_trials)
    pushed = push(trials, key=jax.random.key(1), probability=0.25)
    diff = np.asarray(trials.targets - pushed.targets)  # the push [B, T, K]
    assert set(np.unique(np.round(diff, 6))) <= {0.0, 0.25}
    on = diff.max(axis=1) > 0  # [B, K]
    assert 0.17 < on.mean() < 0.33
    lengths = (diff > 0).sum(axis=1)[on]
    assert lengths.max() == 10 and lengths.min() >= 1  # cut at the end when c + 5 > 125
    first = np.argmax(diff > 0, axis=1)[on]
    assert first.min() >= 15
    np.testing.assert_array_equal(push(trials, key=jax.random.key(1), probability=0.0).targets,
                                  trials.targets)


def sample_batch_of(task, n):
    from errorforcing.tasks import sample_batch

    return eqx.filter_jit(sample_batch)(task, n, key=jax.random.key(0))


def test_reproduce_kaleb_sine_shift_end_to_end_writes_claims(tmp_path, monkeypatch):
    """`reproduce kaleb-sine-shift --quick` (the CLI) on a tiny setting: the summary (every method's
    test error before and after, per test trial), claims.json with the sine claims, and the figure,
    drawn by the CLI (`plotting.kaleb_figures`) from what the workflow wrote (which draws nothing)."""
    from errorforcing import plotting
    from errorforcing.cli import main
    from errorforcing.reproductions import kaleb

    tiny_quick = kaleb.SineShiftConfig(n_rec=4, n_steps=30, pretrain_iterations=2, pretrain_batch=2, adapt_trials=2,
                                       test_trials=6, lr_grid={m: (1e-3, 1e-2) for m in kaleb.METHODS})
    monkeypatch.setattr(kaleb, "SINE_QUICK", tiny_quick)
    written_by_workflow, drawn = [], []

    def kaleb_figures(out, name):  # what the workflow (and the claims) left in DIR when the CLI draws
        written_by_workflow.extend(sorted(p.name for p in Path(out).iterdir()))
        figures = real_kaleb_figures(out, name)
        drawn.extend(figures)
        return figures

    real_kaleb_figures = plotting.kaleb_figures
    monkeypatch.setattr(plotting, "kaleb_figures", kaleb_figures)
    assert main(["reproduce", "kaleb-sine-shift", "--quick", "--out", str(tmp_path)]) in (0, None)
    assert written_by_workflow == ["claims.json", "kaleb-sine-shift.json", "kaleb-sine-shift.npz"]  # no figure
    assert drawn == [tmp_path / "kaleb-sine-shift.png"]
    arrays = np.load(tmp_path / "kaleb-sine-shift.npz")
    assert arrays["target"].shape == (30, 2)
    for k in kaleb.EXAMPLE_KEYS:  # one shifted test trial's outputs [T, 2], control off unless named
        assert arrays[f"output:{k}"].shape == (30, 2) and np.isfinite(arrays[f"output:{k}"]).all()
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert [c["claim"] for c in claims] == [
        "RFLO+c reaches lower test error after the frequency shift than RFLO",
        "BPTT+c reaches lower test error after the frequency shift than BPTT"]
    assert all(c["verdict"] in ("reproduced", "not reproduced", "inconclusive") for c in claims)
    assert all(c["reproduction"] == "kaleb-sine-shift" for c in claims)
    assert all(c["numbers"]["trials"] == 6 for c in claims), claims  # paired by test trial
    summary = json.loads((tmp_path / "kaleb-sine-shift.json").read_text())
    assert summary["quick"] is True and summary["config"]["n_rec"] == 4
    for m in kaleb.METHODS:
        r = summary["methods"][m]
        assert r["test_before"] == summary["before"]["shifted_control_off"] and np.isfinite(r["test_before"])
        assert len(r["test_after_per_trial_mse"]) == 6 and len(r["test_after_per_learning_rate"]) == 2
        assert r["test_after"] == min(v for v in r["test_after_per_learning_rate"] if v is not None)
        np.testing.assert_allclose(np.mean(r["test_after_per_trial_mse"]), r["test_after"], rtol=1e-5)
        assert r["test_after"] != r["test_before"]  # W_rec learned
    # the test curve: before, then after each adaptation trial
    assert all(len(c) == 3 for c in summary["adaptation_curves_output_mse"].values())
    assert "figure" not in summary
    assert (tmp_path / "kaleb-sine-shift.png").stat().st_size > 10_000


def test_cli_draws_the_figures_of_every_workflow_reproduction():
    """Workflows draw nothing, so the CLI's `reproduce` must have a drawer for each of them."""
    from errorforcing.cli._experiments import WORKFLOW_FIGURES
    from errorforcing.reproductions import REPRODUCTIONS

    assert set(WORKFLOW_FIGURES) == {n for n, r in REPRODUCTIONS.items() if r.workflow is not None}


def test_reproduce_kaleb_sine_shift_refuses_options_that_do_not_apply(tmp_path, capsys):
    """--workers / --executor / --address are the sweeps' (a workflow runs in this process): exit 2,
    one line naming them, nothing written; the sine config has no rotation, heatmap or diagnostics."""
    from errorforcing.cli import main
    from errorforcing.reproductions.kaleb import SineShiftConfig

    for extra in (["--workers", "2"], ["--address", "localhost:1"]):
        out = tmp_path / "x"
        capsys.readouterr()
        assert main(["reproduce", "kaleb-sine-shift", "--quick", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--workers" in err and "kaleb-sine-shift" in err, err
        assert not out.exists()
    for field in ("rotation", "heatmap_rotations", "diagnostic_trials"):
        with pytest.raises(TypeError):
            SineShiftConfig(**{field: 1})


# ----- pre-training and adaptation as programs -----
def _reference_pretrain(cell, control, config, task, key):
    """Kaleb et al.'s pre-training written out: per iteration a batch of pushed random reaches
    (the keys as `pretrain` splits them), the closed loop by hand (h_t = (1 - a) h_{t-1}
    + a (W_rec φ(h_{t-1}) + W_in x_t + b) + a c_t W_fb u_{t-1}, y_t = W_out φ(h_t) + b_out,
    u_t = u_{t-1} + dt (y*_t - y_t) m_t, c_t = max_k m_tk), loss mean(u²) + rate_reg mean(h²)
    differentiated through the loop, every gradient scaled by min(1, c / (‖g‖ + 1e-12)), then
    Adam (β = 0.9, 0.999, ε = 1e-8) on W_rec, W_in, b, W_out, b_out and W_fb.
    Returns (params, losses, gradient norms)."""
    from errorforcing.reproductions.kaleb import push_trials
    from errorforcing.tasks import sample_batch

    a, dt = cell.leak, config.dt
    params = {"W_rec": cell.W_rec, "W_in": cell.W_in, "b": cell.b, "W_out": cell.W_out, "b_out": cell.b_out,
              "W_fb": control.W_fb}

    def loss(p, inputs, targets, mask):
        def step(carry, xs):
            h, u = carry
            x, y_star, m = xs
            drive = a * jnp.max(m, axis=-1, keepdims=True) * (u @ p["W_fb"].T)
            h = (1 - a) * h + a * (jax.nn.relu(h) @ p["W_rec"].T + x @ p["W_in"].T + p["b"]) + drive
            u = u + dt * (y_star - (jax.nn.relu(h) @ p["W_out"].T + p["b_out"])) * m
            return (h, u), (h, u)

        B = inputs.shape[0]
        zeros = (jnp.zeros((B, cell.n_rec)), jnp.zeros((B, 2)))
        _, (h, u) = jax.lax.scan(step, zeros, tuple(jnp.swapaxes(v, 0, 1) for v in (inputs, targets, mask)))
        return jnp.mean(u**2) + config.rate_reg * jnp.mean(h**2)

    @jax.jit
    def iteration(params, m, v, i, k):
        k_data, k_push = jax.random.split(k)
        trials = push_trials(sample_batch(task, config.pretrain_batch, key=k_data), key=k_push,
                             probability=config.push_probability)
        value, g = jax.value_and_grad(loss)(params, trials.inputs, trials.targets, trials.mask)
        norm = jnp.sqrt(sum(jnp.sum(x**2) for x in g.values()))
        g = {n: x * jnp.minimum(1.0, config.pretrain_clip / (norm + 1e-12)) for n, x in g.items()}
        m = {n: 0.9 * m[n] + 0.1 * g[n] for n in g}
        v = {n: 0.999 * v[n] + 0.001 * g[n] ** 2 for n in g}
        params = {n: params[n] - config.pretrain_lr * (m[n] / (1 - 0.9**i)) / (jnp.sqrt(v[n] / (1 - 0.999**i)) + 1e-8)
                  for n in params}
        return params, m, v, value, norm

    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    losses, norms = [], []
    for i, k in enumerate(jax.random.split(key, config.pretrain_iterations), start=1):
        params, m, v, value, norm = iteration(params, m, v, float(i), k)
        losses.append(float(value))
        norms.append(float(norm))
    return params, np.array(losses), np.array(norms)


def test_pretrain_is_bptt_through_the_closed_loop_with_clipped_adam_by_hand(getkey):
    """`pretrain` (the trainer's `make_step`) against the loop written out
    (`_reference_pretrain`), float64, pushed reaches, the clip binding on some iterations."""
    from errorforcing.reproductions.kaleb import KalebConfig, make_network, pretrain
    from errorforcing.tasks import CenterOutReach

    config = KalebConfig(n_rec=5, pretrain_iterations=6, pretrain_batch=3, pretrain_lr=1e-2, pretrain_clip=1.0,
                         push_probability=0.5)
    task = CenterOutReach(mode="random", n_steps=40, go=20, ramp=15, target_on=5, dt=config.dt)
    cell, control = make_network(config, key=getkey())
    key = getkey()
    trained, feedback, losses = pretrain(cell, control, config, key=key, task=task, chunk=3)
    params, expected_losses, norms = _reference_pretrain(cell, control, config, task, key)

    assert np.any(norms > config.pretrain_clip) and np.any(norms < config.pretrain_clip), norms
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    for name in ("W_rec", "W_in", "b", "W_out", "b_out"):
        np.testing.assert_allclose(getattr(trained, name), params[name], rtol=1e-10, atol=1e-13, err_msg=name)
        assert np.max(np.abs(np.asarray(getattr(trained, name)) - np.asarray(getattr(cell, name)))) > 1e-3, name
    np.testing.assert_allclose(feedback.W_fb, params["W_fb"], rtol=1e-10, atol=1e-13)
    assert np.max(np.abs(np.asarray(feedback.W_fb - control.W_fb))) > 1e-3
    assert feedback.alpha == control.alpha and feedback.dt == control.dt and feedback.rotation == 0.0


def test_adapt_compiles_once_per_method_and_shape(getkey, caplog):
    """`adapt` again with other learning rates or other trials (same method, same shapes) runs the
    program the first call compiled, with its own arguments: the rates swapped give the lanes
    swapped, bit for bit; other trials give other numbers."""
    from errorforcing.reproductions.kaleb import SineShiftConfig, adapt, make_network, sine_adaptation
    from errorforcing.tasks import sample_batch

    # the shapes of the workflow test's RFLO+c run, whose compiled program the cache keeps
    config = SineShiftConfig(n_rec=4, n_steps=30, adapt_trials=2)
    cell, control = make_network(config, key=getkey(), n_in=1, signal="error")
    test = sample_batch(SineFrequencyShift(shift=1.0, n_steps=30), 6, key=getkey())
    adaptation = sine_adaptation(config, test)

    def run(lrs, key):
        caplog.clear()
        with jax.log_compiles(), caplog.at_level("WARNING", logger="jax"):
            cells, _, errors = jax.block_until_ready(adapt(cell, control, "RFLO+c", lrs, config, key=key,
                                                           adaptation=adaptation))
        return cells.W_rec, errors, sum("Compiling jit(_adapt_rates)" in r.getMessage() for r in caplog.records)

    key = getkey()
    W, errors, n_first = run((1e-3, 1e-2), key)
    W_swapped, errors_swapped, n_swapped = run((1e-2, 1e-3), key)
    W_other, errors_other, n_other = run((1e-3, 1e-2), getkey())
    assert (n_first, n_swapped, n_other) == (1, 0, 0)
    np.testing.assert_array_equal(W_swapped, W[::-1])
    np.testing.assert_array_equal(errors_swapped, errors[::-1])
    assert not np.allclose(W[0], W[1]) and not np.allclose(W_other, W)
    np.testing.assert_array_equal(errors_other[:, 0], errors[:, 0])  # the same network before adaptation
