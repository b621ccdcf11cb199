"""Analysis: Lyapunov spectrum, flossing, Jacobian norms / adaptive α, update diagnostics."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.analysis import (
    AdaptiveAlpha,
    adaptive_alpha,
    cosine,
    floss,
    flossing_loss,
    global_alignment,
    jacobian_norms,
    local_alignment,
    lyapunov_spectrum,
    max_lyapunov,
    update_alpha,
    update_efficiency,
)
from errorforcing.models import AbstractCell, LeakyRNN


def leaky(key, n, *, gain=1.0, activation="tanh", n_in=1, tau=10.0):
    return LeakyRNN(n_in, n, 1, key=key, gain=gain, activation=activation, tau=tau)


def with_w_rec(cell, w):
    return eqx.tree_at(lambda c: c.W_rec, cell, w)


def symmetric_w(key, eigs):
    """W = U diag(eigs) Uᵀ with a random orthogonal U: a normal matrix with known spectrum."""
    u, _ = jnp.linalg.qr(jax.random.normal(key, (len(eigs), len(eigs))))
    return u @ jnp.diag(jnp.asarray(eigs)) @ u.T


class LogisticMap(AbstractCell):
    """h ← r h (1 − h); for r = 4, λ = ln 2 per step (the map is conjugate to the tent map)."""

    r: float = 4.0
    trainable: tuple[str, ...] = ()

    @property
    def n_rec(self):
        return 1

    def init_state(self):
        return jnp.full((1,), 0.3)

    def __call__(self, h, x):
        return self.r * h * (1 - h)

    def readout(self, h):
        return h


# ---- Lyapunov spectrum -------------------------------------------------------------------

def test_linear_network_spectrum_is_log_abs_eigenvalues(getkey):
    n, a = 8, 0.1
    eigs = np.array([1.8, 1.2, 0.6, 0.1, -0.5, -2.0, -3.5, -6.0])  # |1 - a + a·λ| distinct
    cell = with_w_rec(leaky(getkey(), n, activation="identity"), symmetric_w(getkey(), eigs))
    expected = np.sort(np.log(np.abs(1 - a + a * eigs)))[::-1]
    inputs = jnp.zeros((400, 1))
    h0 = jax.random.normal(getkey(), (n,))
    lam = lyapunov_spectrum(cell, inputs, n, key=getkey(), transient=100, h0=h0)
    np.testing.assert_allclose(np.sort(lam)[::-1], expected, atol=1e-4)
    # Exponents come out in descending order.
    assert np.all(np.diff(np.asarray(lam)) < 0)
    # Re-orthonormalising every n steps factors the same product: same estimate, also with
    # a block length that does not divide T.
    lam_7 = lyapunov_spectrum(cell, inputs, n, key=getkey(), transient=100, h0=h0,
                              reortho_every=7)
    np.testing.assert_allclose(np.sort(lam_7)[::-1], expected, atol=1e-4)
    # k < N gives the k leading exponents.
    lam3 = lyapunov_spectrum(cell, inputs, 3, key=getkey(), transient=100, h0=h0)
    np.testing.assert_allclose(lam3, expected[:3], atol=1e-4)


def test_one_dimensional_maps_with_known_exponent(getkey):
    # Linear 1-D map h ← c h: λ = log |c| exactly.
    a, w = 0.5, -5.0
    cell = with_w_rec(leaky(getkey(), 1, activation="identity", tau=2.0), jnp.full((1, 1), w))
    lam = max_lyapunov(cell, jnp.zeros((50, 1)), key=getkey(), h0=jnp.ones(1))
    np.testing.assert_allclose(lam, math.log(abs(1 - a + a * w)), rtol=1e-10)
    # Chaotic logistic map at r = 4: λ = ln 2 (ergodic average; error ~ 1/√T).
    lam = max_lyapunov(LogisticMap(), jnp.zeros((40_000, 0)), key=getkey(), transient=100)
    assert abs(float(lam) - math.log(2.0)) < 0.02


def test_contracting_network_has_all_exponents_negative(getkey):
    n = 12
    cell = leaky(getkey(), n, gain=0.3)
    inputs = jax.random.normal(getkey(), (200, 1))
    lam = lyapunov_spectrum(cell, inputs, n, key=getkey(), transient=50,
                            h0=jax.random.normal(getkey(), (n,)))
    assert lam.shape == (n,)
    assert np.all(np.asarray(lam) < 0)


def test_chaotic_network_has_positive_max_exponent(getkey):
    # At N = 100 some draws settle on a limit cycle (λ_max ≤ 0); at N = 200, g = 3 the
    # autonomous network is chaotic for every draw we tried (λ_max ≈ 0.007–0.02 per step).
    n = 200
    cell = leaky(getkey(), n, gain=3.0)
    h0 = jax.random.normal(getkey(), (n,))
    lam = max_lyapunov(cell, jnp.zeros((800, 1)), key=getkey(), transient=300, h0=h0)
    assert float(lam) > 0.0


def test_batched_spectrum_matches_per_trial(getkey):
    n, k, batch = 6, 3, 4
    cell = leaky(getkey(), n, gain=1.5)
    inputs = jax.random.normal(getkey(), (batch, 80, 1))
    key = getkey()
    h0 = jax.random.normal(getkey(), (batch, n))
    lam = lyapunov_spectrum(cell, inputs, k, key=key, transient=10, h0=h0)
    assert lam.shape == (batch, k)
    keys = jax.random.split(key, batch)
    for b in range(batch):
        np.testing.assert_allclose(
            lam[b], lyapunov_spectrum(cell, inputs[b], k, key=keys[b], transient=10, h0=h0[b]),
            rtol=1e-10)
    assert max_lyapunov(cell, inputs, key=key).shape == (batch,)


def test_bad_arguments_raise(getkey):
    cell = leaky(getkey(), 4)
    with pytest.raises(ValueError, match="k must be"):
        lyapunov_spectrum(cell, jnp.zeros((10, 1)), 5, key=getkey())
    with pytest.raises(ValueError, match="transient"):
        lyapunov_spectrum(cell, jnp.zeros((10, 1)), 2, key=getkey(), transient=10)


# ---- Gradient flossing -------------------------------------------------------------------

def naive_flossing_loss(cell, inputs, q0, *, local):
    """Independent oracle: the leaky RNN's Jacobian written out by hand,
    J_t = (1 − a) I + a W_rec diag(φ'(h_{t−1})), QR every step, no sign fix of R (log|R_ii|
    does not depend on it). `local` detaches the state: h_{t−1} → sg(h_{t−1}) at every step."""
    a, n = cell.leak, cell.n_rec

    def step(carry, x):
        h, q = carry
        if local:
            h = jax.lax.stop_gradient(h)
        jac = (1 - a) * jnp.eye(n) + a * cell.W_rec * (1 - jnp.tanh(h) ** 2)[None, :]
        q, r = jnp.linalg.qr(jac @ q)
        return (cell(h, x), q), jnp.log(jnp.abs(jnp.diagonal(r)))

    _, log_r = jax.lax.scan(step, (cell.init_state(), q0), inputs)
    return jnp.mean(log_r.mean(0) ** 2)


@pytest.mark.parametrize("local", [False, True])
def test_flossing_gradient_matches_oracle(getkey, local):
    n, k, T = 5, 3, 12
    cell = leaky(getkey(), n, gain=1.5, tau=2.0)
    cell = eqx.tree_at(lambda c: c.b, cell, 0.3 * jax.random.normal(getkey(), (n,)))
    inputs = jax.random.normal(getkey(), (T, 1))
    key = getkey()
    q0, _ = jnp.linalg.qr(jax.random.normal(key, (n, k)))  # same draw as the library's basis
    fields = lambda c: (c.W_rec, c.W_in, c.b)  # noqa: E731

    loss, grad = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda c: flossing_loss(c, inputs, k, key=key, local=local)))(cell)
    oracle_loss, oracle = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda c: naive_flossing_loss(c, inputs, q0, local=local)))(cell)
    np.testing.assert_allclose(loss, oracle_loss, rtol=1e-10)
    for g, o in zip(fields(grad), fields(oracle)):
        np.testing.assert_allclose(g, o, rtol=1e-7, atol=1e-12)
    if local:
        # The detached gradient is a different quantity: the state path carries W_in and b.
        full = eqx.filter_jit(eqx.filter_grad(lambda c: flossing_loss(c, inputs, k, key=key)))(cell)
        assert float(jnp.abs(full.W_rec - grad.W_rec).max()) > 1e-6
        np.testing.assert_array_equal(grad.W_in, 0.0)
        np.testing.assert_array_equal(grad.b, 0.0)
        assert float(jnp.abs(full.b).max()) > 1e-6


def test_flossing_gradient_matches_finite_differences(getkey):
    n, k = 4, 2
    cell = leaky(getkey(), n, gain=1.5, tau=2.0)
    inputs = jax.random.normal(getkey(), (2, 15, 1))
    key = getkey()
    f = lambda w: flossing_loss(with_w_rec(cell, w), inputs, k, key=key, transient=3)  # noqa: E731
    g = jax.grad(f)(cell.W_rec)
    direction = jax.random.normal(getkey(), cell.W_rec.shape)
    eps = 1e-6
    fd = (f(cell.W_rec + eps * direction) - f(cell.W_rec - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(g, direction), fd, rtol=1e-6)


@pytest.mark.parametrize("local", [False, True])
def test_floss_moves_exponents_toward_target(getkey, local):
    n, k = 10, 4
    cell = leaky(getkey(), n, gain=0.5, tau=2.0)  # contracting: exponents well below 0
    task_inputs = lambda key: 0.5 * jax.random.normal(key, (4, 60, 1))  # noqa: E731
    flossed, history = floss(cell, task_inputs, steps=40, lr=0.01, k=k, key=getkey(),
                             local=local, transient=10)
    assert history.shape == (40,)
    key, x = getkey(), task_inputs(getkey())
    before = flossing_loss(cell, x, k, key=key, transient=10)
    after = flossing_loss(flossed, x, k, key=key, transient=10)
    assert float(after) < float(before) / 2
    assert float(history[-5:].mean()) < float(history[:5].mean()) / 2
    # Only trainable fields move (W_in is frozen by default).
    np.testing.assert_array_equal(flossed.W_in, cell.W_in)


# ---- Jacobian norms and adaptive α -------------------------------------------------------

def test_jacobian_norms_and_adaptive_alpha_on_scaled_orthogonal_network(getkey):
    n, a, s = 6, 0.5, 3.0
    u, _ = jnp.linalg.qr(jax.random.normal(getkey(), (n, n)))
    # J = (1 − a) I + a s U: not normal in general, so take the exact norm from its SVD.
    cell = with_w_rec(leaky(getkey(), n, activation="identity", tau=2.0), s * u)
    jac = (1 - a) * jnp.eye(n) + a * s * u
    expected_norm = float(jnp.linalg.svd(jac, compute_uv=False)[0])
    inputs = jax.random.normal(getkey(), (2, 7, 1))
    states = jax.vmap(lambda xs: jax.lax.scan(lambda h, x: (cell(h, x),) * 2,
                                              cell.init_state(), xs)[1])(inputs)
    norms = jacobian_norms(cell, states, inputs)
    assert norms.shape == (2, 7)
    np.testing.assert_allclose(norms, expected_norm, rtol=1e-10)
    np.testing.assert_allclose(adaptive_alpha(norms), 1 - 1 / expected_norm, rtol=1e-10)
    np.testing.assert_allclose(jacobian_norms(cell, states[0], inputs[0]), norms[0])


def test_adaptive_alpha_geometric_mean_max_over_batch_and_clipping():
    norms = jnp.array([[2.0, 8.0], [1.0, 1.0]])  # geometric means 4 and 1
    np.testing.assert_allclose(adaptive_alpha(norms), 1 - 1 / 4)
    np.testing.assert_allclose(adaptive_alpha(jnp.array([0.5, 0.5])), 0.0)  # contracting


def test_update_alpha_rule():
    np.testing.assert_allclose(update_alpha(jnp.asarray(0.2), jnp.asarray(0.6)), 0.6)
    np.testing.assert_allclose(update_alpha(jnp.asarray(1.0), jnp.asarray(0.5)),
                               0.999 * 1.0 + 0.001 * 0.5)
    state = AdaptiveAlpha.init()
    assert float(state.alpha) == 1.0
    norms = jnp.full((3, 4), 2.0)  # α* = 0.5
    for i in range(1, 11):
        state = jax.jit(lambda s: s.update(norms))(state)
        expected = 1.0 if i < 5 else (0.9995 if i < 10 else 0.999 * 0.9995 + 0.0005)
        np.testing.assert_allclose(state.alpha, expected, rtol=1e-12)
    assert int(state.count) == 10
    # vmappable over ensemble members.
    members = jax.vmap(lambda _: AdaptiveAlpha.init())(jnp.arange(3))
    assert members.alpha.shape == (3,)


# ---- update diagnostics ------------------------------------------------------------------

def test_update_efficiency_and_alignment(getkey):
    du = jax.random.normal(getkey(), (5, 3))
    same = jnp.broadcast_to(du[0], (4, 3))
    np.testing.assert_allclose(update_efficiency(same), 1.0, rtol=1e-12)
    np.testing.assert_allclose(update_efficiency(jnp.stack([du[0], -du[0]])), 0.0, atol=1e-12)
    eff = update_efficiency(du)
    assert 0.0 < float(eff) < 1.0
    np.testing.assert_allclose(update_efficiency(jnp.zeros((3, 2))), 0.0)

    np.testing.assert_allclose(cosine(du, du), 1.0, rtol=1e-12)
    np.testing.assert_allclose(cosine(du, -du), -1.0, rtol=1e-12)
    np.testing.assert_allclose(local_alignment(du, du), jnp.ones(5), rtol=1e-12)
    np.testing.assert_allclose(local_alignment(du, 2.0 * du), jnp.ones(5), rtol=1e-12)
    np.testing.assert_allclose(global_alignment(du, du), 1.0, rtol=1e-12)
    e0, e1 = jnp.eye(2)
    np.testing.assert_allclose(local_alignment(jnp.stack([e0, e0]), jnp.stack([e0, e1])),
                               [1.0, 0.0])


def test_diagnostics_on_pytrees(getkey):
    cell = leaky(getkey(), 4)
    params = eqx.filter(cell, eqx.is_inexact_array)
    stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p, 0.5 * p]), params)
    np.testing.assert_allclose(update_efficiency(stacked), 1.0, rtol=1e-12)
    np.testing.assert_allclose(local_alignment(stacked, stacked), jnp.ones(3), rtol=1e-12)
    np.testing.assert_allclose(global_alignment(stacked, stacked), 1.0, rtol=1e-12)
    flat = jnp.concatenate([p.ravel() for p in jax.tree.leaves(params)])
    other = jax.tree.map(lambda p: jnp.ones_like(p), params)
    np.testing.assert_allclose(cosine(params, other),
                               flat.sum() / (jnp.linalg.norm(flat) * math.sqrt(flat.size)),
                               rtol=1e-12)
