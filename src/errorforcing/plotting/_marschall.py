"""The figure of the Marschall et al. alignment reproduction (`reproductions.marschall`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..reproductions import marschall  # noqa: E402
from ._figures import _save  # noqa: E402
from ._report import Report, write_report  # noqa: E402


def marschall_figures(out: str | Path) -> Report:
    """Draw `out/marschall-alignment.png` (`alignment_cost_figure`) from the summary that
    `reproductions.marschall.reproduce_marschall_alignment` wrote into `out`, and write the
    sweep's standard report (`out/report/report.html`, its note the setting's)."""
    out = Path(out)
    summary = json.loads((out / marschall.SUMMARY_FILE).read_text())
    alignment_cost_figure(summary, out / f"{marschall.NAME}.png")
    return write_report(out, note=summary["setting"].get("note") or None, dynamics=False)


def alignment_cost_figure(summary: dict[str, Any], path: str | Path) -> list[Path]:
    """Left: each rule's median alignment with BPTT (per-member mean cos over epochs, IQR bars)
    against its cost per step (log axis), plain (filled) and with EF (open, joined to its plain
    arm by a line). Right: the fraction of networks learned per rule, plain and EF side by side."""
    table = summary["table"]
    rules = list(dict.fromkeys(t["rule"] for t in table))
    colors = plt.get_cmap("tab10", max(len(rules), 1))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    for i, rule in enumerate(rules):
        arms = {t["forcing"]: t for t in table if t["rule"] == rule}
        points = [(f, t) for f, t in arms.items() if t["alignment_median"] is not None and t["us_per_step"]]
        for forcing, t in points:
            lo, hi = t["alignment_iqr"]
            ax.errorbar(t["us_per_step"], t["alignment_median"],
                        yerr=[[t["alignment_median"] - lo], [hi - t["alignment_median"]]], fmt="o", ms=8,
                        color=colors(i), mfc=colors(i) if forcing == "none" else "white", capsize=3,
                        label=t["label"] if forcing == "none" else None)
        if len(points) == 2:
            ax.plot([t["us_per_step"] for _, t in points], [t["alignment_median"] for _, t in points],
                    color=colors(i), lw=0.8, alpha=0.6)
        for k, forcing in enumerate(("none", "ef")):
            if forcing in arms:
                t = arms[forcing]
                bx.bar(i + (k - 0.5) * 0.38, t["fraction"], width=0.36, color=colors(i),
                       alpha=1.0 if forcing == "none" else 0.45, edgecolor=colors(i))
                bx.text(i + (k - 0.5) * 0.38, t["fraction"] + 0.02, f"{t['learned']}/{t['n']}", ha="center",
                        fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("cost per step (CPU µs, one jitted gradient / T)")
    ax.set_ylabel("alignment with BPTT (cos)")
    ax.set_title("alignment vs cost (filled: no forcing, open: EF)")
    ax.legend(fontsize=8, ncol=2)
    bx.set_xticks(range(len(rules)), [next(t["label"] for t in table if t["rule"] == r) for r in rules],
                  rotation=30)
    bx.set_ylim(0, 1.1)
    bx.set_ylabel("fraction learned")
    bx.set_title("fraction learned (solid: no forcing, pale: EF)")
    s = summary["setting"]
    fig.suptitle(f"delayed XOR, T = {s['T']}, N = {s['hidden']}, {s['seeds']} seeds, EF α = {s['alpha']:g}"
                 + (f" — {s['note']}" if s.get("note") else ""), fontsize=9)
    return _save(fig, path)
