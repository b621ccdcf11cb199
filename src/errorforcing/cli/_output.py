"""What the commands print: JSON for --json (non-finite numbers as null) and rich tables."""

from __future__ import annotations

import json
import math
from typing import Any


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """JSON for --json: non-finite numbers become null (NaN is not JSON)."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def setting_keys(rows: list[dict]) -> tuple[str, ...]:
    """Group members by every hyperparameter that varies between them (α and lr), as report does."""
    keys = ("task", "rule", "forcing", "alpha")
    return keys + (("lr",) if len({r.get("lr") for r in rows}) > 1 else ())


def print_settings(settings: list[dict], title: str, label: bool = False) -> None:
    """One row per setting: learned k/n with its Wilson 95 % interval, epochs, losses."""
    from rich.console import Console
    from rich.table import Table

    # Identifiers and the interval never wrap or truncate; headers fold instead (80 columns, pipes).
    with_lr = any("lr" in s for s in settings)
    table = Table(title=title)
    for col in (["method"] if label else []) + ["forcing", "α"] + (["lr"] if with_lr else []) + ["learned"]:
        table.add_column(col, no_wrap=True)
    table.add_column("fraction [95% CI]", no_wrap=True)
    for col in ("median epochs", "diverged", "median val loss", "median test loss"):
        table.add_column(col, overflow="fold")
    for s in settings:
        med = "—" if s["median_epochs"] is None else f"{s['median_epochs']:.0f}"
        test = "—" if s.get("median_test_loss") is None else f"{s['median_test_loss']:.4g}"
        val = "—" if s["median_final_val_loss"] is None or not math.isfinite(s["median_final_val_loss"]) else (
            f"{s['median_final_val_loss']:.4g}")
        table.add_row(*([s["label"]] if label else []), s["forcing"], f"{s['alpha']:g}",
                      *([f"{s['lr']:g}"] if with_lr else []), f"{s['learned']}/{s['n']}",
                      f"{s['fraction']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]",
                      med, str(s["diverged"]), val, test)
    Console().print(table)
