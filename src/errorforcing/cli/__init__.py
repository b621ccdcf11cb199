"""The `errorforcing` command line: the typer app, its command groups, and `main` (exit codes).

Each command group is its own module (`_training`, `_tasks`, `_bench`, `_experiments`,
`_analysis`); they share the options of `_options`, the flag → config code of `_config` and
the error of `_errors`, and never import this module, so the app is assembled here only."""

from __future__ import annotations

import sys

import typer

from ._analysis import analyze_app
from ._bench import bench
from ._config import build_config
from ._errors import BadInput, fail
from ._experiments import claims, export, report, reproduce, status, sweep
from ._options import DEFAULT_OUT
from ._output import dumps
from ._tasks import tasks_app
from ._training import COMPARE_DEFAULTS, compare, train

__all__ = ["app", "main", "entry", "build_config", "BadInput", "fail", "dumps", "DEFAULT_OUT", "COMPARE_DEFAULTS"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown", help="Train RNNs with error forcing, teacher forcing and "
                  "local learning rules, in seed × α ensembles.")
app.command()(train)
app.command()(compare)
app.add_typer(tasks_app, name="tasks")
app.command()(bench)
for _command in (sweep, status, report, export, reproduce, claims):
    app.command()(_command)
app.add_typer(analyze_app, name="analyze")


def _check_environment() -> None:
    from ..training import threads_from_env

    try:
        threads_from_env()
    except ValueError as e:
        raise BadInput(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    from typer._click import exceptions as click_exceptions

    from ..experiments import InfeasibleConfig
    from ..store import StoreError

    try:
        _check_environment()
        code = app(args=argv, standalone_mode=False)  # a command's typer.Exit(n) comes back as n
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (StoreError, InfeasibleConfig) as e:  # raised before anything is written
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click_exceptions.UsageError as e:
        print(f"error: {e.format_message()}".splitlines()[0], file=sys.stderr)
        return 2
    except typer.Abort:  # typer's vendored click has no exceptions.Abort
        print("aborted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())
