"""Tiny leaky-RNN problems shared by the rule tests (RTRL, e-prop/RFLO, the rule table)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from errorforcing.models import LeakyRNN
from errorforcing.tasks import Trials

N, N_IN, N_OUT, BATCH, T = 5, 2, 2, 3, 8
ALL = ("W_rec", "W_in", "b", "W_out", "b_out")


def make_cell(key, readout="state", trainable=ALL, **kwargs) -> LeakyRNN:
    k_cell, k_out, k_b = jax.random.split(key, 3)
    cell = LeakyRNN(N_IN, N, N_OUT, key=k_cell, tau=3.0, readout=readout, trainable=trainable, **kwargs)
    # a readout and biases large enough that forcing, b and b_out matter
    return eqx.tree_at(lambda c: (c.W_out, c.b, c.b_out), cell,
                       (0.5 * jax.random.normal(k_out, (N_OUT, N)), 0.1 * jax.random.normal(k_b, (N,)),
                        jnp.array([0.1, -0.2])))


def make_trials(key, batch=BATCH, steps=T, n_in=N_IN, n_out=N_OUT, targets=None) -> Trials:
    k_x, k_y, k_m = jax.random.split(key, 3)
    y = jax.random.normal(k_y, (batch, steps, n_out)) if targets is None else targets(k_y, (batch, steps, n_out))
    return Trials(jax.random.normal(k_x, (batch, steps, n_in)), y,
                  jax.random.bernoulli(k_m, 0.6, (batch, steps, n_out)).astype(jnp.float64), {})


def assert_trees_close(a, b, rtol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-4 * float(jnp.max(jnp.abs(y)) + 1e-300))
