"""BPTT gradients against central finite differences (float64), for every forcing, with the
correction stopped and not stopped."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.forcing import ErrorForcing, KalmanErrorForcing, NoForcing, TeacherForcing
from errorforcing.rules import BPTT, Objective

FORCINGS = [
    NoForcing(),
    TeacherForcing(alpha=0.4, stop_gradient=False),
    TeacherForcing(alpha=0.4, stop_gradient=True),
    ErrorForcing(alpha=0.5, stop_gradient=True),
    ErrorForcing(alpha=0.5, stop_gradient=False),
    ErrorForcing(alpha=0.5, causal=True),
    KalmanErrorForcing(alpha=1.0, process_noise=1.0, obs_noise=0.3 ** 0.5, stop_gradient=True),
    KalmanErrorForcing(alpha=1.0, process_noise=1.0, obs_noise=0.3 ** 0.5, stop_gradient=False),
]


def tiny_problem(getkey, readout="state"):
    task = ef.tasks.DelayedXOR(delay=2, pulse=2)  # T = 11
    cell = ef.models.LeakyRNN(task.n_in, 5, task.n_out, key=getkey(), tau=2.0, readout=readout,
                              trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    cell = eqx.tree_at(lambda c: c.W_out, cell, cell.W_out * 20)  # a readout that matters
    trials = ef.tasks.sample_batch(task, 3, key=getkey())
    return cell, trials


def loss_of(cell, forcing, trials, objective):
    """The objective of the forced rollout."""
    states, outputs = ef.simulate(cell, trials, forcing)
    return objective(cell, states, outputs, trials)


def stopped_surrogate(base_cell, forcing, trials, objective):
    """For a stopped correction, BPTT differentiates a rollout whose corrections are constants
    equal to their values at the current parameters. Rebuild that rollout independently (replay
    the recorded corrections) so that finite differences of it are the oracle."""
    states, _ = ef.simulate(base_cell, trials, forcing)
    prev = jnp.concatenate([jnp.zeros_like(states[:, :1]), states[:, :-1]], axis=1)
    pre = jax.vmap(jax.vmap(base_cell))(prev, trials.inputs)  # h_t before forcing
    c = forcing.alpha * jnp.max(trials.mask, axis=-1, keepdims=True)
    if isinstance(forcing, TeacherForcing):
        teacher = forcing.teacher_coefficients(base_cell.W_out, base_cell.b_out, trials.targets,
                                               trials.mask) @ base_cell.W_out
        apply = lambda h, t, b: (1 - c[b, t]) * h + c[b, t] * teacher[b, t]
    else:
        delta = states - pre
        apply = lambda h, t, b: h + delta[b, t]

    def loss(cell):
        def one(b):
            def step(h, t):
                h = cell(h, trials.inputs[b, t])
                y = cell.readout(h)
                h = apply(h, t, b)
                return h, (h, y)
            _, (s, y) = jax.lax.scan(step, cell.init_state(), jnp.arange(trials.inputs.shape[1]))
            return s, y
        s, y = jax.vmap(one)(jnp.arange(trials.inputs.shape[0]))
        return objective(cell, s, y, trials)
    return loss


def finite_difference(loss, cell, field, index, eps=1e-6):
    leaf = getattr(cell, field)
    bump = jnp.zeros_like(leaf).at[index].set(eps)
    plus = eqx.tree_at(lambda c: getattr(c, field), cell, leaf + bump)
    minus = eqx.tree_at(lambda c: getattr(c, field), cell, leaf - bump)
    return (loss(plus) - loss(minus)) / (2 * eps)


@pytest.mark.parametrize("forcing", FORCINGS, ids=lambda f: f"{type(f).__name__}-sg{getattr(f, 'stop_gradient', '')}-c{getattr(f, 'causal', '')}")
@pytest.mark.parametrize("readout", ["state", "rate"])
def test_bptt_matches_finite_differences(getkey, forcing, readout):
    cell, trials = tiny_problem(getkey, readout)
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2)
    loss, grads, _ = BPTT().value_and_grad(cell, forcing, trials, key=getkey(), objective=objective)
    np.testing.assert_allclose(loss, loss_of(cell, forcing, trials, objective), rtol=1e-12)
    if getattr(forcing, "stop_gradient", False):
        oracle = stopped_surrogate(cell, forcing, trials, objective)
        np.testing.assert_allclose(oracle(cell), loss, rtol=1e-10)
    else:
        oracle = lambda c: loss_of(c, forcing, trials, objective)
    oracle = eqx.filter_jit(oracle)
    rng = np.random.default_rng(0)
    for field in ("W_rec", "W_in", "b", "W_out", "b_out"):
        leaf = getattr(cell, field)
        for _ in range(2):
            index = tuple(int(rng.integers(s)) for s in leaf.shape)
            fd = finite_difference(oracle, cell, field, index)
            np.testing.assert_allclose(getattr(grads, field)[index], fd, rtol=1e-5, atol=1e-9,
                                       err_msg=f"{field}{index}")


def test_stopped_and_flowing_corrections_differ(getkey):
    """The stop-gradient option changes the gradient (else the option would be a no-op)."""
    cell, trials = tiny_problem(getkey)
    g_stop = BPTT().value_and_grad(cell, ErrorForcing(alpha=0.5), trials, key=getkey())[1]
    g_flow = BPTT().value_and_grad(cell, ErrorForcing(alpha=0.5, stop_gradient=False), trials, key=getkey())[1]
    assert not np.allclose(g_stop.W_rec, g_flow.W_rec)


def test_checkpointed_bptt_equals_plain(getkey):
    """checkpoint=True runs autodiff with each step rematerialised (a checkpoint in the program,
    not the hand-written pass) and gives plain autodiff's loss and gradient."""
    cell, trials = tiny_problem(getkey)
    f = ErrorForcing(alpha=0.5)
    plain, checkpointed = BPTT(fast=False), BPTT(checkpoint=True)
    assert BPTT().uses_fast_path(cell, f) and not checkpointed.uses_fast_path(cell, f)

    def primitives(rule):
        jaxpr = str(jax.make_jaxpr(lambda c: rule.value_and_grad(c, f, trials, key=getkey())[:2])(cell))
        return set(re.findall(r"= (\w+)\[", jaxpr))

    remat = {"checkpoint", "remat", "remat2"}  # jax.checkpoint's primitive, by JAX version
    assert primitives(checkpointed) & remat and not primitives(plain) & remat
    l1, g1, _ = plain.value_and_grad(cell, f, trials, key=getkey())
    l2, g2, _ = checkpointed.value_and_grad(cell, f, trials, key=getkey())
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_process_noise_needs_key_and_changes_loss(getkey):
    """σ ξ_t is added to h_t = cell(h̃_{t-1}, x_t) before the readout and before forcing (SPEC
    §1.1, §2): `simulate` and the rules' losses equal a hand-written loop with that noise, and the
    noise recovered from the rollout has std σ (within 5 %)."""
    sigma = 0.3
    task = ef.tasks.DelayedXOR(delay=2, pulse=2)  # T = 11
    cell = ef.models.LeakyRNN(task.n_in, 50, task.n_out, key=getkey(), tau=2.0)
    cell = eqx.tree_at(lambda c: (c.W_out, c.b_out), cell, (cell.W_out * 20, jnp.array([0.2])))
    trials = ef.tasks.sample_batch(task, 16, key=getkey())
    key = getkey()
    objective = Objective(rate_reg=1e-2, readout_reg=0.0, noise_std=sigma)

    # the injected noise, recovered from an unforced rollout: ξ_t = h_t - cell(h_{t-1}, x_t)
    states, _ = ef.simulate(cell, trials, NoForcing(), noise_std=sigma, key=key)
    prev = jnp.concatenate([jnp.zeros_like(states[:, :1]), states[:, :-1]], axis=1)
    xi = states - jax.vmap(jax.vmap(cell))(prev, trials.inputs)
    assert abs(float(jnp.std(xi)) / sigma - 1) < 0.05 and abs(float(jnp.mean(xi))) < 0.05 * sigma

    # where it enters: a plain loop with that ξ, under error forcing (so "before forcing" matters)
    forcing = ErrorForcing(alpha=0.5)
    W, W_in, b = (np.asarray(v) for v in (cell.W_rec, cell.W_in, cell.b))
    W_out, b_out = np.asarray(cell.W_out), np.asarray(cell.b_out)
    pinv = W_out.T @ np.linalg.inv(W_out @ W_out.T + 1e-7 * np.eye(1))
    X, Y_star, M, XI = (np.asarray(v) for v in (trials.inputs, trials.targets, trials.mask, xi))
    h_forced = np.zeros((16, 50))
    loop_states, loop_outputs = [], []
    for t in range(X.shape[1]):
        h = (1 - cell.leak) * h_forced + cell.leak * (np.tanh(h_forced) @ W.T + X[:, t] @ W_in.T + b) + XI[:, t]
        y = h @ W_out.T + b_out
        h_forced = h + 0.5 * M[:, t].max(axis=-1, keepdims=True) * (((Y_star[:, t] - y) * M[:, t]) @ pinv.T)
        loop_states.append(h_forced)
        loop_outputs.append(y)
    loop_states, loop_outputs = np.stack(loop_states, 1), np.stack(loop_outputs, 1)
    loop_loss = np.sum(M * (loop_outputs - Y_star) ** 2) / M.sum() + 1e-2 * np.mean(loop_states**2)
    s_forced, y_forced = ef.simulate(cell, trials, forcing, noise_std=sigma, key=key)
    np.testing.assert_allclose(s_forced, loop_states, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(y_forced, loop_outputs, rtol=1e-9, atol=1e-11)
    for rule in (BPTT(), BPTT(fast=False)):
        loss = rule.value_and_grad(cell, forcing, trials, key=key, objective=objective)[0]
        np.testing.assert_allclose(loss, loop_loss, rtol=1e-10)
    quiet = BPTT().value_and_grad(cell, forcing, trials, key=key, objective=Objective(rate_reg=1e-2, readout_reg=0.0))[0]
    assert abs(float(quiet) - loop_loss) > 1e-3
    with pytest.raises(ValueError, match="key"):
        ef.simulate(cell, trials, NoForcing(), noise_std=0.1)


def test_frozen_fields_get_zero_gradient(getkey):
    task = ef.tasks.DelayedXOR(delay=2, pulse=2)
    cell = ef.models.LeakyRNN(task.n_in, 5, task.n_out, key=getkey())  # W_in frozen by default
    trials = ef.tasks.sample_batch(task, 2, key=getkey())
    grads = BPTT().value_and_grad(cell, NoForcing(), trials, key=getkey())[1]
    masked = cell.mask_grads(grads)
    assert np.all(np.asarray(masked.W_in) == 0)
    assert np.any(np.asarray(masked.W_rec) != 0)


def test_sparse_connectivity_stays_sparse(getkey):
    cell = ef.models.LeakyRNN(3, 20, 1, key=getkey(), density=0.2)
    zero = np.asarray(cell.rec_mask) == 0
    assert zero.mean() > 0.6 and np.all(np.asarray(cell.W_rec)[zero] == 0)
    trials = ef.tasks.sample_batch(ef.tasks.DelayedXOR(delay=2, pulse=2), 2, key=getkey())
    grads = cell.mask_grads(BPTT().value_and_grad(cell, NoForcing(), trials, key=getkey())[1])
    assert np.all(np.asarray(grads.W_rec)[zero] == 0)


FAST_FORCINGS = [NoForcing(), ErrorForcing(alpha=0.5), ErrorForcing(alpha=0.5, causal=True),
                 KalmanErrorForcing(alpha=0.8, process_noise=1.0, obs_noise=0.3 ** 0.5), TeacherForcing(alpha=0.6),
                 TeacherForcing(alpha=1.0, stop_gradient=True)]
FAST_CASES = ([(f, ro, "tanh") for f in FAST_FORCINGS for ro in ("state", "rate")]
              + [(ErrorForcing(alpha=0.5, causal=True), ro, act) for ro in ("state", "rate")
                 for act in ("softplus", "logistic", "relu")])


@pytest.mark.parametrize("forcing, readout, activation", FAST_CASES,
                         ids=lambda v: f"{type(v).__name__}-{getattr(v, 'causal', '')}{getattr(v, 'stop_gradient', '')}"
                         if not isinstance(v, str) else v)
def test_hand_written_bptt_equals_autodiff(getkey, forcing, readout, activation):
    """The fast reverse pass for the leaky RNN equals plain autodiff (its oracle), with process
    noise, padding weights and every regulariser on."""
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    cell = ef.models.LeakyRNN(task.n_in, 6, task.n_out, key=getkey(), tau=2.0, readout=readout,
                              activation=activation, trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    cell = eqx.tree_at(lambda c: (c.W_out, c.b_out), cell, (cell.W_out * 20, jnp.array([0.2])))
    trials = ef.tasks.sample_batch(task, 3, key=getkey())
    trials = trials._replace(info=dict(trials.info, weight=jnp.array([1.0, 1.0, 0.0])))
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.1)
    key = getkey()
    l1, g1, _ = BPTT().value_and_grad(cell, forcing, trials, key=key, objective=objective)
    l2, g2, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=key, objective=objective)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    for field in ("W_rec", "W_in", "b", "W_out", "b_out"):
        np.testing.assert_allclose(getattr(g1, field), getattr(g2, field), rtol=1e-9, atol=1e-12, err_msg=field)


def _numpy_readout_penalty(W_out):
    """The reference code's svd_ratio_loss: (1 - ‖w‖)² for one output, else the condition
    number penalty (1 - s_max / (s_min + 1e-8))², by numpy's SVD."""
    W_out = np.asarray(W_out)
    if W_out.shape[0] == 1:
        return (1 - np.linalg.norm(W_out)) ** 2
    s = np.linalg.svd(W_out, compute_uv=False)
    return (1 - s.max() / (s.min() + 1e-8)) ** 2


def two_output_problem(getkey, T=9, B=3, partial_mask=False):
    """A 2-output leaky RNN and random trials (the sine task's shape, short)."""
    cell = ef.models.LeakyRNN(2, 6, 2, key=getkey(), tau=2.0, trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    cell = eqx.tree_at(lambda c: (c.W_out, c.b_out), cell, (cell.W_out * 20, jnp.array([0.2, -0.1])))
    inputs = jax.random.normal(getkey(), (B, T, 2))
    targets = jnp.cos(jnp.linspace(0, 3, T))[None, :, None] * jnp.array([1.0, -0.5])
    targets = jnp.broadcast_to(targets, (B, T, 2))
    mask = jnp.ones((B, T, 2))
    if partial_mask:  # component 1 unsupervised on every other step, nothing supervised at t = 0
        mask = mask.at[:, ::2, 1].set(0.0).at[:, 0, :].set(0.0)
    return cell, ef.tasks.Trials(inputs, targets, mask, {})


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("n_out", [1, 2, 3])
def test_readout_penalty_matches_the_reference_formula(getkey, n_out):
    """Objective and the per-step StepLoss both add readout_reg · R(W_out), R by n_out."""
    from errorforcing.rules._step import StepLoss

    cell = ef.models.LeakyRNN(2, 7, n_out, key=getkey())
    cell = eqx.tree_at(lambda c: c.W_out, cell, cell.W_out * 20)
    trials = ef.tasks.Trials(jnp.zeros((2, 4, 2)), jnp.zeros((2, 4, n_out)), jnp.zeros((2, 4, n_out)), {})
    states, outputs = ef.simulate(cell, trials)
    expected = 0.3 * _numpy_readout_penalty(cell.W_out)
    assert expected > 1e-3  # not a vacuous comparison
    loss = Objective(rate_reg=0.0, readout_reg=0.3)(cell, states, outputs, trials)  # mask 0: MSE term is 0
    np.testing.assert_allclose(loss, expected, rtol=1e-10)
    np.testing.assert_allclose(StepLoss(Objective(rate_reg=0.0, readout_reg=0.3), trials, 7).penalty(cell),
                               expected, rtol=1e-10)


TWO_OUTPUT_CASES = {
    "none": (NoForcing(), False),
    "ef": (ErrorForcing(alpha=0.5), False),
    "ef-causal-partial": (ErrorForcing(alpha=0.5, causal=True), True),
    "tf": (TeacherForcing(alpha=0.6), False),
    "tf-partial": (TeacherForcing(alpha=0.6), True),
    "tf-stopped-partial": (TeacherForcing(alpha=1.0, stop_gradient=True), True),
}


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("case", list(TWO_OUTPUT_CASES))
def test_hand_written_bptt_equals_autodiff_with_two_outputs(getkey, case):
    """n_out = 2 (the condition-number penalty; steps where only some outputs are supervised):
    the fast path's loss is the hand computation and its gradient equals autodiff's."""
    forcing, partial_mask = TWO_OUTPUT_CASES[case]
    cell, trials = two_output_problem(getkey, partial_mask=partial_mask)
    objective = Objective(rate_reg=0.0, readout_reg=0.1)
    key = getkey()
    l1, g1, _ = BPTT().value_and_grad(cell, forcing, trials, key=key, objective=objective)
    l2, g2, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=key, objective=objective)
    _, outputs = ef.simulate(cell, trials, forcing)
    mse = np.sum(np.asarray(trials.mask) * (np.asarray(outputs) - np.asarray(trials.targets)) ** 2) / np.sum(trials.mask)
    np.testing.assert_allclose(l1, mse + 0.1 * _numpy_readout_penalty(cell.W_out), rtol=1e-10)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    for field in ("W_rec", "W_in", "b", "W_out", "b_out"):
        np.testing.assert_allclose(getattr(g1, field), getattr(g2, field), rtol=1e-9, atol=1e-12, err_msg=field)


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("forcing", [TeacherForcing(alpha=0.7), TeacherForcing(alpha=0.7, stop_gradient=True)],
                         ids=["flowing", "stopped"])
def test_teacher_forcing_gradient_ignores_placeholder_targets(getkey, forcing):
    """The targets of unsupervised components (m = 0) change neither the loss nor the gradient,
    on the fast path and on autodiff."""
    cell, trials = two_output_problem(getkey, partial_mask=True)
    off = np.asarray(trials.mask) == 0
    placeholder = trials._replace(targets=jnp.where(off, 5.0, trials.targets))
    for rule in (BPTT(), BPTT(fast=False)):
        l1, g1, _ = rule.value_and_grad(cell, forcing, trials, key=getkey())
        l2, g2, _ = rule.value_and_grad(cell, forcing, placeholder, key=getkey())
        np.testing.assert_allclose(l1, l2, rtol=1e-12)
        for field in ("W_rec", "b", "W_out", "b_out"):
            np.testing.assert_allclose(getattr(g1, field), getattr(g2, field), rtol=1e-10, atol=1e-13, err_msg=field)
