"""GRU / LSTM baselines: gradients against finite differences, forcing compatibility."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.forcing import ErrorForcing, NoForcing, TeacherForcing
from errorforcing.rules import BPTT, Objective


@pytest.mark.parametrize("cls", [ef.models.GRU, ef.models.LSTM])
@pytest.mark.parametrize("forcing", [NoForcing(), ErrorForcing(alpha=0.5, stop_gradient=False)],
                         ids=lambda f: type(f).__name__)
def test_gated_bptt_matches_finite_differences(getkey, cls, forcing):
    task = ef.tasks.DelayedXOR(delay=2, pulse=2)
    cell = cls(task.n_in, 4, task.n_out, key=getkey())
    trials = ef.tasks.sample_batch(task, 2, key=getkey())
    objective = Objective(rate_reg=1e-2, readout_reg=0.0)
    _, grads, _ = BPTT().value_and_grad(cell, forcing, trials, key=getkey(), objective=objective)

    @eqx.filter_jit
    def loss(c):
        s, y = ef.simulate(c, trials, forcing)
        return objective(c, s, y, trials)

    rng = np.random.default_rng(1)
    for field in cell.trainable:
        leaf = getattr(cell, field)
        for _ in range(2):
            idx = tuple(int(rng.integers(s)) for s in leaf.shape)
            bump = jnp.zeros_like(leaf).at[idx].set(1e-6)
            fd = (loss(eqx.tree_at(lambda c: getattr(c, field), cell, leaf + bump))
                  - loss(eqx.tree_at(lambda c: getattr(c, field), cell, leaf - bump))) / 2e-6
            np.testing.assert_allclose(getattr(grads, field)[idx], fd, rtol=1e-5, atol=1e-9, err_msg=field)


def test_error_forcing_moves_only_the_lstm_hidden_state(getkey):
    cell = ef.models.LSTM(3, 5, 1, key=getkey())
    state = jax.random.normal(getkey(), (10,))
    f = ErrorForcing(alpha=1.0)
    out, _ = f(state, cell.readout(state), jnp.array([0.9]), jnp.ones(1), cell, f.init(cell))
    np.testing.assert_array_equal(out[5:], state[5:])  # cell memory untouched
    np.testing.assert_allclose(cell.readout(out), [0.9], atol=1e-5)


def test_teacher_forcing_with_lstm_fails_clearly(getkey):
    cell = ef.models.LSTM(3, 5, 1, key=getkey())
    with pytest.raises(TypeError, match="TeacherForcing does not work with LSTM"):
        TeacherForcing(alpha=0.5).init(cell)
