"""Dynamics analysis inside training: gradient flossing, λ_max before/after in the store, adaptive
α, per-epoch diagnostics, `errorforcing analyze lyapunov`."""

import itertools
import json
import math
import os
import sqlite3
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import errorforcing as ef
from errorforcing.analysis import update_alpha
from errorforcing.cli import main
from errorforcing.experiments._lyapunov import StoredRunError, stored_spectra
from errorforcing.store import MEMBER_COLUMNS, RunStore
from errorforcing.training import (EnsembleTrainer, Member, Schedule, forced_jacobian_norms, update_diagnostics)

DIAGNOSTICS = ("jacobian_norm", "cos_G_Wout", "local_alignment", "global_alignment", "update_efficiency")


pytestmark = pytest.mark.usefixtures("fast_compile")


def tiny(**extra):
    config = dict(task={"name": "delayed-xor", "delay": 3, "options": {"pulse": 2}},
                  model={"hidden": 6}, forcing={"kind": "ef", "alpha": [0.0, 0.5]},
                  rule={"kind": "bptt"}, seeds=1, epochs=2, batch=8, train_trials=12, val_trials=4)
    for k, v in extra.items():
        config[k] = config.get(k, {}) | v if isinstance(v, dict) else v
    return ef.TrainConfig.model_validate(config)


def curves(row):
    return json.loads(row["curves"])


# ---- flossing and λ_max ----------------------------------------------------------------------

def test_flossing_moves_lambda_max_toward_zero_and_the_store_records_it(tmp_path):
    # contracting init (g = 0.5): λ_max < 0; a negligible training lr isolates flossing's effect
    common = dict(task={"delay": 20}, model={"hidden": 8, "gain": 0.5}, forcing={"alpha": [0.5]}, seeds=2,
                  optim={"lr": [1e-7]}, analysis={"lyapunov": True})
    inter = ef.train(tiny(**common, floss={"every": 1, "steps": 30, "lr": 0.03}), progress=False)
    pre = ef.train(tiny(**common, floss={"pre": 30, "lr": 0.03}, out=str(tmp_path)), progress=False)
    for i, p in zip(inter.rows, pre.rows):
        assert i["lyap_max_before"] < -0.01  # the initial network: contracting
        assert abs(p["lyap_max_before"]) < abs(i["lyap_max_before"]) / 3  # pre-flossing, before epoch 1
        assert abs(i["lyap_max_after"]) < abs(i["lyap_max_before"]) / 3  # inter-flossing, after epoch 1
        np.testing.assert_allclose(p["lyap_max_after"], p["lyap_max_before"], atol=1e-4)  # no inter-flossing
        assert not set(curves(p)) & set(DIAGNOSTICS + ("alpha",))  # off: none recorded
    rows = sqlite3.connect(tmp_path / "runs.sqlite").execute(
        "SELECT lyap_max_before, lyap_max_after FROM members ORDER BY member").fetchall()
    assert len(rows) == 2 and all(math.isfinite(v) for row in rows for v in row)
    assert rows == [(r["lyap_max_before"], r["lyap_max_after"]) for r in pre.rows]
    # the stored parameters give the same λ_max again (same trials and basis), and a full spectrum
    again = stored_spectra(tmp_path, k=1)
    np.testing.assert_allclose(again.spectra[:, 0], [r["lyap_max_after"] for r in pre.rows], rtol=1e-8)
    full = stored_spectra(tmp_path)
    assert full.spectra.shape == (2, 8) and np.all(np.diff(full.spectra, axis=1) < 0.05)
    with pytest.raises(StoredRunError, match=r"^--k: must be in \[1, N = 8\], got 9$"):
        stored_spectra(tmp_path, k=9)


def test_gain_sweep_through_the_sweep_engine(tmp_path):
    from errorforcing.experiments._driver import run_sweep
    from errorforcing.experiments._sweep import expand, parse_spec

    spec = parse_spec("""
name = "gain"
seeds = 1
[base]
epochs = 1
batch = 8
train_trials = 8
val_trials = 4
task.name = "delayed-xor"
task.delay = 20
task.options = {pulse = 2}
model.hidden = 8
forcing.kind = "none"
analysis.lyapunov = true
[grid]
"model.gain" = [0.5, 3.0]
""")
    outcome = run_sweep(expand(spec), tmp_path, progress=False)
    assert not outcome.failed
    store = RunStore(tmp_path, create=False)
    by_gain = {store.config(r["run_id"])["config"]["model"]["gain"]: r for r in store.members()}
    assert by_gain[0.5]["lyap_max_before"] < 0 < by_gain[3.0]["lyap_max_before"]  # ordered, chaotic at g = 3
    assert all(math.isfinite(r["lyap_max_after"]) for r in by_gain.values())


def test_store_migration_adds_the_new_columns(tmp_path):
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    db.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, created TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL);
        CREATE TABLE members (run_id TEXT NOT NULL, member INTEGER NOT NULL, seed INTEGER NOT NULL, task TEXT NOT NULL,
            rule TEXT NOT NULL, forcing TEXT NOT NULL, alpha REAL, converged INTEGER NOT NULL, converged_epoch INTEGER,
            diverged INTEGER NOT NULL, epochs_run INTEGER NOT NULL, final_val_loss REAL, final_val_accuracy REAL,
            curves TEXT NOT NULL, PRIMARY KEY (run_id, member));
        INSERT INTO runs VALUES ('old', '2025', '{}', 'done');
        INSERT INTO members VALUES ('old', 0, 0, 't', 'bptt', 'ef', 0.5, 1, 3, 0, 3, 0.1, NULL, '{}');
    """)
    db.commit()
    db.close()
    (old,) = RunStore(tmp_path, create=False).members()  # a reader sees the new columns as NULL
    assert set(MEMBER_COLUMNS) <= set(old) and old["lyap_max_before"] is None and old["lr"] is None
    store = RunStore(tmp_path)  # a writer adds them
    store.begin_run("new", "{}")
    store.finish_run("new", [dict(old, run_id="new", curves="{}", lyap_max_before=-0.1, lyap_max_after=0.0)])
    assert [m["lyap_max_before"] for m in store.members("new")] == [-0.1]


# ---- adaptive α ------------------------------------------------------------------------------

def test_adaptive_alpha_follows_hess_rule_on_a_known_jacobian(getkey):
    # identity activation and a frozen W_rec = s U (U orthogonal): J = (1 − a) I + a s U everywhere
    n, a, s = 6, 0.5, 3.0
    u, _ = jnp.linalg.qr(jax.random.normal(getkey(), (n, n)))

    def make_cell(key):
        cell = ef.models.LeakyRNN(3, n, 1, key=key, tau=2.0, activation="identity", trainable=("W_out", "b_out"))
        return eqx.tree_at(lambda c: c.W_rec, cell, s * u)

    norm = float(np.linalg.svd((1 - a) * np.eye(n) + a * s * np.asarray(u), compute_uv=False)[0])
    alpha_star = max(0.0, 1 - 1 / norm)
    assert 0.2 < alpha_star < 0.999
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    schedule = Schedule(epochs=11, batch_size=8, train_trials=8, val_trials=4, threshold=1e-12, divergence=1e30)
    trainer = EnsembleTrainer(task, make_cell, lambda alpha, cell, key: ef.forcing.TeacherForcing(alpha=alpha),
                              ef.rules.BPTT(), optax.adam, [Member(0, 1.0, 1e-3), Member(0, 0.1, 1e-3)], schedule,
                              adaptive_alpha=True)
    result = trainer.run()
    # one batch per epoch: α changes after batches 5 and 10 only
    expected = []
    for start in (1.0, 0.1):
        alpha, curve = start, []
        for batch in range(1, 12):
            if batch % 5 == 0:
                alpha = float(update_alpha(jnp.asarray(alpha), jnp.asarray(alpha_star)))
            curve.append(alpha)
        expected.append(curve)
    np.testing.assert_allclose(result.extra_curves["alpha"], expected, rtol=1e-9)
    assert expected[1][4] == pytest.approx(alpha_star)  # below α*: jumps up at once
    np.testing.assert_allclose(result.forcings.alpha, [c[-1] for c in expected], rtol=1e-9)


def test_forced_jacobian_norms_subsample_and_ignore_padding(getkey):
    cell = ef.models.LeakyRNN(3, 5, 1, key=getkey(), tau=2.0, activation="identity")
    jac = 0.5 * np.eye(5) + 0.5 * np.asarray(cell.W_rec)
    task = ef.tasks.DelayedXOR(delay=40, pulse=2)
    batch = ef.tasks.sample_batch(task, 10, key=getkey())
    batch = batch._replace(info=batch.info | {"weight": jnp.arange(10) < 7})
    norms = forced_jacobian_norms(cell, ef.forcing.ErrorForcing(alpha=0.5), batch, trials=8, steps=32)
    assert norms.shape == (8, 32)
    np.testing.assert_allclose(norms[:7], np.linalg.svd(jac, compute_uv=False)[0], rtol=1e-10)
    np.testing.assert_array_equal(norms[7], 1.0)


# ---- diagnostics -----------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["rflo", "bptt"])
def test_diagnostics_curves_are_recorded_and_in_range(rule):
    result = ef.train(tiny(rule={"kind": rule}, analysis={"diagnostics": True}, epochs=3), progress=False)
    for row in result.rows:
        assert row["lyap_max_before"] is None and row["lyap_max_after"] is None  # --lyapunov off
        c = curves(row)
        expected = DIAGNOSTICS if rule == "rflo" else DIAGNOSTICS[:2]  # BPTT has no per-step updates
        assert set(DIAGNOSTICS) & set(c) == set(expected)
        assert all(len(c[k]) == 3 and all(math.isfinite(v) for v in c[k]) for k in expected)
        assert all(v > 0 for v in c["jacobian_norm"])
        assert all(abs(v) <= 1 + 1e-9 for k in ("cos_G_Wout", "local_alignment", "global_alignment") if k in c
                   for v in c[k])
        if rule == "rflo":
            assert all(0 <= v <= 1 + 1e-9 for v in c["update_efficiency"])
            assert 0.3 < c["local_alignment"][0] < 0.9999  # an approximation, not the gradient


def _trial(task, key):
    return ef.tasks.sample_batch(task, 1, key=key)._replace(info={"weight": jnp.ones(1)})


def test_step_updates_sum_to_the_rules_gradient(getkey):
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    trials = ef.tasks.sample_batch(task, 2, key=getkey())
    cell = ef.models.LeakyRNN(3, 4, 1, key=getkey())
    # offline e-prop / RFLO (the filtered-signal form) = their forward traces summed; TF: κ ≠ 1
    rules = (ef.rules.RFLO(), ef.rules.EProp(), ef.rules.RTRL(), ef.rules.EProp(online=True, lr=0.1))
    forcings = (ef.forcing.ErrorForcing(alpha=0.5, causal=True), ef.forcing.TeacherForcing(alpha=0.3))
    for rule, forcing in itertools.product(rules, forcings):
        key = getkey()
        _, grads, _ = eqx.filter_jit(rule.value_and_grad)(cell, forcing, trials, key=key)
        steps = eqx.filter_jit(rule.step_updates)(cell, forcing, trials, key=key)
        for g, u in zip(*(jax.tree.leaves(eqx.filter(t, eqx.is_inexact_array)) for t in (grads, steps))):
            assert u.shape == (task.n_steps,) + g.shape
            np.testing.assert_allclose(u.sum(0), g, rtol=1e-10, atol=1e-14)


def test_alignment_is_exact_for_rtrl_and_for_eprop_without_lateral_recurrence(getkey):
    task = ef.tasks.DelayedXOR(delay=3, pulse=2)
    trial = jax.tree_util.tree_map(lambda x: x[0], _trial(task, getkey()))
    cell = ef.models.LeakyRNN(3, 5, 1, key=getkey(), trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    diagnose = eqx.filter_jit(update_diagnostics)  # compiling beats op-by-op RTRL
    # teacher forcing's gradient flows through W⁺: the exact gradients must follow it too
    d = diagnose(cell, ef.forcing.TeacherForcing(alpha=0.5), ef.rules.RTRL(), trial, key=getkey())
    np.testing.assert_allclose([d["local_alignment"], d["global_alignment"]], 1.0, rtol=1e-10)
    # e-prop keeps each unit's own recurrence: exact when W_rec is diagonal and nothing else couples units
    diagonal = eqx.tree_at(lambda c: c.W_rec, cell, jnp.diag(jnp.diagonal(cell.W_rec)) * 5)
    d = diagnose(diagonal, ef.forcing.NoForcing(), ef.rules.EProp(), trial, key=getkey())
    np.testing.assert_allclose([d["local_alignment"], d["global_alignment"]], 1.0, rtol=1e-10)
    d = diagnose(cell, ef.forcing.NoForcing(), ef.rules.EProp(), trial, key=getkey())
    assert float(d["global_alignment"]) < 1 - 1e-6  # lateral recurrence: an approximation


# ---- command line ----------------------------------------------------------------------------

def run_cli(*args, cwd=None):
    env = os.environ | {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}  # tiny runs: compile time dominates
    return subprocess.run([sys.executable, "-m", "errorforcing.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=env)


def test_cli_train_with_every_option_then_analyze_lyapunov(tmp_path, capsys):
    out = tmp_path / "runs"
    small = tmp_path / "small.toml"
    small.write_text('train_trials = 24\nval_trials = 4\n[task]\noptions = {pulse = 2}\n')
    r = run_cli("train", "--config", str(small), "--task", "delayed-xor", "--delay", "4", "--seeds", "2",
                "--epochs", "2", "--hidden", "6", "--batch", "8", "--forcing", "tf", "--adaptive-alpha", "--lyapunov",
                "--diagnostics", "--rule", "rflo", "--floss-pre", "3", "--floss-k", "2", "--floss-every", "1",
                "--floss-local", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    config = json.loads(sqlite3.connect(out / "runs.sqlite").execute("SELECT config FROM runs").fetchone()[0])["config"]
    assert config["floss"]["pre"] == 3 and config["floss"]["k"] == 2 and config["floss"]["local"]
    assert config["forcing"]["adaptive"] and config["forcing"]["alpha"] == [1.0]
    members = RunStore(out, create=False).members()
    assert [m["alpha"] for m in members] == [1.0, 1.0]
    for m in members:
        assert math.isfinite(m["lyap_max_before"]) and math.isfinite(m["lyap_max_after"])
        # 3 batches per epoch: the first update after batch 5, in epoch 2
        assert m["curves"]["alpha"][0] == 1.0 and 0 <= m["curves"]["alpha"][1] < 1
        assert set(DIAGNOSTICS) <= set(m["curves"])

    fig = tmp_path / "spectrum.png"
    capsys.readouterr()
    assert main(["analyze", "lyapunov", str(out), "--run", run_id, "--out", str(fig), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_id"] == run_id and summary["k"] == 6 and len(summary["members"]) == 2
    for row, spectrum in zip(summary["members"], summary["spectra"]):
        assert row["lambda_max"] == spectrum[0] and row["lambda_sum"] == pytest.approx(sum(spectrum))
        assert row["alpha"] == 1.0 and row["seed"] in (0, 1)
    assert fig.stat().st_size > 5_000
    # the latest run, a table, the default figure
    assert main(["analyze", "lyapunov", str(out), "--k", "1"]) == 0
    assert "λ_max" in capsys.readouterr().out and (out / f"lyapunov-{run_id}.png").exists()


@pytest.mark.parametrize("args, field", [
    (["train", "--floss-k", "0"], "floss.k"),
    (["train", "--floss-pre", "2", "--floss-k", "9", "--hidden", "8"], "floss.k"),
    (["train", "--floss-pre", "-1"], "floss.pre"),
    (["train", "--adaptive-alpha", "--forcing", "wz-tf"], "forcing.adaptive"),
    (["compare", "--floss-every", "-2"], "floss.every"),
    (["analyze", "lyapunov", "nowhere"], "DIR"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, monkeypatch, args, field):
    monkeypatch.chdir(tmp_path)
    assert main([*args, *(["--out", str(tmp_path / "out")] if args[0] != "analyze" else [])]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_analyze_bad_run_exits_2(tmp_path, capsys):
    store = RunStore(tmp_path)
    store.begin_run("r1", json.dumps({"config": tiny().model_dump()}))
    store.finish_run("r1", [])
    with pytest.raises(StoredRunError, match="^--run: no stored parameters for run 'r1'"):
        stored_spectra(tmp_path)
    for args, field in ((["--run", "nope"], "--run"), (["--out", "x.pdf"], "--out")):
        assert main(["analyze", "lyapunov", str(tmp_path), *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and field in err, err
