"""`reproduce(NAME)`: run a reproduction into a directory, evaluate its claims and write
DIR/claims.json (the report is drawn by `errorforcing.plotting.write_report`);
`evaluate_claims(DIR)`: re-evaluate on any store."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from ..experiments import Executor, SweepOutcome, expand, run_sweep
from ..store import RunStore, member_table
from ._claims import Evidence, claims_table
from ._registry import NAMES, REPRODUCTIONS, Reproduction

CLAIMS_FILE = "claims.json"


@dataclasses.dataclass
class ReproductionResult:
    name: str
    outcomes: list[SweepOutcome]
    skipped: list[str]
    report: Path | None  # DIR/report/report.html once written (`errorforcing.plotting.write_report`)
    claims: list[dict[str, Any]]

    @property
    def has_results(self) -> bool:
        """Whether a sweep reproduction has finished jobs to report (a workflow writes its own figures)."""
        return any(o.already_done + o.finished for o in self.outcomes)


def reproduce(name: str, out: str | Path, *, quick: bool = False, executor: Executor | None = None,
              progress: bool = True, echo: Callable[[str], None] = print,
              specs: list | None = None) -> ReproductionResult:
    """Run reproduction `name` into `out` (sweeps resume; a workflow reruns), then evaluate its
    claims into `out/claims.json` and print the claims table. `specs` replaces the
    reproduction's own sweep specs (e.g. a tiny setting for a test). It draws nothing: the
    report of a sweep reproduction is `errorforcing.plotting.write_report(out)`."""
    if name not in REPRODUCTIONS:
        raise KeyError(f"unknown reproduction {name!r}; choose one of: {', '.join(NAMES)}")
    repro = REPRODUCTIONS[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes, skipped = [], []
    if repro.workflow is not None:
        repro.workflow(quick=quick, out=out, progress=progress)
    else:
        for s in (specs if specs is not None else repro.sweeps(quick)):
            plan = expand(s, skip_unregistered=True)
            for note in plan.skipped:
                echo(f"note: {note}; it will run when reproduce is rerun after it lands")
            skipped += plan.skipped
            if plan.jobs:
                outcomes.append(run_sweep(plan, out, executor=executor, progress=progress))
    claims = evaluate_claims(out, names=[name])
    echo(f"claims of {name} ({repro.paper}):\n{claims_table(claims)}")
    return ReproductionResult(name, outcomes, skipped, None, claims)


def present(directory: str | Path) -> list[str]:
    """The reproductions with results in `directory` (by sweep name, or their summary file)."""
    directory = Path(directory)
    sweeps: set[str] = set()
    if (directory / "runs.sqlite").exists():
        sweeps = {s["name"] for s in RunStore(directory, create=False).sweeps()}
    found = []
    for name, r in REPRODUCTIONS.items():
        if r.summary_file and (directory / r.summary_file).exists():
            found.append(name)
        elif r.sweeps and name in sweeps:
            found.append(name)
    return found


def evaluate(repro: Reproduction, directory: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = None
    if repro.summary_file and (directory / repro.summary_file).exists():
        summary = json.loads((directory / repro.summary_file).read_text())
    mine = [r for r in rows if r.get("sweep") in repro.sweep_names]
    return [c.evaluate(Evidence(mine, summary)) | {"reproduction": repro.name} for c in repro.claims]


def evaluate_claims(directory: str | Path, *, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Evaluate the claims of `names` (default: every reproduction with results here) on the
    directory's store and summaries; write DIR/claims.json (a list of objects with claim, source,
    verdict, test, numbers, reproduction and, where it could not decide, why)."""
    directory = Path(directory)
    names = present(directory) if names is None else names
    if not names:
        raise ValueError(f"{directory}: no results of any reproduction ({', '.join(NAMES)})")
    rows = member_table(RunStore(directory, create=False)) if (directory / "runs.sqlite").exists() else []
    results = [c for name in names for c in evaluate(REPRODUCTIONS[name], directory, rows)]
    tmp = directory / (CLAIMS_FILE + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=_jsonable))
    tmp.replace(directory / CLAIMS_FILE)
    return results


def _jsonable(v):
    if callable(v):
        return getattr(v, "__name__", "predicate")
    return str(v)
