"""The `bench` command: the performance figures of the reference configuration."""

from __future__ import annotations

from pathlib import Path

import typer

from ._errors import fail
from ._options import JsonOpt
from ._output import dumps


def bench(json_out: bool = JsonOpt, quick: bool = typer.Option(False, "--quick", help="fewer repeats"),
          scaling: bool = typer.Option(False, "--scaling", help="cost and peak memory per member-epoch as N, "
                                       "members and T grow (with --quick: the N and members axes at T = 145)"),
          plot: Path | None = typer.Option(None, "--plot", help="with --scaling: save the scaling plot (.png/.svg)")):
    """Performance figures of the reference configuration (see benchmarks/)."""
    from ..bench import run_benchmarks, run_scaling

    if plot is not None and not scaling:
        fail("--plot: only with --scaling")
    if plot is not None and plot.suffix not in (".png", ".svg"):
        fail(f"--plot: the figure must be .png or .svg, got {str(plot)!r}")
    results = run_scaling(quick=quick) if scaling else run_benchmarks(quick=quick)
    if plot is not None:
        from ..plotting import plot_scaling

        plot_scaling(results, str(plot))
        results["plot"] = str(plot)
    if json_out:
        print(dumps(results))
