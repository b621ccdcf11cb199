"""The store as one flat table: a row per member of every finished run, with its run's config
(`config.task.delay`, `config.model.kind`, ...) alongside; written as CSV or Parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ._sqlite import MEMBER_COLUMNS, RunStore


def _flat(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _flat(value, name + ".")
        elif isinstance(value, (list, dict)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def member_table(store: RunStore) -> list[dict[str, Any]]:
    """Members of the finished runs (curves parsed), each with its run's config flattened
    into `config.*` columns and, for sweep jobs, `sweep` and `job_label`."""
    configs: dict[str, dict[str, Any]] = {}
    rows = []
    for member in store.members():
        run_id = member["run_id"]
        if run_id not in configs:
            record = store.config(run_id)
            job = record.get("job", {})
            configs[run_id] = {"sweep": job.get("sweep"), "job_label": job.get("label")} | _flat(
                record.get("config", {}), "config.")
        rows.append(member | configs[run_id])
    return rows


def export(store: RunStore, path: str | Path, fmt: str) -> Path:
    """Write `member_table` to `path` as "csv" or "parquet" (curves as JSON text)."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown export format {fmt!r}; choose csv or parquet")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise RuntimeError("--parquet needs pyarrow, which is not installed (pip install pyarrow); "
                               "--csv needs nothing") from None
    rows = [r | {"curves": json.dumps(r["curves"])} for r in member_table(store)]
    columns = list(MEMBER_COLUMNS) + sorted({k for r in rows for k in r} - set(MEMBER_COLUMNS),
                                            key=lambda k: (k.startswith("config."), k))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "csv":
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
        pq.write_table(table, tmp)
    tmp.replace(path)
    return path
