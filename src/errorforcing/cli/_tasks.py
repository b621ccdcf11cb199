"""The `tasks` group: list the tasks with their sources; `tasks show NAME` draws a trial."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._config import build_config
from ._errors import fail
from ._options import ConfigOpt, DelayOpt, JsonOpt
from ._output import dumps

tasks_app = typer.Typer(add_completion=False, rich_markup_mode="markdown", pretty_exceptions_enable=False,
                        help="List the tasks (inputs, outputs, length, source); `tasks show NAME` draws a trial.")


def _task_rows() -> list[dict]:
    from ..experiments import TASKS, TaskConfig

    rows = []
    for name, entry in TASKS.items():
        row = {"name": name, "summary": entry.summary, "source": entry.source}
        try:
            t = entry.build(TaskConfig(kind=name))
            row |= {"n_in": t.n_in, "n_out": t.n_out, "n_steps": t.n_steps}
        except ImportError as e:  # optional dependency (neurogym) missing
            row |= {"n_in": None, "n_out": None, "n_steps": None, "unavailable": str(e).splitlines()[0]}
        rows.append(row)
    return rows


@tasks_app.callback(invoke_without_command=True)
def tasks(ctx: typer.Context, json_out: bool = JsonOpt):
    """List the tasks, with their inputs, outputs, default length and source."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _task_rows()
    if json_out:
        print(dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("task", no_wrap=True)  # names are never cut: descriptions fold instead
    for col in ("in", "out", "T"):
        table.add_column(col, no_wrap=True, justify="right")
    table.add_column("what", overflow="fold", ratio=3)
    table.add_column("source", overflow="fold", ratio=2)
    fmt = lambda v: "—" if v is None else str(v)  # noqa: E731
    for r in rows:
        table.add_row(r["name"], fmt(r["n_in"]), fmt(r["n_out"]), fmt(r["n_steps"]), r["summary"], r["source"])
    Console().print(table)


@tasks_app.command("show")
def tasks_show(
    name: str = typer.Argument(..., help="task name"),
    out: Path = typer.Option(Path("trial.png"), "--out", help="figure file (PNG or SVG)"),
    delay: Optional[int] = DelayOpt, seed: int = typer.Option(0, "--seed", help="key for the sample"),
    config: Optional[Path] = ConfigOpt,
):
    """Draw one sample trial of a task: inputs, targets and mask."""
    import jax

    from ..experiments import InfeasibleConfig, check_task
    from ..plotting import trial_figure

    if seed < 0:
        fail(f"--seed: must be >= 0, got {seed}")
    if out.suffix.lower() not in (".png", ".svg"):
        fail(f"--out: the figure must be .png or .svg, got {str(out)!r}")
    if out.is_dir():
        fail(f"--out: {str(out)!r} is a directory; name the figure file")
    cfg = build_config(config, {"task.kind": name, "task.delay": delay, "seed": seed})
    try:
        task = check_task(cfg)
    except InfeasibleConfig as e:
        fail(str(e))
    trial = task.sample(key=jax.random.key(seed))
    path = trial_figure(trial, out, title=f"{name} (T = {task.n_steps}, seed {seed})")
    print(f"figure: {path}")
