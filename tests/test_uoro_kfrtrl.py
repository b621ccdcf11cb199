"""UORO (Tallec & Ollivier 2018) and KF-RTRL (Mujika et al. 2018) are unbiased: the mean of K
estimates (different keys) converges to the RTRL gradient with an error that shrinks like 1/√K."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.forcing import ErrorForcing, NoForcing, TeacherForcing
from errorforcing.models import LeakyRNN
from errorforcing.rules import KFRTRL, RTRL, UORO, Objective
from errorforcing.tasks import Trials

pytestmark = pytest.mark.usefixtures("fast_compile")

ALL = ("W_rec", "W_in", "b", "W_out", "b_out")
GROUPS = {100: 160, 400: 40, 1600: 10}  # K → number of disjoint groups of K estimates (16000 in all)
OBJECTIVE = Objective(rate_reg=1e-2, readout_reg=1e-2)


def tiny_problem(key):
    k_cell, k_x, k_y = jax.random.split(key, 3)
    cell = LeakyRNN(2, 3, 1, key=k_cell, tau=2.0, trainable=ALL)
    cell = eqx.tree_at(lambda c: c.W_out, cell, jnp.array([[0.8, -0.5, 0.3]]))
    x = jax.random.normal(k_x, (1, 4, 2))
    trials = Trials(x, jax.random.normal(k_y, (1, 4, 1)), jnp.ones((1, 4, 1)), {})
    return cell, trials


def flat(grads):
    return jnp.concatenate([jnp.ravel(getattr(grads, f)) for f in ALL])


@pytest.mark.parametrize("rule", [UORO(), KFRTRL()], ids=["uoro", "kf-rtrl"])
@pytest.mark.parametrize("forcing", [ErrorForcing(alpha=0.5), TeacherForcing(alpha=0.5)], ids=["ef", "tf"])
def test_estimates_are_unbiased_with_error_like_one_over_sqrt_k(rule, forcing):
    cell, trials = tiny_problem(jax.random.key(0))
    _, exact, _ = RTRL(fast=False).value_and_grad(cell, forcing, trials, key=jax.random.key(1), objective=OBJECTIVE)
    exact = flat(exact)
    keys = jax.random.split(jax.random.key(2), 16000)
    estimate = eqx.filter_jit(jax.vmap(lambda k: flat(rule.value_and_grad(cell, forcing, trials, key=k,
                                                                          objective=OBJECTIVE)[1])))
    samples = np.asarray(estimate(keys))
    assert np.all(np.isfinite(samples))
    assert samples.std(axis=0).max() > 1e-3 * np.abs(exact).max()  # it is an estimate, not the exact gradient
    rms = {}
    for K, n_groups in GROUPS.items():
        means = samples.reshape(n_groups, K, -1).mean(axis=1)
        rms[K] = np.sqrt(np.mean(np.sum((means - exact) ** 2, axis=1)))
    # an unbiased estimator: E‖mean_K - g‖² = tr Σ / K, so the error halves each time K quadruples
    predicted = np.sqrt(np.sum(samples.var(axis=0)) / np.array(list(GROUPS)))
    ratio = np.array(list(rms.values())) / predicted
    assert np.all((0.4 < ratio) & (ratio < 1.6)), (rms, predicted)
    # a bias would not shrink: the mean of all 16000 is within 3 standard errors of RTRL's gradient
    assert np.linalg.norm(samples.mean(axis=0) - exact) < 3 * predicted[-1] / np.sqrt(10)
    assert predicted[-1] < 0.1 * np.linalg.norm(exact)


def test_kfrtrl_readout_rows_are_exact():
    """KF-RTRL keeps exact influence rows for the leaves outside the Kronecker factor (W_out,
    b_out, which reach the state through teacher forcing's W⁺): every single estimate of their
    gradient is RTRL's."""
    cell, trials = tiny_problem(jax.random.key(3))
    forcing = TeacherForcing(alpha=0.5)
    _, exact, _ = RTRL(fast=False).value_and_grad(cell, forcing, trials, key=jax.random.key(1), objective=OBJECTIVE)
    for k in range(2):
        _, g, _ = KFRTRL().value_and_grad(cell, forcing, trials, key=jax.random.key(10 + k), objective=OBJECTIVE)
        for f in ("W_out", "b_out"):
            np.testing.assert_allclose(getattr(g, f), getattr(exact, f), rtol=1e-10)
        assert not np.allclose(g.W_rec, exact.W_rec, rtol=1e-3)


@pytest.mark.parametrize("forcing, readout, density", [
    (NoForcing(), "state", 0.5), (ErrorForcing(alpha=0.5), "rate", 1.0)], ids=["none-sparse", "ef-rate"])
@pytest.mark.parametrize("make", [KFRTRL, UORO], ids=["kf-rtrl", "uoro"])
def test_closed_form_is_the_generic_estimate(monkeypatch, make, forcing, readout, density):
    """On the leaky RNN under no/stopped additive forcing KF-RTRL and UORO run in closed form
    for the batch; with the same key (same signs, same noise) each is the generic autodiff
    estimate in float64, and it is the path that runs (the generic loop is made to fail)."""
    from errorforcing.rules import _influence

    k_cell, k_x, k_y, k_m = jax.random.split(jax.random.key(5), 4)
    cell = LeakyRNN(2, 5, 2, key=k_cell, tau=3.0, readout=readout, density=density, trainable=ALL)
    cell = eqx.tree_at(lambda c: c.W_out, cell, 0.5 * jax.random.normal(k_y, (2, 5)))
    trials = Trials(jax.random.normal(k_x, (3, 7, 2)), jax.random.normal(k_y, (3, 7, 2)),
                    jax.random.bernoulli(k_m, 0.6, (3, 7, 2)).astype(jnp.float64), {})
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.05)
    key = jax.random.key(11)
    loss_ref, ref, _ = eqx.filter_jit(make(fast=False).value_and_grad)(cell, forcing, trials, key=key,
                                                                         objective=objective)
    assert make().uses_closed_form(cell, forcing, trials)

    def fail(*args, **kwargs):
        raise AssertionError("the generic influence loop ran")

    monkeypatch.setattr(_influence, "influence_run", fail)
    fast = eqx.filter_jit(make().value_and_grad)
    loss, g, _ = fast(cell, forcing, trials, key=key, objective=objective)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    for f in ALL:
        np.testing.assert_allclose(getattr(g, f), getattr(ref, f), rtol=1e-9, atol=1e-13)
    # a different key is a different estimate (the signs are used)
    _, other, _ = fast(cell, forcing, trials, key=jax.random.key(12), objective=objective)
    assert not np.allclose(other.W_rec, g.W_rec, rtol=1e-3)
    for rule, f in ((make(online=True, lr=0.1), forcing), (make(), TeacherForcing(alpha=0.5)),
                    (make(fast=False), forcing), (make(), ErrorForcing(alpha=0.5, causal=True))):
        assert not rule.uses_closed_form(cell, f, trials)


# ----- real-time form: `online=True` -----

PLAIN = Objective(rate_reg=0.0, readout_reg=0.0)
EPS = 1e-7


def _leaky_pieces(cell):
    """The numpy weights of a leaky RNN (state readout, tanh) as a dict, and its leak a."""
    return {f: np.array(getattr(cell, f), np.float64) for f in ALL}, float(cell.leak)


def hand_online(cell, trials, key, lr, estimator):
    """A real-time learner written out in numpy for the leaky RNN without forcing (plain masked
    MSE): per step t and trial b, J = (1 - a) I + a W diag(φ'(h_{t-1})), the direct terms
    ∂̄h_t/∂W_ij = a δ r_j (r = φ(h_{t-1})), ∂̄h_t/∂W_in,ij = a δ x_j, ∂̄h_t/∂b_i = a δ, the
    loss's dh = W_outᵀ dy; `estimator(b, t, est, J, dh, r, x, a, theta)` returns (est, g_b,t) as
    a dict over the Kronecker/influence fields, the readout's direct gradient is added here,
    and after every step θ ← θ - lr Σ_b g_b,t. The keys are the rule's (`influence_keys`)."""
    from errorforcing.rules._influence import influence_keys

    theta, a = _leaky_pieces(cell)
    x, target, m = (np.asarray(v, np.float64) for v in trials[:3])
    B, T, _ = x.shape
    N = theta["W_rec"].shape[0]
    init_keys, step_keys = influence_keys(key, B, T)
    n = m.sum()
    h = np.zeros((B, N))
    est = [None] * B
    loss = 0.0
    for t in range(T):
        W, W_in, b, W_out, b_out = (theta[f] for f in ALL)
        r = np.tanh(h)
        h_new = (1 - a) * h + a * (r @ W.T + x[:, t] @ W_in.T + b)
        y = h_new @ W_out.T + b_out
        err = m[:, t] * (y - target[:, t])
        loss += np.sum(err * (y - target[:, t])) / n
        dy = 2 * err / n
        g = {f: np.zeros_like(v) for f, v in theta.items()}
        for i in range(B):
            J = (1 - a) * np.eye(N) + a * W * (1 - r[i] ** 2)[None, :]
            est[i], g_i = estimator(init_keys[i], step_keys[t, i], est[i], J, dy[i] @ W_out, r[i], x[i, t], a, theta)
            for f, v in g_i.items():
                g[f] += v
            g["W_out"] += np.outer(dy[i], h_new[i])
            g["b_out"] += dy[i]
        theta = {f: theta[f] - lr * g[f] for f in theta}
        h = h_new
    return loss, theta


def _signs(key, n):
    return np.asarray(jax.random.rademacher(key, (n,), jnp.float64))


def uoro_estimator(init_key, key, est, J, dh, r, x, a, theta):
    """UORO (Tallec & Ollivier 2018, Alg. 1): s̃, θ̃ over the fields W_rec, W_in, b."""
    N = J.shape[0]
    if est is None:  # h_0 = 0 does not depend on θ: θ̃_0 = ν₀ᵀ M_0 = 0
        est = (_signs(init_key, N), {f: np.zeros_like(theta[f]) for f in ("W_rec", "W_in", "b")})
    s_tilde, theta_tilde = est
    J_s = J @ s_tilde
    dloss_s = dh @ J_s  # (∂ℓ_t/∂h_{t-1}) s̃ = dh_t J s̃
    nu = _signs(key, N)
    nu_direct = {"W_rec": a * np.outer(nu, r), "W_in": a * np.outer(nu, x), "b": a * nu}
    direct = {"W_rec": a * np.outer(dh, r), "W_in": a * np.outer(dh, x), "b": a * dh}
    g = {f: dloss_s * theta_tilde[f] + direct[f] for f in direct}
    norm = lambda d: np.sqrt(sum(np.sum(v ** 2) for v in d.values()))
    rho0 = np.sqrt((norm(theta_tilde) + EPS) / (np.linalg.norm(J_s) + EPS))
    rho1 = np.sqrt((norm(nu_direct) + EPS) / (np.linalg.norm(nu) + EPS))
    return (rho0 * J_s + rho1 * nu, {f: theta_tilde[f] / rho0 + nu_direct[f] / rho1 for f in direct}), g


def kfrtrl_estimator(init_key, key, est, J, dh, r, x, a, theta):
    """KF-RTRL (Mujika et al. 2018): M[i, (j, k)] ≈ A_ij u_k over W = [W_rec | W_in | b], z = [r; x; 1]."""
    N, n_in = J.shape[0], x.shape[0]
    if est is None:
        est = (np.zeros(N + n_in + 1), np.zeros((N, N)))
    u, A = est
    z = np.concatenate([r, x, [1.0]])
    D = a * np.eye(N)  # ∂h_t/∂b
    JA = J @ A
    dloss_A = (dh @ J) @ A
    g_w = np.outer(dloss_A, u) + np.outer(a * dh, z)
    g = {"W_rec": g_w[:, :N], "W_in": g_w[:, N:N + n_in], "b": g_w[:, -1]}
    c1, c2 = _signs(key, 2)
    rho0 = np.sqrt((np.linalg.norm(JA) + EPS) / (np.linalg.norm(u) + EPS))
    rho1 = np.sqrt((np.linalg.norm(D) + EPS) / (np.linalg.norm(z) + EPS))
    return (c1 * rho0 * u + c2 * rho1 * z, c1 * JA / rho0 + c2 * D / rho1), g


@pytest.mark.parametrize("rule, estimator", [(UORO, uoro_estimator), (KFRTRL, kfrtrl_estimator)],
                         ids=["uoro", "kf-rtrl"])
def test_online_run_is_a_hand_written_loop_of_sgd_steps(rule, estimator):
    """Two trials in a row: θ changes at every step (the estimate's next update runs on the
    changed θ), and the second trial starts from where the first ended."""
    from rule_helpers import make_cell, make_trials

    lr, key = 0.3, jax.random.key(7)
    cell, first, second = make_cell(jax.random.key(1)), make_trials(jax.random.key(2)), make_trials(jax.random.key(3))
    r = rule(online=True, lr=lr)
    run = eqx.filter_jit(lambda c, s, tr: r.online_run(c, s, NoForcing(), tr, key=key, objective=PLAIN))
    loss1, mid, opt_state, _ = run(cell, r.online_init(cell), first)
    loss2, end, _, _ = run(mid, opt_state, second)

    ref1, theta_mid = hand_online(cell, first, key, lr, estimator)
    mid_ref = eqx.tree_at(lambda c: [getattr(c, f) for f in ALL], cell, [jnp.asarray(theta_mid[f]) for f in ALL])
    ref2, theta_end = hand_online(mid_ref, second, key, lr, estimator)
    np.testing.assert_allclose([loss1, loss2], [ref1, ref2], rtol=1e-10)
    for f in ALL:
        np.testing.assert_allclose(getattr(mid, f), theta_mid[f], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(getattr(end, f), theta_end[f], rtol=1e-9, atol=1e-12)
    assert float(jnp.max(jnp.abs(end.W_rec - cell.W_rec))) > 1e-3  # it did learn
    # value_and_grad online: Σ_t g_t as applied, θ_end = θ_0 - lr Σ_t g_t (SGD)
    _, grads, _ = eqx.filter_jit(r.value_and_grad)(cell, NoForcing(), first, key=key, objective=PLAIN)
    np.testing.assert_allclose(cell.W_rec - lr * grads.W_rec, theta_mid["W_rec"], rtol=1e-9, atol=1e-12)
    # and not the offline estimate (θ fixed over the trial)
    _, offline, _ = eqx.filter_jit(r.offline().value_and_grad)(cell, NoForcing(), first, key=key, objective=PLAIN)
    assert float(jnp.max(jnp.abs(offline.W_rec - grads.W_rec))) > 1e-6


def test_cli_trains_uoro_online_end_to_end(tmp_path):
    """`--rule uoro --online --online-lr 0.1` runs from the CLI (tiny) and stores the online rule."""
    import json
    import subprocess
    import sys

    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "errorforcing.cli", "train", "--rule", "uoro", "--online",
                        "--online-lr", "0.1", "--forcing", "ef", "--alpha", "0.5", "--delay", "3", "--hidden", "6",
                        "--seeds", "1", "--epochs", "2", "--batch", "8", "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    (member,) = summary["members"]
    assert np.isfinite(member["test_loss"])
    import sqlite3

    (config,) = sqlite3.connect(out / "runs.sqlite").execute("SELECT config FROM runs").fetchone()
    rule = json.loads(config)["config"]["rule"]
    assert rule["kind"] == "uoro" and rule["online"] is True and rule["online_lr"] == 0.1
