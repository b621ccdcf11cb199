"""Every registered rule × every forcing trains through `ef.train` (table-driven, like optax's
alias test): two epochs, finite losses, the store rows well-formed."""

import math

import jax
import pytest

import errorforcing as ef
from errorforcing.experiments import FORCINGS, RULES

LEAKY_FORCINGS = [f for f in FORCINGS if f != "wz-tf"]


pytestmark = pytest.mark.usefixtures("fast_compile")


def tiny(rule_kind, forcing_kind, **extra):
    config = dict(task={"name": "delayed-xor", "delay": 3, "options": {"pulse": 2}},
                  model={"hidden": 6}, forcing={"kind": forcing_kind, "alpha": [0.0, 0.5]},
                  rule={"kind": rule_kind}, seeds=1, epochs=2, batch=8, train_trials=12, val_trials=4)
    for k, v in extra.items():
        config[k] = config.get(k, {}) | v if isinstance(v, dict) else v
    return ef.TrainConfig.model_validate(config)


@pytest.mark.parametrize("forcing", LEAKY_FORCINGS)
@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_with_every_forcing_trains(rule, forcing):
    result = ef.train(tiny(rule, forcing), progress=False)
    assert len(result.rows) == (1 if forcing == "none" else 2)
    for row in result.rows:
        assert row["epochs_run"] == 2 and row["rule"] == rule and row["forcing"] == forcing
        assert math.isfinite(row["final_val_loss"]) and not row["diverged"]


@pytest.mark.parametrize("rule", ["bptt", "rtrl"])
def test_williams_zipser_net_with_its_teacher_forcing(rule):
    result = ef.train(tiny(rule, "wz-tf", model={"kind": "williams-zipser", "hidden": 4},
                           task={"name": "pipelined-xor", "options": {"lag": 2, "n_steps": 12}}),
                      progress=False)
    assert all(math.isfinite(r["final_val_loss"]) for r in result.rows)


@pytest.mark.parametrize("model", ["gru", "lstm"])
def test_gated_baselines_train_with_bptt_and_error_forcing(model):
    result = ef.train(tiny("bptt", "ef", model={"kind": model, "hidden": 5}), progress=False)
    assert all(math.isfinite(r["final_val_loss"]) for r in result.rows)


def test_learned_feedback_and_alignment_curves_are_recorded():
    import json

    result = ef.train(tiny("rflo", "feedback", forcing={"learn_feedback": True, "options": {"feedback_lr": 0.1}},
                           rule={"feedback": "random", "log_alignment": True}), progress=False)
    curves = json.loads(result.rows[1]["curves"])
    for name in ("cos_F_Wpinv", "cos_F_Wout", "cos_B_Wout", "grad_alignment_W_rec", "grad_alignment_W_out"):
        assert len(curves[name]) == 2 and all(-1.0 <= v <= 1.0 for v in curves[name]), name
    assert curves["cos_F_Wout"][0] != curves["cos_F_Wout"][1]  # F learned
    # W_out learns with its exact local gradient under RFLO
    assert abs(curves["grad_alignment_W_out"][0] - 1.0) < 1e-5
