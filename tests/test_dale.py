"""Dale's law on the leaky RNN: W = |V| diag(σ) keeps every unit's outgoing sign under any
optimizer update, every rule's gradient is taken with respect to V, and the balanced
initialisation keeps the spectral radius at g."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import errorforcing as ef
from errorforcing.forcing import ErrorForcing, NoForcing
from errorforcing.models import GRU, LSTM, LeakyRNN, WilliamsZipserNet
from errorforcing.rules import BPTT, RTRL, EProp, Objective

from rule_helpers import ALL, make_trials

pytestmark = pytest.mark.usefixtures("fast_compile")

N = 5


def dale_cell(key, **kw):
    return LeakyRNN(2, N, 2, key=key, tau=3.0, excitatory=0.8, trainable=ALL, **kw)


def assert_dale(cell):
    W = np.asarray(cell.recurrent_weights())
    n_exc = int(round(0.8 * cell.n_rec))
    assert np.all(W[:, :n_exc] >= 0) and np.all(W[:, n_exc:] <= 0)


@pytest.mark.parametrize("rule", [BPTT(), EProp(), RTRL()], ids=["bptt", "eprop", "rtrl"])
def test_signs_hold_after_100_adam_steps(getkey, rule):
    cell, trials = dale_cell(getkey()), make_trials(getkey())
    forcing = ErrorForcing(alpha=0.5)
    optimizer = optax.adam(0.05)  # large steps: many V_ij cross zero
    spec = ef.rules.trainable_spec(cell)
    opt_state = optimizer.init(eqx.filter(cell, spec))

    @eqx.filter_jit
    def step(cell, opt_state, key):
        _, grads, _ = rule.value_and_grad(cell, forcing, trials, key=key, objective=Objective())
        updates, opt_state = optimizer.update(eqx.filter(cell.mask_grads(grads), spec), opt_state)
        return eqx.apply_updates(cell, updates), opt_state

    V0 = np.asarray(cell.W_rec)
    for _ in range(100):
        cell, opt_state = step(cell, opt_state, getkey())
    assert_dale(cell)
    V = np.asarray(cell.W_rec)
    assert np.all(V0 >= 0) and np.any(V < 0)  # the parameter changed sign; the weights did not
    assert np.max(np.abs(V - V0)) > 0.1


def test_gradients_are_with_respect_to_the_underlying_parameter(getkey):
    """BPTT (fast path bypassed) and RTRL (generic path) agree; e-prop's V-gradient is its
    gradient of the equivalent unconstrained net times ∂W/∂V = sign(V) σ."""
    cell, trials, key = dale_cell(getkey()), make_trials(getkey()), getkey()
    forcing = ErrorForcing(alpha=0.5)
    objective = Objective(rate_reg=1e-2)
    assert not BPTT().uses_fast_path(cell, forcing)
    _, bptt, _ = BPTT().value_and_grad(cell, forcing, trials, key=key, objective=objective)
    _, rtrl, _ = RTRL().value_and_grad(cell, forcing, trials, key=key, objective=objective)
    np.testing.assert_allclose(rtrl.W_rec, bptt.W_rec, rtol=1e-9, atol=1e-14)
    # finite differences of the loss in V (unforced: a stopped correction is not differentiated)
    def loss(c):
        return BPTT().value_and_grad(c, NoForcing(), trials, key=key, objective=objective)[0]
    _, unforced, _ = BPTT().value_and_grad(cell, NoForcing(), trials, key=key, objective=objective)
    eps = 1e-6
    for i, j in ((0, 1), (2, 4)):  # an excitatory and an inhibitory presynaptic unit
        bump = lambda d: eqx.tree_at(lambda c: c.W_rec, cell, cell.W_rec.at[i, j].add(d))
        np.testing.assert_allclose(unforced.W_rec[i, j], (loss(bump(eps)) - loss(bump(-eps))) / (2 * eps), rtol=1e-6)

    plain = eqx.tree_at(lambda c: (c.W_rec, c.dale_sign), cell, (cell.recurrent_weights(), None),
                        is_leaf=lambda x: x is None)
    _, g_dale, _ = EProp().value_and_grad(cell, forcing, trials, key=key, objective=objective)
    _, g_plain, _ = EProp().value_and_grad(plain, forcing, trials, key=key, objective=objective)
    factor = np.sign(np.asarray(cell.W_rec)) * np.asarray(cell.dale_sign)[None, :]
    np.testing.assert_allclose(g_dale.W_rec, np.asarray(g_plain.W_rec) * factor, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(g_dale.b, g_plain.b, rtol=1e-10)


@pytest.mark.parametrize("density", [1.0, 0.5])
def test_balanced_initialisation_keeps_the_spectral_radius(density):
    g = 1.5
    cell = LeakyRNN(1, 400, 1, key=jax.random.key(0), gain=g, excitatory=0.8, density=density)
    W = np.asarray(cell.recurrent_weights())
    assert_dale(cell)
    np.testing.assert_allclose(W.sum(axis=1), 0.0, atol=1e-9)  # every row balanced
    radius = np.max(np.abs(np.linalg.eigvals(W)))
    assert abs(radius - g) < 0.15 * g, radius
    if density < 1:
        assert np.all(W[np.asarray(cell.rec_mask) == 0] == 0)


def test_every_cell_exposes_its_recurrent_weights(getkey):
    leaky = LeakyRNN(2, 4, 1, key=getkey())
    np.testing.assert_array_equal(leaky.recurrent_weights(), leaky.W_rec)
    gru, lstm = GRU(2, 4, 1, key=getkey()), LSTM(2, 4, 1, key=getkey())
    assert gru.recurrent_weights().shape == (12, 4) and lstm.recurrent_weights().shape == (16, 4)
    wz = WilliamsZipserNet(2, 4, 1, key=getkey())
    np.testing.assert_array_equal(wz.recurrent_weights(), wz.W[:, 3:])


def test_dale_options_are_checked():
    with pytest.raises(ValueError, match="excitatory"):
        LeakyRNN(1, 4, 1, key=jax.random.key(0), excitatory=1.0)
    with pytest.raises(ValueError, match="model.excitatory applies only to model.kind 'leaky'"):
        ef.TrainConfig.model_validate({"model": {"kind": "gru", "excitatory": 0.8}})
    config = ef.TrainConfig.model_validate({"model": {"excitatory": 0.8, "hidden": 10}})
    from errorforcing.experiments import MODELS

    cell = MODELS["leaky"].build(config.model, ef.tasks.DelayedXOR(delay=5), jax.random.key(1))
    assert_dale(cell) and cell.dale_sign is not None
