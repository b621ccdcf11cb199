"""CLI commands that analyse stored runs: `errorforcing analyze lyapunov DIR`.

`register(app)` adds the `analyze` group to the typer app of `errorforcing.cli`. Errors are
raised as that module's `BadInput` (one line on stderr, exit code 2, nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import typer


def _owner(app: typer.Typer) -> ModuleType:
    # Under `python -m errorforcing.cli` the app lives in `__main__`, a second copy of the cli
    # module whose BadInput its main() catches.
    for module in list(sys.modules.values()):
        if getattr(module, "app", None) is app and hasattr(module, "BadInput"):
            return module
    from . import cli

    return cli


def _dumps(obj: Any) -> str:
    from .cli import dumps  # non-finite numbers as null

    return dumps(obj)


def register(app: typer.Typer) -> None:
    cli = _owner(app)
    fail = cli._fail
    analyze = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                          pretty_exceptions_enable=False, help="Analyse the trained networks of a stored run.")
    app.add_typer(analyze, name="analyze")

    @analyze.command("lyapunov")
    def lyapunov(
        directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
        run: Optional[str] = typer.Option(None, "--run", help="run id (default: the latest finished run)"),
        k: Optional[int] = typer.Option(None, "--k", help="number of exponents (default: all N)"),
        trials: int = typer.Option(8, "--trials", help="task trials per member (exponents are averaged)"),
        out: Optional[Path] = typer.Option(None, "--out", help="figure file, .png or .svg "
                                           "(default DIR/lyapunov-RUN.png)"),
        json_out: bool = typer.Option(False, "--json", help="print a machine-readable summary on stdout"),
    ):
        """Lyapunov spectrum of every trained member (unforced, on task inputs): a table
        (member, seed, α, λ_max, Σλ) and a figure."""
        if not (directory / "runs.sqlite").exists():
            fail(f"DIR: no results store at {directory / 'runs.sqlite'}")
        fmt = (out.suffix.lstrip(".") if out else "png").lower()
        if fmt not in ("png", "svg"):
            fail(f"--out: the figure must be .png or .svg, got {str(out)!r}")
        from .experiments._lyapunov import StoredRunError, stored_spectra

        try:
            result = stored_spectra(directory, run, k=k, trials=trials)
        except StoredRunError as e:
            fail(str(e))
        from .plotting import spectrum_figure

        path = out or directory / f"lyapunov-{result.run_id}.png"
        cfg = result.config
        title = (f"run {result.run_id}: {cfg.rule.kind}/{cfg.forcing.kind} on {cfg.task.name}, "
                 f"N = {cfg.model.hidden}, g = {cfg.model.gain:g}, {trials} trials")
        figure = spectrum_figure(result.spectra, [m.alpha for m in result.members], path, title=title,
                                 formats=(fmt,))[0]
        rows = result.table()
        if json_out:
            print(_dumps({"run_id": result.run_id, "k": int(result.spectra.shape[1]), "members": rows,
                              "spectra": result.spectra.tolist(), "figure": str(figure)}))
            return
        _print_table(rows, f"Lyapunov exponents (per step), run {result.run_id}, k = {result.spectra.shape[1]}")
        print(f"figure: {figure}")


def _print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("member", "seed", "α", "λ_max", "Σ λ_i"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["member"]), str(r["seed"]), f"{r['alpha']:g}", f"{r['lambda_max']:.4g}",
                      f"{r['lambda_sum']:.4g}")
    Console(width=120).print(table)
