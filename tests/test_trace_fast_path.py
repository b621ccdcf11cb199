"""e-prop's and RFLO's offline gradient by the hand-written reverse pass (`leaky_bptt` with the
credit truncated) against their generic trace path (`fast=False`), float64, over the forcings,
readouts, activations and options the fast path takes; and which path runs where."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.forcing import ErrorForcing, FeedbackForcing, KalmanErrorForcing, NoForcing, TeacherForcing
from errorforcing.rules import RFLO, EProp, Objective, SnAp
from errorforcing.rules import _eprop

from rule_helpers import ALL, make_trials

pytestmark = pytest.mark.usefixtures("fast_compile")

FORCINGS = {
    "none": NoForcing(),
    "ef": ErrorForcing(alpha=0.5),
    "ef-causal": ErrorForcing(alpha=0.5, causal=True),
    "ef-sparse-partial": ErrorForcing(alpha=0.7, interval=2, units=(0, 2, 3)),
    "kalman": KalmanErrorForcing(alpha=0.8, process_noise=1.0, obs_noise=0.3 ** 0.5),
    "tf-flowing": TeacherForcing(alpha=0.6),
    "tf-stopped": TeacherForcing(alpha=1.0, stop_gradient=True),
    "tf-sparse-partial": TeacherForcing(alpha=0.6, interval=3, units=(1, 4)),
    "feedback": FeedbackForcing(0.3 * jnp.cos(jnp.arange(6.0))[:, None], alpha=0.5),
}
RULES = {
    "eprop": lambda key: EProp(),
    "eprop-random": lambda key: EProp(feedback="random", key=key),
    "rflo": lambda key: RFLO(),
    "rflo-random": lambda key: RFLO(feedback="random", key=key, feedback_scale=0.3),
}


def problem(getkey, readout="state", activation="tanh", n_out=1, rec_mask=False):
    """Delayed XOR (T = 12), or for n_out = 2 random trials with a random partial mask."""
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    n_in = task.n_in if n_out == 1 else 2
    cell = ef.models.LeakyRNN(n_in, 6, n_out, key=getkey(), tau=2.0, readout=readout,
                              activation=activation, trainable=ALL, density=0.6 if rec_mask else 1.0)
    cell = eqx.tree_at(lambda c: (c.W_out, c.b_out), cell, (cell.W_out * 20, 0.2 * jnp.ones(n_out)))
    trials = ef.tasks.sample_batch(task, 3, key=getkey()) if n_out == 1 else make_trials(getkey(), n_in=2)
    trials = trials._replace(info=dict(trials.info, weight=jnp.array([1.0, 1.0, 0.0])))  # a padding trial
    return cell, trials


def assert_paths_equal(rule, cell, forcing, trials, objective, key):
    assert rule.uses_fast_path(cell, forcing)
    slow = dataclasses.replace(rule, fast=False)
    assert not slow.uses_fast_path(cell, forcing)
    l1, g1, _ = rule.value_and_grad(cell, forcing, trials, key=key, objective=objective)
    l2, g2, _ = slow.value_and_grad(cell, forcing, trials, key=key, objective=objective)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    assert jax.tree.structure(g1) == jax.tree.structure(g2)
    for field in ALL:
        a, b = np.asarray(getattr(g1, field)), np.asarray(getattr(g2, field))
        assert np.max(np.abs(b)) > 1e-6, field  # not a vacuous comparison
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=field)


@pytest.mark.parametrize("forcing", list(FORCINGS))
@pytest.mark.parametrize("rule", list(RULES))
def test_fast_trace_gradient_equals_the_generic_trace(getkey, rule, forcing):
    """Process noise, padding weights and both regularisers on; state readout."""
    cell, trials = problem(getkey)
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.1)
    assert_paths_equal(RULES[rule](getkey()), cell, FORCINGS[forcing], trials, objective, getkey())


CELL_CASES = {
    "rate-readout": dict(readout="rate"),
    "softplus-rate": dict(readout="rate", activation="softplus"),
    "logistic": dict(activation="logistic"),
    "relu": dict(activation="relu"),
    "two-outputs": dict(n_out=2),
    "sparse-W_rec": dict(rec_mask=True),
}


@pytest.mark.parametrize("case", list(CELL_CASES))
@pytest.mark.parametrize("rule", ["eprop", "rflo-random"])
def test_fast_trace_gradient_equals_the_generic_trace_across_cells(getkey, rule, case):
    cell, trials = problem(getkey, **CELL_CASES[case])
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.05)
    assert_paths_equal(RULES[rule](getkey()), cell, ErrorForcing(alpha=0.5, causal=True), trials, objective, getkey())


def test_fast_trace_gradient_without_the_rate_penalty(getkey):
    """rate_reg = 0: the forward pass stores r instead of h̃ (another branch of the kernel)."""
    cell, trials = problem(getkey, readout="rate")
    assert_paths_equal(EProp(), cell, TeacherForcing(alpha=0.6), trials, Objective(rate_reg=0.0), getkey())


def test_the_fast_path_is_the_one_that_runs(getkey, monkeypatch):
    """Offline e-prop/RFLO and SnAp-1 call the hand-written pass where it applies, never online,
    under Dale's law or an unstopped additive correction, nor with fast=False."""
    calls = []
    real = _eprop.leaky_bptt
    monkeypatch.setattr(_eprop, "leaky_bptt", lambda *a, **k: calls.append(k["recurrent"]) or real(*a, **k))
    cell, trials = problem(getkey)
    key = getkey()
    for rule in (EProp(), RFLO(), SnAp(order=1)):
        rule.value_and_grad(cell, ErrorForcing(alpha=0.5), trials, key=key)
    assert calls == ["diagonal", "none", "diagonal"]
    dale = ef.models.LeakyRNN(cell.W_in.shape[1], 6, 1, key=getkey(), excitatory=0.8)
    skipped = [(EProp(fast=False), cell, NoForcing()), (EProp(online=True, lr=0.1), cell, NoForcing()),
               (RFLO(), cell, ErrorForcing(alpha=0.5, stop_gradient=False)), (EProp(), dale, NoForcing()),
               (SnAp(order=1, fast=False), cell, NoForcing())]
    for rule, c, forcing in skipped:
        rule.value_and_grad(c, forcing, trials, key=key)
    assert calls == ["diagonal", "none", "diagonal"]
