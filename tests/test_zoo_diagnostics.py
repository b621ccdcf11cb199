"""The per-epoch diagnostic cos(G, W_outᵀ) under partial forcing is of the gain as applied, P G
(the forced units' rows), not of the unselected G."""

import jax
import numpy as np
import pytest

from errorforcing.forcing import ErrorForcing, TeacherForcing
from errorforcing.rules import BPTT
from errorforcing.training import dynamics_diagnostics, forcing_gain

from rule_helpers import make_cell, make_trials


@pytest.mark.parametrize("forcing, forced", [(ErrorForcing(alpha=0.5, units=2), [0, 1]),
                                             (TeacherForcing(alpha=0.5, units=(1, 3)), [1, 3])],
                         ids=["ef-first-2", "tf-units-1-3"])
def test_cos_g_wout_is_of_the_selected_gain(getkey, forcing, forced):
    cell, trials = make_cell(getkey()), make_trials(getkey(), batch=1)
    G = np.asarray(forcing.gain(cell))  # N × n_out, every unit
    W = np.asarray(cell.W_out).T
    P = np.zeros((G.shape[0], 1))
    P[forced] = 1.0
    np.testing.assert_array_equal(forcing_gain(forcing, cell), P * G)
    trial = jax.tree.map(lambda a: a[0], trials)
    out = dynamics_diagnostics(cell, forcing, BPTT(), trial, key=getkey())
    PG = P * G
    expected = np.sum(PG * W) / (np.linalg.norm(PG) * np.linalg.norm(W))
    np.testing.assert_allclose(float(out["cos_G_Wout"]), expected, rtol=1e-10)
    unselected = np.sum(G * W) / (np.linalg.norm(G) * np.linalg.norm(W))
    assert abs(expected - unselected) > 1e-3  # the test can tell the two apart
