"""Building sweep specs from Python values (the reproductions' sweeps)."""

from __future__ import annotations

from typing import Any

import tomli_w

from ..experiments import SweepSpec, parse_spec


def spec(name: str, *, base: dict[str, Any], grid: dict[str, list] | None = None,
         zips: list[dict[str, list]] | None = None, seeds: int, note: str = "") -> SweepSpec:
    """A SweepSpec built from Python values, keeping its TOML text (stored with the results)."""
    data: dict[str, Any] = {"name": name, "seeds": seeds}
    if note:
        data["note"] = note
    data["base"] = base
    if grid:
        data["grid"] = grid
    if zips:
        data["zip"] = zips
    return parse_spec(tomli_w.dumps(data), default_name=name)


def quick_note(what: str) -> str:
    return f"QUICK run ({what}); not the paper's settings: run without --quick for those"
