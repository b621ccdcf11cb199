"""The cli package: `python -m errorforcing`, --json of every command that prints it, and the
grouped --help with the defaults that apply."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from errorforcing.cli import COMPARE_DEFAULTS, app, main
from errorforcing.experiments import TrainConfig


def test_python_dash_m_errorforcing_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "errorforcing", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert all(c in r.stdout for c in ("train", "compare", "sweep", "reproduce", "analyze"))


def test_claims_json_is_json(tmp_path, capsys):
    # `claims --json` passed default=str to a dumps that took one argument: a TypeError, not JSON
    from errorforcing.reproductions.kaleb import METHODS

    summary = {"methods": {m: {"best_learning_rate": 1e-3, "test_after_per_target_position_mse":
                               [0.1 * (i + 1) for i in range(8)]} for m in METHODS}}
    (tmp_path / "kaleb-adaptation.json").write_text(json.dumps(summary))
    assert main(["claims", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [c["claim"] for c in printed] == [c["claim"] for c in json.loads((tmp_path / "claims.json").read_text())]


def _help(*command: str) -> str:
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


def _line(text: str, flag: str) -> str:
    """The flag's row and the next one (the default may wrap onto its own row)."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if f" {flag} " in line)
    return " ".join(lines[i:i + 2])


def test_train_help_groups_options_in_panels_with_their_defaults():
    text = _help("train")
    panels = [line.split("─ ")[1].split(" ─")[0] for line in text.splitlines() if line.startswith("╭─ ")]
    assert panels == ["Options", "Task", "Model", "Forcing", "Learning rule", "Schedule", "Dynamics",
                      "Input and output"]
    d = TrainConfig()
    assert f"[default: ({d.model.hidden})]" in _line(text, "--hidden")
    assert f"[default: ({d.task.delay})]" in _line(text, "--delay")
    assert f"[default: ({d.seeds})]" in _line(text, "--seeds")
    assert f"[default: ({d.optim.lr[0]:g})]" in _line(text, "--lr")
    assert "[default: (--offline)]" in _line(text, "--online")


def test_compare_help_shows_its_own_defaults():
    text = _help("compare")
    assert f"[default: ({COMPARE_DEFAULTS['task.delay']})]" in _line(text, "--delay")
    assert f"[default: ({COMPARE_DEFAULTS['seeds']})]" in _line(text, "--seeds")
    assert f"[default: ({COMPARE_DEFAULTS['epochs']})]" in _line(text, "--epochs")


def test_reproduce_help_names_every_reproduction():
    from errorforcing.reproductions import NAMES

    text = " ".join(_help("reproduce").split())
    assert all(name in text for name in NAMES), [n for n in NAMES if n not in text]
