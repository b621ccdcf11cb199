"""The fast BPTT's two ways of forming the weight sums (in the reverse scan, or one GEMM over
stored δ after it) give autodiff's gradient, in float64, on the path that actually runs."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.forcing import ErrorForcing, NoForcing, TeacherForcing
from errorforcing.rules import BPTT, Objective
from errorforcing.rules._leaky_bptt import leaky_bptt
from errorforcing.forcing import process_noise

pytestmark = pytest.mark.usefixtures("fast_compile")

FIELDS = ("W_rec", "W_in", "b", "W_out", "b_out")


@pytest.mark.parametrize("forcing, readout", [(NoForcing(), "state"), (ErrorForcing(alpha=0.5, interval=2), "rate"),
                                              (TeacherForcing(alpha=0.6), "state")],
                         ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_weight_sums_scan_and_gemm_equal_autodiff(getkey, forcing, readout):
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    cell = ef.models.LeakyRNN(task.n_in, 6, task.n_out, key=getkey(), tau=2.0, readout=readout,
                              trainable=FIELDS)
    cell = eqx.tree_at(lambda c: c.W_out, cell, cell.W_out * 20)
    trials = ef.tasks.sample_batch(task, 3, key=getkey())
    trials = trials._replace(info=dict(trials.info, weight=jnp.array([1.0, 1.0, 0.0])))
    objective = Objective(rate_reg=1e-2, readout_reg=1e-2, noise_std=0.1)
    key = getkey()
    assert BPTT().uses_fast_path(cell, forcing)
    loss_ad, want, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=key, objective=objective)
    noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
    grads = {}
    for how in ("scan", "gemm"):
        loss, grads[how] = leaky_bptt(cell, forcing, trials, objective, noise, weight_sums=how)
        np.testing.assert_allclose(loss, loss_ad, rtol=1e-12)
        for field in FIELDS:
            np.testing.assert_allclose(getattr(grads[how], field), getattr(want, field), rtol=1e-8, atol=1e-12,
                                       err_msg=f"{how} {field}")
    # the two forms agree to rounding, not just to the oracle's tolerance
    np.testing.assert_allclose(grads["gemm"].W_rec, grads["scan"].W_rec, rtol=1e-12, atol=1e-15)


def test_weight_sums_refuses_an_unknown_form(getkey):
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    cell = ef.models.LeakyRNN(task.n_in, 4, task.n_out, key=getkey())
    trials = ef.tasks.sample_batch(task, 2, key=getkey())
    with pytest.raises(ValueError, match="weight_sums"):
        leaky_bptt(cell, NoForcing(), trials, Objective(), weight_sums="chunked")


@pytest.mark.parametrize("forcing", [ErrorForcing(alpha=0.5, causal=True), TeacherForcing(alpha=0.6)],
                         ids=lambda f: type(f).__name__)
def test_fast_bptt_without_rate_penalty_equals_autodiff(getkey, forcing):
    """Without the rate penalty the forward pass stores no h̃ and sums the readout gradient
    itself: the gradient is still autodiff's."""
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    cell = ef.models.LeakyRNN(task.n_in, 6, task.n_out, key=getkey(), tau=2.0, trainable=FIELDS)
    cell = eqx.tree_at(lambda c: c.W_out, cell, cell.W_out * 20)
    trials = ef.tasks.sample_batch(task, 3, key=getkey())
    key = getkey()
    assert BPTT().uses_fast_path(cell, forcing)
    loss_ad, want, _ = BPTT(fast=False).value_and_grad(cell, forcing, trials, key=key, objective=Objective())
    loss, got = leaky_bptt(cell, forcing, trials, Objective())
    np.testing.assert_allclose(loss, loss_ad, rtol=1e-12)
    for field in FIELDS:
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-8, atol=1e-12, err_msg=field)
