"""Fixed points against independent references: analytic linear and W = 0 fixed points, h = 0
of a chaotic net, a 2-D system with two attractors and a saddle, and every cell's points checked
by direct evaluation and finite differences."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

import errorforcing as ef
from errorforcing.analysis import find_fixed_points, sample_states

pytestmark = pytest.mark.usefixtures("fast_compile")


def leaky(n_rec, *, key, activation="tanh", gain=1.5, W=None, b=None, n_in=3):
    cell = ef.models.LeakyRNN(n_in, n_rec, 1, key=key, activation=activation, gain=gain)
    if W is not None:
        cell = eqx.tree_at(lambda c: c.W_rec, cell, jnp.asarray(W, jnp.float64))
    if b is not None:
        cell = eqx.tree_at(lambda c: c.b, cell, jnp.asarray(b, jnp.float64))
    return cell


def numpy_speed(W, W_in, b, a, x, h, phi=np.tanh):
    """q(h) = ½‖F(h) − h‖², F the leaky step, in plain numpy."""
    F = (1 - a) * h + a * (W @ phi(h) + W_in @ x + b)
    return 0.5 * np.sum((F - h) ** 2)


def test_linear_leaky_net_has_the_analytic_fixed_point_and_eigenvalues(getkey):
    N = 12
    cell = leaky(N, key=getkey(), activation="identity", gain=0.8,
                 b=jax.random.normal(getkey(), (N,)))
    x = jnp.array([0.3, -0.7, 1.0])
    W, W_in, b, a = (np.asarray(cell.W_rec), np.asarray(cell.W_in), np.asarray(cell.b), cell.leak)
    h_star = np.linalg.solve(np.eye(N) - W, W_in @ np.asarray(x) + b)
    fp = find_fixed_points(cell, x, 3.0 * jax.random.normal(getkey(), (32, N)))
    assert len(fp) == 1 and fp.counts[0] == 32 and fp.n_converged == 32
    np.testing.assert_allclose(fp.states[0], h_star, atol=1e-6)
    expected = (1 - a) + a * np.linalg.eigvals(W)
    assert np.max(np.abs(np.sort_complex(fp.eigenvalues[0]) - np.sort_complex(expected))) < 1e-8
    assert np.all(np.diff(np.abs(fp.eigenvalues[0])) <= 1e-12)  # sorted by modulus, largest first
    assert fp.stable[0] == (np.max(np.abs(expected)) < 1) and fp.n_unstable[0] == np.sum(np.abs(expected) >= 1)
    np.testing.assert_allclose(fp.jacobians[0], (1 - a) * np.eye(N) + a * W, atol=1e-12)


def test_tanh_net_without_recurrence_sits_at_its_input_drive(getkey):
    N = 8
    b = np.asarray(jax.random.normal(getkey(), (N,)))
    cell = leaky(N, key=getkey(), W=np.zeros((N, N)), b=b)
    x = jnp.array([1.0, 0.0, -0.5])
    fp = find_fixed_points(cell, x, jax.random.normal(getkey(), (16, N)))
    assert len(fp) == 1
    np.testing.assert_allclose(fp.states[0], np.asarray(cell.W_in) @ np.asarray(x) + b, atol=1e-6)
    np.testing.assert_allclose(fp.eigenvalues[0], 1 - cell.leak, atol=1e-12)
    assert fp.stable[0] and fp.n_unstable[0] == 0


def test_chaotic_net_returns_only_true_fixed_points_and_the_origin(getkey):
    N = 20
    cell = leaky(N, key=getkey(), gain=2.5)
    x = jnp.zeros(3)
    W, W_in, b, a = (np.asarray(cell.W_rec), np.asarray(cell.W_in), np.asarray(cell.b), cell.leak)
    scales = jnp.repeat(jnp.array([0.05, 0.5, 2.0]), 64)[:, None]
    tol = 1e-8
    fp = find_fixed_points(cell, x, scales * jax.random.normal(getkey(), (192, N)), tol=tol)
    assert len(fp) >= 2  # a g = 2.5 network has many fixed points besides h = 0
    for h in fp.states:
        assert numpy_speed(W, W_in, b, a, np.zeros(3), h) < tol
    origin = np.argmin(np.linalg.norm(fp.states, axis=1))
    assert np.linalg.norm(fp.states[origin]) < 1e-6
    # at h = 0, J = (1 − a) I + a W: unstable, since W's spectral radius is about g = 2.5
    expected = (1 - a) + a * np.linalg.eigvals(W)
    assert fp.n_unstable[origin] == np.sum(np.abs(expected) >= 1) > 0 and not fp.stable[origin]
    # distinct means distinct: no two returned points within unique_tol
    d = np.linalg.norm(fp.states[:, None] - fp.states[None], axis=-1) + np.eye(len(fp)) * 1e9
    assert d.min() > 1e-3
    assert fp.counts.sum() == fp.n_converged <= fp.n_initial == 192


def test_two_attractors_and_a_saddle_are_found_and_classified(getkey):
    # unit 1 is bistable (w > 1), unit 2 decays (w < 1): h = (±c, 0) attract, (0, 0) is a saddle
    w1, w2 = 2.0, 0.5
    cell = leaky(2, key=getkey(), W=np.diag([w1, w2]), b=np.zeros(2))
    c = brentq(lambda h: w1 * np.tanh(h) - h, 0.5, 5.0)
    grid = jnp.stack(jnp.meshgrid(jnp.linspace(-3, 3, 9), jnp.linspace(-2, 2, 5)), -1).reshape(-1, 2)
    fp = find_fixed_points(cell, jnp.zeros(3), grid)
    assert len(fp) == 3
    order = np.argsort(fp.states[:, 0])
    np.testing.assert_allclose(fp.states[order], [[-c, 0.0], [0.0, 0.0], [c, 0.0]], atol=1e-6)
    assert list(fp.stable[order]) == [True, False, True]
    assert list(fp.n_unstable[order]) == [0, 1, 0]
    a = cell.leak
    saddle = order[1]
    np.testing.assert_allclose(np.sort(fp.eigenvalues[saddle].real), [(1 - a) + a * w2, (1 - a) + a * w1],
                               atol=1e-10)
    # the unstable eigenvector points along unit 1
    v = fp.eigenvectors[saddle][:, 0]
    assert abs(fp.eigenvalues[saddle][0]) > 1 and abs(abs(v[0]) - 1) < 1e-10
    # each attractor attracts: the map from a perturbed point returns to it
    F = jax.jit(lambda h: cell(h, jnp.zeros(3)))
    for k in order[[0, 2]]:
        h = jnp.asarray(fp.states[k]) + 0.1
        for _ in range(400):
            h = F(h)
        np.testing.assert_allclose(h, fp.states[k], atol=1e-6)


CELLS = {
    "leaky": lambda key: ef.models.LeakyRNN(3, 6, 1, key=key),
    "gru": lambda key: ef.models.GRU(3, 5, 1, key=key),
    "lstm": lambda key: ef.models.LSTM(3, 4, 1, key=key),
    "williams-zipser": lambda key: ef.models.WilliamsZipserNet(3, 5, 1, key=key, init_scale=1.0),
}


@pytest.mark.parametrize("name", list(CELLS))
def test_every_cell_finds_points_that_are_fixed_with_finite_difference_jacobians(name, getkey):
    cell = CELLS[name](getkey())
    task = ef.tasks.DelayedXOR(delay=6, pulse=2)
    trials = ef.tasks.sample_batch(task, 4, key=getkey())
    h0 = sample_states(cell, trials, 64, key=getkey(), noise=0.1)
    assert h0.shape == (64, cell.n_rec)
    x = jnp.array([0.0, 0.0, 1.0])
    fp = find_fixed_points(cell, x, h0)
    assert len(fp) >= 1 and fp.states.shape[1] == cell.n_rec
    F = lambda h: np.asarray(cell(jnp.asarray(h), x))  # noqa: E731
    eps = 1e-6
    for h, J, lam, stable in zip(fp.states, fp.jacobians, fp.eigenvalues, fp.stable):
        assert 0.5 * np.sum((F(h) - h) ** 2) < 1e-8
        fd = np.stack([(F(h + eps * e) - F(h - eps * e)) / (2 * eps) for e in np.eye(len(h))], axis=1)
        np.testing.assert_allclose(J, fd, atol=1e-7)
        assert stable == (np.max(np.abs(np.linalg.eigvals(fd))) < 1)


def test_sample_states_are_trajectory_states_plus_noise(getkey):
    cell = ef.models.LeakyRNN(3, 6, 1, key=getkey())
    trials = ef.tasks.sample_batch(ef.tasks.DelayedXOR(delay=4, pulse=2), 3, key=getkey())
    key = getkey()
    exact = np.asarray(sample_states(cell, trials, 20, key=key))
    # the states a hand-written loop visits
    visited = []
    for xs in np.asarray(trials.inputs):
        h = cell.init_state()
        for x in xs:
            h = cell(h, jnp.asarray(x))
            visited.append(np.asarray(h))
    visited = np.stack(visited)
    for h in exact:
        assert np.min(np.linalg.norm(visited - h, axis=1)) < 1e-12
    assert sample_states(cell, trials, 60, key=key).shape == (60, 6)  # more than the 39 visited: with replacement
    jittered = np.asarray(sample_states(cell, trials, 20, key=key, noise=0.5))
    assert 0.2 < np.std(jittered - exact) < 0.8


def test_bad_arguments_are_errors(getkey):
    cell = ef.models.LeakyRNN(3, 4, 1, key=getkey())
    with pytest.raises(ValueError, match="initial_states"):
        find_fixed_points(cell, jnp.zeros(3), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="tol"):
        find_fixed_points(cell, jnp.zeros(3), jnp.zeros((5, 4)), tol=0.0)
    trials = ef.tasks.sample_batch(ef.tasks.DelayedXOR(delay=4, pulse=2), 2, key=getkey())
    with pytest.raises(ValueError, match="noise"):
        sample_states(cell, trials, 3, key=getkey(), noise=-1.0)
