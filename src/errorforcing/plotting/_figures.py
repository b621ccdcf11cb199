"""Figures of stored runs (the only module that imports matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..experiments import METHOD_COLORS  # noqa: E402  (each forcing's registry entry carries its colour)


def _save(fig, path: str | Path, formats=("png",)) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        p = path.with_suffix("." + fmt)
        fig.savefig(p, dpi=120, bbox_inches="tight")
        written.append(p)
    plt.close(fig)
    return written


def learning_curves(rows: list[dict[str, Any]], path: str | Path, *, title: str = "",
                    threshold: float | None = None, formats=("png",)) -> list[Path]:
    """Validation loss per epoch, one thin line per member, coloured by α (forcing in the legend)."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    alphas = sorted({r["alpha"] for r in rows})
    cmap = plt.get_cmap("viridis", max(len(alphas), 2))
    seen = set()
    for r in rows:
        val = np.array([np.nan if v is None else v for v in r["curves"]["val_loss"]], float)
        label_key = (r["forcing"], r["alpha"])
        label = None if label_key in seen else f"{r['forcing']} α={r['alpha']:g}"
        seen.add(label_key)
        ax.plot(np.arange(1, len(val) + 1), val, lw=0.8, alpha=0.7,
                color=cmap(alphas.index(r["alpha"])), label=label)
    if threshold:
        ax.axhline(threshold, ls="--", color="k", lw=0.8, label="threshold")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (unforced)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path, formats)


def compare_figure(best: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]],
                   path: str | Path, *, title: str = "", threshold: float | None = None,
                   formats=("png",)) -> list[Path]:
    """Left: fraction learned (Wilson 95 % interval) per method at its best α. Middle: epochs to
    converge. Right: median validation curve of each method's best setting."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = [b["label"] for b in best]
    x = np.arange(len(best))
    colors = [METHOD_COLORS.get(b["forcing"], "#2ca02c") for b in best]
    frac = np.array([b["fraction"] for b in best])
    # clipped: an interval end can round to just inside the fraction (e.g. 4/4 learned)
    err = np.clip([[b["fraction"] - b["ci_low"] for b in best], [b["ci_high"] - b["fraction"] for b in best]], 0, None)
    axes[0].bar(x, frac, color=colors, yerr=err, capsize=4)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("fraction learned (95 % CI)")
    for i, b in enumerate(best):
        axes[0].text(i, 0.02, f"{b['learned']}/{b['n']}", ha="center", color="w", fontsize=8)
    for i, b in enumerate(best):
        lo, med, hi = b["q25_epochs"], b["median_epochs"], b["q75_epochs"]
        if med is not None:
            axes[1].errorbar([i], [med], yerr=[[med - lo], [hi - med]], fmt="o", color=colors[i], capsize=4)
    axes[1].set_ylabel("epochs to converge (median, IQR)")
    for ax in axes[:2]:
        ax.set_xticks(x, names, rotation=15)
    for b, color in zip(best, colors):
        rows = curves[b["label"]]
        if not rows:
            continue
        n = max(len(r["curves"]["val_loss"]) for r in rows)
        mat = np.full((len(rows), n), np.nan)
        for i, r in enumerate(rows):
            v = np.array([np.nan if y is None else y for y in r["curves"]["val_loss"]], float)
            mat[i, : len(v)] = v
            # a converged member keeps its final loss after it stops training
            if r["converged"] and len(v):
                mat[i, len(v):] = v[-1]
        with np.errstate(all="ignore"):
            med = np.nanmedian(mat, axis=0)
        axes[2].plot(np.arange(1, n + 1), med, color=color, label=b["label"])
    if threshold:
        axes[2].axhline(threshold, ls="--", color="k", lw=0.8)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("median validation loss")
    axes[2].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, formats)


def trial_figure(trial, path: str | Path, *, title: str = "") -> Path:
    """One trial: inputs (top), targets with the mask shaded (bottom)."""
    x, y, m = (np.asarray(v) for v in (trial.inputs, trial.targets, trial.mask))
    t = np.arange(x.shape[0])
    fig, (ax_in, ax_out) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
    for i in range(x.shape[1]):
        ax_in.plot(t, x[:, i], lw=1, label=f"in {i}")
    ax_in.set_ylabel("inputs")
    ax_in.legend(fontsize=7, ncol=min(x.shape[1], 6), loc="upper right")
    for k in range(y.shape[1]):
        line, = ax_out.plot(t, y[:, k], lw=1.2, label=f"target {k}")
        ax_out.fill_between(t, 0, 1, where=m[:, k] > 0, transform=ax_out.get_xaxis_transform(),
                            color=line.get_color(), alpha=0.12, step="mid")
    ax_out.set_ylabel("targets (shaded: mask)")
    ax_out.set_xlabel("step")
    ax_out.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    path = Path(path)
    return _save(fig, path, (path.suffix.lstrip(".") or "png",))[0]
