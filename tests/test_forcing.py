"""Forcing invariants of SPEC §2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.forcing import ErrorForcing, KalmanErrorForcing, NoForcing, TeacherForcing, readout_pinv


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
                                     KalmanErrorForcing(alpha=0.0), ErrorForcing(alpha=0.0, causal=True)])
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


@pytest.mark.parametrize("forcing", [TeacherForcing(alpha=0.7), ErrorForcing(alpha=0.7), KalmanErrorForcing(alpha=0.7)])
def test_unmasked_steps_untouched(getkey, forcing):
    cell = _two_output_cell(getkey)
    h = jax.random.normal(getkey(), (10,))
    out, _ = forcing(h, cell.readout(h), jnp.array([1.0, 1.0]), jnp.zeros(2), cell, forcing.init(cell))
    assert np.array_equal(np.asarray(out), np.asarray(h))


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
        k = KalmanErrorForcing(alpha=1.0, ratio=ratio)
        out, _ = k(h, cell.readout(h), target, jnp.ones(2), cell, k.init(cell))
        gaps.append(float(jnp.max(jnp.abs(out - ef_out))))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-3


def test_causal_error_forcing_delays_correction_by_one_step(setup):
    cell, trials = setup
    # with the causal variant the correction computed at t is applied at t + 1
    f, fc = ErrorForcing(alpha=0.6), ErrorForcing(alpha=0.6, causal=True)
    h = jnp.ones(8) * 0.1
    y = cell.readout(h)
    target, mask = jnp.array([1.0]), jnp.array([1.0])
    now, _ = f(h, y, target, mask, cell, f.init(cell))
    later0, carry = fc(h, y, target, mask, cell, fc.init(cell))
    np.testing.assert_array_equal(later0, h)  # nothing applied yet
    later1, _ = fc(h, y, target, jnp.array([0.0]), cell, carry)
    np.testing.assert_allclose(later1, now, rtol=1e-6)


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
