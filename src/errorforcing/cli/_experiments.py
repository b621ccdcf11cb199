"""The commands for experiments at scale: sweep, status, report, export, reproduce, claims."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ._errors import fail
from ._options import DEFAULT_OUT, AddressOpt, ExecutorOpt, JsonOpt, WorkersOpt
from ._output import dumps, fmt_seconds


def executor_for(kind: str, workers: int, address: Optional[str]):
    from ..experiments import make_executor

    if kind not in ("local", "ray"):
        fail(f"--executor: unknown executor {kind!r}; choose local or ray")
    if workers < 1:
        fail(f"--workers: must be >= 1, got {workers}")
    if kind == "local" and address:
        fail("--address: only for --executor ray")
    if kind == "ray":
        if workers != 1:
            fail("--workers: only for --executor local (Ray uses the cluster's CPUs)")
        try:
            import ray  # noqa: F401
        except ImportError:
            fail("--executor: ray needs Ray, which is not installed (pip install 'errorforcing[ray]')")
        if address:
            _check_reachable(address)
    return make_executor(kind, workers=workers, address=address)


def plan_for(spec_file: Path):
    from ..experiments import SpecError, expand, load_spec

    try:
        return expand(load_spec(spec_file))
    except SpecError as e:
        fail(str(e))


def open_store(directory: Path):
    from ..store import RunStore

    if not (Path(directory) / "runs.sqlite").exists():
        fail(f"DIR: no results store at {Path(directory) / 'runs.sqlite'}")
    if not Path(directory).is_dir():
        fail(f"DIR: {directory} is not a directory")
    return RunStore(directory, create=False)


def sweep(
    spec: Path = typer.Argument(..., help="sweep spec (TOML): base, grid, zip, seeds"),
    out: Optional[str] = typer.Option(None, "--out", help=f"results directory (default ./{DEFAULT_OUT})"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the job table; run and write nothing"),
    executor: str = ExecutorOpt, workers: int = WorkersOpt, address: Optional[str] = AddressOpt,
    json_out: bool = JsonOpt,
):
    """Run a sweep: every job not already done in OUT (rerun to resume after a crash)."""
    plan = plan_for(spec)
    out_dir = Path(out or DEFAULT_OUT)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out: {out_dir} is a file, not a results directory")
    if dry_run:
        _print_plan(plan, out_dir, json_out)
        return
    runner = executor_for(executor, workers, address)
    from ..experiments import run_sweep

    outcome = run_sweep(plan, out_dir, executor=runner, progress=True)
    if json_out:
        print(dumps(outcome.as_dict() | {"out": str(out_dir)}))
    else:
        print(f"sweep {outcome.name}: {outcome.jobs} jobs, {outcome.already_done} already done, "
              f"{outcome.finished} finished now, {len(outcome.failed)} failed → {out_dir}")
    if outcome.failed:
        raise typer.Exit(1)


def status(directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
           json_out: bool = JsonOpt):
    """Jobs done/running/interrupted/failed/pending per sweep, and an ETA."""
    from ..experiments import sweep_status

    state = sweep_status(open_store(directory))
    if json_out:
        print(dumps(state))
        return
    _print_status(state)


def report(directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
           out: Optional[Path] = typer.Option(None, "--out", help="where to write (default DIR/report)"),
           dynamics: bool = typer.Option(True, "--dynamics/--no-dynamics", help="the Dynamics section: fixed "
                                         "points and PCA trajectories of each method's best network"),
           json_out: bool = JsonOpt):
    """Figures (PNG and SVG), tables and a static report.html of the finished runs."""
    open_store(directory)
    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out: {str(out)!r} is a file; name a directory for the report")
    from ..plotting import write_report

    try:
        result = write_report(directory, out=out, dynamics=dynamics)
    except ValueError as e:
        fail(str(e))
    if json_out:
        print(dumps({"html": str(result.html),
                     "figures": {k: [str(p) for p in v] for k, v in result.figures.items()}}))
    else:
        print(f"report: {result.html}")


def export(directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
           csv: bool = typer.Option(False, "--csv", help="write CSV"),
           parquet: bool = typer.Option(False, "--parquet", help="write Parquet (needs pyarrow)"),
           out: Optional[Path] = typer.Option(None, "--out", help="output file (default DIR/members.csv|parquet)")):
    """One row per member of every finished run, with its run's config, as CSV or Parquet."""
    if csv == parquet:
        fail("--csv/--parquet: give exactly one of them")
    fmt = "csv" if csv else "parquet"
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            fail("--parquet: needs pyarrow, which is not installed (pip install pyarrow); --csv needs nothing")
    path = out or Path(directory) / f"members.{fmt}"
    if path.suffix.lower() != f".{fmt}":
        fail(f"--out: {str(path)!r} does not end in .{fmt} (the format written)")
    if path.is_dir():
        fail(f"--out: {str(path)!r} is a directory; name the file to write")
    store = open_store(directory)
    if not store.runs(status="done"):
        fail(f"DIR: no finished runs in {directory} to export")
    from ..store import export as write

    print(write(store, path, fmt))


def _marschall_figures(out_dir: Path) -> Path:
    from ..plotting import marschall_figures

    return marschall_figures(out_dir).html


def _kaleb_figures(name: str) -> Callable[[Path], None]:
    def draw(out_dir: Path) -> None:
        from ..plotting import kaleb_figures

        print(f"figures: {', '.join(map(str, kaleb_figures(out_dir, name)))}", file=sys.stderr)

    return draw


# per workflow reproduction: draws its figures from what it wrote into DIR; returns its report (None: it has none)
WORKFLOW_FIGURES: dict[str, Callable[[Path], Path | None]] = {
    "marschall-alignment": _marschall_figures,
    "kaleb-adaptation": _kaleb_figures("kaleb-adaptation"),
    "kaleb-sine-shift": _kaleb_figures("kaleb-sine-shift"),
}


def reproduce(
    name: str = typer.Argument(..., help="ef-fig2, ef-fig3, liu-gain, wz-oscillators, wz-oscillators-wide, kaleb-adaptation, "
                              "kaleb-sine-shift, marschall-alignment"),
    quick: bool = typer.Option(False, "--quick", help="fewer seeds, shorter delays, fewer epochs "
                               "(about 20 minutes on 2 cores); the figures say so"),
    out: Optional[str] = typer.Option(None, "--out", help=f"results directory (default ./{DEFAULT_OUT}/NAME)"),
    executor: str = ExecutorOpt, workers: int = WorkersOpt, address: Optional[str] = AddressOpt,
    json_out: bool = JsonOpt,
):
    """Reproduce a paper's figure: its sweeps, then its claims (DIR/claims.json) and the report
    (rerun to resume)."""
    from ..reproductions import NAMES, REPRODUCTIONS, claims_table, reproduce as run_reproduction

    if name not in NAMES:
        fail(f"NAME: unknown reproduction {name!r}; choose one of: {', '.join(NAMES)}")
    if REPRODUCTIONS[name].workflow is not None and (executor != "local" or workers != 1 or address):
        fail(f"--executor/--workers/--address: {name} is a workflow that runs in this process; "
             "they apply to the sweep reproductions only")
    out_dir = Path(out or Path(DEFAULT_OUT) / name)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out: {out_dir} is a file, not a results directory")
    runner = executor_for(executor, workers, address)
    result = run_reproduction(name, out_dir, quick=quick, executor=runner, progress=True,
                              echo=lambda line: print(line, file=sys.stderr))
    if name in WORKFLOW_FIGURES:  # the workflow returns data; its figures (and report) are drawn here
        result.report = WORKFLOW_FIGURES[name](out_dir)
    if REPRODUCTIONS[name].workflow is None:
        if result.has_results:
            from ..plotting import write_report

            result.report = write_report(out_dir).html
        else:
            print(f"note: nothing of {name} could run yet, so no report was written", file=sys.stderr)
    failed = [f for o in result.outcomes for f in o.failed]
    if json_out:
        print(dumps({"name": name, "quick": quick, "out": str(out_dir), "skipped": result.skipped,
                     "sweeps": [o.as_dict() for o in result.outcomes],
                     "report": str(result.report) if result.report else None,
                     "claims": result.claims}, default=str))
    else:
        print(f"{name}{' (quick)' if quick else ''} → {out_dir}; report: {result.report or '—'}")
        print(f"claims ({out_dir / 'claims.json'}):\n{claims_table(result.claims)}")
    if failed:
        raise typer.Exit(1)


def claims(directory: Path = typer.Argument(..., metavar="DIR", help="results directory"),
           json_out: bool = JsonOpt):
    """Re-evaluate the papers' claims on the results in DIR (e.g. after a resumed or partial
    sweep): writes DIR/claims.json and prints each claim's verdict, test and numbers."""
    from ..reproductions import claims_table, evaluate_claims

    if not Path(directory).is_dir():
        fail(f"DIR: {directory} is not a directory")
    if (Path(directory) / "runs.sqlite").exists():
        open_store(directory)
    try:
        results = evaluate_claims(directory)
    except ValueError as e:
        fail(str(e))
    if json_out:
        print(dumps(results, default=str))
    else:
        print(claims_table(results))


def _check_reachable(address: str) -> None:
    """Before anything is written: is a Ray head listening at HOST:PORT (or ray://HOST:PORT)?"""
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        fail(f"--address: expected HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        fail(f"--address: no Ray head reachable at {address} ({e.strerror or e}); start one with `ray start --head`")


def _print_plan(plan, out_dir: Path, json_out: bool) -> None:
    done: set[str] = set()
    if (out_dir / "runs.sqlite").exists():
        from ..store import RunStore

        done = {r["run_id"] for r in RunStore(out_dir, create=False).runs(status="done")}
    from ..experiments import job_problems

    problems = job_problems(plan)
    total_cost = sum(j.cost for j in plan.jobs) or 1.0
    rows: list[dict[str, Any]] = [
        {"position": j.position, "job_id": j.job_id, "label": j.label, "members": j.n_members,
         "ensemble": j.members_label, "share": j.cost / total_cost,
         "status": "done" if j.job_id in done else ("cannot run" if j.job_id in problems else "pending"),
         "problem": problems.get(j.job_id)} for j in plan.jobs]
    if json_out:
        print(dumps({"name": plan.spec.name, "jobs": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {plan.spec.name}: {len(rows)} jobs, {sum(r['members'] for r in rows)} members "
                        f"(dry run, nothing written)")
    for col in ("#", "job", "setting", "ensemble", "members", "cost share", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["position"]), r["job_id"], r["label"], r["ensemble"], str(r["members"]),
                      f"{100 * r['share']:.1f} %", r["status"])
    console = Console(width=200)
    console.print(table)
    for r in rows:
        if r["problem"]:
            console.print(f"job {r['position']} cannot run: {r['problem']}", markup=False, highlight=False)


def _print_status(state: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sweeps")
    for col in ("sweep", "jobs", "done", "running", "interrupted", "failed", "pending", "members done", "driver",
                "ETA"):
        table.add_column(col, overflow="fold")
    for s in state["sweeps"]:
        alive = {True: "running", False: "stopped", None: "elsewhere"}[s["driver_alive"]]
        table.add_row(s["name"], str(s["jobs"]), str(s["done"]), str(s["running"]), str(s["interrupted"]),
                      str(s["failed"]), str(s["pending"]), str(s["members_done"]), f"{s['driver']} ({alive})",
                      fmt_seconds(s["eta_seconds"]))
    t = state["total"]
    table.add_row("total", str(t["jobs"]), str(t["done"]), str(t["running"]), str(t["interrupted"]), str(t["failed"]),
                  str(t["pending"]), str(t["members_done"]), "", fmt_seconds(t["eta_seconds"]))
    console = Console(width=160)
    console.print(table)
    other = state["other_runs"]
    if any(other.values()):
        console.print(f"runs outside sweeps: {other['done']} done, {other['running']} running, "
                      f"{other['interrupted']} interrupted (owner process gone), {other['failed']} failed")
    if any(s["driver_alive"] is False and (s["running"] or s["interrupted"] or s["pending"]) for s in state["sweeps"]):
        console.print("a sweep was interrupted: run `errorforcing sweep SPEC --out DIR` again to resume")
