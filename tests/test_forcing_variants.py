"""Sparse (`interval`) and partial (`units`) forcing and the GTF α estimators (issue 14), float64.

Oracles: a hand-written numpy loop of the forced leaky RNN, autodiff BPTT (for the hand-written
fast BPTT path, which must be the one that runs), exact single-step checks of what must stay
untouched, and numpy/scipy computations of each α estimator on a small Jacobian sequence."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import errorforcing as ef
from errorforcing.analysis import (ALPHA_ESTIMATORS, alpha_from_growth, growth_estimate, jacobian_upper_bound,
                                   spectral_norm)
from errorforcing.cli import main
from errorforcing.forcing import ErrorForcing, KalmanErrorForcing, TeacherForcing
from errorforcing.rules import BPTT, RTRL, Objective
from errorforcing.tasks import Trials
from errorforcing.training import adapt_alpha, forced_jacobian_norms
from errorforcing.training._dynamics import estimated_alpha, forced_jacobians

pytestmark = pytest.mark.usefixtures("fast_compile")  # dozens of tiny programs: compiling dominates

N, N_IN, N_OUT, T, B = 6, 2, 2, 9, 3
OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-3)


def _cell(getkey, n=N):
    cell = ef.models.LeakyRNN(N_IN, n, N_OUT, key=getkey(), gain=1.3, tau=3.0)
    return eqx.tree_at(lambda c: c.b_out, cell, jnp.array([0.2, -0.1]))


def _trials(getkey, b=B, t=T):
    """Mixed supervision: some steps fully, some partly, some not at all supervised."""
    k1, k2, k3 = getkey(), getkey(), getkey()
    inputs = jax.random.normal(k1, (b, t, N_IN))
    targets = jax.random.normal(k2, (b, t, N_OUT))
    mask = (jax.random.uniform(k3, (b, t, N_OUT)) > 0.35).astype(inputs.dtype)
    return Trials(inputs, targets, mask, {})


def _numpy_rollout(cell, kind, *, alpha, interval=1, units=None, causal=False, ridge=1e-7):
    """The forced rollout written out: h_t = (1-a) h̃_{t-1} + a (W tanh(h̃_{t-1}) + W_in x_t + b),
    y_t = W_out h_t + b_out, c_t = α max m_t 1[t mod k = 0], P the forced units."""
    W, W_in, b = (np.asarray(cell.W_rec), np.asarray(cell.W_in), np.asarray(cell.b))
    W_out, b_out, a = np.asarray(cell.W_out), np.asarray(cell.b_out), cell.leak
    n = W.shape[0]
    p = np.ones(n)
    if units is not None:
        p = np.zeros(n)
        p[list(range(units)) if isinstance(units, int) else list(units)] = 1.0
    G = W_out.T @ np.linalg.inv(W_out @ W_out.T + ridge * np.eye(W_out.shape[0]))

    def run(x, target, mask):
        h, e_prev, states, outputs = np.asarray(cell.init_state()), np.zeros(N_OUT), [], []
        for t in range(x.shape[0]):
            h = (1 - a) * h + a * (W @ np.tanh(h) + W_in @ x[t] + b)
            y = W_out @ h + b_out
            c = alpha * mask[t].max() * (t % interval == 0)
            if kind == "tf":
                s = (mask[t] > 0).astype(float)
                gram = s[:, None] * (W_out @ W_out.T) * s[None, :] + ridge * np.eye(N_OUT)
                teacher = W_out.T @ (s * np.linalg.solve(gram, s * (target[t] - b_out)))
                h_forced = h + c * p * (teacher - h)
            else:
                e = (target[t] - y) * mask[t]
                h_forced = h + c * p * (G @ (e_prev if causal else e))
                e_prev = e
            states.append(h_forced)
            outputs.append(y)
            h = h_forced
        return np.stack(states), np.stack(outputs)

    return run


SELECTIVE = {  # id: (kind, build(alpha), numpy kwargs)
    "tf-interval3": ("tf", lambda a: TeacherForcing(alpha=a, interval=3), {"interval": 3}),
    "tf-units3": ("tf", lambda a: TeacherForcing(alpha=a, units=3), {"units": 3}),
    "tf-interval2-units-idx": ("tf", lambda a: TeacherForcing(alpha=a, interval=2, units=(0, 4)),
                               {"interval": 2, "units": (0, 4)}),
    "ef-interval3": ("ef", lambda a: ErrorForcing(alpha=a, interval=3), {"interval": 3}),
    "ef-units2": ("ef", lambda a: ErrorForcing(alpha=a, units=2), {"units": 2}),
    "ef-causal-interval2-units4": ("ef", lambda a: ErrorForcing(alpha=a, causal=True, interval=2, units=4),
                                   {"interval": 2, "units": 4, "causal": True}),
    "kalman-interval2-units-idx": ("ef", lambda a: KalmanErrorForcing(alpha=a, process_noise=0.5, obs_noise=0.25,
                                                                      interval=2, units=(1, 3, 5)),
                                   {"interval": 2, "units": (1, 3, 5), "ridge": 0.25}),
}


@pytest.mark.parametrize("name", list(SELECTIVE))
def test_selective_forcing_equals_numpy_loop(getkey, name):
    kind, build, kw = SELECTIVE[name]
    cell, trials = _cell(getkey), _trials(getkey)
    states, outputs = ef.simulate(cell, trials, build(0.7))
    run = _numpy_rollout(cell, kind, alpha=0.7, **kw)
    for i in range(B):
        want_s, want_y = run(*(np.asarray(z[i]) for z in (trials.inputs, trials.targets, trials.mask)))
        np.testing.assert_allclose(np.asarray(states[i]), want_s, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(np.asarray(outputs[i]), want_y, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(SELECTIVE))
def test_untouched_steps_and_units(getkey, name):
    """Bit for bit: an off-interval step, an unsupervised step (also right after a supervised
    one, where a causal variant holds an error) and every unforced unit pass unforced."""
    kind, build, kw = SELECTIVE[name]
    cell = _cell(getkey)
    forcing = build(1.0)
    target, on, off = jnp.array([1.0, -1.0]), jnp.ones(N_OUT), jnp.zeros(N_OUT)
    k, units = kw.get("interval", 1), kw.get("units")
    free = np.zeros(N, bool) if units is None else np.isin(np.arange(N), np.arange(units) if isinstance(units, int)
                                                          else units, invert=True)
    carry = forcing.init(cell)
    for t in range(7):
        h = jax.random.normal(getkey(), (N,))
        mask = off if t == 5 else on  # step 5 unsupervised, after the supervised step 4
        out, carry = forcing(h, cell.readout(h), target, mask, cell, carry)
        out, h = np.asarray(out), np.asarray(h)
        assert np.array_equal(out[free], h[free])
        # causal: e_{t-1} = 0 at t = 0 and after the unsupervised step 5
        forced = t % k == 0 and t != 5 and not (kw.get("causal") and t in (0, 6))
        assert np.array_equal(out, h) != forced, t  # the forced steps do move the forced units


FAST_CASES = {
    "tf-interval3-units3": TeacherForcing(alpha=0.6, interval=3, units=3),
    "tf-stopped-interval2": TeacherForcing(alpha=0.8, interval=2, stop_gradient=True),
    "ef-interval2-units-idx": ErrorForcing(alpha=0.9, interval=2, units=(1, 4)),
    "ef-causal-interval3": ErrorForcing(alpha=0.7, causal=True, interval=3),
    "kalman-interval2-units2": KalmanErrorForcing(alpha=1.0, process_noise=0.3, obs_noise=0.3, interval=2, units=2),
}


@pytest.mark.parametrize("name", list(FAST_CASES))
def test_fast_bptt_path_runs_and_equals_autodiff(getkey, monkeypatch, name):
    import errorforcing.rules._bptt as bptt_module

    forcing = FAST_CASES[name]
    cell, trials = _cell(getkey), _trials(getkey)
    assert BPTT().uses_fast_path(cell, forcing)
    calls = []
    real = bptt_module.leaky_bptt
    monkeypatch.setattr(bptt_module, "leaky_bptt", lambda *a, **k: calls.append(1) or real(*a, **k))
    loss, grads, _ = BPTT().value_and_grad(cell, forcing, trials, key=getkey(), objective=OBJECTIVE)
    assert calls, "the hand-written path did not run"
    loss_ad, grads_ad, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=getkey(), objective=OBJECTIVE)
    np.testing.assert_allclose(loss, loss_ad, rtol=1e-11)
    for name in cell.trainable:
        np.testing.assert_allclose(np.asarray(getattr(grads, name)), np.asarray(getattr(grads_ad, name)),
                                   rtol=1e-8, atol=1e-12, err_msg=name)
    # and the selection matters: every-step, every-unit forcing gives another gradient
    plain = dataclasses.replace(forcing, interval=1, units=None)
    _, grads_plain, _ = BPTT().value_and_grad(cell, plain, trials, key=getkey(), objective=OBJECTIVE)
    assert not np.allclose(np.asarray(grads.W_rec), np.asarray(grads_plain.W_rec))


@pytest.mark.parametrize("name", ["ef-causal-interval3", "kalman-interval2-units2", "tf-interval3-units3"])
def test_rtrl_equals_bptt_under_selective_forcing(getkey, name):
    """The fast leaky RTRL (stopped additive forcing) and the generic RTRL (teacher forcing,
    gradient through W⁺) consume the carried step count like the rollout does."""
    forcing = FAST_CASES[name]
    cell, trials = _cell(getkey, n=4), _trials(getkey, b=2, t=7)
    forcing = dataclasses.replace(forcing, units=2) if forcing.units is not None else forcing
    _, want, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=getkey(), objective=OBJECTIVE)
    for rule in (RTRL(), RTRL(fast=False)):
        _, got, _ = rule.value_and_grad(cell, forcing, trials, key=getkey(), objective=OBJECTIVE)
        for name in cell.trainable:
            np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)),
                                       rtol=1e-7, atol=1e-11, err_msg=f"{rule} {name}")


def test_eprop_forcing_gain_is_the_teacher_jacobian_diagonal(getkey):
    """e-prop scales its traces by κ_t = diag(∂h̃_t/∂h_t) = 1 - c_t p, which must follow the
    interval gate and the unit selection step by step."""
    cell = _cell(getkey)
    forcing = TeacherForcing(alpha=0.6, interval=3, units=(0, 2, 5))
    target, mask = jnp.array([0.5, -0.4]), jnp.array([1.0, 0.0])
    carry = forcing.init(cell)
    for t in range(6):
        h = jax.random.normal(getkey(), (N,))
        jac = jax.jacfwd(lambda hh: forcing(hh, cell.readout(hh), target, mask, cell, carry)[0])(h)
        kappa = forcing.state_jacobian_diagonal(h, target, mask, cell, carry)
        np.testing.assert_allclose(np.asarray(kappa), np.diag(np.asarray(jac)), rtol=1e-12)
        want = np.where(np.isin(np.arange(N), (0, 2, 5)) & (t % 3 == 0), 0.4, 1.0)
        np.testing.assert_allclose(np.asarray(kappa), want, rtol=1e-12)
        _, carry = forcing(h, cell.readout(h), target, mask, cell, carry)


def test_interval_one_and_all_units_is_the_plain_forcing_bit_for_bit(getkey):
    cell, trials = _cell(getkey), _trials(getkey)
    for plain, selective in [(TeacherForcing(alpha=0.5), TeacherForcing(alpha=0.5, interval=1, units=N)),
                             (ErrorForcing(alpha=0.5, causal=True), ErrorForcing(alpha=0.5, causal=True, units=N))]:
        s0, y0 = ef.simulate(cell, trials, plain)
        s1, y1 = ef.simulate(cell, trials, selective)
        np.testing.assert_array_equal(np.asarray(s0), np.asarray(s1))
        np.testing.assert_array_equal(np.asarray(y0), np.asarray(y1))


@pytest.mark.parametrize("bad", [dict(interval=0), dict(interval=1.5), dict(units=0), dict(units=(1, 1)),
                                 dict(units=(-1,))])
def test_bad_selection_is_refused(bad):
    with pytest.raises(ValueError):
        ErrorForcing(**bad)


def test_units_outside_the_network_are_refused(getkey):
    with pytest.raises(ValueError, match="units"):
        TeacherForcing(units=(0, N)).init(_cell(getkey))


# ----- the α estimators -----

def _jacobian_sequence(getkey):
    """[B=2, T=5, 3, 3]; one matrix has a negative real eigenvalue (complex principal log)."""
    J = np.asarray(0.6 * jax.random.normal(getkey(), (2, 5, 3, 3))) + np.eye(3)
    J[1, 2] = np.diag([-0.5, 1.2, 0.8]) + 0.05 * np.asarray(jax.random.normal(getkey(), (3, 3)))
    return J


def _numpy_growth(J, estimator):
    norm = lambda A: np.linalg.norm(A, 2)  # noqa: E731
    if estimator == "product-upper-bound":
        return max(np.exp(np.mean([np.log(norm(A)) for A in seq])) for seq in J)
    if estimator == "batch-maximum":
        return max(norm(A) for seq in J for A in seq)
    if estimator == "arithmetic-mean":
        return max(norm(seq.mean(0)) for seq in J)
    if estimator == "explog-approx":
        return max(norm(scipy.linalg.expm(np.mean([scipy.linalg.logm(A) for A in seq], axis=0))) for seq in J)
    raise AssertionError(estimator)


@pytest.mark.parametrize("estimator", [e for e in ALPHA_ESTIMATORS if e != "jacobian-upper-bound"])
def test_growth_estimators_equal_numpy(getkey, estimator):
    J = _jacobian_sequence(getkey)
    assert np.any(np.linalg.eigvals(J[1, 2]).real < 0)
    got = growth_estimate(jnp.asarray(J), estimator)
    np.testing.assert_allclose(float(got), _numpy_growth(J, estimator), rtol=1e-8)


def test_explog_equals_the_geometric_mean_for_commuting_jacobians():
    """Analytic case: for J_t = diag(d_t) > 0, exp(mean log J_t) = diag(Π_t d_t^{1/T})."""
    d = np.array([[2.0, 0.5, 1.0], [3.0, 0.5, 0.25], [1.5, 2.0, 1.0]])
    J = np.stack([np.diag(row) for row in d])[None]
    np.testing.assert_allclose(float(growth_estimate(jnp.asarray(J), "explog-approx")),
                               np.max(np.exp(np.mean(np.log(d), axis=0))), rtol=1e-10)


def test_jacobian_upper_bound_equals_formula_and_bounds_every_step(getkey):
    cell, trials = _cell(getkey), _trials(getkey)
    a = cell.leak
    want = (1 - a) + a * np.linalg.norm(np.asarray(cell.W_rec), 2)
    np.testing.assert_allclose(float(jacobian_upper_bound(cell)), want, rtol=1e-10)
    norms = forced_jacobian_norms(cell, TeacherForcing(alpha=0.3), trials)
    assert float(jnp.max(norms)) <= want


def test_estimated_alpha_on_the_forced_trajectory_equals_numpy(getkey):
    """forced_jacobians: J_t = (1-a) I + a W diag(1 - tanh²(h̃_{t-1})) at h̃ from the forced
    rollout; each estimator's α* = max(0, 1 - 1/𝒩)."""
    cell, trials = _cell(getkey), _trials(getkey, t=6)
    forcing = ErrorForcing(alpha=0.5, interval=2)
    states, _ = ef.simulate(cell, trials, forcing)
    a, W = cell.leak, np.asarray(cell.W_rec)
    prev = np.concatenate([np.zeros((B, 1, N)), np.asarray(states)[:, :-1]], axis=1)
    J = (1 - a) * np.eye(N) + a * W[None, None] * (1 - np.tanh(prev) ** 2)[:, :, None, :]
    np.testing.assert_allclose(np.asarray(forced_jacobians(cell, forcing, trials)), J, rtol=1e-10, atol=1e-13)
    for estimator in ALPHA_ESTIMATORS:
        growth = (float(jacobian_upper_bound(cell)) if estimator == "jacobian-upper-bound"
                  else _numpy_growth(J, estimator))
        got = estimated_alpha(cell, forcing, trials, estimator)
        np.testing.assert_allclose(float(got), max(0.0, 1 - 1 / growth), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(float(alpha_from_growth(jnp.asarray(growth))), max(0.0, 1 - 1 / growth))


def test_adapt_alpha_with_an_estimator_follows_the_hess_rule(getkey):
    cell, trials = _cell(getkey), _trials(getkey)
    cell = eqx.tree_at(lambda c: c.W_rec, cell, 3.0 * cell.W_rec)  # expanding: α* > 0
    forcing = ErrorForcing(alpha=0.0)
    star = float(estimated_alpha(cell, forcing, trials, "batch-maximum"))
    assert star > 0.1
    assert float(adapt_alpha(forcing, cell, trials, 4, "batch-maximum")) == pytest.approx(star, rel=1e-12)  # due
    assert float(adapt_alpha(forcing, cell, trials, 3, "batch-maximum")) == 0.0  # not every 5th batch
    high = ErrorForcing(alpha=0.99)
    assert float(adapt_alpha(high, cell, trials, 4, "batch-maximum")) == pytest.approx(0.999 * 0.99 + 0.001 * star)
    # the default name is the original estimator
    np.testing.assert_allclose(float(adapt_alpha(forcing, cell, trials, 4, "product-upper-bound")),
                               float(adapt_alpha(forcing, cell, trials, 4, True)), rtol=0)


def test_spectral_norm_of_complex_matrices():
    A = np.array([[1 + 2j, 0.5], [0.0, -1j]])
    np.testing.assert_allclose(float(spectral_norm(jnp.asarray(A))), np.linalg.norm(A, 2), rtol=1e-12)


# ----- configuration and CLI -----

REFUSED = [
    (["--forcing", "none", "--forcing-interval", "2"], "forcing.interval"),
    (["--forcing", "none", "--forcing-interval", "1"], "forcing.interval"),  # a flag at its default, too
    (["--forcing", "feedback", "--forcing-interval", "2"], "forcing.interval"),
    (["--forcing", "feedback", "--forcing-units", "2"], "forcing.units"),
    (["--forcing", "wz-tf", "--model", "williams-zipser", "--forcing-units", "1"], "forcing.units"),
    (["--forcing", "tf", "--forcing-interval", "0"], "forcing.interval"),
    (["--forcing", "ef", "--forcing-units", "0"], "forcing.units"),
    (["--forcing", "ef", "--hidden", "8", "--forcing-units", "9"], "forcing.units"),
    (["--forcing", "ef", "--alpha-estimator", "nope"], "forcing.alpha_estimator"),
    (["--forcing", "ef", "--alpha-estimator", "batch-maximum", "--fixed-alpha"], "forcing.alpha_estimator"),
    (["--forcing", "none", "--alpha-estimator", "batch-maximum"], "forcing.adaptive"),
    (["--forcing", "ef", "--model", "gru", "--alpha-estimator", "jacobian-upper-bound"], "forcing.alpha_estimator"),
]


# compare has no --forcing (it runs none, tf and ef): the ef cases without it
COMPARE_REFUSED = [([a for a in argv if a not in ("--forcing", "ef")], field) for argv, field in REFUSED
                   if argv[argv.index("--forcing") + 1] == "ef"]


@pytest.mark.parametrize("command,argv,field", [("train", *case) for case in REFUSED]
                         + [("compare", *case) for case in COMPARE_REFUSED])
def test_cli_refuses_inapplicable_selection(tmp_path, monkeypatch, capsys, command, argv, field):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main([command, *argv, "--out", str(tmp_path / "out"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and "Traceback" not in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_config_builds_the_selective_forcing():
    from errorforcing.experiments import TrainConfig
    from errorforcing.experiments._config import is_read
    from errorforcing.experiments._registry import FORCINGS

    cfg = TrainConfig.model_validate({"model": {"hidden": 8}, "forcing": {"kind": "kalman", "process_noise": 0.1,
                                                                        "interval": 4, "units": 3}})
    cell = ef.models.LeakyRNN(1, 8, 1, key=jax.random.key(0))
    forcing = FORCINGS["kalman"].build(cfg.forcing, 0.5, cell, jax.random.key(0))
    assert (forcing.interval, forcing.units) == (4, 3)
    assert is_read({"forcing": {"kind": "ef"}}, "forcing.interval")
    assert not is_read({"forcing": {"kind": "none"}}, "forcing.units")
    assert not is_read({"forcing": {"kind": "ef"}}, "forcing.alpha_estimator")
    assert is_read({"forcing": {"kind": "ef", "adaptive": True}}, "forcing.alpha_estimator")
