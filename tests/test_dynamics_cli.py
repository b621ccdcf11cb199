"""`ef.load_run` against the ensemble that training returned, and `analyze fixed-points` /
`analyze pca` end to end on a tiny trained run."""

import json
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.cli import main
from errorforcing.experiments import StoredRunError

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("dynamics") / "runs"
    cfg = ef.TrainConfig.model_validate(dict(
        task={"name": "delayed-xor", "delay": 4, "options": {"pulse": 2}}, model={"hidden": 6},
        forcing={"kind": "ef", "alpha": [0.2, 1.0]}, rule={"kind": "bptt"}, seeds=2, epochs=2, batch=8,
        train_trials=16, val_trials=4, out=str(out)))
    return out, ef.train(cfg, progress=False)


def run_cli(*args, cwd=None):
    env = os.environ | {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "ERRORFORCING_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "errorforcing.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


def test_load_run_rebuilds_the_trained_cells_and_rows(trained):
    out, result = trained
    run = ef.load_run(out)  # the latest finished run
    assert run.run_id == result.run_id and len(run) == 4 and run.config == result.config
    trained_leaves = jax.tree_util.tree_leaves(eqx.filter(result.ensemble.cells, eqx.is_array))
    loaded_leaves = jax.tree_util.tree_leaves(eqx.filter(run.cells, eqx.is_array))
    assert len(trained_leaves) == len(loaded_leaves)
    for a, b in zip(trained_leaves, loaded_leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    cell = run.cell(3)
    np.testing.assert_array_equal(cell.W_rec, result.ensemble.cells.W_rec[3])
    assert [(m.seed, m.alpha) for m in run.members] == [(r["seed"], r["alpha"]) for r in result.rows]
    assert [r["final_val_loss"] for r in run.rows] == [r["final_val_loss"] for r in result.rows]
    assert run.task.delay == 4
    assert [float(run.forcing(i).alpha) for i in range(4)] == pytest.approx([0.2, 0.2, 1.0, 1.0])
    usable = [i for i, r in enumerate(result.rows) if not r["diverged"]]
    expected = min(usable, key=lambda i: (not result.rows[i]["converged"], result.rows[i]["final_val_loss"]))
    assert run.best_member() == expected
    # the loaded network computes what the trained one computes
    x = jnp.array([1.0, 0.0, 1.0], cell.W_rec.dtype)
    trained_cell = jax.tree_util.tree_map(lambda a: a[3] if eqx.is_array(a) else a, result.ensemble.cells)
    np.testing.assert_array_equal(cell(cell.init_state(), x), trained_cell(trained_cell.init_state(), x))


def test_load_run_errors_name_the_argument(trained, tmp_path):
    out, _ = trained
    with pytest.raises(StoredRunError, match="^DIR: no results store"):
        ef.load_run(tmp_path)
    with pytest.raises(StoredRunError, match="^--run: no finished run 'nope'"):
        ef.load_run(out, "nope")
    with pytest.raises(StoredRunError, match="^--member: .* members 0..3, got 7"):
        ef.load_run(out).cell(7)


def test_cli_fixed_points_and_pca_end_to_end(trained, tmp_path):
    out, result = trained
    fig = tmp_path / "fp.png"
    r = run_cli("analyze", "fixed-points", str(out), "--member", "1", "--initial-states", "64", "--trials", "16",
                "--out", str(fig), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["run_id"] == result.run_id and s["member"] == 1 and s["seed"] == result.rows[1]["seed"]
    assert s["input"] == "delay" and s["x"] == [0.0, 0.0, 1.0]  # delayed XOR's delay input: the cue channel on
    assert s["n_initial"] == 64 and 1 <= s["n_fixed_points"] == len(s["points"])
    assert s["n_stable"] == sum(p["stable"] for p in s["points"])
    assert sum(p["count"] for p in s["points"]) == s["n_converged"] <= 64
    for p in s["points"]:
        assert p["speed"] < 1e-8 and len(p["pc"]) == 3
        assert p["stable"] == (p["max_abs_eigenvalue"] < 1) == (p["n_unstable"] == 0)
    assert len(s["conditions"]) == 4 and len(s["explained_variance_ratio"]) == 3
    assert fig.stat().st_size > 5_000 and s["figure"] == str(fig)
    # the same analysis from Python gives the same points
    run = ef.load_run(out)
    from errorforcing.experiments._dynamics import member_dynamics

    dyn = member_dynamics(run, 1, initial_states=64, trials=16)
    assert dyn.summary()["n_fixed_points"] == s["n_fixed_points"]
    np.testing.assert_allclose([p["speed"] for p in dyn.summary()["points"]], [p["speed"] for p in s["points"]],
                               atol=1e-12)



def test_cli_pca_in_process(trained, capsys):
    out, result = trained
    run = ef.load_run(out)
    assert main(["analyze", "pca", str(out), "--json", "--trials", "16", "--conditions", "label"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert sorted(s["conditions"]) == ["label=-1", "label=1"] and 1 <= s["participation_ratio"] <= 6
    assert s["member"] == run.best_member()
    assert np.isclose(sum(s["explained_variance"]) / s["total_variance"], sum(s["explained_variance_ratio"]))
    assert (out / f"pca-{result.run_id}-m{s['member']}.png").exists()


@pytest.mark.parametrize("args, field", [
    (["fixed-points", "{out}", "--input", "sideways"], "--input"),
    (["fixed-points", "{out}", "--input", "1,2"], "--input"),
    (["fixed-points", "{out}", "--member", "9"], "--member"),
    (["fixed-points", "{out}", "--run", "nope"], "--run"),
    (["fixed-points", "{out}", "--out", "fp.pdf"], "--out"),
    (["pca", "{out}", "--conditions", "colour"], "--conditions"),
    (["pca", "{empty}"], "DIR"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(trained, tmp_path, args, field, capsys,
                                                                monkeypatch):
    out, _ = trained
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in out.iterdir())
    assert main(["analyze", *[a.format(out=out, empty=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], err
    assert sorted(p.name for p in out.iterdir()) == before and list(tmp_path.iterdir()) == []


def test_report_has_a_dynamics_section_for_each_methods_best_network(trained, tmp_path):
    from errorforcing.experiments._dynamics import member_dynamics
    from errorforcing.plotting import write_report

    out, result = trained
    report = write_report(out, out=tmp_path / "report")
    (entry,) = report.data["dynamics"]  # one method (EF-BPTT) in this store
    run = ef.load_run(out)
    assert entry["method"] == "EF-BPTT" and entry["run_id"] == result.run_id
    assert entry["member"] == run.best_member()
    s = member_dynamics(run, entry["member"], trials=32, initial_states=256).summary()
    assert (entry["n_fixed_points"], entry["n_stable"]) == (s["n_fixed_points"], s["n_stable"])
    page = report.html.read_text()
    assert '<section id="dynamics">' in page and "<h2>Dynamics</h2>" in page
    for key in ("fixed_points_figure", "pca_figure"):
        assert f'src="{entry[key]}"' in page and (tmp_path / "report" / entry[key]).stat().st_size > 5_000
    assert json.loads((tmp_path / "report" / "report.json").read_text())["dynamics"] == report.data["dynamics"]
    plain = write_report(out, out=tmp_path / "plain", dynamics=False)
    assert plain.data["dynamics"] == [] and "Dynamics" not in plain.html.read_text()


def test_compare_dynamics_table_summarises_each_arms_members(trained, tmp_path):
    from errorforcing.experiments._dynamics import compare_dynamics, member_dynamics
    from errorforcing.plotting import dynamics_comparison_figure

    out, result = trained
    arms = [{"label": "EF α=0.2", "run_id": result.run_id, "alpha": 0.2},
            {"label": "EF α=1", "run_id": result.run_id, "alpha": 1.0}]
    got = compare_dynamics(out, arms, trials=16, initial_states=64)
    run = ef.load_run(out)
    for arm, row in zip(arms, got["table"]):
        members = [i for i, r in enumerate(run.rows) if r["alpha"] == arm["alpha"] and not r["diverged"]]
        by_hand = [member_dynamics(run, i, trials=16, initial_states=64).summary() for i in members]
        assert [s["member"] for s in got["summaries"][arm["label"]]] == members
        n_stable = [s["n_stable"] for s in by_hand]
        assert row["method"] == arm["label"] and row["members"] == len(members)
        assert row["median_stable"] == np.median(n_stable) and row["with_four_stable"] == n_stable.count(4)
        assert (row["min_stable"], row["max_stable"]) == (min(n_stable), max(n_stable))
        lam = [p["max_abs_eigenvalue"] for s in by_hand for p in s["points"] if p["stable"]]
        assert row["median_stable_max_abs_eigenvalue"] == (np.median(lam) if lam else None)
    (fig,) = dynamics_comparison_figure(got["summaries"], tmp_path / "cmp.png", forcings=got["forcings"])
    assert fig.stat().st_size > 5_000


def test_load_run_reports_a_stored_config_that_no_longer_validates(tmp_path):
    from errorforcing.store import RunStore

    store = RunStore(tmp_path)
    store.begin_run("old", json.dumps({"config": {"task": {"name": "delayed-xor"}, "no_such_field": 1}}))
    store.finish_run("old", [])
    store.save_params("old", jnp.zeros(1))
    with pytest.raises(StoredRunError, match="^--run: the stored config of run 'old' does not validate.*no_such_field"):
        ef.load_run(tmp_path)


def test_parameters_load_in_the_dtype_they_were_saved_in(tmp_path):
    """A run trained in float32 (the default) is analysed in a process with jax_enable_x64 (and the
    reverse): the skeleton is built in the other dtype, the stored values come back unchanged."""
    from errorforcing.store import RunStore

    store = RunStore(tmp_path)
    cell = ef.models.LeakyRNN(1, 3, 1, key=jax.random.key(0))
    saved = jax.tree.map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, cell)
    store.save_params("f32", saved)
    as64 = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, cell)
    loaded = store.load_params("f32", as64)
    assert loaded.W_rec.dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(saved)):
        np.testing.assert_array_equal(a, b)
    store.save_params("f64", as64)
    assert store.load_params("f64", saved).W_rec.dtype == jnp.float64


def test_fixed_points_figure_of_a_one_unit_network(tmp_path, capsys):
    """A network with fewer units than drawn PC axes (the Williams–Zipser one-unit oscillator):
    the state-space plot pads the missing coordinates instead of crashing."""
    out = tmp_path / "runs"
    ef.train(ef.TrainConfig.model_validate(dict(
        task={"name": "delayed-xor", "delay": 4, "options": {"pulse": 2}}, model={"hidden": 1},
        forcing={"kind": "ef", "alpha": [0.5]}, seeds=1, epochs=1, batch=8, train_trials=8, val_trials=4,
        out=str(out))), progress=False)
    figure = tmp_path / "fp.png"
    assert main(["analyze", "fixed-points", str(out), "--out", str(figure), "--json"]) == 0
    assert figure.stat().st_size > 0 and json.loads(capsys.readouterr().out)
