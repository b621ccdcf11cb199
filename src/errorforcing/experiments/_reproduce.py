"""One-command reproductions: each is a function `quick -> list[SweepSpec]` in REPRODUCTIONS,
run as sweeps into one directory and then reported.

Specs name registry entries only. A part whose task, model, forcing or rule is not registered
(yet) is skipped with a printed note and runs once the name exists; rerunning `reproduce` on
the same directory then computes only what is missing. To add a reproduction, write a function
returning sweep specs and register it in REPRODUCTIONS; a workflow that is not a sweep
(`kaleb-adaptation`: pre-training, then online adaptation) goes in DIRECT_REPRODUCTIONS.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import tomli_w

from ._config import ALPHA_GRID
from ._driver import SweepOutcome, run_sweep
from ._executors import Executor
from ._sweep import SweepSpec, expand, parse_spec

Reproduction = Callable[[bool], list[SweepSpec]]


def spec(name: str, *, base: dict[str, Any], grid: dict[str, list] | None = None,
         zips: list[dict[str, list]] | None = None, seeds: int, note: str = "") -> SweepSpec:
    """A SweepSpec built from Python values, keeping its TOML text (stored with the results)."""
    data: dict[str, Any] = {"name": name, "seeds": seeds}
    if note:
        data["note"] = note
    data["base"] = base
    if grid:
        data["grid"] = grid
    if zips:
        data["zip"] = zips
    return parse_spec(tomli_w.dumps(data), default_name=name)


def _quick_note(what: str) -> str:
    return f"QUICK run ({what}); not the paper's settings: run without --quick for those"


# ----- Error Forcing paper (Sağtekin et al. 2025), SPEC §5 -----
EF_PROTOCOL = {"epochs": 200, "batch": 128, "train_trials": 461, "val_trials": 51,
               "optim": {"name": "adam", "lr": [3e-4]}, "model": {"hidden": 50}}
# The paper varies the delay but its text does not list the values; these span short to long.
EF_DELAYS = [50, 100, 200, 400]


def _methods(alphas: list[float], rule: str = "bptt", gated: bool = True) -> dict[str, list]:
    """The Fig. 2 arms as one zip: RULE, TF-RULE and EF-RULE on the leaky RNN, and GRU/LSTM + RULE."""
    kinds = ["leaky", "leaky", "leaky"] + (["gru", "lstm"] if gated else [])
    forcing = ["none", "tf", "ef"] + (["none", "none"] if gated else [])
    alpha = [[0.0], alphas, alphas] + ([[0.0], [0.0]] if gated else [])
    return {"model.kind": kinds, "forcing.kind": forcing, "forcing.alpha": alpha, "rule.kind": [rule] * len(kinds)}


def ef_fig2(quick: bool) -> list[SweepSpec]:
    """EF paper Fig. 2: fraction learned and epochs to converge vs delay, delayed XOR and cued
    evidence integration; BPTT, TF-BPTT and EF-BPTT (α by grid search per delay), GRU/LSTM + BPTT."""
    if quick:
        base = EF_PROTOCOL | {"epochs": 60}
        seeds, alphas, delays = 4, [0.2, 0.5, 1.0], [10, 40]
        note = _quick_note("4 seeds, delays 10 and 40, α ∈ {0.2, 0.5, 1}, 60 epochs")
    else:
        base, seeds, alphas, delays, note = EF_PROTOCOL, 20, list(ALPHA_GRID), EF_DELAYS, ""
    return [spec("ef-fig2", base=base, seeds=seeds, note=note,
                 grid={"task.name": ["delayed-xor", "evidence-integration"], "task.delay": delays},
                 zips=[_methods(alphas)])]


def ef_fig3(quick: bool) -> list[SweepSpec]:
    """EF paper Fig. 3: RFLO vs EF-RFLO on delayed XOR over delays; EF through a fixed vs a
    learned random feedback matrix F (cos(F, W⁺) is reported when the rule records it)."""
    if quick:  # at lr 3e-4 nothing learns in 60 epochs; at 3e-3 RFLO learns 1/4, EF-RFLO 2/4 (delays 10, 20)
        base = EF_PROTOCOL | {"epochs": 60, "optim": {"name": "adam", "lr": [3e-3]}}
        seeds, alphas, delays = 4, [0.2, 0.5, 1.0], [10, 20]
        note = _quick_note("4 seeds, delays 10 and 20, α ∈ {0.2, 0.5, 1}, lr 3e-3, 60 epochs")
    else:
        base, seeds, alphas, delays, note = EF_PROTOCOL, 20, [a for a in ALPHA_GRID if a > 0], EF_DELAYS, ""
    # RFLO's own learning signal comes through fixed random feedback (Murray 2019)
    base = base | {"task": {"name": "delayed-xor"}, "rule": {"kind": "rflo", "feedback": "random"}}
    arms = {"forcing.kind": ["none", "ef", "feedback", "feedback"],
            "forcing.alpha": [[0.0], alphas, alphas, alphas],
            "forcing.learn_feedback": [False, False, False, True]}
    return [spec("ef-fig3", base=base, seeds=seeds, note=note, grid={"task.delay": delays}, zips=[arms])]


def liu_gain(quick: bool) -> list[SweepSpec]:
    """Liu et al.: initial recurrent gain vs learning, BPTT vs e-prop on the Romo task (64
    rate units, batch 32, Adam, best lr of {1e-4, 3e-4, 1e-3, 3e-3} per gain, 5 seeds)."""
    base = {"task": {"name": "romo"}, "model": {"hidden": 64, "readout": "rate"}, "forcing": {"kind": "none"},
            "batch": 32, "train_trials": 320, "val_trials": 64, "epochs": 300,
            "optim": {"name": "adam", "lr": [1e-4, 3e-4, 1e-3, 3e-3]}}
    gains, seeds, note = [0.2, 0.5, 1.0, 1.5, 2.0], 5, ""
    if quick:
        base = base | {"epochs": 30, "optim": {"name": "adam", "lr": [1e-3, 3e-3]}}
        gains, seeds = [0.2, 1.0, 2.0], 2
        note = _quick_note("2 seeds, gains 0.2/1/2, lr ∈ {1e-3, 3e-3}, 30 epochs of 10 batches")
    return [spec("liu-gain", base=base, seeds=seeds, note=note,
                 grid={"model.gain": gains, "rule.kind": ["bptt", "eprop"]})]


def wz_oscillators(quick: bool, *, wide: bool = False) -> list[SweepSpec]:
    """Williams & Zipser (1989) §3.5 oscillators: a fully recurrent logistic net trained by RTRL,
    with and without their teacher forcing. As the paper: a single unit trained to produce
    0101…, and a 2-unit net with one unit trained to produce 00110011… or a sinusoid of period
    25 (the other unit free: `train_partner = false`). `wide=True` (`wz-oscillators-wide`) is
    the earlier variant: 6 units, every output unit supervised."""
    base = {"model": {"kind": "williams-zipser"}, "rule": {"kind": "rtrl"},
            "task": {"name": "oscillation"}, "batch": 16, "train_trials": 64, "val_trials": 16, "epochs": 200}
    seeds, note = 10, ""
    if quick:
        base, seeds = base | {"epochs": 40}, 3
        note = _quick_note("3 seeds, 40 epochs")
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


REPRODUCTIONS: dict[str, Reproduction] = {
    "ef-fig2": ef_fig2,
    "ef-fig3": ef_fig3,
    "liu-gain": liu_gain,
    "wz-oscillators": wz_oscillators,
    "wz-oscillators-wide": lambda quick: wz_oscillators(quick, wide=True),
}

# Reproductions that are a workflow of their own rather than sweeps: name -> fn(quick, out, progress)
DIRECT_REPRODUCTIONS: dict[str, Callable[..., dict]] = {}


def _kaleb(*, quick: bool, out: Path, progress: bool) -> dict:
    from ._kaleb import reproduce_kaleb_adaptation

    return reproduce_kaleb_adaptation(quick=quick, out=out, progress=progress)


DIRECT_REPRODUCTIONS["kaleb-adaptation"] = _kaleb
NAMES = sorted({*REPRODUCTIONS, *DIRECT_REPRODUCTIONS})


@dataclasses.dataclass
class ReproductionResult:
    name: str
    outcomes: list[SweepOutcome]
    skipped: list[str]
    report: Path | None


def reproduce(name: str, out: str | Path, *, quick: bool = False, executor: Executor | None = None,
              progress: bool = True, echo: Callable[[str], None] = print) -> ReproductionResult:
    from ..plotting import write_report

    if name not in NAMES:
        raise KeyError(f"unknown reproduction {name!r}; choose one of: {', '.join(NAMES)}")
    if name in DIRECT_REPRODUCTIONS:
        Path(out).mkdir(parents=True, exist_ok=True)
        summary = DIRECT_REPRODUCTIONS[name](quick=quick, out=Path(out), progress=progress)
        echo(json.dumps(summary, default=str)[:2000])
        return ReproductionResult(name, [], [], None)
    outcomes, skipped = [], []
    for s in REPRODUCTIONS[name](quick):
        plan = expand(s, skip_unregistered=True)
        for note in plan.skipped:
            echo(f"note: {note}; it will run when reproduce is rerun after it lands")
        skipped += plan.skipped
        if plan.jobs:
            outcomes.append(run_sweep(plan, out, executor=executor, progress=progress))
    finished = sum(o.already_done + o.finished for o in outcomes)
    report = write_report(out).html if finished else None
    if report is None:
        echo(f"note: nothing of {name} could run yet, so no report was written")
    return ReproductionResult(name, outcomes, skipped, report)
