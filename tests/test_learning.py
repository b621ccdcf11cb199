"""Learning actually happens (slow: minutes on 2 cores)."""

import pytest

import errorforcing as ef


@pytest.mark.slow
def test_error_forcing_bptt_learns_delayed_xor_at_a_short_delay():
    cfg = ef.TrainConfig(task={"name": "delayed-xor", "delay": 20}, forcing={"kind": "ef", "alpha": [0.5]},
                         seeds=8, epochs=60)
    result = ef.train(cfg, progress=False)
    learned = [r for r in result.rows if r["converged"]]
    assert len(learned) >= 6, [r["final_val_loss"] for r in result.rows]
    assert all(r["final_val_accuracy"] == 1.0 for r in learned)  # "no errors" on validation
    assert not any(r["diverged"] for r in result.rows)
