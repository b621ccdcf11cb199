"""RTRL equals BPTT under every forcing (float64, tight); the Williams-Zipser network and its
teacher forcing; real-time (online) RTRL against a step-by-step gradient-descent reference."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.forcing import (ErrorForcing, FeedbackForcing, KalmanErrorForcing, NoForcing, TeacherForcing,
                                  WilliamsZipserTeacherForcing, rollout)
from errorforcing.models import WilliamsZipserNet
from errorforcing.rules import BPTT, RTRL, Objective

from rule_helpers import N, N_IN, N_OUT, assert_trees_close, make_cell, make_trials

OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.05)


pytestmark = pytest.mark.usefixtures("fast_compile")


def wz_problem():
    cell = WilliamsZipserNet(N_IN, 4, N_OUT, key=jax.random.key(11), init_scale=1.0)
    trials = make_trials(jax.random.key(12), targets=lambda k, s: jax.random.uniform(k, s))
    return cell, trials


# (cell readout, forcing, objective) -> RTRL must equal BPTT. The jitted ensemble table in
# test_rules.py covers the state readout with the reference forcings; these add the rate
# readout, the non-default gradient options and the Williams-Zipser network.
LEAKY_CASES = {
    "rate-none": ("rate", NoForcing()),
    "rate-tf": ("rate", TeacherForcing(alpha=0.6)),
    "rate-tf-stopped": ("rate", TeacherForcing(alpha=0.6, stop_gradient=True)),
    "rate-ef-causal-flowing": ("rate", ErrorForcing(alpha=0.7, causal=True, stop_gradient=False)),
    "rate-kalman-flowing": ("rate", KalmanErrorForcing(alpha=0.8, process_noise=1.0, obs_noise=0.3 ** 0.5, stop_gradient=False)),
    "state-tf-stopped": ("state", TeacherForcing(alpha=1.0, stop_gradient=True)),
    "state-ef-flowing": ("state", ErrorForcing(alpha=0.5, stop_gradient=False)),
    "state-feedback-causal": ("state", "feedback-causal"),
}
WZ_CASES = {
    "wz-none": NoForcing(),
    "wz-tf": WilliamsZipserTeacherForcing(),
    "wz-tf-partial": WilliamsZipserTeacherForcing(alpha=0.5),
}


@functools.cache
def equality_table():
    """{case: ((rtrl loss, rtrl grads), (bptt loss, bptt grads))}, all in one compiled program."""
    cells = {r: make_cell(jax.random.key(1), readout=r) for r in ("state", "rate")}
    trials = make_trials(jax.random.key(2))
    wz_cell, wz_trials = wz_problem()
    key = jax.random.key(3)

    @eqx.filter_jit
    def table(cells, wz_cell):
        out = {}
        for name, (readout, forcing) in LEAKY_CASES.items():
            cell = cells[readout]
            if forcing == "feedback-causal":
                forcing = FeedbackForcing.random(cell, key=jax.random.key(4), alpha=0.9, causal=True)
            out[name] = [rule.value_and_grad(cell, forcing, trials, key=key, objective=OBJECTIVE)[:2]
                         for rule in (RTRL(), BPTT())]
        for name, forcing in WZ_CASES.items():
            out[name] = [rule.value_and_grad(wz_cell, forcing, wz_trials, key=key, objective=Objective())[:2]
                         for rule in (RTRL(), BPTT())]
        # default trainable fields (W_in frozen) and a sparse W_rec
        sparse = make_cell(jax.random.key(5), trainable=("W_rec", "b", "W_out", "b_out"), density=0.6)
        out["sparse-default-trainable"] = [
            rule.value_and_grad(sparse, ErrorForcing(alpha=0.5), trials, key=key, objective=OBJECTIVE)[:2]
            for rule in (RTRL(), BPTT())]
        return out

    return table(cells, wz_cell)


@pytest.mark.parametrize("case", [*LEAKY_CASES, *WZ_CASES])
def test_rtrl_equals_bptt(case):
    (loss, grads), (ref_loss, ref_grads) = equality_table()[case]
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    assert_trees_close(grads, ref_grads, rtol=1e-6)
    assert float(jnp.max(jnp.abs(jax.tree.leaves(grads)[0]))) > 1e-8


def test_rtrl_tracks_only_trainable_fields():
    (loss, grads), (ref_loss, ref_grads) = equality_table()["sparse-default-trainable"]
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    for f in ("W_rec", "b", "W_out", "b_out"):
        np.testing.assert_allclose(getattr(grads, f), getattr(ref_grads, f), rtol=1e-6, atol=1e-14)
    assert not np.any(grads.W_in)  # frozen: zero, not tracked


# ----- Williams-Zipser network and teacher forcing -----


def test_williams_zipser_net_step_and_readout(getkey):
    cell = WilliamsZipserNet(3, 4, 2, key=getkey(), init_scale=0.1)
    assert cell.W.shape == (4, 3 + 1 + 4) and cell.n_rec == 4 and cell.n_in == 3
    assert float(jnp.max(jnp.abs(cell.W))) <= 0.1
    h, x = jax.random.uniform(getkey(), (4,)), jax.random.normal(getkey(), (3,))
    z = np.concatenate([x, [1.0], h])
    np.testing.assert_allclose(cell(h, x), 1 / (1 + np.exp(-(np.asarray(cell.W) @ z))), rtol=1e-12)
    np.testing.assert_array_equal(cell.readout(h), h[:2])
    with pytest.raises(ValueError, match="n_out"):
        WilliamsZipserNet(3, 2, 4, key=getkey())


def test_williams_zipser_teacher_forcing_replaces_output_units():
    cell, trials = wz_problem()
    forced, outputs = jax.vmap(lambda x, y, m: rollout(cell, WilliamsZipserTeacherForcing(), x, y, m))(
        trials.inputs, trials.targets, trials.mask)
    free, free_out = jax.vmap(lambda x, y, m: rollout(cell, NoForcing(), x, y, m))(
        trials.inputs, trials.targets, trials.mask)
    on = trials.mask > 0
    np.testing.assert_array_equal(np.where(on, forced[..., :N_OUT], 0.0), np.where(on, trials.targets, 0.0))
    # the first step is unforced before the forcing acts; afterwards the trajectories differ
    np.testing.assert_array_equal(outputs[:, 0], free_out[:, 0])
    assert not np.allclose(forced[..., N_OUT:], free[..., N_OUT:])
    # α = 0 is no forcing, bit for bit
    zero, _ = jax.vmap(lambda x, y, m: rollout(cell, WilliamsZipserTeacherForcing(alpha=0.0), x, y, m))(
        trials.inputs, trials.targets, trials.mask)
    np.testing.assert_array_equal(zero, free)


def test_williams_zipser_forcing_gives_forced_units_no_gradient():
    """With every output unit forced at step t, nothing before t reaches the loss after t
    through those units; with all units forced (n_out = n), the gradient of a late loss
    term only sees the last step (eq. 2.19: the forced units' sensitivities are zero)."""
    cell = WilliamsZipserNet(N_IN, 3, 3, key=jax.random.key(13), init_scale=1.0)
    trials = make_trials(jax.random.key(14), n_out=3, targets=lambda k, s: jax.random.uniform(k, s))
    trials = trials._replace(mask=jnp.ones_like(trials.mask))
    forcing = WilliamsZipserTeacherForcing()
    loss, grads, _ = eqx.filter_jit(RTRL().value_and_grad)(cell, forcing, trials, key=jax.random.key(0),
                                                           objective=Objective(0, 0))
    # every unit is replaced each step, so each step's loss is a function of (target_{t-1}, x_t) only
    prev = jnp.concatenate([jnp.zeros_like(trials.targets[:, :1]), trials.targets[:, :-1]], axis=1)

    def one_step_loss(W):
        c = eqx.tree_at(lambda c: c.W, cell, W)
        y = jax.vmap(jax.vmap(c))(prev, trials.inputs)
        return jnp.sum((y - trials.targets) ** 2) / jnp.sum(trials.mask)

    np.testing.assert_allclose(grads.W, jax.grad(one_step_loss)(cell.W), rtol=1e-10)


def test_williams_zipser_forcing_needs_unit_outputs(getkey):
    with pytest.raises(TypeError, match="units"):
        WilliamsZipserTeacherForcing().init(make_cell(getkey()))


# ----- real-time (online) RTRL -----


def test_online_rtrl_is_stepwise_gradient_descent(getkey):
    """θ_{t+1} = θ_t - lr g_t with g_t = Σ_{s≤t} ∂ℓ_t/∂θ_s: the step-t loss differentiated with
    respect to the weights each earlier step actually used (what M accumulates)."""
    batch, steps, lr = 2, 3, 0.5
    cell, trials = make_cell(getkey(), readout="rate"), make_trials(getkey(), batch=batch, steps=steps)
    forcing = ErrorForcing(alpha=0.5)
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2)
    run = eqx.filter_jit(lambda rule: rule.value_and_grad(cell, forcing, trials, key=getkey(), objective=objective)[:2])
    loss, grads = run(RTRL(online=True, lr=lr))
    offline_loss, _ = run(RTRL())

    params, rest = eqx.partition(cell, eqx.is_inexact_array)
    n_mask = jnp.sum(trials.mask)
    rate = objective.rate_reg / (steps * N * batch)

    def step_losses(thetas):
        h, losses = jnp.zeros((batch, N)), []
        for t, theta in enumerate(thetas):
            c = eqx.combine(theta, rest)

            def one(h_prev, x, target, m):
                h = c(h_prev, x)
                y = c.readout(h)
                h_forced, _ = forcing(h, y, target, m, c, forcing.init(c))
                return h_forced, jnp.sum(m * (y - target) ** 2) / n_mask + rate * jnp.sum(h_forced**2)

            h, per_trial = jax.vmap(one)(h, trials.inputs[:, t], trials.targets[:, t], trials.mask[:, t])
            sv = jnp.linalg.svd(c.W_out, compute_uv=False)  # the reference penalty for n_out > 1
            penalty = objective.readout_reg * (1 - sv[0] / (sv[-1] + 1e-8)) ** 2
            losses.append(jnp.sum(per_trial) + penalty / steps)
        return losses

    @jax.jit
    def reference(params):
        add = lambda *trees: jax.tree.map(lambda *x: sum(x), *trees)
        thetas, total = [params] * steps, jax.tree.map(jnp.zeros_like, params)
        for t in range(steps):
            g = add(*jax.grad(lambda ths: step_losses(ths)[t])(thetas))
            total = add(total, g)
            thetas = thetas[: t + 1] + [jax.tree.map(lambda p, d: p - lr * d, thetas[t], g)] * (steps - t - 1)
        return sum(step_losses(thetas)), total

    ref_loss, ref_grads = reference(params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    assert_trees_close(grads, ref_grads, rtol=1e-8)
    assert abs(float(loss - offline_loss)) > 1e-3 * abs(float(offline_loss))  # the weights did change


def test_online_rtrl_with_small_rate_tracks_offline(getkey):
    cell, trials, key = make_cell(getkey()), make_trials(getkey()), getkey()
    forcing = ErrorForcing(alpha=0.5, causal=True)

    @eqx.filter_jit
    def online_and_offline(lrs):
        online = jax.vmap(lambda lr: RTRL(online=True, lr=lr).value_and_grad(
            cell, forcing, trials, key=key, objective=OBJECTIVE)[:2])(lrs)
        return online, RTRL().value_and_grad(cell, forcing, trials, key=key, objective=OBJECTIVE)[:2]

    (losses, grads), (loss, offline) = online_and_offline(jnp.array([0.0, 1e-6, 2e-6]))
    flat = lambda g: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])
    g_on, g_off = jax.vmap(flat)(grads), flat(offline)
    np.testing.assert_allclose(g_on[0], g_off, rtol=1e-12, atol=1e-15)  # lr = 0 is offline RTRL
    np.testing.assert_allclose(losses[0], loss, rtol=1e-12)
    d1, d2 = (float(jnp.linalg.norm(g_on[i] - g_off)) for i in (1, 2))
    assert 0 < d1 < 1e-4 * float(jnp.linalg.norm(g_off))
    np.testing.assert_allclose(d2 / d1, 2.0, rtol=1e-3)  # the deviation is first order in lr


def test_online_rtrl_needs_a_learning_rate():
    with pytest.raises(ValueError, match="learning rate"):
        RTRL(online=True)


# ----- real-time learning as the trainer uses it: `online_run` -----

ALL_FIELDS = ("W_rec", "W_in", "b", "W_out", "b_out")


def hand_online_rtrl(cell, trials, update, state):
    """Real-time RTRL for the leaky RNN (state readout, tanh, no forcing, plain masked MSE),
    written out in numpy: per trial the influence of every parameter on h,
        M_t = J_t M_{t-1} + a ∂̄h_t/∂θ,   J_t = (1 - a) I + a W diag(φ'(h_{t-1})),
    g_t = Σ_b ∂ℓ_t/∂h_t M_t (+ the readout's direct terms), and θ changed by `update(g_t, θ,
    state)` after every step."""
    theta = {f: np.array(getattr(cell, f), np.float64) for f in ALL_FIELDS}
    a = cell.leak
    x, target, m = (np.asarray(v, np.float64) for v in trials[:3])
    B, T, n_in = x.shape
    n = m.sum()
    idx = np.arange(N)
    h = np.zeros((B, N))
    M = {"W_rec": np.zeros((B, N, N, N)), "W_in": np.zeros((B, N, N, n_in)), "b": np.zeros((B, N, N))}
    loss = 0.0
    for t in range(T):
        W, W_in, b, W_out, b_out = (theta[f] for f in ALL_FIELDS)
        r = np.tanh(h)
        J = (1 - a) * np.eye(N)[None] + a * W[None] * (1 - r**2)[:, None, :]
        M = {k: np.einsum("bil,bl...->bi...", J, v) for k, v in M.items()}
        M["W_rec"][:, idx, idx, :] += a * r[:, None, :]
        M["W_in"][:, idx, idx, :] += a * x[:, t][:, None, :]
        M["b"][:, idx, idx] += a
        h = (1 - a) * h + a * (r @ W.T + x[:, t] @ W_in.T + b)
        y = h @ W_out.T + b_out
        err = m[:, t] * (y - target[:, t])
        loss += np.sum(err * (y - target[:, t])) / n
        dy = 2 * err / n
        dh = dy @ W_out
        g = {k: np.einsum("bi,bi...->...", dh, v) for k, v in M.items()}
        g |= {"W_out": dy.T @ h, "b_out": dy.sum(0)}
        theta, state = update(g, theta, state)
    return loss, theta, state


def sgd(lr):
    return lambda g, theta, state: ({k: theta[k] - lr * g[k] for k in theta}, state)


PLAIN = Objective(rate_reg=0.0, readout_reg=0.0)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "generic"])
def test_online_rtrl_run_is_a_hand_written_loop_of_sgd_steps(fast, getkey):
    """Two trials in a row: θ changes at every step, and the second trial starts where the first ended."""
    lr = 0.3
    cell, first, second = make_cell(getkey()), make_trials(getkey()), make_trials(getkey())
    rule = RTRL(online=True, lr=lr, fast=fast)
    run = eqx.filter_jit(lambda c, s, tr: rule.online_run(c, s, NoForcing(), tr, key=jax.random.key(0),
                                                           objective=PLAIN))
    loss1, mid, opt_state, _ = run(cell, rule.online_init(cell), first)
    loss2, end, _, _ = run(mid, opt_state, second)

    ref1, theta_mid, _ = hand_online_rtrl(cell, first, sgd(lr), None)
    ref2, theta_end, _ = hand_online_rtrl(eqx.tree_at(lambda c: [getattr(c, f) for f in ALL_FIELDS], cell,
                                                      [jnp.asarray(theta_mid[f]) for f in ALL_FIELDS]),
                                          second, sgd(lr), None)
    np.testing.assert_allclose([loss1, loss2], [ref1, ref2], rtol=1e-10)
    for f in ALL_FIELDS:
        np.testing.assert_allclose(getattr(mid, f), theta_mid[f], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(getattr(end, f), theta_end[f], rtol=1e-10, atol=1e-13)
    assert float(jnp.max(jnp.abs(end.W_rec - cell.W_rec))) > 1e-3  # it did learn


def test_online_rtrl_with_adam_steps_adam_at_every_step(getkey):
    """`optimizer=optax.adam`: the hand loop applies optax's Adam to each step's gradient; its
    state (moments, count) carries across steps and into the next trial."""
    import optax

    lr = 0.05
    cell, first, second = make_cell(getkey()), make_trials(getkey()), make_trials(getkey())
    rule = RTRL(online=True, lr=lr, optimizer=optax.adam)
    run = eqx.filter_jit(lambda c, s, tr: rule.online_run(c, s, NoForcing(), tr, key=jax.random.key(0),
                                                           objective=PLAIN))
    _, mid, opt_state, _ = run(cell, rule.online_init(cell), first)
    _, end, opt_state, _ = run(mid, opt_state, second)

    adam = optax.adam(lr)

    def adam_step(g, theta, state):
        updates, state = adam.update({k: jnp.asarray(v) for k, v in g.items()}, state)
        return {k: theta[k] + np.asarray(updates[k]) for k in theta}, state

    state0 = adam.init({f: getattr(cell, f) for f in ALL_FIELDS})
    _, theta_mid, state = hand_online_rtrl(cell, first, adam_step, state0)
    mid_ref = eqx.tree_at(lambda c: [getattr(c, f) for f in ALL_FIELDS], cell,
                          [jnp.asarray(theta_mid[f]) for f in ALL_FIELDS])
    _, theta_end, state = hand_online_rtrl(mid_ref, second, adam_step, state)
    for f in ALL_FIELDS:
        np.testing.assert_allclose(getattr(end, f), theta_end[f], rtol=1e-9, atol=1e-12)
    assert int(state[0].count) == 2 * first.inputs.shape[1]
    # not what SGD at the same rate would give
    _, theta_sgd, _ = hand_online_rtrl(cell, first, sgd(lr), None)
    assert np.max(np.abs(theta_sgd["W_rec"] - theta_mid["W_rec"])) > 1e-4


def test_online_run_continues_a_stream_across_segments(getkey):
    """Passing the returned carry on: two halves of a trial are the whole trial."""
    cell, trials = make_cell(getkey()), make_trials(getkey(), steps=8)
    half = lambda sl: jax.tree.map(lambda a: a[:, sl], trials._replace(info={}))  # noqa: E731
    for rule in (RTRL(online=True, lr=0.2), RTRL(online=True, lr=0.2, fast=False)):
        run = eqx.filter_jit(lambda c, s, tr, carry: rule.online_run(
            c, s, ErrorForcing(alpha=0.5), tr, key=jax.random.key(0), objective=PLAIN, carry=carry, per_step_loss=True))
        l_all, whole, _, _ = run(cell, rule.online_init(cell), trials, None)
        l1, c1, s1, carry = run(cell, rule.online_init(cell), half(slice(0, 4)), None)
        l2, c2, _, _ = run(c1, s1, half(slice(4, 8)), carry)
        np.testing.assert_allclose(l1 + l2, l_all, rtol=1e-12)
        assert_trees_close(eqx.filter(c2, eqx.is_array), eqx.filter(whole, eqx.is_array), rtol=1e-12)


def test_online_options_that_cannot_apply_are_refused(capsys, tmp_path):
    from errorforcing.cli import main

    import optax

    with pytest.raises(ValueError, match="online=True"):
        RTRL(optimizer=optax.adam)
    out = tmp_path / "runs"
    cases = {("--rule", "bptt", "--online", "--online-lr", "0.1"): "rule.online",
             ("--rule", "tbptt", "--online", "--online-lr", "0.1"): "rule.online",
             ("--rule", "rflo", "--online-lr", "0.1"): "rule.online_lr",
             ("--rule", "rtrl", "--online-optimizer", "adam"): "rule.online_optimizer",
             ("--rule", "rflo", "--online", "--online-lr", "0.1", "--online-optimizer", "nope"): "online_optimizer",
             ("--rule", "eprop", "--online", "--online-lr", "0.1", "--lr", "1e-3"): "optim",
             ("--rule", "eprop", "--online", "--online-lr", "0.1", "--clip", "1"): "optim",
             ("--continual", "--rule", "rtrl", "--online", "--online-lr", "0.1", "--steps", "100",
              "--val-every", "10"): "task.kind",
             ("--continual", "--task", "pipelined-xor", "--rule", "rtrl", "--steps", "100",
              "--val-every", "10"): "continual",
             ("--continual", "--task", "pipelined-xor", "--rule", "rtrl", "--online", "--online-lr", "0.1",
              "--steps", "100", "--val-every", "30"): "steps",
             ("--continual", "--task", "pipelined-xor", "--rule", "rtrl", "--online", "--online-lr", "0.1",
              "--steps", "100", "--val-every", "10", "--epochs", "3"): "epochs",
             ("--steps", "100",): "steps"}
    for args, field in cases.items():
        assert main(["train", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and field in err, (args, err)
    assert not out.exists()
