"""e-prop and RFLO against an independent plain-numpy implementation of their traces; both
exact for a one-step trial; online mode; random feedback; feedback forcing and its learned F.
(e-prop against its autodiff oracle, under jit and an ensemble vmap, is in test_rules.py.)"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.forcing import (ErrorForcing, FeedbackForcing, KalmanErrorForcing, NoForcing, TeacherForcing,
                                  decoder_alignment, feedback_update, forcing_alignment, readout_pinv, rollout)
from errorforcing.models import LeakyRNN, WilliamsZipserNet
from errorforcing.rules import BPTT, RFLO, EProp, Objective, feedback_alignment

from rule_helpers import ALL, N, N_IN, N_OUT, make_cell, make_trials

OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-2)


pytestmark = pytest.mark.usefixtures("fast_compile")


def numpy_traces(cell, trials, feedback, kind, forcing, alpha, objective):
    """e-prop / RFLO for the tanh leaky RNN with a rate readout, written as plain loops.
    forcing ∈ {"none", "ef", "tf"} (teacher forcing on the supervised outputs, its target stopped)."""
    W, W_in, b, W_out, b_out = (np.asarray(getattr(cell, f)) for f in ALL)
    x, target, mask = (np.asarray(a) for a in trials[:3])
    B_fb = np.asarray(feedback)
    a = cell.leak
    batch, steps = x.shape[:2]
    dphi = lambda v: 1 - np.tanh(v) ** 2
    pinv = W_out.T @ np.linalg.inv(W_out @ W_out.T + 1e-7 * np.eye(N_OUT))
    n_mask, rate = mask.sum(), objective.rate_reg / (steps * N * batch)
    g = {f: np.zeros_like(np.asarray(getattr(cell, f))) for f in ALL}
    loss = 0.0
    for i in range(batch):
        h = np.zeros(N)
        P_rec, P_in, P_b = np.zeros((N, N)), np.zeros((N, N_IN)), np.zeros(N)
        for t in range(steps):
            decay = (1 - a) + (a * np.diag(W) * dphi(h) if kind == "eprop" else np.zeros(N))
            for i_unit in range(N):
                for j in range(N):
                    P_rec[i_unit, j] = decay[i_unit] * P_rec[i_unit, j] + a * np.tanh(h[j])
                for j in range(N_IN):
                    P_in[i_unit, j] = decay[i_unit] * P_in[i_unit, j] + a * x[i, t, j]
                P_b[i_unit] = decay[i_unit] * P_b[i_unit] + a
            h = (1 - a) * h + a * (W @ np.tanh(h) + W_in @ x[i, t] + b)
            y = W_out @ np.tanh(h) + b_out
            m = mask[i, t]
            c = alpha * m.max()
            if forcing == "ef":
                h_forced, kappa = h + c * pinv @ ((target[i, t] - y) * m), 1.0
            elif forcing == "tf":  # teacher state from the supervised readout rows, W_S = diag(s) W_out
                sel = (m > 0).astype(float)
                W_S = sel[:, None] * W_out
                pinv_S = W_S.T @ np.linalg.inv(W_S @ W_S.T + 1e-7 * np.eye(N_OUT))
                h_forced, kappa = (1 - c) * h + c * pinv_S @ (sel * (target[i, t] - b_out)), 1 - c
            else:
                h_forced, kappa = h, 1.0
            delta = 2 * m * (y - target[i, t]) / n_mask
            signal = (B_fb @ delta) * dphi(h) + kappa * 2 * rate * h_forced
            g["W_rec"] += signal[:, None] * P_rec
            g["W_in"] += signal[:, None] * P_in
            g["b"] += signal * P_b
            g["W_out"] += np.outer(delta, np.tanh(h))
            g["b_out"] += delta
            loss += np.sum(m * (y - target[i, t]) ** 2) / n_mask + rate * np.sum(h_forced**2)
            P_rec, P_in, P_b = kappa * P_rec, kappa * P_in, kappa * P_b
            h = h_forced
    # the reference readout penalty for n_out > 1: (1 - s_max / (s_min + 1e-8))², by numpy SVD
    U, sv, Vt = np.linalg.svd(W_out, full_matrices=False)
    ratio = sv[0] / (sv[-1] + 1e-8)
    d_ratio = np.outer(U[:, 0], Vt[0]) / (sv[-1] + 1e-8) - sv[0] / (sv[-1] + 1e-8) ** 2 * np.outer(U[:, -1], Vt[-1])
    g["W_out"] += objective.readout_reg * 2 * (1 - ratio) * (-d_ratio)
    return loss + objective.readout_reg * (1 - ratio) ** 2, g


# (rule, forcing name, α) checked against the numpy loops, rate readout
NUMPY_CASES = {
    "rflo-random-none": (RFLO(feedback="random", key=jax.random.key(7)), "none", 0.0),
    "rflo-symmetric-ef": (RFLO(), "ef", 0.6),
    "rflo-random-tf": (RFLO(feedback="random", key=jax.random.key(7), feedback_scale=0.3), "tf", 0.5),
    "eprop-symmetric-tf": (EProp(), "tf", 0.5),
    "eprop-random-ef": (EProp(feedback="random", key=jax.random.key(8)), "ef", 0.9),
}
FORCING = {"none": lambda a: NoForcing(), "ef": lambda a: ErrorForcing(alpha=a),
           "tf": lambda a: TeacherForcing(alpha=a, stop_gradient=True)}


@functools.cache
def numpy_case_results():
    cell, trials = make_cell(jax.random.key(1), readout="rate"), make_trials(jax.random.key(2))

    @eqx.filter_jit
    def run(cell):
        return {name: rule.value_and_grad(cell, FORCING[f](a), trials, key=jax.random.key(0),
                                          objective=OBJECTIVE)[:2]
                for name, (rule, f, a) in NUMPY_CASES.items()}

    return cell, trials, run(cell)


@pytest.mark.parametrize("case", NUMPY_CASES)
def test_trace_rules_match_numpy_loops(case):
    cell, trials, results = numpy_case_results()
    rule, forcing, alpha = NUMPY_CASES[case]
    loss, grads = results[case]
    kind = "eprop" if isinstance(rule, EProp) else "rflo"
    ref_loss, ref = numpy_traces(cell, trials, rule.feedback_matrix(cell), kind, forcing, alpha, OBJECTIVE)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    for f in ALL:
        np.testing.assert_allclose(getattr(grads, f), ref[f], rtol=1e-8, atol=1e-14)


def test_forcing_gain_shortcuts_equal_the_jacobian_diagonal(getkey):
    """κ = diag(∂h̃/∂h): the closed forms the trace rules use (each forcing family's
    `state_jacobian_diagonal`) = the forcing's Jacobian."""
    cell = make_cell(getkey())
    h, target = jax.random.normal(getkey(), (N,)), jax.random.normal(getkey(), (N_OUT,))
    mask = jnp.array([1.0, 0.0])
    forcings = [NoForcing(), ErrorForcing(alpha=0.4), ErrorForcing(alpha=0.4, causal=True),
                KalmanErrorForcing(alpha=0.3, process_noise=1.0, obs_noise=0.5 ** 0.5), TeacherForcing(alpha=0.3),
                TeacherForcing(alpha=0.3, stop_gradient=True), FeedbackForcing(0.5 * jax.random.normal(getkey(), (N, N_OUT)), alpha=0.2),
                ErrorForcing(alpha=0.4, stop_gradient=False)]  # the last: the generic Jacobian path
    for forcing in forcings:
        carry = forcing.init(cell)
        forced = lambda hh: forcing(hh, cell.readout(hh), target, mask, cell, carry)[0]
        np.testing.assert_allclose(forcing.state_jacobian_diagonal(h, target, mask, cell, carry),
                                   jnp.diagonal(jax.jacfwd(forced)(h)), rtol=1e-12, err_msg=repr(forcing))


def test_trace_rules_are_exact_for_a_one_step_trial():
    """With T = 1 there is no past to truncate: e-prop and RFLO (B = W_outᵀ) are BPTT."""
    trials = make_trials(jax.random.key(3), steps=1)
    cells = [make_cell(jax.random.key(4), readout=r) for r in ("state", "rate")]
    forcings = [NoForcing(), ErrorForcing(alpha=0.7), TeacherForcing(alpha=0.4, stop_gradient=True)]

    @eqx.filter_jit
    def run(cells):
        return [[rule.value_and_grad(cell, forcing, trials, key=jax.random.key(0), objective=OBJECTIVE)[:2]
                 for rule in (BPTT(), EProp(), RFLO())] for cell in cells for forcing in forcings]

    for (ref_loss, ref), *local in run(cells):
        for loss, grads in local:
            np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
            for f in ALL:
                np.testing.assert_allclose(getattr(grads, f), getattr(ref, f), rtol=1e-10, atol=1e-15)


# ----- online mode -----


@functools.cache
def online_results():
    cell = make_cell(jax.random.key(5), density=0.6, trainable=("W_rec", "b", "W_out", "b_out"))
    trials = make_trials(jax.random.key(6))
    forcing = ErrorForcing(alpha=0.5, causal=True)
    key = jax.random.key(0)

    @eqx.filter_jit
    def run(lrs):
        offline = [rule.value_and_grad(cell, forcing, trials, key=key, objective=OBJECTIVE)[:2]
                   for rule in (EProp(), RFLO())]
        online = [jax.vmap(lambda lr: rule(online=True, lr=lr).value_and_grad(
            cell, forcing, trials, key=key, objective=OBJECTIVE)[:2])(lrs) for rule in (EProp, RFLO)]
        return offline, online

    return cell, run(jnp.array([0.0, 1e-6, 2e-6, 0.5]))


@pytest.mark.parametrize("which", [0, 1], ids=["eprop", "rflo"])
def test_online_trace_rule_tracks_offline_to_first_order(which):
    cell, (offline, online) = online_results()
    (loss, grads), (losses, online_grads) = offline[which], online[which]
    flat = lambda g: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])
    # online updates are masked as they are applied; offline grads are masked by the trainer
    g_off, g_on = flat(cell.mask_grads(grads)), jax.vmap(flat)(online_grads)
    np.testing.assert_allclose(g_on[0], g_off, rtol=1e-12, atol=1e-15)  # lr = 0: offline
    np.testing.assert_allclose(losses[0], loss, rtol=1e-12)
    d1, d2 = (float(jnp.linalg.norm(g_on[i] - g_off)) for i in (1, 2))
    assert 0 < d1 < 1e-4 * float(jnp.linalg.norm(g_off))
    np.testing.assert_allclose(d2 / d1, 2.0, rtol=1e-3)
    assert abs(float(losses[3] - loss)) > 1e-3 * abs(float(loss))  # large lr: the weights moved


def test_online_updates_respect_frozen_fields_and_sparsity():
    cell, (offline, online) = online_results()
    for _, grads in online:
        assert not np.any(grads.W_in)
        assert not np.any(np.where(cell.rec_mask == 0, grads.W_rec, 0.0))
    for _, grads in offline:  # offline too: frozen fields get zeros
        assert not np.any(grads.W_in)


# ----- feedback matrices -----


def test_random_feedback_is_fixed_by_its_key(getkey):
    cell, key = make_cell(getkey()), getkey()
    B1 = RFLO(feedback="random", key=key).feedback_matrix(cell)
    B2 = EProp(feedback="random", key=key).feedback_matrix(cell)
    np.testing.assert_array_equal(B1, B2)
    assert B1.shape == (N, N_OUT)
    np.testing.assert_allclose(jnp.std(RFLO(feedback="random", key=key).feedback_matrix(make_cell(getkey()))),
                               jnp.std(B1), rtol=1e-12)  # depends on the key only
    assert abs(float(jnp.std(B1)) - 1 / N) < 0.5 / N
    np.testing.assert_allclose(feedback_alignment(EProp(), cell), 1.0, rtol=1e-12)
    assert abs(float(feedback_alignment(RFLO(feedback="random", key=key), cell))) < 1


def test_trace_rule_arguments_are_checked(getkey):
    with pytest.raises(ValueError, match="key"):
        EProp(feedback="random")
    with pytest.raises(ValueError, match="symmetric"):
        RFLO(feedback="transpose")
    with pytest.raises(ValueError, match="learning rate"):
        RFLO(online=True)
    wz = WilliamsZipserNet(N_IN, 4, N_OUT, key=getkey())
    with pytest.raises(TypeError, match="leaky RNN"):
        EProp().value_and_grad(wz, NoForcing(), make_trials(getkey()), key=getkey())


# ----- feedback forcing -----


def _rollouts(cell, trials, *forcings):
    return [jax.vmap(lambda x, y, m: rollout(cell, f, x, y, m))(trials.inputs, trials.targets, trials.mask)
            for f in forcings]


def test_feedback_forcing_limits(getkey):
    cell, trials = make_cell(getkey()), make_trials(getkey())
    pinv = readout_pinv(cell.W_out, 1e-7)
    random = FeedbackForcing.random(cell, key=getkey(), alpha=0.0)
    np.testing.assert_allclose(jnp.linalg.norm(random.F), jnp.linalg.norm(pinv), rtol=1e-12)
    (none, _), (zero, _), (as_ef, _), (ef, _) = _rollouts(
        cell, trials, NoForcing(), random, FeedbackForcing(pinv, 0.7), ErrorForcing(alpha=0.7))
    np.testing.assert_array_equal(zero, none)  # α = 0 is no forcing, bit for bit
    np.testing.assert_allclose(as_ef, ef, rtol=1e-12)  # F = W⁺ is error forcing
    np.testing.assert_allclose(forcing_alignment(FeedbackForcing(pinv, 0.7), cell), 1.0, rtol=1e-12)
    np.testing.assert_allclose(decoder_alignment(FeedbackForcing(2 * cell.W_out.T, 0.7), cell), 1.0, rtol=1e-12)


def test_learned_feedback_update_is_the_transposed_delta_rule(getkey):
    cell, trials = make_cell(getkey(), readout="rate"), make_trials(getkey(), steps=3)
    forcing = FeedbackForcing.random(cell, key=getkey(), alpha=0.5, learn=True, lr=0.1, decay=0.2)
    assert feedback_update(FeedbackForcing(forcing.F, 0.5), cell, trials).F is forcing.F  # fixed F stays
    ef = ErrorForcing(alpha=0.5)
    assert feedback_update(ef, cell, trials) is ef

    # by hand: F += η (Σ_{b,t} φ(h_t) e_tᵀ / Σ m - λ F), h_t the state before forcing
    F = np.asarray(forcing.F)
    W, W_in, b, W_out, b_out = (np.asarray(getattr(cell, f)) for f in ALL)
    x, target, mask = (np.asarray(a) for a in trials[:3])
    hebb = np.zeros_like(F)
    for i in range(x.shape[0]):
        h = np.zeros(N)
        for t in range(x.shape[1]):
            h = (1 - cell.leak) * h + cell.leak * (W @ np.tanh(h) + W_in @ x[i, t] + b)
            e = (target[i, t] - (W_out @ np.tanh(h) + b_out)) * mask[i, t]
            hebb += np.outer(np.tanh(h), e)
            h = h + 0.5 * mask[i, t].max() * F @ e
    expected = F + 0.1 * (hebb / mask.sum() - 0.2 * F)
    np.testing.assert_allclose(jax.jit(feedback_update)(forcing, cell, trials).F, expected, rtol=1e-10)


@pytest.mark.parametrize("learn", [True, False], ids=["learned-F", "fixed-F"])
def test_feedback_and_decoder_align_in_real_training(learn):
    """EF paper, bio-plausible EF: a short real training run (BPTT, Adam, feedback forcing at
    α = 1). With a learned F both F and W_out move and cos(F, W_outᵀ) rises; with a fixed F,
    F stays bit-identical and the rise is the decoder turning toward F."""
    import optax

    from errorforcing.tasks import DelayedXOR
    from errorforcing.training import EnsembleTrainer, Member, Schedule

    make_forcing = lambda a, cell, key: FeedbackForcing.random(cell, key=key, alpha=a, learn=learn,  # noqa: E731
                                                               lr=0.5, decay=0.1)
    tr = EnsembleTrainer(DelayedXOR(delay=4, pulse=4), lambda k: LeakyRNN(3, 8, 1, key=k), make_forcing, BPTT(),
                         optax.adam, [Member(0, 1.0, 1e-2)],
                         Schedule(epochs=5, batch_size=16, train_trials=32, val_trials=8, threshold=1e-9), shards=1)
    cells, forcings = tr.init()[:2]
    first = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, (cells, forcings))
    result = tr.run()
    before = float(decoder_alignment(first[1], first[0]))
    cos = result.extra_curves["cos_F_Wout"][0]
    assert before < 0.3 and cos[-1] > before + 0.15, (before, cos)
    assert np.all(np.diff(cos) > 0), cos
    assert float(jnp.max(jnp.abs(result.cells.W_out - cells.W_out))) > 1e-2
    if learn:
        assert float(jnp.max(jnp.abs(result.forcings.F - forcings.F))) > 1e-2
    else:
        np.testing.assert_array_equal(result.forcings.F, forcings.F)


# ----- real-time learning: `online_run` -----


def hand_online_eprop(cell, trials, lr, kind, alpha=0.0):
    """Online e-prop / RFLO (state readout, tanh, symmetric B = W_outᵀ, plain masked MSE) as a
    numpy loop over steps and trials: traces updated with the current weights, then every
    weight changed by -lr times that step's update, summed over the batch. alpha > 0: error
    forcing h̃ = h + α m W⁺ e with W⁺ of the current W_out (stopped: the traces do not see it)."""
    theta = {f: np.array(getattr(cell, f), np.float64) for f in ALL}
    a = cell.leak
    x, target, m = (np.asarray(v, np.float64) for v in trials[:3])
    B, T, n_in = x.shape
    n = m.sum()
    h = np.zeros((B, N))
    P_rec, P_in, P_b = np.zeros((B, N, N)), np.zeros((B, N, n_in)), np.zeros((B, N))
    for t in range(T):
        W, W_in, b, W_out, b_out = (theta[f] for f in ALL)
        r = np.tanh(h)
        D = (1 - a) + (a * np.diag(W) * (1 - r**2) if kind == "eprop" else np.zeros((B, N)))
        P_rec = D[:, :, None] * P_rec + a * r[:, None, :]
        P_in = D[:, :, None] * P_in + a * x[:, t][:, None, :]
        P_b = D * P_b + a
        h = (1 - a) * h + a * (r @ W.T + x[:, t] @ W_in.T + b)
        y = h @ W_out.T + b_out
        dy = 2 * m[:, t] * (y - target[:, t]) / n
        L = dy @ W_out  # the learning signal B dy with B = W_outᵀ
        pinv = W_out.T @ np.linalg.inv(W_out @ W_out.T + 1e-7 * np.eye(W_out.shape[0]))
        g = {"W_rec": np.einsum("bi,bij->ij", L, P_rec), "W_in": np.einsum("bi,bij->ij", L, P_in),
             "b": np.sum(L * P_b, 0), "W_out": dy.T @ h, "b_out": dy.sum(0)}
        h = h + alpha * m[:, t].max(1, keepdims=True) * ((target[:, t] - y) * m[:, t]) @ pinv.T
        theta = {k: theta[k] - lr * g[k] for k in theta}
    return theta


@pytest.mark.parametrize("rule,alpha", [(EProp, 0.0), (RFLO, 0.0), (EProp, 0.7)], ids=["eprop", "rflo", "ef-eprop"])
def test_online_trace_rule_run_is_a_hand_written_loop_of_sgd_steps(rule, alpha, getkey):
    lr = 0.4
    cell, trials = make_cell(getkey()), make_trials(getkey())
    r = rule(online=True, lr=lr)
    forcing = ErrorForcing(alpha=alpha) if alpha else NoForcing()
    _, end, _, _ = eqx.filter_jit(r.online_run)(cell, r.online_init(cell), forcing, trials, key=getkey(),
                                                objective=Objective(0.0, 0.0))
    ref = hand_online_eprop(cell, trials, lr, rule.__name__.lower(), alpha)
    for f in ALL:
        np.testing.assert_allclose(getattr(end, f), ref[f], rtol=1e-10, atol=1e-13)
    assert float(jnp.max(jnp.abs(end.W_rec - cell.W_rec))) > 1e-3
