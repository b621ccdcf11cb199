"""Every registered rule × every forcing trains through `ef.train` (table-driven, like optax's
alias test): two epochs, finite losses, the store rows well-formed.

The trainings run in a fresh process per group: this module compiles ~40 programs, and at the
end of a long in-process test session XLA's CPU compiler has crashed on them (a segfault in
`backend_compile`, never reproducible in a fresh process)."""

import json
import math
import os
import subprocess
import sys

import pytest

import errorforcing as ef
from errorforcing.experiments import FORCINGS, RULES
from errorforcing.experiments._registry import ONLINE_RULES

LEAKY_FORCINGS = [f for f in FORCINGS if f != "wz-tf"]

_RUNNER = """
import json, sys
import errorforcing as ef
out = []
for config in json.loads(sys.stdin.read()):
    result = ef.train(ef.TrainConfig.model_validate(config), progress=False)
    out.append(result.rows)
print(json.dumps(out))
"""


def train_rows(configs: list) -> list[list[dict]]:
    """`ef.train(config).rows` for each config, in one fresh process (compile-only XLA flags)."""
    env = os.environ | {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "JAX_ENABLE_X64": "1"}
    payload = json.dumps([c.model_dump() for c in configs])
    r = subprocess.run([sys.executable, "-c", _RUNNER], input=payload, capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def tiny(rule_kind, forcing_kind, **extra):
    config = dict(task={"name": "delayed-xor", "delay": 3, "options": {"pulse": 2}},
                  model={"hidden": 6},
                  forcing={"kind": forcing_kind}
                  | ({} if forcing_kind == "none" else {"alpha": [0.0, 0.5]})  # none refuses an α grid
                  | ({"process_noise": 0.1} if forcing_kind == "kalman" else {}),  # kalman needs its σ
                  rule={"kind": rule_kind}, seeds=1, epochs=2, batch=8, train_trials=12, val_trials=4)
    for k, v in extra.items():
        # a task replaces the default one whole (its options, e.g. a delay, may not apply to another task)
        config[k] = v if k == "task" else config.get(k, {}) | v if isinstance(v, dict) else v
    return ef.TrainConfig.model_validate(config)


def check_rows(rule, forcings, all_rows):
    for forcing, rows in zip(forcings, all_rows):
        assert len(rows) == (1 if forcing == "none" else 2), forcing
        for row in rows:
            assert row["epochs_run"] == 2 and row["rule"] == rule and row["forcing"] == forcing
            assert math.isfinite(row["final_val_loss"]) and not row["diverged"], (rule, forcing)


# The default suite trains every rule with error forcing and with one other forcing in turn,
# so each forcing meets two or three rules; the whole table is opt-in (-m slow).
OTHER_FORCINGS = [f for f in LEAKY_FORCINGS if f != "ef"]
SAMPLED = {rule: ["ef", OTHER_FORCINGS[i % len(OTHER_FORCINGS)]] for i, rule in enumerate(RULES)}


@pytest.fixture(scope="module")
def sampled_rows() -> dict[str, list[list[dict]]]:
    """The sampled table's rows, trained in one fresh process (one start-up instead of one per rule)."""
    configs = [tiny(rule, forcing) for rule in RULES for forcing in SAMPLED[rule]]
    rows = iter(train_rows(configs))
    return {rule: [next(rows) for _ in SAMPLED[rule]] for rule in RULES}


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_trains_with_error_forcing_and_another_forcing(rule, sampled_rows):
    check_rows(rule, SAMPLED[rule], sampled_rows[rule])


def test_the_sampled_table_meets_every_forcing():
    assert {f for pair in SAMPLED.values() for f in pair} == set(LEAKY_FORCINGS)


@pytest.mark.slow
@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_with_every_forcing_trains(rule):
    check_rows(rule, LEAKY_FORCINGS, train_rows([tiny(rule, forcing) for forcing in LEAKY_FORCINGS]))


def test_every_online_rule_trains_online_under_error_forcing():
    """Every rule with a real-time form (the registry's ONLINE_RULES) trains with `online=True`
    through `ef.train` (error forcing; the forcing × online-rule table is tests/test_rules.py's)."""
    all_rows = train_rows([tiny(rule, "ef", rule={"online": True, "online_lr": 0.05}) for rule in ONLINE_RULES])
    for rule, rows in zip(ONLINE_RULES, all_rows):
        check_rows(rule, ["ef"], [rows])


def test_other_models_train():
    """Williams–Zipser net with its teacher forcing (BPTT and RTRL); GRU/LSTM with BPTT and EF."""
    wz = dict(model={"kind": "williams-zipser", "hidden": 4},
              task={"name": "pipelined-xor", "options": {"lag": 2, "n_steps": 12}})
    configs = [tiny(rule, "wz-tf", **wz) for rule in ("bptt", "rtrl")]
    configs += [tiny("bptt", "ef", model={"kind": m, "hidden": 5}) for m in ("gru", "lstm")]
    for rows in train_rows(configs):
        assert rows and all(math.isfinite(r["final_val_loss"]) for r in rows)


def test_learned_feedback_and_alignment_curves_are_recorded():
    (rows,) = train_rows([tiny("rflo", "feedback", forcing={"learn_feedback": True, "options": {"feedback_lr": 0.1}},
                               rule={"feedback": "random", "log_alignment": True})])
    curves = json.loads(rows[1]["curves"])
    for name in ("cos_F_Wpinv", "cos_F_Wout", "cos_B_Wout", "grad_alignment_W_rec", "grad_alignment_W_out"):
        assert len(curves[name]) == 2 and all(-1.0 <= v <= 1.0 for v in curves[name]), name
    assert curves["cos_F_Wout"][0] != curves["cos_F_Wout"][1]  # F learned
    # W_out learns with its exact local gradient under RFLO
    assert abs(curves["grad_alignment_W_out"][0] - 1.0) < 1e-5
