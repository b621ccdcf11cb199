"""The `analyze` group: Lyapunov spectra, fixed points and PCA of a stored run's trained networks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._errors import fail
from ._options import JsonOpt
from ._output import dumps

analyze_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                          pretty_exceptions_enable=False, help="Analyse the trained networks of a stored run.")


@analyze_app.command("lyapunov")
def lyapunov(
    directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
    run: Optional[str] = typer.Option(None, "--run", help="run id (default: the latest finished run)"),
    k: Optional[int] = typer.Option(None, "--k", help="number of exponents (default: all N)"),
    trials: int = typer.Option(8, "--trials", help="task trials per member (exponents are averaged)"),
    out: Optional[Path] = typer.Option(None, "--out", help="figure file, .png or .svg "
                                       "(default DIR/lyapunov-RUN.png)"),
    json_out: bool = JsonOpt,
):
    """Lyapunov spectrum of every trained member (unforced, on task inputs): a table
    (member, seed, α, λ_max, Σλ) and a figure."""
    if not (directory / "runs.sqlite").exists():
        fail(f"DIR: no results store at {directory / 'runs.sqlite'}")
    fmt = (out.suffix.lstrip(".") if out else "png").lower()
    if fmt not in ("png", "svg"):
        fail(f"--out: the figure must be .png or .svg, got {str(out)!r}")
    from ..experiments import StoredRunError, stored_spectra

    try:
        result = stored_spectra(directory, run, k=k, trials=trials)
    except StoredRunError as e:
        fail(str(e))
    from ..plotting import spectrum_figure

    path = out or directory / f"lyapunov-{result.run_id}.png"
    title = spectrum_title(result.run_id, result.config, trials)
    figure = spectrum_figure(result.spectra, [m.alpha for m in result.members], path, title=title,
                             formats=(fmt,))[0]
    rows = result.table()
    if json_out:
        print(dumps({"run_id": result.run_id, "k": int(result.spectra.shape[1]), "members": rows,
                     "spectra": result.spectra.tolist(), "figure": str(figure)}))
        return
    _print_table(rows, f"Lyapunov exponents (per step), run {result.run_id}, k = {result.spectra.shape[1]}")
    print(f"figure: {figure}")


def spectrum_title(run_id: str, cfg, trials: int) -> str:
    gain = cfg.model.own("gain")  # the leaky RNN's g; a GRU, LSTM or Williams-Zipser net has none
    return (f"run {run_id}: {cfg.rule.kind}/{cfg.forcing.kind} on {cfg.task.kind}, N = {cfg.model.hidden}, "
            + (f"g = {gain:g}, " if gain is not None else "") + f"{trials} trials")


def figure_format(out: Optional[Path]) -> str:
    fmt = (out.suffix.lstrip(".") if out else "png").lower()
    if fmt not in ("png", "svg"):
        fail(f"--out: the figure must be .png or .svg, got {str(out)!r}")
    return fmt


def dynamics(directory: Path, run: Optional[str], member: Optional[int], input_spec: str, trials: int,
             initial_states: int, tol: float, conditions: Optional[str], find_points: bool = True):
    from ..experiments import StoredRunError, check_input, load_run, member_dynamics

    if not tol > 0:
        fail(f"--tol: must be > 0, got {tol}")
    keys = tuple(c.strip() for c in conditions.split(",") if c.strip()) if conditions else None
    try:
        check_input(input_spec)
        loaded = load_run(directory, run)
        return loaded, member_dynamics(loaded, member, input=input_spec, trials=trials,
                                       initial_states=initial_states, tol=tol, conditions=keys,
                                       find_points=find_points)
    except StoredRunError as e:
        fail(str(e))


RunOpt = typer.Option(None, "--run", help="run id (default: the latest finished run)")
MemberOpt = typer.Option(None, "--member", help="member index (default: the lowest final validation loss)")
TrialsOpt = typer.Option(64, "--trials", help="task trials run unforced (trajectories, initial states)")
ConditionsOpt = typer.Option(None, "--conditions", help="info fields that define a trial's condition, "
                             "comma-separated (default: the task's discrete latent variables, e.g. s1,s2)")


@analyze_app.command("fixed-points")
def fixed_points(
    directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
    run: Optional[str] = RunOpt, member: Optional[int] = MemberOpt,
    input_spec: str = typer.Option("delay", "--input", help="constant input: delay (the input held for the "
                                   "most steps), zeros, mean, or comma-separated numbers"),
    trials: int = TrialsOpt,
    initial_states: int = typer.Option(512, "--initial-states", help="initial states sampled from the trajectories"),
    tol: float = typer.Option(1e-8, "--tol", help="keep points with q = ½‖F(h) − h‖² below this"),
    conditions: Optional[str] = ConditionsOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="figure file, .png or .svg "
                                       "(default DIR/fixed-points-RUN-mM.png)"),
    json_out: bool = JsonOpt,
):
    """Fixed points of one trained member under a constant input, linearised: trajectories in
    the top-3 PC space with the points on top, and each point's eigenvalues."""
    fmt = figure_format(out)
    loaded, dyn = dynamics(directory, run, member, input_spec, trials, initial_states, tol, conditions)
    from ..plotting import fixed_points_figure

    path = out or directory / f"fixed-points-{loaded.run_id}-m{dyn.member}.png"
    title = _title(loaded, dyn)
    figure = fixed_points_figure(dyn, path, title=title, formats=(fmt,))[0]
    summary = dyn.summary() | {"figure": str(figure)}
    if json_out:
        print(json.dumps(summary))
        return
    _print_points(summary)
    print(f"figure: {figure}")


@analyze_app.command("pca")
def pca_command(
    directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
    run: Optional[str] = RunOpt, member: Optional[int] = MemberOpt, trials: int = TrialsOpt,
    conditions: Optional[str] = ConditionsOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="figure file, .png or .svg "
                                       "(default DIR/pca-RUN-mM.png)"),
    json_out: bool = JsonOpt,
):
    """Population trajectories of one trained member: condition-averaged trajectories on the
    leading PCs, explained variance and the participation ratio."""
    fmt = figure_format(out)
    loaded, dyn = dynamics(directory, run, member, "delay", trials, 1, 1e-8, conditions, find_points=False)
    from ..plotting import pca_figure

    path = out or directory / f"pca-{loaded.run_id}-m{dyn.member}.png"
    figure = pca_figure(dyn, path, title=_title(loaded, dyn), formats=(fmt,))[0]
    s = dyn.summary()
    summary = {k: s[k] for k in ("run_id", "member", "seed", "alpha", "method", "converged", "conditions",
                                 "explained_variance_ratio", "participation_ratio")}
    summary |= {"explained_variance": [float(v) for v in dyn.pca.explained_variance],
                "total_variance": dyn.pca.total_variance, "figure": str(figure)}
    if json_out:
        print(json.dumps(summary))
        return
    ratios = ", ".join(f"{100 * v:.1f} %" for v in summary["explained_variance_ratio"])
    print(f"run {summary['run_id']} member {summary['member']} ({summary['method']}, α = {summary['alpha']:g}): "
          f"PCs explain {ratios}; participation ratio {summary['participation_ratio']:.2f}; "
          f"conditions: {', '.join(summary['conditions'])}")
    print(f"figure: {figure}")


def _title(loaded, dyn) -> str:
    cfg = loaded.config
    return (f"run {loaded.run_id} member {dyn.member} (seed {dyn.row['seed']}, {dyn.method}, "
            f"α = {dyn.row['alpha']:g}) on {cfg.task.kind}, N = {cfg.model.hidden}")


def _print_points(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['n_fixed_points']} fixed points ({summary['n_stable']} stable) of member "
                        f"{summary['member']}, input {summary['input']} = {summary['x']}; "
                        f"{summary['n_converged']}/{summary['n_initial']} initial states converged")
    for col in ("point", "q", "stable", "unstable modes", "|λ|max", "states reaching it"):
        table.add_column(col, justify="right")
    for i, p in enumerate(summary["points"]):
        table.add_row(str(i), f"{p['speed']:.2g}", "yes" if p["stable"] else "no", str(p["n_unstable"]),
                      f"{p['max_abs_eigenvalue']:.4f}", str(p["count"]))
    Console(width=140).print(table)


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
