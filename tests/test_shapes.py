"""Annotated shapes hold: the package imported under jaxtyping's import hook (beartype checking
every annotated function and module field of the core layers), then representative forward and
gradient calls. By default (CI) the leaky RNN forward and its BPTT gradients (fast, autodiff) under error
forcing; with `-m slow` every cell forward, every forcing on the leaky RNN, every rule's gradient
under error forcing, task samplers and the analysis functions (≈ 45–60 s on this machine at
load 1–2, so not in CI).

The hook runs in a subprocess (it must be installed before errorforcing is first imported) and
over one dedicated script rather than the whole suite: suite-wide it cost ≈ 13 % more CPU on
tests/test_forcing.py (60.3 → 68.0 user s) and 10 % on tests/test_gated.py (27.2, 26.5 → 30.1,
29.2 user s, alternating runs, load ≈ 6.5; `pytest -n 0 --jaxtyping-packages=errorforcing.tasks,
…,errorforcing.training,beartype.beartype`) and beartype also checks the non-shape hints of the
upper layers (a `typing.Protocol` parameter in experiments/_executors.py is uncheckable)."""

import os
import subprocess
import sys

import pytest

import beartype  # noqa: E402,F401  (in the test extras: a missing checker is a failure, not a skip)

SCRIPT = """
import sys

import jax
import jax.numpy as jnp
from jaxtyping import install_import_hook

jax.config.update("jax_enable_x64", True)
PACKAGES = ["errorforcing.tasks", "errorforcing.models", "errorforcing.forcing", "errorforcing.rules",
            "errorforcing.analysis", "errorforcing.training"]
with install_import_hook(PACKAGES, "beartype.beartype"):
    from errorforcing import analysis, forcing, models, rules, tasks

key = jax.random.key(0)
N, N_IN, N_OUT, B, T = 5, 2, 2, 3, 6
k = iter(jax.random.split(key, 64))
x = jax.random.normal(next(k), (B, T, N_IN))
y = jax.random.normal(next(k), (B, T, N_OUT))
m = jnp.ones((B, T, N_OUT))
trials = tasks.Trials(x, y, m, {})
cells = {"leaky": models.LeakyRNN(N_IN, N, N_OUT, key=next(k), trainable=("W_rec", "W_in", "b", "W_out", "b_out")),
         "leaky-rate": models.LeakyRNN(N_IN, N, N_OUT, key=next(k), readout="rate"),
         "gru": models.GRU(N_IN, N, N_OUT, key=next(k)), "lstm": models.LSTM(N_IN, N, N_OUT, key=next(k))}
leaky = cells["leaky"]
forcings = {"none": forcing.NoForcing(), "tf": forcing.TeacherForcing(alpha=0.5),
            "ef": forcing.ErrorForcing(alpha=0.5), "ef-causal": forcing.ErrorForcing(alpha=0.5, causal=True),
            "kalman": forcing.KalmanErrorForcing(alpha=0.5, process_noise=1.0, obs_noise=0.5),
            "feedback": forcing.FeedbackForcing.random(leaky, key=next(k), alpha=0.5)}
FULL = "--full" in sys.argv
if not FULL:  # the CI check: the leaky RNN forward and its BPTT gradients (fast and autodiff) under EF
    cells, forcings = {"leaky": leaky}, {"ef": forcings["ef"], "none": forcings["none"]}
for name, cell in cells.items():  # forward: every cell under error forcing
    states, outputs = forcing.rollout(cell, forcings["ef"], x[0], y[0], m[0])
    assert states.shape[0] == outputs.shape[0] == T, name
for name, f in forcings.items():  # every other forcing on the leaky cell
    if name != "ef":
        forcing.rollout(leaky, f, x[0], y[0], m[0])
rule_table = {"bptt": rules.BPTT(), "bptt-autodiff": rules.BPTT(fast=False), "tbptt": rules.TruncatedBPTT(3),
              "rtrl": rules.RTRL(), "eprop": rules.EProp(), "rflo": rules.RFLO(), "snap1": rules.SnAp(order=1),
              "snap2": rules.SnAp(order=2), "uoro": rules.UORO(), "kfrtrl": rules.KFRTRL(),
              "rtrl-online": rules.RTRL(online=True, lr=0.05), "eprop-online": rules.EProp(online=True, lr=0.05)}
if not FULL:
    rule_table = {"bptt": rule_table["bptt"], "bptt-autodiff": rule_table["bptt-autodiff"]}
for name, rule in rule_table.items():  # gradients: the rules under error forcing
    loss, grads, _ = rule.value_and_grad(leaky, forcings["ef"], trials, key=next(k))
    assert jnp.isfinite(loss), name
if FULL:
    for cell in (cells["gru"], cells["leaky-rate"]):
        rules.BPTT().value_and_grad(cell, forcings["ef"], trials, key=next(k))
    rules.BPTT().value_and_grad(leaky, forcings["tf"], trials, key=next(k))
    for task in (tasks.DelayedXOR(delay=5), tasks.SineGeneration(), tasks.EvidenceIntegration()):
        batch = tasks.sample_batch(task, 2, key=next(k))
        assert batch.inputs.shape[:2] == batch.targets.shape[:2]
    analysis.lyapunov_spectrum(leaky, x, 3, key=next(k))
    states, _ = jax.vmap(lambda a, b, c: forcing.rollout(leaky, forcings["none"], a, b, c))(x, y, m)
    analysis.jacobian_norms(leaky, states, x)
    analysis.find_fixed_points(leaky, x[0, 0], states[:, -1], max_iters=5)
print("checked", flush=True)
# the hook is on: a time axis that disagrees is refused
forcing.rollout(leaky, forcings["none"], x[0], y[0, :-1], m[0, :-1])
print("not refused")
"""


@pytest.mark.parametrize("rules", [pytest.param("core"), pytest.param("full", marks=pytest.mark.slow)])
def test_annotated_shapes_hold_under_the_jaxtyping_import_hook(rules):
    env = os.environ | {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "PYTHONWARNINGS": "ignore"}
    argv = ["--full"] if rules == "full" else []
    out = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, env=env)
    assert "checked" in out.stdout, out.stderr[-4000:]  # every representative call passed its annotations
    # and the hook is really on: a call whose time axes disagree is refused, naming the function
    assert "not refused" not in out.stdout and out.returncode != 0
    assert "TypeCheckError" in out.stderr and "forcing._simulate.rollout" in out.stderr
