"""`compare`: the same task, delay and seeds trained with no forcing, teacher forcing and error
forcing under one learning rule; TF and EF get their best α from a grid (EF paper, Fig. 2).
It ends with its verdicts, "EF beats TF" and "EF beats no forcing" on fraction learned, by a
one-sided Fisher exact test that accounts for each method's α having been picked from a grid
(`selection`: "split", chosen on half the seeds and compared on the other half, or
"bonferroni")."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ._config import ForcingConfig, TrainConfig, config_class
from ._preflight import preflight
from ._stats import SELECTIONS, Outcomes, compare_fractions
from ._summary import best_setting, method_label, summarize
from ._train import TrainResult, train

COMPARE_ALPHAS = (0.1, 0.5, 1.0)


@dataclasses.dataclass
class CompareResult:
    best: list[dict[str, Any]]  # one summary per method, at its best α
    settings: list[dict[str, Any]]  # every (method, α) summary
    runs: list[TrainResult]
    figure: Path | None  # OUT/compare.png, once drawn (`errorforcing.plotting.compare_figures`)
    verdicts: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # compare_verdicts
    dynamics: dict[str, Any] | None = None  # compare_dynamics (dynamics=True); `figure` and `json` once written


def method_forcing(forcing: ForcingConfig, kind: str, alphas) -> ForcingConfig:
    """`forcing` as method `kind` uses it: its α grid (if it takes one), and only the fields
    that kind's config declares (no forcing takes no α; teacher forcing has no causal form)."""
    own = config_class("forcing", kind).model_fields
    data = {k: v for k, v in forcing.model_dump(exclude_unset=True).items() if k in own} | {"kind": kind}
    if "alpha" in own:
        data["alpha"] = list(alphas)
    return ForcingConfig.validate_section(data)


def compare_verdicts(rows_by_method: dict[str, list[dict[str, Any]]], *, winner: str,
                     selection: str = "split") -> list[dict[str, Any]]:
    """The verdicts "`winner` beats X" on fraction learned for every other method X (label -> member rows):
    verdict (reproduced / not reproduced / inconclusive at α = 0.05), the one-sided Fisher
    p-values of both directions, each method's learned/n on the compared seeds with its Wilson
    interval and chosen setting (α, lr), and the test and selection used."""
    mine = Outcomes.from_rows(winner, rows_by_method[winner])
    out = []
    for label, rows in rows_by_method.items():
        if label == winner:
            continue
        stats = compare_fractions(mine, Outcomes.from_rows(label, rows), selection=selection)
        test = "one-sided Fisher exact on fraction learned (α = 0.05); " + stats.get("selection_described", "")
        out.append({"claim": f"{winner} beats {label}", "test": test} | stats)
    return out


def compare(config: TrainConfig, *, alphas=COMPARE_ALPHAS, methods=("none", "tf", "ef"),
            progress: bool = True, selection: str = "split", dynamics: bool = False) -> CompareResult:
    """Train one ensemble per method (all α of a method in one compiled program), then the
    verdicts of EF against each other method (`compare_verdicts`; none without an EF arm).
    `dynamics=True` (needs `config.out`) also compares the fixed-point structure of each
    method's best-setting networks under the delay input (`compare_dynamics`). It returns data
    and draws nothing: `errorforcing.plotting.compare_figures` draws OUT/compare.png (and
    OUT/compare-dynamics.png), `save_dynamics` writes OUT/compare-dynamics.json.

    Arguments:
        config: the shared job (task, delay, seeds, epochs, rule, ...); its forcing section is
            replaced per method.
        alphas: the α grid of the forced methods (every α a member of the same program).
        methods: forcing kinds to train, e.g. ("none", "tf", "ef").
        progress: draw progress bars on stderr.
        selection: how the verdicts account for picking each method's best α: "split" (choose
            on half the seeds, test on the other half) or "bonferroni".
        dynamics: also compare the fixed-point structure of the best networks.

    Returns:
        `CompareResult`: `best` (one summary per method at its best α), `settings` (every
        method × α summary), `runs` (the `TrainResult`s), `figure`, `verdicts`, `dynamics`.
    """
    if dynamics and not config.out:
        raise ValueError("dynamics: needs an output directory (out) to load the trained networks from")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    runs, settings, best = [], [], []
    configs = {}
    for kind in methods:
        cfg = config.model_copy(update={"forcing": method_forcing(config.forcing, kind, alphas)}, deep=True)
        configs[kind] = cfg
        preflight(cfg)  # every method can run, before the first one writes anything
    for kind, cfg in configs.items():
        result = train(cfg, progress=progress)
        runs.append(result)
        method_settings = summarize(result.rows)
        label = method_label(kind, cfg.rule.kind)
        for s in method_settings:
            s["label"] = label
        settings += method_settings
        best.append(best_setting(method_settings))
    labels = {kind: method_label(kind, cfg.rule.kind) for kind, cfg in configs.items()}
    verdicts = compare_verdicts({labels[kind]: run.rows for kind, run in zip(configs, runs)},
                                winner=labels["ef"], selection=selection) if "ef" in labels else []
    structure = _dynamics(config, runs, best) if dynamics else None
    return CompareResult(best, settings, runs, None, verdicts, structure)


def _dynamics(config: TrainConfig, runs: list[TrainResult], best: list[dict[str, Any]]) -> dict[str, Any]:
    from ._dynamics import compare_dynamics

    arms = [{"label": b["label"], "run_id": run.run_id, "alpha": b["alpha"], "lr": b.get("lr")}
            for run, b in zip(runs, best)]
    return compare_dynamics(config.out, arms)


def save_dynamics(result: CompareResult, out) -> Path:
    """Write `result.dynamics` (with its figure's path, once drawn) to OUT/compare-dynamics.json."""
    import json

    path = Path(out) / "compare-dynamics.json"
    result.dynamics["json"] = str(path)
    path.write_text(json.dumps(result.dynamics, indent=1))
    return path
