"""The `bench` command: the performance figures of the reference configuration."""

from __future__ import annotations

import typer

from ._options import JsonOpt
from ._output import dumps


def bench(json_out: bool = JsonOpt, quick: bool = typer.Option(False, "--quick", help="fewer repeats")):
    """Performance figures of the reference configuration (see benchmarks/)."""
    from ..experiments._bench import run_benchmarks

    results = run_benchmarks(quick=quick)
    if json_out:
        print(dumps(results))
