"""Williams & Zipser §3.5: the oscillators are judged up to phase (`Oscillation.phase_free`).

The phase-free error against a hand-written numpy loop; an anti-phase oscillator scores 0 and a
constant no better than before; the other tasks and `phase_free=False` keep the masked MSE; the
continual trainer's validation and test losses are the task's (a hand-set anti-phase oscillator
converges)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing import tasks as T
from errorforcing.experiments import build_trainer
from errorforcing.rules import masked_mse


def _batch(task, n, seed=0):
    return T.sample_batch(task, n, key=jax.random.key(seed))


def _numpy_phase_free(outputs, mask, task, settle):
    """min over s of Σ_{t ≥ settle} m (y_t − y*(t + s))² / Σ m, per trial, pooled over trials."""
    B, n_steps, n_out = outputs.shape
    total, weight = 0.0, 0.0
    for b in range(B):
        best = np.inf
        for s in range(task.cycle):
            err = 0.0
            for t in range(settle, n_steps):
                u = t + s
                if task.pattern == "01":
                    target = [u % 2]
                elif task.pattern == "0011":
                    target = [float(u % 4 >= 2), float((u + 1) % 4 >= 2)]
                else:
                    a = 2 * np.pi * u / task.period
                    target = [0.5 + task.amplitude * np.sin(a), 0.5 + task.amplitude * np.cos(a)]
                for o in range(n_out):
                    err += mask[b, t, o] * (outputs[b, t, o] - target[o]) ** 2
            best = min(best, err)
        total += best
        weight += mask[b, settle:].sum()
    return total / weight


@pytest.mark.parametrize("task,settle", [
    (T.Oscillation(pattern="01", n_steps=30), 2),
    (T.Oscillation(pattern="0011", n_steps=30, random_phase=True), 4),
    (T.Oscillation(pattern="sine", period=7, n_steps=30, train_partner=False), 7),
    (T.Oscillation(pattern="sine", period=7, n_steps=30, settle=3), 3),
    (T.Oscillation(pattern="0011", n_steps=30, settle=0), 0),
], ids=["01", "0011-random-phase", "sine-partner-free", "sine-settle-3", "0011-settle-0"])
def test_phase_free_error_matches_numpy(task, settle):
    trials = _batch(task, 3)
    outputs = jax.random.uniform(jax.random.key(1), trials.targets.shape)
    assert task.settle_steps == settle
    got = float(task.held_out_error(outputs, trials))
    want = _numpy_phase_free(np.asarray(outputs, np.float64), np.asarray(trials.mask, np.float64), task, settle)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # the minimum over phases can only lower the error of the trial's own phase
    plain = T.Oscillation(pattern=task.pattern, period=task.period, n_steps=30, phase_free=False)
    assert got <= float(plain.held_out_error(outputs, trials)) + 1e-6


@pytest.mark.parametrize("pattern,shift", [("01", 1), ("0011", 2), ("0011", 1), ("sine", 7)])
def test_an_oscillator_at_another_phase_scores_zero(pattern, shift):
    task = T.Oscillation(pattern=pattern, period=25)
    trials = _batch(task, 2)
    late = task._targets(jnp.arange(task.n_steps) + shift)[None].repeat(2, axis=0)
    assert float(task.held_out_error(late, trials)) < 1e-10
    fixed = float(T.Oscillation(pattern=pattern, period=25, phase_free=False).held_out_error(late, trials))
    assert fixed > 0.05  # the old criterion: anti-phase 0101… scores 1
    if (pattern, shift) == ("01", 1):
        assert fixed == pytest.approx(1.0)


@pytest.mark.parametrize("pattern,partner,want", [("01", True, 0.25), ("0011", True, 0.25),
                                                  ("sine", False, 0.08), ("sine", True, 0.08)])
def test_a_constant_scores_as_before(pattern, partner, want):
    """Over whole cycles every shift sees the same targets: no phase helps a constant 0.5,
    and it stays far above the threshold (0.25 for the 0/1 patterns, A²/2 for the sinusoid)."""
    task = T.Oscillation(pattern=pattern, period=25, train_partner=partner)
    trials = _batch(task, 2)
    half = jnp.full(trials.targets.shape, 0.5)
    free = float(task.held_out_error(half, trials))
    fixed = float(T.Oscillation(pattern=pattern, period=25, train_partner=partner,
                                phase_free=False).held_out_error(half, trials))
    np.testing.assert_allclose([free, fixed], [want, want], rtol=1e-5)
    assert free > 5 * T.Oscillation.threshold
    # any other constant is worse than 0.5 (the best constant), under any phase
    assert float(task.held_out_error(half + 0.2, trials)) > free


@pytest.mark.parametrize("task", [T.PipelinedXOR(n_steps=20), T.SequenceRecognition(n_steps=20),
                                  T.DelayedNonmatch(n_steps=20), T.BalancedParentheses(n_steps=20),
                                  T.Oscillation(pattern="0011", n_steps=20, phase_free=False)],
                         ids=["xor", "sequence", "nonmatch", "parentheses", "oscillation-fixed-phase"])
def test_other_tasks_keep_the_masked_mse(task):
    trials = _batch(task, 4)
    outputs = jax.random.uniform(jax.random.key(2), trials.targets.shape)
    got = float(task.held_out_error(outputs, trials))
    np.testing.assert_allclose(got, float(masked_mse(outputs, trials.targets, trials.mask)), rtol=1e-6)
    m, y, y_star = (np.asarray(a, np.float64) for a in (trials.mask, outputs, trials.targets))
    np.testing.assert_allclose(got, (m * (y - y_star) ** 2).sum() / m.sum(), rtol=1e-5)


def test_settle_is_checked():
    with pytest.raises(ValueError, match="settle applies only"):
        T.Oscillation(phase_free=False, settle=2)
    for settle in (-1, 100):
        with pytest.raises(ValueError, match="settle must be in"):
            T.Oscillation(settle=settle)
    short = T.Oscillation(pattern="sine", period=25, n_steps=25)  # trains; cannot be judged after a cycle
    trials = _batch(short, 1)
    with pytest.raises(ValueError, match="needs more than settle = 25 steps"):
        short.held_out_error(trials.targets, trials)
    assert T.Oscillation(phase_free=False).settle_steps == 0
    assert T.Oscillation(pattern="sine", period=25).settle_steps == 25


@pytest.mark.parametrize("phase_free,converged", [(True, True), (False, False)])
def test_continual_trainer_judges_an_anti_phase_oscillator_by_the_task(phase_free, converged):
    """A 1-unit net with bias 5 and self-weight −10 runs 0.99, 0.007, 0.99, … from rest: the
    right oscillation one step off. The continual trainer's validation and test losses are the
    task's, so it converges up to phase (error ≈ 0) and not at fixed phase (≈ 0.99)."""
    config = ef.TrainConfig(task={"name": "oscillation", "options": {"pattern": "01", "n_steps": 20,
                                                                     "phase_free": phase_free}},
                            model={"kind": "williams-zipser", "hidden": 1}, forcing={"kind": "none"},
                            rule={"kind": "rtrl", "online": True, "online_lr": 1e-9},
                            continual=True, steps=20, val_every=10, patience=2, seeds=1, test_trials=2)
    trainer = build_trainer(config)
    make = trainer.make_cell
    oscillator = lambda key: eqx.tree_at(lambda c: c.W, make(key), jnp.asarray([[0.0, 5.0, -10.0]]))  # noqa: E731
    trainer.make_cell = oscillator
    result = trainer.run()
    val = result.val_curves[0]
    if phase_free:
        assert np.all(val < 1e-4), val
        assert result.test_loss[0] < 1e-4
    else:
        assert np.all(val > 0.9), val
        assert result.test_loss[0] > 0.9
    assert bool(result.tracker.converged_epoch[0] >= 0) == converged



@pytest.mark.parametrize("name", ["wz-oscillators", "wz-oscillators-wide"])
def test_the_reproductions_judge_their_oscillators_up_to_phase(name):
    from errorforcing.experiments import build_task
    from errorforcing.experiments._sweep import expand
    from errorforcing.reproductions import SWEEPS

    tasks = [build_task(job.config) for s in SWEEPS[name](True) for job in expand(s, skip_unregistered=True).jobs]
    assert len(tasks) == 6 and all(t.phase_free and t.settle_steps == t.cycle for t in tasks)
