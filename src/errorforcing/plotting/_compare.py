"""The figures of `compare`: OUT/compare.png (each method at its best α) and, when the
fixed points were compared, OUT/compare-dynamics.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..experiments import CompareResult, TrainConfig, build_task
from ._dynamics import dynamics_comparison_figure
from ._figures import compare_figure


def compare_figures(result: CompareResult, config: TrainConfig) -> Path:
    """Draw `result` into `config.out`; sets `result.figure` (and `result.dynamics["figure"]`)."""
    out = Path(config.out)
    curves = {b["label"]: [r for run in result.runs for r in _parsed(run.rows)
                           if r["forcing"] == b["forcing"] and r["alpha"] == b["alpha"]] for b in result.best}
    task = build_task(config)
    title = f"{config.task.kind} (T = {task.n_steps}), {config.seeds} seeds, {config.epochs} epochs"
    result.figure = compare_figure(result.best, curves, out / "compare.png", title=title,
                                   threshold=config.threshold or type(task).threshold)[0]
    if result.dynamics is not None:
        title = (f"{config.task.kind}, delay {config.task.delay}: fixed points under the delay input, "
                 f"every member of each method's best α")
        result.dynamics["figure"] = str(dynamics_comparison_figure(
            result.dynamics["summaries"], out / "compare-dynamics.png", title=title,
            forcings=result.dynamics["forcings"])[0])
    return result.figure


def _parsed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r | {"curves": json.loads(r["curves"])} for r in rows]
