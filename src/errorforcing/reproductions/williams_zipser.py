"""Williams & Zipser (1989) §3.5: learning to oscillate with RTRL, with and without teacher forcing."""

from __future__ import annotations

from ._claims import AllOf, Arm, FractionLearned
from ._spec import quick_note, spec

PAPER = "Williams & Zipser (1989), Neural Computation 1(2), §3.5"
ONLINE_LR = 0.5  # the paper gives no η for §3.5; 0.5 learns the 3-unit pipelined XOR in real time (README)


def oscillators(quick: bool, *, wide: bool = False):
    """As the paper: a single unit trained to produce 0101…, and a 2-unit net with one unit
    trained to produce 00110011… or a sinusoid of period 25 (the other unit free:
    `train_partner = false`). `wide=True` (`wz-oscillators-wide`) is the earlier variant:
    6 units, every output unit supervised."""
    # As the paper: real-time RTRL, the weights changed at every step of one continual stream
    # (plain SGD, η = ONLINE_LR), checked every 500 steps on a fresh unforced stream from rest,
    # judged up to phase after one cycle (the task's default `phase_free`, `Oscillation`).
    base = {"model": {"kind": "williams-zipser"}, "rule": {"kind": "rtrl", "online": True, "online_lr": ONLINE_LR},
            "task": {"kind": "oscillation"}, "continual": True, "steps": 100_000, "val_every": 500}
    seeds, note = 10, ""
    if quick:
        base, seeds = base | {"steps": 20_000}, 6
        note = quick_note("6 seeds, 20,000 steps")
    name = "wz-oscillators-wide" if wide else "wz-oscillators"
    forcings = {"forcing.kind": ["none", "wz-tf"], "forcing.alpha": [[0.0], [1.0]]}
    if wide:
        patterns = [{"pattern": "01"}, {"pattern": "0011"}, {"pattern": "sine", "period": 25}]
        return [spec(name, base=base | {"model": {"kind": "williams-zipser", "hidden": 6}}, seeds=seeds, note=note,
                     grid={"task.options": patterns}, zips=[forcings])]
    patterns = {"task.options": [{"pattern": "01"}, {"pattern": "0011", "train_partner": False},
                                 {"pattern": "sine", "period": 25, "train_partner": False}],
                "model.hidden": [1, 2, 2]}
    return [spec(name, base=base, seeds=seeds, note=note, zips=[patterns, forcings])]


def _claims():
    parts = []
    for pattern in ("01", "0011", "sine"):
        where = {"config.task.options.pattern": pattern}
        parts.append(FractionLearned(f"{pattern}: TF-RTRL > RTRL", "§3.5",
                                     Arm("TF-RTRL", where | {"forcing": "wz-tf"}), Arm("RTRL", where | {"forcing": "none"})))
    return (AllOf("teacher forcing makes the oscillators learnable: RTRL with teacher forcing learns in a larger "
                  "fraction than without, for 0101…, 00110011… and the sinusoid", PAPER, tuple(parts)),)


CLAIMS = _claims()
DIFFERENCES = ("Logistic units, small uniform initial weights, real-time RTRL (η = 0.5, SGD) on one continual "
               "stream; success = MSE < 0.01 at 10 checks in a row on a fresh unforced stream from rest (state 0), "
               "judged up to phase: the minimum over the cycle's shifts of the target of the MSE after one cycle "
               "of settling (task option phase_free, default on). The paper judges the oscillation a network "
               "produces and states no criterion; a net run free from rest oscillates at a phase its weights "
               "set (a 1-unit net from y = 0 cannot produce 0,1,0,… from its first step).")
