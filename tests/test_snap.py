"""SnAp-1/2 (Menick et al. 2021): SnAp-1 is e-prop's trace on the leaky RNN, SnAp-2 on a dense
network is RTRL, and with a sparse W_rec both equal a numpy implementation of the masked
recursion."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.forcing import ErrorForcing, FeedbackForcing, NoForcing, TeacherForcing
from errorforcing.rules import RTRL, EProp, Objective, SnAp

from rule_helpers import ALL, N, T, assert_trees_close, make_cell, make_trials

pytestmark = pytest.mark.usefixtures("fast_compile")

OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.05)
# the forcings whose state Jacobian e-prop's trace follows exactly (teacher forcing's flowing W⁺
# path is one neither follows beyond a step)
FORCINGS = {
    "none": lambda cell: NoForcing(),
    "ef-causal": lambda cell: ErrorForcing(alpha=0.6, causal=True),
    "feedback": lambda cell: FeedbackForcing.random(cell, key=jax.random.key(7), alpha=0.6),
    "tf-stopped": lambda cell: TeacherForcing(alpha=0.6, stop_gradient=True),
}


@eqx.filter_jit
def all_rules(cell, trials, key, names):
    out = {}
    for name in names:
        make = FORCINGS[name]
        forcing = make(cell)
        out[name] = {rule_name: rule.value_and_grad(cell, forcing, trials, key=key, objective=OBJECTIVE)[:2]
                     for rule_name, rule in (("snap1", SnAp(order=1, fast=False)),
                                             ("snap2", SnAp(order=2, fast=False)),
                                             ("eprop", EProp(feedback="symmetric")), ("rtrl", RTRL(fast=False)))}
    return out


# (error and Kalman forcing act on the trace like feedback forcing; split to keep compiles small)
@pytest.mark.parametrize("readout, names", [("state", ("none", "ef-causal")), ("rate", ("feedback", "tf-stopped"))])
def test_snap1_is_eprop_and_snap2_is_rtrl_on_a_dense_net(getkey, readout, names):
    cell, trials = make_cell(getkey(), readout=readout), make_trials(getkey())
    for name, res in all_rules(cell, trials, getkey(), names).items():
        np.testing.assert_allclose(res["snap1"][0], res["eprop"][0], rtol=1e-12)
        assert_trees_close(res["snap1"][1], res["eprop"][1], rtol=1e-9)
        assert_trees_close(res["snap2"][1], res["rtrl"][1], rtol=1e-9)
        # not vacuous: SnAp-1 drops the influence through the other units
        assert not np.allclose(res["snap1"][1].W_rec, res["rtrl"][1].W_rec, rtol=1e-3), name


def numpy_snap(cell, trials, order, rate_reg):
    """The masked RTRL recursion for the leaky RNN without forcing (state readout, tanh), written
    out: U_t[k, p] = Σ_l J_t[k, l] M_{t-1}[l, p] + ∂̄h_t,k/∂θ_p, M_t = Π ⊙ U_t with Π_1[k, (i, ·)]
    = δ_ki and Π_2[k, (i, ·)] = δ_ki or W_ki ≠ 0; gradient Σ_t (∂ℓ_t/∂h_t) M_t + direct."""
    W, W_in, b, W_out, b_out = (np.asarray(getattr(cell, f)) for f in ALL)
    x, target, m = (np.asarray(v) for v in trials[:3])
    a = cell.leak
    B = x.shape[0]
    n_in = W_in.shape[1]
    eye = np.eye(N)
    reach = eye if order == 1 else ((eye + (W != 0)) > 0).astype(float)  # [k, i]
    grads = {f: np.zeros_like(getattr(cell, f)) for f in ALL}
    loss = 0.0
    for trial in range(B):
        h_prev = np.zeros(N)
        M = {"W_rec": np.zeros((N, N, N)), "W_in": np.zeros((N, N, n_in)), "b": np.zeros((N, N))}
        for t in range(T):
            r = np.tanh(h_prev)
            h = (1 - a) * h_prev + a * (W @ r + W_in @ x[trial, t] + b)
            J = (1 - a) * eye + a * W * (1 - r**2)[None, :]
            direct = {"W_rec": a * eye[:, :, None] * r[None, None, :],
                      "W_in": a * eye[:, :, None] * x[trial, t][None, None, :], "b": a * eye}
            for name in M:
                U = np.tensordot(J, M[name], axes=(1, 0)) + direct[name]
                M[name] = U * (reach[:, :, None] if U.ndim == 3 else reach)
            y = W_out @ h + b_out
            delta = 2 * m[trial, t] * (y - target[trial, t]) / m.sum()
            scale = rate_reg / (T * N * B)
            dh = W_out.T @ delta + 2 * scale * h
            loss += np.sum(m[trial, t] * (y - target[trial, t]) ** 2) / m.sum() + scale * np.sum(h**2)
            for name in M:
                grads[name] += np.tensordot(dh, M[name], axes=(0, 0))
            grads["W_out"] += np.outer(delta, h)
            grads["b_out"] += delta
            h_prev = h
    return loss, grads


@pytest.mark.parametrize("order", [1, 2])
def test_snap_on_a_sparse_net_is_the_masked_recursion(getkey, order):
    cell, trials = make_cell(getkey(), density=0.4), make_trials(getkey())
    assert cell.rec_mask is not None and 0 < float(cell.rec_mask.mean()) < 1
    objective = Objective(rate_reg=1e-2, readout_reg=0.0)
    loss, grads, _ = eqx.filter_jit(SnAp(order=order, fast=False).value_and_grad)(
        cell, NoForcing(), trials, key=getkey(), objective=objective)
    ref_loss, ref = numpy_snap(cell, trials, order, objective.rate_reg)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    for f in ALL:
        np.testing.assert_allclose(getattr(grads, f), ref[f], rtol=1e-10, atol=1e-14)
    # with density < 1 the pattern is not full: SnAp-2 is not RTRL
    if order == 2:
        _, exact, _ = eqx.filter_jit(RTRL(fast=False).value_and_grad)(cell, NoForcing(), trials, key=getkey(),
                                                                       objective=objective)
        assert not np.allclose(grads.W_rec, exact.W_rec, rtol=1e-4)


@pytest.mark.parametrize("forcing, density", [(NoForcing(), 1.0), (ErrorForcing(alpha=0.6), 1.0),
                                              (ErrorForcing(alpha=0.6, causal=True), 0.4)],
                         ids=["none", "ef", "ef-causal-sparse"])
def test_snap1_fast_path_is_the_generic_masked_recursion(getkey, monkeypatch, forcing, density):
    """SnAp-1 offline on the leaky RNN under no/stopped additive forcing runs as e-prop's trace
    (O(N²)); it equals the generic dense-and-masked recursion in float64, and it is the path
    that runs (the generic loop is made to fail)."""
    from errorforcing.rules import _influence

    cell, trials, key = make_cell(getkey(), density=density), make_trials(getkey()), getkey()
    generic = eqx.filter_jit(SnAp(order=1, fast=False).value_and_grad)(cell, forcing, trials, key=key,
                                                                       objective=OBJECTIVE)
    assert SnAp(order=1).uses_trace(cell, forcing)

    def fail(*args, **kwargs):
        raise AssertionError("the generic influence loop ran")

    monkeypatch.setattr(_influence, "influence_run", fail)
    fast = eqx.filter_jit(SnAp(order=1).value_and_grad)(cell, forcing, trials, key=key, objective=OBJECTIVE)
    np.testing.assert_allclose(fast[0], generic[0], rtol=1e-12)
    assert_trees_close(fast[1], generic[1], rtol=1e-9)
    # where it does not apply, the generic path runs
    for rule, f in ((SnAp(order=2), forcing), (SnAp(order=1, online=True, lr=0.1), forcing),
                    (SnAp(order=1), TeacherForcing(alpha=0.6))):
        assert not rule.uses_trace(cell, f)
    with pytest.raises(AssertionError, match="generic influence loop"):
        SnAp(order=1).value_and_grad(cell, TeacherForcing(alpha=0.6), trials, key=key, objective=OBJECTIVE)


@pytest.mark.parametrize("forcing", [NoForcing(), ErrorForcing(alpha=0.6)], ids=["none", "ef"])
def test_snap2_fast_path_on_a_dense_net_is_the_generic_masked_recursion(getkey, monkeypatch, forcing):
    """SnAp-2 offline on a dense leaky RNN under no/stopped additive forcing runs as RTRL's
    closed form; it equals the generic dense-and-masked recursion in float64, and it is the path
    that runs (the generic loop is made to fail)."""
    from errorforcing.rules import _influence

    cell, trials, key = make_cell(getkey()), make_trials(getkey()), getkey()
    generic = eqx.filter_jit(SnAp(order=2, fast=False).value_and_grad)(cell, forcing, trials, key=key,
                                                                       objective=OBJECTIVE)
    assert SnAp(order=2).uses_rtrl(cell, forcing) and not SnAp(order=2).uses_trace(cell, forcing)

    def fail(*args, **kwargs):
        raise AssertionError("the generic influence loop ran")

    monkeypatch.setattr(_influence, "influence_run", fail)
    fast = eqx.filter_jit(SnAp(order=2).value_and_grad)(cell, forcing, trials, key=key, objective=OBJECTIVE)
    np.testing.assert_allclose(fast[0], generic[0], rtol=1e-12)
    assert_trees_close(fast[1], generic[1], rtol=1e-9)
    # where it does not apply (a sparse net, online, teacher forcing's flowing W⁺, SnAp-1), the generic path runs
    sparse = make_cell(getkey(), density=0.4)
    for rule, c, f in ((SnAp(order=2), sparse, forcing), (SnAp(order=2, online=True, lr=0.1), cell, forcing),
                       (SnAp(order=2), cell, TeacherForcing(alpha=0.6)), (SnAp(order=1), cell, forcing),
                       (SnAp(order=2, fast=False), cell, forcing)):
        assert not rule.uses_rtrl(c, f)
    with pytest.raises(AssertionError, match="generic influence loop"):
        SnAp(order=2).value_and_grad(sparse, forcing, trials, key=key, objective=OBJECTIVE)


def test_snap_order_is_checked():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        SnAp(order=3)


# ----- real-time form: `online=True` -----

PLAIN = Objective(rate_reg=0.0, readout_reg=0.0)


def hand_online_snap1(cell, trials, lr):
    """Real-time SnAp-1 for the leaky RNN without forcing (state readout, tanh, plain masked MSE),
    written out in numpy: the traces P_ij (W_rec), Q_ij (W_in), p_i (b) of unit i,
        P_ij ← [(1 - a) + a W_ii φ'(h_i,t-1)] P_ij + a φ(h_j,t-1)   (Q with x_j, p with 1),
    g_t = Σ_b dh_i P_ij (+ the readout's direct terms), and θ ← θ - lr g_t after every step."""
    theta = {f: np.array(getattr(cell, f), np.float64) for f in ALL}
    a = float(cell.leak)
    x, target, m = (np.asarray(v, np.float64) for v in trials[:3])
    B, T_, n_in = x.shape
    n = m.sum()
    h = np.zeros((B, N))
    P, Q, p = np.zeros((B, N, N)), np.zeros((B, N, n_in)), np.zeros((B, N))
    loss = 0.0
    for t in range(T_):
        W, W_in, b, W_out, b_out = (theta[f] for f in ALL)
        r = np.tanh(h)
        decay = (1 - a) + a * np.diag(W)[None] * (1 - r**2)  # [B, N]
        P = decay[..., None] * P + a * r[:, None, :]
        Q = decay[..., None] * Q + a * x[:, t][:, None, :]
        p = decay * p + a
        h = (1 - a) * h + a * (r @ W.T + x[:, t] @ W_in.T + b)
        y = h @ W_out.T + b_out
        err = m[:, t] * (y - target[:, t])
        loss += np.sum(err * (y - target[:, t])) / n
        dy = 2 * err / n
        dh = dy @ W_out
        g = {"W_rec": np.einsum("bi,bij->ij", dh, P), "W_in": np.einsum("bi,bij->ij", dh, Q),
             "b": np.sum(dh * p, 0), "W_out": dy.T @ h, "b_out": dy.sum(0)}
        theta = {f: theta[f] - lr * g[f] for f in theta}
    return loss, theta


def test_online_snap1_run_is_a_hand_written_loop_of_sgd_steps(getkey):
    """Two trials in a row, θ changed at every step; and online SnAp-2 on a dense net is online RTRL."""
    lr = 0.3
    cell, first, second = make_cell(getkey()), make_trials(getkey()), make_trials(getkey())
    rules = {"snap1": SnAp(order=1, online=True, lr=lr), "snap2": SnAp(order=2, online=True, lr=lr),
             "rtrl": RTRL(online=True, lr=lr, fast=False)}

    @eqx.filter_jit
    def runs(cell, first, second):
        out = {}
        for name, rule in rules.items():
            loss1, mid, opt_state, _ = rule.online_run(cell, rule.online_init(cell), NoForcing(), first,
                                                       key=jax.random.key(0), objective=PLAIN)
            loss2, end, _, _ = rule.online_run(mid, opt_state, NoForcing(), second, key=jax.random.key(0),
                                               objective=PLAIN)
            out[name] = (loss1, loss2), mid, end
        return out

    out = runs(cell, first, second)
    (loss1, loss2), mid, end = out["snap1"]
    ref1, theta_mid = hand_online_snap1(cell, first, lr)
    mid_ref = eqx.tree_at(lambda c: [getattr(c, f) for f in ALL], cell, [jnp.asarray(theta_mid[f]) for f in ALL])
    ref2, theta_end = hand_online_snap1(mid_ref, second, lr)
    np.testing.assert_allclose([loss1, loss2], [ref1, ref2], rtol=1e-10)
    for f in ALL:
        np.testing.assert_allclose(getattr(mid, f), theta_mid[f], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(getattr(end, f), theta_end[f], rtol=1e-9, atol=1e-12)
    assert float(jnp.max(jnp.abs(end.W_rec - cell.W_rec))) > 1e-3  # it did learn
    for f in ALL:
        np.testing.assert_allclose(getattr(out["snap2"][2], f), getattr(out["rtrl"][2], f), rtol=1e-9, atol=1e-12)
    assert not np.allclose(out["snap1"][2].W_rec, out["rtrl"][2].W_rec, rtol=1e-4)
