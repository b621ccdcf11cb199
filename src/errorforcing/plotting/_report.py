"""`write_report(DIR)`: figures (PNG and SVG), tables and one static `report.html` (no network,
every asset beside it) from the finished runs in a results directory."""

from __future__ import annotations

import dataclasses
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from ..experiments import best_setting, method_label, summarize, sweep_status
from ..store import RunStore, member_table
from . import _report_figures as F
from ._dynamics import report_dynamics

# Config columns that never define a setting: vmapped within a job, or already in the method.
NOT_SETTING = {"config.seed", "config.seeds", "config.forcing.alpha", "config.optim.lr", "config.out",
               "config.task.name", "config.rule.kind", "config.forcing.kind", "config.model.kind"}
PREFERRED_X = ("config.task.delay", "config.model.gain", "config.model.hidden", "config.task.shift")
SETTING_KEYS = ("task", "method", "x", "alpha", "lr")


@dataclasses.dataclass
class Report:
    html: Path
    figures: dict[str, list[Path]]
    data: dict[str, Any]  # what report.json holds


def _short(field: str) -> str:
    return field.removeprefix("config.")


def annotate(rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """Give each member row a `method` and an `x` (the varied structural field, delay first);
    returns the x field per task. Other fields that vary become part of the method's name."""
    x_name: dict[str, str | None] = {}
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        fields = sorted({k for r in mine for k in r if k.startswith("config.")} - NOT_SETTING)
        varying = [f for f in fields if len({json.dumps(r.get(f)) for r in mine}) > 1]
        numeric = [f for f in varying if all(isinstance(r.get(f), (int, float)) and not isinstance(r.get(f), bool)
                                             for r in mine)]
        x = next((f for f in PREFERRED_X if f in numeric), numeric[0] if numeric else None)
        x_name[task] = _short(x) if x else None
        for r in mine:
            model = r.get("config.model.kind", "leaky")
            label = method_label(r["forcing"], r["rule"])
            label = label if model in ("leaky", None) else f"{str(model).upper()}+{label}"
            extra = " ".join(f"{_short(f).split('.')[-1]}={r.get(f)}" for f in varying if f != x)
            r["method"] = f"{label} {extra}".strip()
            r["x"] = r.get(x) if x else None
    return x_name


def settings_tables(rows: list[dict[str, Any]]) -> tuple[list[dict], list[dict], dict[tuple, list[dict]]]:
    """Every (task, method, x, α, lr) summarised; the best α/lr per (task, method, x) (grid
    search); the member rows of each setting."""
    settings = summarize(rows, SETTING_KEYS)
    members: dict[tuple, list[dict]] = {}
    for r in rows:
        members.setdefault(tuple(r[k] for k in SETTING_KEYS), []).append(r)
    for s in settings:
        s["setting"] = tuple(s[k] for k in SETTING_KEYS)
    by_point: dict[tuple, list[dict]] = {}
    for s in settings:
        by_point.setdefault((s["task"], s["method"], s["x"]), []).append(s)
    best = [best_setting(group) for group in by_point.values()]
    return settings, best, members


def write_report(directory: str | Path, *, out: str | Path | None = None, note: str | None = None,
                 dynamics: bool = True) -> Report:
    """Write DIR/report/ (or `out`): figures/*.png|svg, report.json and report.html. `note` (and
    every sweep's own note) is printed on each figure and on the page. `dynamics`: the Dynamics
    section (each method's best network: fixed points and PCA trajectories, `report_dynamics`)."""
    store = RunStore(directory, create=False)
    out = Path(out) if out else Path(directory) / "report"
    rows = member_table(store)
    if not rows:
        raise ValueError(f"{directory}: no finished runs to report")
    sweeps = store.sweeps()
    notes = [n for n in [note] + [_spec_note(s["spec"]) for s in sweeps] if n]
    note_line = " · ".join(dict.fromkeys(notes))
    x_name = annotate(rows)
    settings, best, members = settings_tables(rows)
    figures: dict[str, list[Path]] = {}
    figure_data: dict[str, Any] = {}
    fig_dir = out / "figures"

    def add(name: str, result):
        paths, data = result
        if paths:
            figures[name], figure_data[name] = paths, data

    add("fraction_learned", F.fraction_figure(best, fig_dir / "fraction_learned", x_name=x_name, note=note_line))
    add("epochs_to_converge", F.epochs_figure(best, fig_dir / "epochs_to_converge", x_name=x_name, note=note_line))
    add("test_loss", F.test_loss_figure(best, members, fig_dir / "test_loss", x_name=x_name, note=note_line))
    add("learning_curves", F.curves_figure(best, members, fig_dir / "learning_curves", x_name=x_name, note=note_line))
    add("alpha_heatmap", F.heatmap_figure(settings, fig_dir / "alpha_heatmap", x_name=x_name, note=note_line))
    for key in sorted({k for r in rows for k in r["curves"]} - F.BASE_KEYS):
        add(f"curve_{key}", F.curves_figure(best, members, fig_dir / f"curve_{key}", key=key, ylabel=key, log=False,
                                            x_name=x_name, note=note_line, title=f"{key} during training"))
    status = sweep_status(store)
    dynamics_entries = report_dynamics(directory, rows, fig_dir, root=out) if dynamics else []
    public = lambda table: [{k: v for k, v in s.items() if k != "setting"} for s in table]  # noqa: E731
    data = {"version": __version__, "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "directory": str(Path(directory).resolve()), "notes": notes, "x": x_name,
            "best": public(best), "settings": public(settings), "status": status,
            "claims": _claims(directory), "dynamics": dynamics_entries,
            "figures": {name: {"files": [p.relative_to(out).as_posix() for p in paths], "data": figure_data[name]}
                        for name, paths in figures.items()}}
    (out / "report.json").write_text(json.dumps(data, indent=1))
    page = out / "report.html"
    page.write_text(_html(data, sweeps))
    return Report(page, figures, data)


def _dynamics_html(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return ""
    parts = ["<h2>Dynamics</h2><p>Each method's best network (converged first, then the lowest final validation "
             "loss), run unforced on its task: fixed points under the delay input in the top-3 PC space (stable "
             "filled, unstable open with their unstable directions), their eigenvalues against the unit circle, "
             "and condition-averaged trajectories with the explained variance.</p>"]
    for e in entries:
        head = (f"{e['task']} · {e['method']} · run {e['run_id']} member {e['member']} (seed {e['seed']}, "
                f"α = {e['alpha']:g}{'' if e['converged'] else ', not converged'})")
        if "error" in e:
            parts.append(f'<h3>{html.escape(head)}</h3><p>{html.escape(e["error"])}</p>')
            continue
        text = (f"{e['n_fixed_points']} fixed points, {e['n_stable']} stable, under the {e['input']} input; "
                f"participation ratio {e['participation_ratio']:.2f}")
        parts.append(f'<h3>{html.escape(head)}</h3><p>{html.escape(text)}</p>'
                     f'<figure class="dynamics"><img src="{html.escape(e["fixed_points_figure"])}" alt="fixed points">'
                     f'<img src="{html.escape(e["pca_figure"])}" alt="PCA trajectories"></figure>')
    return '<section id="dynamics">' + "".join(parts) + "</section>"


def _claims(directory) -> list[dict[str, Any]]:
    """The verdicts in DIR/claims.json (written by `reproduce` and `errorforcing claims`), if any."""
    path = Path(directory) / "claims.json"
    return json.loads(path.read_text()) if path.exists() else []


def _claims_html(claims: list[dict[str, Any]]) -> str:
    if not claims:
        return ""
    from ..reproductions import headline

    rows = "".join(
        f'<tr class="{html.escape(c["verdict"].replace(" ", "-"))}"><td class="text">{html.escape(c["claim"])}</td>'
        f'<td class="text">{html.escape(c["source"])}</td><td class="text verdict">{html.escape(c["verdict"])}</td>'
        f'<td class="text">{html.escape(headline(c))}</td><td class="text">{html.escape(c["test"])}</td></tr>'
        for c in claims)
    return ('<h2>Claims</h2><table id="claims"><thead><tr><th>claim</th><th>source</th><th>verdict</th>'
            f"<th>numbers</th><th>test</th></tr></thead><tbody>{rows}</tbody></table>")


def _spec_note(spec_text: str) -> str:
    import tomllib

    try:
        return tomllib.loads(spec_text).get("note", "")
    except tomllib.TOMLDecodeError:
        return ""


# ----- the page -----
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; } .note { background: #fff3cd; padding: 0.6em 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
tr.reproduced td.verdict { background: #c8e6c9; } tr.not-reproduced td.verdict { background: #ffcdd2; }
tr.inconclusive td.verdict { background: #e0e0e0; }
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], css_id: str) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for r in rows:
        cells = []
        for key, _ in columns:
            v = r.get(key)
            cls = ' class="text"' if isinstance(v, str) else ""
            cells.append(f'<td{cls} data-key="{key}">{html.escape(_fmt(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


SETTING_COLUMNS = [("task", "task"), ("method", "method"), ("x", "x"), ("alpha", "α"), ("lr", "lr"), ("n", "n"),
                   ("learned", "learned"), ("fraction", "fraction"), ("ci_low", "95 % low"), ("ci_high", "95 % high"),
                   ("median_epochs", "median epochs"), ("q25_epochs", "epochs q25"), ("q75_epochs", "epochs q75"),
                   ("diverged", "diverged"), ("no_errors", "no errors"),
                   ("median_final_val_loss", "median final val loss"), ("median_test_loss", "median test loss")]
STATUS_COLUMNS = [("name", "sweep"), ("jobs", "jobs"), ("done", "done"), ("running", "running"),
                  ("failed", "failed"), ("pending", "pending"), ("members_done", "members done")]
CAPTIONS = {"fraction_learned": "Fraction of members that learned (converged within the budget), Wilson 95 % "
                                "intervals, at the best α per setting.",
            "epochs_to_converge": "Epochs to converge: median and interquartile range over the members that learned.",
            "learning_curves": "Validation loss (unforced) per epoch: median and IQR over members, best α.",
            "alpha_heatmap": "Fraction learned for every α (best lr per cell).",
            "test_loss": "Test loss: unforced masked MSE on 200 fresh trials after training, median and IQR over "
                         "the members that did not diverge, at the best α per setting."}


def _html(data: dict[str, Any], sweeps: list[dict[str, Any]]) -> str:
    x = "; ".join(f"{task}: x = {name or '—'}" for task, name in data["x"].items())
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data["notes"])
    figs = []
    for name, fig in data["figures"].items():
        png = next(f for f in fig["files"] if f.endswith(".png"))
        svg = next((f for f in fig["files"] if f.endswith(".svg")), None)
        caption = CAPTIONS.get(name, f"{name.removeprefix('curve_')} recorded during training: median and IQR.")
        link = f' <a href="{html.escape(svg)}">SVG</a>' if svg else ""
        figs.append(f'<figure id="fig-{name}"><img src="{html.escape(png)}" alt="{html.escape(name)}">'
                    f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>")
    specs = "".join(f"<h3>{html.escape(s['name'])}</h3><pre>{html.escape(s['spec'], quote=False)}</pre>" for s in sweeps)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>errorforcing report</title>
<link rel="icon" href="data:,"><style>{CSS}</style></head>
<body>
<h1>errorforcing report</h1>
<p class="meta">errorforcing {html.escape(data['version'])} · generated {html.escape(data['generated'])} ·
{html.escape(data['directory'])}</p>
{notes}
{_claims_html(data.get('claims', []))}
<h2>Progress</h2>
{_table(data['status']['sweeps'], STATUS_COLUMNS, 'status')}
<h2>Figures</h2>
<p>{html.escape(x)}</p>
{''.join(figs)}
{_dynamics_html(data.get('dynamics', []))}
<h2>Best setting per method</h2>
{_table(data['best'], SETTING_COLUMNS, 'best')}
<h2>All settings</h2>
{_table(data['settings'], SETTING_COLUMNS, 'settings')}
<h2>Sweep specs</h2>
{specs or '<p>(runs made outside sweeps)</p>'}
</body></html>
"""
