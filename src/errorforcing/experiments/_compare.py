"""`compare`: the same task, delay and seeds trained with no forcing, teacher forcing and error
forcing under one learning rule; TF and EF get their best α from a grid (EF paper, Fig. 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ._config import APPLIES, ForcingConfig, TrainConfig, inapplicable
from ._preflight import preflight
from ._summary import best_setting, summarize
from ._train import TrainResult, build_task, train

COMPARE_ALPHAS = (0.1, 0.5, 1.0)
METHOD_PREFIX = {"none": "", "tf": "TF-", "ef": "EF-", "kalman": "KEF-", "feedback": "FB-"}


@dataclasses.dataclass
class CompareResult:
    best: list[dict[str, Any]]  # one summary per method, at its best α
    settings: list[dict[str, Any]]  # every (method, α) summary
    runs: list[TrainResult]
    figure: Path | None


def method_label(forcing: str, rule: str) -> str:
    return METHOD_PREFIX.get(forcing, forcing + "-") + rule.upper()


def method_forcing(forcing: ForcingConfig, kind: str, alphas) -> ForcingConfig:
    """`forcing` as method `kind` uses it: its α grid, and only the fields that kind reads
    (no forcing takes no α; teacher forcing has no causal form)."""
    data = forcing.model_dump(exclude_unset=True) | {"kind": kind}
    if kind == "none":
        data = {"kind": "none"}
    else:
        data["alpha"] = list(alphas)
        for name in APPLIES["forcing"]:
            if inapplicable("forcing", ForcingConfig(kind=kind), name):
                data.pop(name, None)
    return ForcingConfig.model_validate(data)


def compare(config: TrainConfig, *, alphas=COMPARE_ALPHAS, methods=("none", "tf", "ef"),
            progress: bool = True) -> CompareResult:
    """Train one ensemble per method (all α of a method in one compiled program)."""
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
    figure = None
    if config.out:
        from ..plotting import compare_figure

        curves = {b["label"]: [r for run in runs for r in _parsed(run.rows)
                               if r["forcing"] == b["forcing"] and r["alpha"] == b["alpha"]] for b in best}
        task = build_task(config)
        title = f"{config.task.name} (T = {task.n_steps}), {config.seeds} seeds, {config.epochs} epochs"
        figure = compare_figure(best, curves, Path(config.out) / "compare.png", title=title,
                                threshold=config.threshold or type(task).threshold)[0]
    return CompareResult(best, settings, runs, figure)


def _parsed(rows):
    import json

    return [r | {"curves": json.loads(r["curves"])} for r in rows]
