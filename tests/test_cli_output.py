"""What the CLI prints: valid JSON for non-finite numbers, settings grouped by every
member-varying hyperparameter, tables that never cut a name (issue: robust CLI)."""

import json
import math

import pytest

from errorforcing.cli import dumps, main
from errorforcing.cli._output import setting_keys
from errorforcing.experiments import TASKS
from errorforcing.experiments._summary import summarize


def test_json_writes_null_for_non_finite_numbers():
    text = dumps({"loss": float("nan"), "up": float("inf"), "rows": [1.5, -math.inf], "ok": 2})
    assert json.loads(text) == {"loss": None, "up": None, "rows": [1.5, None], "ok": 2}
    assert "NaN" not in text and "Infinity" not in text


def _row(alpha, lr, converged):
    return dict(task="delayed-xor", rule="bptt", forcing="ef", alpha=alpha, lr=lr, converged=converged,
                converged_epoch=3 if converged else None, diverged=0, final_val_loss=0.1, test_loss=0.1)


def test_settings_are_grouped_by_learning_rate_when_it_varies():
    rows = [_row(0.5, 1e-2, 1), _row(0.5, 1e-2, 1), _row(0.5, 10.0, 0), _row(0.5, 10.0, 0)]
    settings = summarize(rows, keys=setting_keys(rows))
    assert sorted((s["lr"], s["learned"], s["n"]) for s in settings) == [(1e-2, 2, 2), (10.0, 0, 2)]
    one_lr = [_row(0.5, 1e-2, 1), _row(1.0, 1e-2, 0)]
    assert "lr" not in setting_keys(one_lr) and len(summarize(one_lr, keys=setting_keys(one_lr))) == 2


@pytest.mark.parametrize("columns", ["80", "60"])
def test_tasks_table_never_cuts_a_name(columns, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", columns)
    assert main(["tasks"]) in (0, None)
    out = capsys.readouterr().out
    for name in TASKS:
        assert name in out, name
