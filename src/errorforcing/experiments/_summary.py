"""Group stored members into settings and summarise them: fraction learned with a Wilson 95 %
interval, epochs to converge (median and IQR)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from ._registry import METHOD_PREFIX  # each forcing's entry carries its label prefix


def method_label(forcing: str, rule: str) -> str:
    """A method's name in tables and figures: forcing prefix + rule, e.g. EF-BPTT, TF-RFLO, BPTT."""
    return METHOD_PREFIX.get(forcing, forcing + "-") + rule.upper()


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(rows: Iterable[dict[str, Any]], keys: tuple[str, ...] = ("task", "rule", "forcing", "alpha")) -> list[dict[str, Any]]:
    """One dict per distinct setting `keys`: n, learned, fraction, ci_low, ci_high,
    median/q25/q75 epochs to converge (over the members that converged), diverged count,
    median final validation loss and median test loss (over the members that have one: not
    the diverged, nor members of a store written before test losses were recorded)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in keys)].append(r)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        n = len(members)
        learned = sum(int(m["converged"]) for m in members)
        epochs = np.array([m["converged_epoch"] for m in members if m["converged"]], float)
        lo, hi = wilson_interval(learned, n)
        acc = [m["final_val_accuracy"] for m in members if m.get("final_val_accuracy") is not None]
        out.append(dict(zip(keys, key)) | dict(
            n=n, learned=learned, fraction=learned / n, ci_low=lo, ci_high=hi,
            diverged=sum(int(m["diverged"]) for m in members),
            median_epochs=float(np.median(epochs)) if epochs.size else None,
            q25_epochs=float(np.percentile(epochs, 25)) if epochs.size else None,
            q75_epochs=float(np.percentile(epochs, 75)) if epochs.size else None,
            no_errors=(sum(a >= 1.0 for a in acc) / len(acc)) if acc else None,
            median_final_val_loss=float(np.nanmedian([m["final_val_loss"] if m["final_val_loss"] is not None
                                                      else np.nan for m in members])),
            median_test_loss=_median([m.get("test_loss") for m in members]),
        ))
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def best_setting(settings: list[dict[str, Any]]) -> dict[str, Any]:
    """The setting that learned most often; ties go to fewer epochs, then lower final loss."""
    def rank(s):
        med = s["median_epochs"] if s["median_epochs"] is not None else math.inf
        loss = s["median_final_val_loss"]
        return (-s["fraction"], med, loss if np.isfinite(loss) else math.inf)
    return min(settings, key=rank)
