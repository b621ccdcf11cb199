"""UORO (Tallec & Ollivier 2018) and KF-RTRL (Mujika et al. 2018) are unbiased: the mean of K
estimates (different keys) converges to the RTRL gradient with an error that shrinks like 1/√K."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from errorforcing.forcing import ErrorForcing, TeacherForcing
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
