"""The unrolled SPD solve behind the teacher state and the readout's right inverse: equal to
numpy's solve and to jnp.linalg.solve's gradients, and no LAPACK call in the programs that use it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.forcing import readout_pinv
from errorforcing.forcing._spd_solve import UNROLLED_MAX, spd_solve


def spd(rng, batch, n):
    M = rng.normal(size=batch + (n, n))
    return M @ np.swapaxes(M, -1, -2) + 0.1 * np.eye(n)


@pytest.mark.parametrize("n", range(1, UNROLLED_MAX + 1))
def test_unrolled_solve_equals_numpy(n):
    rng = np.random.default_rng(n)
    A, b = spd(rng, (3, 4), n), rng.normal(size=(3, 4, n, 2))
    np.testing.assert_allclose(spd_solve(jnp.asarray(A), jnp.asarray(b)), np.linalg.solve(A, b), rtol=1e-9, atol=1e-10)


def test_unrolled_solve_broadcasts_one_matrix_over_a_batch_of_right_hand_sides():
    rng = np.random.default_rng(0)
    A, b = spd(rng, (), 3), rng.normal(size=(5, 3, 1))
    np.testing.assert_allclose(spd_solve(jnp.asarray(A), jnp.asarray(b)), np.linalg.solve(A, b), rtol=1e-9)


def test_unrolled_solve_gradients_equal_lapacks():
    """Through a symmetric A = M Mᵀ + 0.1 I, as the teacher state and right inverse build it."""
    rng = np.random.default_rng(1)
    M, b = jnp.asarray(rng.normal(size=(2, 3, 3))), jnp.asarray(rng.normal(size=(2, 3, 2)))
    gram = lambda M: M @ jnp.swapaxes(M, -1, -2) + 0.1 * jnp.eye(3)
    loss = lambda solve: lambda M, b: jnp.sum(jnp.sin(solve(gram(M), b)))
    for ours, theirs in zip(jax.grad(loss(spd_solve), (0, 1))(M, b), jax.grad(loss(jnp.linalg.solve), (0, 1))(M, b)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10)


def test_teacher_state_and_right_inverse_compile_without_lapack(getkey):
    cell = ef.models.LeakyRNN(n_in=2, n_rec=6, n_out=2, key=getkey())
    target, mask = jnp.ones((4, 2)), jnp.asarray([[1.0, 0.0]] * 4)
    tf = ef.forcing.TeacherForcing(alpha=0.5)
    programs = [jax.jit(lambda W, b: tf.teacher_coefficients(W, b, target, mask)).lower(cell.W_out, cell.b_out),
                jax.jit(lambda W: readout_pinv(W, 1e-3)).lower(cell.W_out)]
    for lowered in programs:
        assert "lapack" not in lowered.as_text().lower()
    W = np.asarray(cell.W_out)
    np.testing.assert_allclose(readout_pinv(cell.W_out, 1e-3), W.T @ np.linalg.inv(W @ W.T + 1e-3 * np.eye(2)), rtol=1e-9)
