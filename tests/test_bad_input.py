"""Bad input, table-driven: every case exits 2 with at most one stderr line that names the
field or file, no traceback, and leaves the working directory (with an existing results
directory in it) byte for byte as it was. In-process (`main(argv)`): nothing here compiles."""

import hashlib
import json
from pathlib import Path

import pytest

from errorforcing.cli import main
from errorforcing.experiments import TrainConfig
from errorforcing.experiments._train import config_record
from errorforcing.store import RunStore

SPEC_OK = '[base]\nseeds = 1\nepochs = 1\nbatch = 8\nmodel.hidden = 4\ntask.delay = 2\n[grid]\n"forcing.kind" = ["ef"]\n'

# (id, argv, text the one error line must contain). OUT is an existing results directory
# with one finished run; EMPTY a store without a finished run; FILE an existing plain file.
CASES = [
    # 3. combinations that cannot run, sizes that cannot fit
    ("tf-lstm", ["train", "--forcing", "tf", "--model", "lstm", "--out", "OUT"], "forcing.kind"),
    ("wz-tf-default-model", ["train", "--forcing", "wz-tf", "--out", "OUT"], "forcing.kind"),
    ("wz-model-default-forcing", ["train", "--model", "williams-zipser", "--out", "OUT"], "model.kind"),
    ("compare-lstm", ["compare", "--model", "lstm", "--out", "OUT"], "model.kind"),
    ("rtrl-500", ["train", "--rule", "rtrl", "--hidden", "500", "--out", "OUT"], "model.hidden: RTRL needs ~"),
    ("hidden-1e9", ["train", "--hidden", "1000000000", "--out", "OUT"], "model.hidden"),
    ("seeds-1e12", ["train", "--seeds", "1000000000000", "--out", "OUT"], "seeds"),
    ("delay-1e12", ["train", "--delay", "1000000000000", "--out", "OUT"], "task.delay"),
    # 4. options with no effect
    ("bptt-truncation", ["train", "--rule", "bptt", "--truncation", "50", "--out", "OUT"], "rule.truncation"),
    ("bptt-feedback", ["train", "--rule", "bptt", "--feedback", "random", "--out", "OUT"], "rule.feedback"),
    ("ef-learn-feedback", ["train", "--forcing", "ef", "--learn-feedback", "--out", "OUT"], "forcing.learn_feedback"),
    ("tf-causal", ["train", "--forcing", "tf", "--causal", "--out", "OUT"], "forcing.causal"),
    ("gru-gain", ["train", "--model", "gru", "--gain", "1.5", "--out", "OUT"], "model.gain"),
    ("gru-activation", ["train", "--model", "gru", "--activation", "relu", "--out", "OUT"], "model.activation"),
    ("gru-readout", ["train", "--model", "gru", "--readout", "state", "--out", "OUT"], "model.readout"),
    ("pipelined-xor-delay", ["train", "--task", "pipelined-xor", "--delay", "500", "--out", "OUT"], "task.delay"),
    ("none-alpha", ["train", "--forcing", "none", "--alpha", "0.7", "--out", "OUT"], "forcing.alpha"),
    ("none-adaptive", ["train", "--forcing", "none", "--adaptive-alpha", "--out", "OUT"], "forcing.adaptive"),
    # ... one typed config per variant (issue 12): each refuses the options of the others
    ("bptt-online", ["train", "--rule", "bptt", "--online", "--online-lr", "0.1", "--out", "OUT"], "rule.online"),
    ("bptt-truncation-5", ["train", "--rule", "bptt", "--truncation", "5", "--out", "OUT"], "rule.truncation"),
    ("rtrl-checkpoint", ["train", "--rule", "rtrl", "--checkpoint", "--out", "OUT"], "rule.checkpoint"),
    ("none-causal", ["train", "--forcing", "none", "--causal", "--out", "OUT"], "forcing.causal"),
    ("ef-ratio", ["train", "--forcing", "ef", "--ratio", "2", "--out", "OUT"], "--ratio"),
    ("ef-obs-noise", ["train", "--forcing", "ef", "--obs-noise", "2", "--out", "OUT"], "forcing.obs_noise"),
    ("config-kalman-eps", ["train", "--config", "CFG:[forcing]\nkind = 'kalman'\nprocess_noise = 0.1\neps = 1e-3\n",
                           "--out", "OUT"], "forcing.eps"),
    ("config-rule-typo", ["train", "--config", "CFG:[rule]\nkind = 'tbptt'\ntruncaton = 5\n", "--out", "OUT"],
     "rule.truncaton"),
    ("floss-lr-off", ["train", "--floss-lr", "0.1", "--out", "OUT"], "floss.lr"),
    ("floss-steps-off", ["train", "--floss-steps", "10", "--out", "OUT"], "floss.steps"),
    ("config-bptt-truncation", ["train", "--config", "CFG:[rule]\nkind = 'bptt'\ntruncation = 7\n", "--out", "OUT"],
     "rule.truncation"),
    # 5. non-finite numbers
    ("lr-nan", ["train", "--lr", "nan", "--out", "OUT"], "optim.lr"),
    ("lr-inf", ["train", "--lr", "inf", "--out", "OUT"], "optim.lr"),
    ("lr-1e999", ["train", "--lr", "1e999", "--out", "OUT"], "optim.lr"),
    ("gain-inf", ["train", "--gain", "inf", "--out", "OUT"], "model.gain"),
    ("threshold-nan", ["train", "--threshold", "nan", "--out", "OUT"], "threshold"),
    ("config-nan", ["train", "--config", "CFG:divergence = nan\n", "--out", "OUT"], "divergence"),
    ("alpha-nan", ["train", "--alpha", "nan", "--out", "OUT"], "forcing.alpha"),
    # 6. tracebacks before
    ("train-out-file", ["train", "--epochs", "1", "--out", "FILE"], "FILE"),
    ("sweep-out-file", ["sweep", "SPEC", "--out", "FILE"], "FILE"),
    ("reproduce-out-file", ["reproduce", "ef-fig2", "--quick", "--out", "FILE"], "FILE"),
    ("report-out-file", ["report", "OUT", "--out", "FILE"], "FILE"),
    ("seed-too-large", ["train", "--seed", str(2**64), "--out", "OUT"], "seed"),
    ("task-options-unknown", ["train", "--config", "CFG:[task]\nname = 'pipelined-xor'\n[task.options]\nbogus = 1\n",
                              "--out", "OUT"], "task.options"),
    ("tasks-show-gif", ["tasks", "show", "delayed-xor", "--out", "OUT/trial.gif"], "--out"),
    # 7. junk in lists
    ("alpha-empty-item", ["train", "--alpha", "0.1,,0.5", "--out", "OUT"], "--alpha"),
    ("alpha-duplicate", ["train", "--alpha", "0.5,0.5", "--out", "OUT"], "--alpha"),
    ("lr-duplicate", ["train", "--lr", "1e-3,1e-3", "--out", "OUT"], "--lr"),
    ("config-alpha-duplicate", ["train", "--config", "CFG:[forcing]\nalpha = [0.5, 0.5]\n", "--out", "OUT"],
     "forcing.alpha"),
    # 12. smaller
    ("export-nothing-finished", ["export", "EMPTY", "--csv"], "no finished runs"),
    ("export-csv-xlsx", ["export", "OUT", "--csv", "--out", "OUT/x.xlsx"], "--out"),
    ("tasks-show-negative-seed", ["tasks", "show", "delayed-xor", "--seed", "-1", "--out", "OUT/t.png"], "--seed"),
    ("empty-grid", ["sweep", "SPEC:[base]\nseeds = 1\n[grid]\n", "--out", "OUT"], "grid"),
    ("sweep-incompatible-job", ["sweep", "SPEC:[base]\nmodel.kind = 'lstm'\n[grid]\n\"forcing.kind\" = ['ef', 'tf']\n",
                                "--out", "OUT"], "forcing.kind"),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _setup(root: Path) -> dict[str, str]:
    out, empty = root / "out", root / "empty"
    store = RunStore(out)
    store.begin_run("r1", config_record(TrainConfig(seeds=1, epochs=1)))
    store.finish_run("r1", [dict(run_id="r1", member=0, seed=0, task="delayed-xor", rule="bptt", forcing="ef",
                                 alpha=0.5, lr=3e-4, converged=0, diverged=0, epochs_run=1, final_val_loss=0.3,
                                 curves=json.dumps({"train_loss": [0.3], "val_loss": [0.3]}))])
    RunStore(empty)
    (root / "afile").write_text("not a directory\n")
    (root / "spec.toml").write_text(SPEC_OK)
    return {"OUT": str(out), "EMPTY": str(empty), "FILE": str(root / "afile"), "SPEC": str(root / "spec.toml")}


def _resolve(argv: list[str], names: dict[str, str], root: Path) -> list[str]:
    resolved = []
    for i, a in enumerate(argv):
        for prefix in ("CFG:", "SPEC:"):
            if a.startswith(prefix):
                path = root / f"given{i}.toml"
                path.write_text(a[len(prefix):])
                a = str(path)
        for name, value in names.items():
            if a == name or a.startswith(name + "/"):
                a = value + a[len(name):]
        resolved.append(a)
    return resolved


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    names = _setup(tmp_path)
    argv = _resolve(argv, names, tmp_path)
    expected = names.get(expected, expected)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and expected in err[0], err[0]
    assert _snapshot(tmp_path) == before


def test_dry_run_flags_jobs_that_cannot_run(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text("[base]\nmodel.kind = 'lstm'\n[grid]\n\"forcing.kind\" = ['ef', 'tf']\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run", "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    status = {j["label"]: j["status"] for j in jobs}
    assert status == {"forcing.kind=ef": "pending", "forcing.kind=tf": "cannot run"}
    assert not (tmp_path / "o").exists()


def test_compare_config_file_is_not_overridden_by_compare_defaults(tmp_path):
    from errorforcing.cli import COMPARE_DEFAULTS, build_config

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("seeds = 3\nepochs = 7\n[task]\ndelay = 12\n")
    cfg = build_config(cfg_file, {"epochs": None}, defaults=COMPARE_DEFAULTS)
    assert (cfg.seeds, cfg.epochs, cfg.task.delay) == (3, 7, 12)
    cfg = build_config(cfg_file, {"epochs": 9}, defaults=COMPARE_DEFAULTS)  # flags override the file
    assert (cfg.seeds, cfg.epochs) == (3, 9)
    cfg = build_config(None, {}, defaults=COMPARE_DEFAULTS)  # and without a file, the defaults hold
    assert (cfg.seeds, cfg.epochs, cfg.task.delay) == (8, 100, 400)
    cfg = build_config(None, {"task.name": "sine"}, defaults=COMPARE_DEFAULTS)  # a task without a delay
    assert cfg.task.delay == TrainConfig().task.delay


def test_memory_estimate_names_the_limit_and_the_way_out(monkeypatch):
    from errorforcing.experiments import InfeasibleConfig, _preflight, estimate_memory

    cfg = TrainConfig(rule={"kind": "rtrl"}, model={"hidden": 500}, seeds=1, forcing={"alpha": [0.5]})
    est = estimate_memory(cfg)
    # RTRL: 3 influence matrices N × P_rec per trial; P_rec = N² + N n_in + N for the leaky RNN
    n, n_in = 500, 3
    p_rec = n * n + n * n_in + n
    itemsize = 8  # the tests run in float64
    assert est.bytes >= 128 * 3 * n * p_rec * itemsize
    monkeypatch.setattr(_preflight, "memory_limit", lambda: (64e9, "a 64 GB test limit"))
    with pytest.raises(InfeasibleConfig, match=r"model.hidden: RTRL needs ~.* for N = 500.*64 GB test limit.*"
                                               r"use --rule eprop, or N ≤ \d+"):
        _preflight.check_memory(cfg)
    n_max = int(str(pytest.raises(InfeasibleConfig, _preflight.check_memory, cfg).value).split("N ≤ ")[1].split(",")[0])
    fits = cfg.model_copy(update={"model": cfg.model.model_copy(update={"hidden": n_max})})
    assert estimate_memory(fits).bytes <= 64e9 < estimate_memory(
        cfg.model_copy(update={"model": cfg.model.model_copy(update={"hidden": n_max + 1})})).bytes
