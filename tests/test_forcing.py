"""Forcing invariants of SPEC §2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.experiments import FORCINGS as FORCING_ENTRIES
from errorforcing.experiments import ForcingConfig
from errorforcing.forcing import (ErrorForcing, FeedbackForcing, KalmanErrorForcing, NoForcing, TeacherForcing,
                                  WilliamsZipserTeacherForcing, readout_pinv)


@pytest.fixture
def setup(getkey):
    task = ef.tasks.DelayedXOR(delay=5)
    cell = ef.models.LeakyRNN(task.n_in, 8, task.n_out, key=getkey())
    # a nonzero readout bias so the invariants check that it is accounted for
    cell = jax.tree_util.tree_map(lambda x: x, cell)
    cell = eqx_set(cell, "b_out", jnp.array([0.3]))
    trials = ef.tasks.sample_batch(task, 4, key=getkey())
    return cell, trials


def eqx_set(cell, name, value):
    import equinox as eqx

    return eqx.tree_at(lambda c: getattr(c, name), cell, value)


def _two_output_cell(getkey):
    cell = ef.models.LeakyRNN(2, 10, 2, key=getkey())
    return eqx_set(cell, "b_out", jnp.array([0.2, -0.1]))


@pytest.mark.parametrize("forcing", [TeacherForcing(alpha=0.0), ErrorForcing(alpha=0.0),
                                     KalmanErrorForcing(alpha=0.0, process_noise=0.5, obs_noise=0.5), ErrorForcing(alpha=0.0, causal=True)])
def test_alpha_zero_is_no_forcing_bit_for_bit(setup, forcing):
    cell, trials = setup
    s0, y0 = ef.simulate(cell, trials, NoForcing())
    s1, y1 = ef.simulate(cell, trials, forcing)
    assert np.array_equal(np.asarray(s0), np.asarray(s1))
    assert np.array_equal(np.asarray(y0), np.asarray(y1))


@pytest.mark.parametrize("forcing", [TeacherForcing(alpha=1.0), ErrorForcing(alpha=1.0)])
def test_full_forcing_puts_readout_on_target(getkey, forcing):
    cell = _two_output_cell(getkey)
    h = jax.random.normal(getkey(), (10,))
    target = jnp.array([0.7, -1.2])
    mask = jnp.ones(2)
    h_forced, _ = forcing(h, cell.readout(h), target, mask, cell, forcing.init(cell))
    np.testing.assert_allclose(cell.W_out @ h_forced + cell.b_out, target, atol=1e-5)
    assert not np.allclose(h_forced, h)


UNMASKED_CASES = {
    "tf": lambda cell, key: TeacherForcing(alpha=0.7),
    "tf-stopped": lambda cell, key: TeacherForcing(alpha=0.7, stop_gradient=True),
    "ef": lambda cell, key: ErrorForcing(alpha=0.7),
    "ef-causal": lambda cell, key: ErrorForcing(alpha=0.7, causal=True),
    "ef-causal-flowing": lambda cell, key: ErrorForcing(alpha=0.7, causal=True, stop_gradient=False),
    "kalman": lambda cell, key: KalmanErrorForcing(alpha=0.7, process_noise=1.0, obs_noise=0.36 ** 0.5),
    "kalman-causal": lambda cell, key: KalmanErrorForcing(alpha=0.7, process_noise=1.0, obs_noise=0.36 ** 0.5, causal=True),
    "feedback": lambda cell, key: FeedbackForcing.random(cell, key=key, alpha=0.7),
    "feedback-causal": lambda cell, key: FeedbackForcing.random(cell, key=key, alpha=0.7, causal=True),
    # sparse and partial forcing (tests/test_forcing_variants.py checks them step by step)
    "tf-units": lambda cell, key: TeacherForcing(alpha=0.7, units=(1, 4, 7)),
    "ef-causal-units": lambda cell, key: ErrorForcing(alpha=0.7, causal=True, units=5),
    "kalman-causal-interval": lambda cell, key: KalmanErrorForcing(alpha=0.7, process_noise=1.0, obs_noise=0.6,
                                                                   causal=True, interval=3, units=4),
}


@pytest.mark.parametrize("name", list(UNMASKED_CASES))
def test_unmasked_steps_untouched(getkey, name):
    """An unsupervised step is never forced, also right after a supervised one (where a causal
    variant holds a nonzero previous error)."""
    cell = _two_output_cell(getkey)
    forcing = UNMASKED_CASES[name](cell, getkey())
    h0, h1 = jax.random.normal(getkey(), (2, 10))
    target = jnp.array([1.0, -1.0])
    _, carry = forcing(h0, cell.readout(h0), target, jnp.ones(2), cell, forcing.init(cell))
    out, _ = forcing(h1, cell.readout(h1), target, jnp.zeros(2), cell, carry)
    assert np.array_equal(np.asarray(out), np.asarray(h1))


# every registered forcing, built by its entry from its config class's defaults: a forcing is
# checked here the moment it is registered (those acting on another network, with the reason)
OTHER_NETWORK = {"wz-tf": "the Williams-Zipser network's own forcing (test below)"}
REGISTERED = [k for k in FORCING_ENTRIES if k not in OTHER_NETWORK]
REQUIRED = {"kalman": dict(process_noise=1.0, obs_noise=0.6)}  # options without a default


def _registered(kind: str, alpha: float, cell, key):
    return FORCING_ENTRIES[kind].build(ForcingConfig(kind=kind, **REQUIRED.get(kind, {})), alpha, cell, key)


def test_the_registered_table_is_not_stale():
    assert set(OTHER_NETWORK) <= set(FORCING_ENTRIES) and len(REGISTERED) >= 5


@pytest.mark.parametrize("kind", REGISTERED)
def test_every_registered_forcing_leaves_unsupervised_steps_alone(getkey, kind):
    cell = _two_output_cell(getkey)
    forcing = _registered(kind, 0.7, cell, getkey())
    h0, h1 = jax.random.normal(getkey(), (2, 10))
    target = jnp.array([1.0, -1.0])
    forced, carry = forcing(h0, cell.readout(h0), target, jnp.ones(2), cell, forcing.init(cell))
    out, _ = forcing(h1, cell.readout(h1), target, jnp.zeros(2), cell, carry)
    assert np.array_equal(np.asarray(out), np.asarray(h1))
    # and a supervised step is forced, unless the variant is the identity
    assert forcing.is_identity == np.array_equal(np.asarray(forced), np.asarray(h0))


@pytest.mark.parametrize("kind", REGISTERED)
def test_every_registered_forcing_at_alpha_zero_is_no_forcing(setup, getkey, kind):
    cell, trials = setup
    s0, y0 = ef.simulate(cell, trials, NoForcing())
    s1, y1 = ef.simulate(cell, trials, _registered(kind, 0.0, cell, getkey()))
    assert np.array_equal(np.asarray(s0), np.asarray(s1)) and np.array_equal(np.asarray(y0), np.asarray(y1))


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_williams_zipser_unmasked_units_untouched(getkey, alpha):
    cell = ef.models.WilliamsZipserNet(2, 5, 2, key=getkey())
    forcing = WilliamsZipserTeacherForcing(alpha=1.0)
    h = jax.random.uniform(getkey(), (5,))
    out, _ = forcing(h, cell.readout(h), jnp.array([1.0, 0.0]), jnp.array([alpha, 0.0]), cell, forcing.init(cell))
    np.testing.assert_array_equal(np.asarray(out)[1:], np.asarray(h)[1:])
    assert float(out[0]) == (1.0 if alpha else float(h[0]))


def test_teacher_state_uses_only_the_supervised_outputs(getkey):
    """A partially supervised step: the teacher state does not depend on the unsupervised
    component's target, and with α = 1 the supervised component reads out exactly."""
    cell = ef.models.LeakyRNN(2, 10, 3, key=getkey())
    cell = eqx_set(cell, "b_out", jnp.array([0.2, -0.1, 0.4]))
    h = jax.random.normal(getkey(), (10,))
    mask = jnp.array([1.0, 0.0, 1.0])
    f = TeacherForcing(alpha=1.0)
    outs = [f(h, cell.readout(h), jnp.array([0.7, other, -0.3]), mask, cell, f.init(cell))[0]
            for other in (0.0, 3.0, -20.0)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    y = np.asarray(cell.W_out @ outs[0] + cell.b_out)
    np.testing.assert_allclose(y[[0, 2]], [0.7, -0.3], atol=1e-5)
    # the smallest such state: W_S⁺ of the supervised rows, by numpy's pseudo-inverse
    rows = np.asarray(cell.W_out)[[0, 2]]
    expected = np.linalg.pinv(rows) @ (np.array([0.7, -0.3]) - np.asarray(cell.b_out)[[0, 2]])
    np.testing.assert_allclose(outs[0], expected, atol=1e-5)


def test_teacher_forcing_fully_supervised_is_the_paper_formula(getkey):
    """All outputs supervised: h̃ = (1 - α) h + α W⁺ (y* - b_out) with W⁺ = W_outᵀ (W_out W_outᵀ + ε I)⁻¹."""
    cell = _two_output_cell(getkey)
    h = jax.random.normal(getkey(), (10,))
    target = jnp.array([0.7, -1.2])
    f = TeacherForcing(alpha=0.6)
    out, _ = f(h, cell.readout(h), target, jnp.ones(2), cell, f.init(cell))
    W = np.asarray(cell.W_out)
    pinv = W.T @ np.linalg.inv(W @ W.T + 1e-7 * np.eye(2))
    np.testing.assert_allclose(out, 0.4 * np.asarray(h) + 0.6 * pinv @ (np.asarray(target) - np.asarray(cell.b_out)),
                               rtol=1e-10, atol=1e-12)


def test_teacher_forcing_rollout_ignores_an_unsupervised_partner(getkey):
    """Oscillation with train_partner=False: output 1 is a placeholder (mask 0). The TF rollout
    must not depend on its target."""
    task = ef.tasks.Oscillation(pattern="sine", train_partner=False, n_steps=20)
    cell = ef.models.LeakyRNN(task.n_in, 8, task.n_out, key=getkey())
    trials = ef.tasks.sample_batch(task, 2, key=getkey())
    assert np.all(np.asarray(trials.mask)[..., 1] == 0) and np.all(np.asarray(trials.mask)[..., 0] == 1)
    moved = trials._replace(targets=trials.targets.at[..., 1].set(-3.0))
    s1, _ = ef.simulate(cell, trials, TeacherForcing(alpha=1.0))
    s2, _ = ef.simulate(cell, moved, TeacherForcing(alpha=1.0))
    np.testing.assert_array_equal(s1, s2)
    y = np.einsum("btn,on->bto", np.asarray(s1), np.asarray(cell.W_out)) + np.asarray(cell.b_out)
    np.testing.assert_allclose(y[..., 0], np.asarray(trials.targets)[..., 0], atol=1e-5)


def test_error_forcing_is_orthogonal_projection(getkey):
    """With α = 1, EF moves h by the smallest step that zeroes the error: the step lies in the
    row space of W_out (orthogonal to the zero-error manifold)."""
    cell = _two_output_cell(getkey)
    h = jax.random.normal(getkey(), (10,))
    f = ErrorForcing(alpha=1.0)
    out, _ = f(h, cell.readout(h), jnp.array([0.5, 0.5]), jnp.ones(2), cell, f.init(cell))
    step = out - h
    null_basis = np.linalg.svd(np.asarray(cell.W_out))[2][2:]  # rows spanning the null space
    np.testing.assert_allclose(null_basis @ np.asarray(step), 0, atol=1e-8)


def test_partial_error_forcing_scales_error(getkey):
    cell = _two_output_cell(getkey)
    h = jax.random.normal(getkey(), (10,))
    target = jnp.array([0.5, -0.5])
    f = ErrorForcing(alpha=0.3)
    out, _ = f(h, cell.readout(h), target, jnp.ones(2), cell, f.init(cell))
    e_before = target - cell.readout(h)
    np.testing.assert_allclose(target - cell.readout(out), 0.7 * e_before, rtol=1e-5)


def test_kalman_tends_to_error_forcing(getkey):
    cell = _two_output_cell(getkey)
    h = jax.random.normal(getkey(), (10,))
    target = jnp.array([0.5, -0.5])
    ef_out, _ = ErrorForcing(alpha=1.0).__call__(h, cell.readout(h), target, jnp.ones(2), cell,
                                                 ErrorForcing(alpha=1.0).init(cell))
    gaps = []
    for ratio in (1e-1, 1e-3, 1e-5):
        k = KalmanErrorForcing(alpha=1.0, process_noise=1.0, obs_noise=ratio ** 0.5)
        out, _ = k(h, cell.readout(h), target, jnp.ones(2), cell, k.init(cell))
        gaps.append(float(jnp.max(jnp.abs(out - ef_out))))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3


def test_kalman_owns_its_noise(getkey):
    """σ and σ_o are the forcing's; the gain's ratio is σ_o² / σ²; σ must be > 0."""
    k = KalmanErrorForcing(alpha=1.0, process_noise=0.5, obs_noise=0.2)
    assert k.ratio == pytest.approx(0.2**2 / 0.5**2)
    cell = _two_output_cell(getkey)
    np.testing.assert_allclose(k.gain(cell), readout_pinv(cell.W_out, 0.16), rtol=1e-12)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="process_noise"):
            KalmanErrorForcing(process_noise=bad, obs_noise=0.1)
    with pytest.raises(ValueError, match="obs_noise"):
        KalmanErrorForcing(process_noise=0.1, obs_noise=-0.1)
    with pytest.raises(TypeError):
        KalmanErrorForcing(alpha=1.0, ratio=0.5)


def test_kalman_config_needs_process_noise_and_trains_with_it(getkey):
    from pydantic import ValidationError

    from errorforcing.experiments import FORCINGS, TrainConfig, build_trainer

    base = {"task": {"delay": 2}, "model": {"hidden": 4}, "seeds": 1, "epochs": 1}
    for forcing in ({"kind": "kalman"}, {"kind": "kalman", "process_noise": 0.0}):
        with pytest.raises(ValidationError, match="process_noise"):
            TrainConfig.model_validate(base | {"forcing": forcing})
    with pytest.raises(ValidationError, match="process_noise"):  # an option ef does not read
        TrainConfig.model_validate(base | {"forcing": {"kind": "ef", "process_noise": 0.1}})
    with pytest.raises(ValidationError, match="model.noise_std"):  # two different training noises
        TrainConfig.model_validate(base | {"forcing": {"kind": "kalman", "process_noise": 0.1},
                                           "model": {"hidden": 4, "noise_std": 0.3}})
    with pytest.raises(ValidationError, match="ratio"):  # the old field is gone, not ignored
        TrainConfig.model_validate(base | {"forcing": {"kind": "kalman", "process_noise": 0.1, "ratio": 0.5}})
    cfg = TrainConfig.model_validate(base | {"forcing": {"kind": "kalman", "process_noise": 0.3, "obs_noise": 0.15}})
    assert build_trainer(cfg).objective.noise_std == 0.3  # the trainer injects the forcing's σ
    assert build_trainer(TrainConfig.model_validate(base)).objective.noise_std == 0.0
    cell = ef.models.LeakyRNN(3, 4, 1, key=getkey())
    built = FORCINGS["kalman"].build(cfg.forcing, 1.0, cell, getkey())
    assert (built.process_noise, built.obs_noise) == (0.3, 0.15) and built.ratio == pytest.approx(0.25)
    default_obs = TrainConfig.model_validate(base | {"forcing": {"kind": "kalman", "process_noise": 0.3}})
    assert FORCINGS["kalman"].build(default_obs.forcing, 1.0, cell, getkey()).ratio == pytest.approx(1.0)


@pytest.mark.parametrize("args, field", [
    (["--forcing", "kalman"], "forcing.process_noise"),
    (["--forcing", "kalman", "--process-noise", "0"], "forcing.process_noise"),
    (["--forcing", "kalman", "--process-noise", "0.1", "--noise", "0.2"], "model.noise_std"),
    (["--forcing", "kalman", "--process-noise", "0.1", "--ratio", "0.5"], "--ratio"),
])
def test_kalman_cli_refuses_without_its_noise(tmp_path, capsys, monkeypatch, args, field):
    from errorforcing.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", *args, "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], err
    assert not (tmp_path / "out").exists()


def _numpy_causal_rollout(cell, trials, alpha, eps=1e-7, readout_reg=0.0, rate_reg=0.0):
    """The reference EF-RFLO cell as a plain loop: h̃_t = h_t + α max(m_t) W⁺ e_{t-1},
    e_{t-1} = (y*_{t-1} - y_{t-1}) ⊙ m_{t-1}, e_{-1} = 0. Returns forced states, outputs, loss."""
    W, W_in, b = (np.asarray(v) for v in (cell.W_rec, cell.W_in, cell.b))
    W_out, b_out = np.asarray(cell.W_out), np.asarray(cell.b_out)
    pinv = W_out.T @ np.linalg.inv(W_out @ W_out.T + eps * np.eye(W_out.shape[0]))
    X, Y_star, M = (np.asarray(v) for v in (trials.inputs, trials.targets, trials.mask))
    B, T, _ = X.shape
    a = cell.leak
    states, outputs = np.zeros((B, T, W.shape[0])), np.zeros((B, T, W_out.shape[0]))
    for bi in range(B):
        h_forced = np.zeros(W.shape[0])
        e_prev = np.zeros(W_out.shape[0])
        for t in range(T):
            h = (1 - a) * h_forced + a * (W @ np.tanh(h_forced) + W_in @ X[bi, t] + b)
            y = W_out @ h + b_out
            h_forced = h + alpha * M[bi, t].max() * (pinv @ e_prev)
            e_prev = (Y_star[bi, t] - y) * M[bi, t]
            states[bi, t], outputs[bi, t] = h_forced, y
    loss = np.sum(M * (outputs - Y_star) ** 2) / M.sum() + rate_reg * np.mean(states**2)
    loss += readout_reg * (1 - np.linalg.norm(W_out)) ** 2
    return states, outputs, loss


def test_causal_error_forcing_matches_a_hand_written_loop(getkey):
    """Causal EF against a plain loop of the reference EF-RFLO cell, through `simulate` and
    through the rules' own loops (fast and autodiff BPTT, RTRL): the mask gating the
    correction is the current step's, so the step after a response window is not forced."""
    task = ef.tasks.DelayedXOR(delay=3, pulse=4)
    cell = ef.models.LeakyRNN(task.n_in, 6, task.n_out, key=getkey(), tau=2.0)
    cell = eqx_set(cell, "W_out", cell.W_out * 20)
    cell = eqx_set(cell, "b_out", jnp.array([0.3]))
    trials = ef.tasks.sample_batch(task, 3, key=getkey())
    m = np.asarray(trials.mask)[..., 0]
    assert np.any((m[:, :-1] == 1) & (m[:, 1:] == 0))  # a window ends inside the trial
    forcing = ErrorForcing(alpha=0.6, causal=True)
    states_np, outputs_np, loss_np = _numpy_causal_rollout(cell, trials, 0.6, rate_reg=1e-2, readout_reg=1e-2)
    states, outputs = ef.simulate(cell, trials, forcing)
    np.testing.assert_allclose(states, states_np, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(outputs, outputs_np, rtol=1e-10, atol=1e-12)
    objective = ef.rules.Objective(rate_reg=1e-2, readout_reg=1e-2)
    for rule in (ef.rules.BPTT(), ef.rules.BPTT(fast=False), ef.rules.RTRL()):
        loss = rule.value_and_grad(cell, forcing, trials, key=getkey(), objective=objective)[0]
        np.testing.assert_allclose(loss, loss_np, rtol=1e-10, err_msg=type(rule).__name__)


def test_readout_pinv_is_right_inverse(getkey):
    W = jax.random.normal(getkey(), (3, 12))
    np.testing.assert_allclose(W @ readout_pinv(W, 1e-10), np.eye(3), atol=1e-6)


def test_alpha_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        TeacherForcing(alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        ErrorForcing(alpha=-0.1)


def test_forced_rollout_keeps_readout_on_target_every_masked_step(setup):
    """EF with α = 1 during a whole rollout: on masked steps the *forced* state reads out the target."""
    cell, trials = setup
    states, _ = ef.simulate(cell, trials, ErrorForcing(alpha=1.0))
    y_forced = jnp.einsum("btn,on->bto", states, cell.W_out) + cell.b_out
    m = np.asarray(trials.mask) > 0
    np.testing.assert_allclose(np.asarray(y_forced)[m], np.asarray(trials.targets)[m], atol=1e-5)
