"""The report's figures. Each returns the files it wrote and the numbers it drew, read back from
the matplotlib artists themselves (so a test can compare the figure with the store)."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from ._figures import _save  # noqa: E402

FORMATS = ("png", "svg")
BASE_KEYS = {"train_loss", "val_loss", "val_accuracy"}


def _color(i: int):
    return plt.get_cmap("tab10")(i % 10)


def _finish(fig, path: Path, note: str) -> tuple[list[Path], list[dict[str, Any]]]:
    if note:
        fig.text(0.5, 0.995, note, ha="center", va="top", fontsize=8, color="#b00000")
    data = harvest(fig)
    fig.tight_layout(rect=(0, 0, 1, 0.95 if note else 1))
    return _save(fig, path, FORMATS), data


def _nums(values) -> list[float | None]:
    return [None if (v is None or not np.isfinite(v)) else float(v) for v in np.asarray(values, float)]


def harvest(fig) -> list[dict[str, Any]]:
    """Per axes: title, labels, errorbar series (x, y, low, high), plain lines, images."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        entry: dict[str, Any] = {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                                 "errorbars": [], "lines": [], "images": []}
        in_containers = set()
        for c in ax.containers:
            if not isinstance(c, ErrorbarContainer):
                continue
            line, _, bars = c.lines
            in_containers.add(id(line))
            segments = bars[0].get_segments() if bars else []
            entry["errorbars"].append({
                "label": c.get_label(), "x": _nums(line.get_xdata()), "y": _nums(line.get_ydata()),
                "low": _nums([s[0][1] for s in segments]), "high": _nums([s[1][1] for s in segments])})
        for line in ax.lines:
            if id(line) in in_containers or line.get_label().startswith("_"):
                continue
            entry["lines"].append({"label": line.get_label(), "x": _nums(line.get_xdata()),
                                   "y": _nums(line.get_ydata())})
        for im in ax.images:
            arr = np.ma.filled(np.ma.asarray(im.get_array(), float), np.nan)
            entry["images"].append({"values": [_nums(row) for row in arr],
                                    "xticklabels": [t.get_text() for t in ax.get_xticklabels()],
                                    "yticklabels": [t.get_text() for t in ax.get_yticklabels()]})
        out.append(entry)
    return out


def _grid(n: int, width: float = 4.6, height: float = 3.4):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.4), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _xaxis(ax, xs: list, x_name: str | None):
    if x_name is None:
        ax.set_xticks([0], ["—"])
    else:
        ax.set_xlabel(x_name)


def _xpos(x) -> float:
    return 0.0 if x is None else float(x)


def fraction_figure(best: list[dict], path: Path, *, x_name: dict[str, str | None], note: str = ""):
    """Fraction of members that learned vs x (delay), at each method's best α/lr per x, with
    Wilson 95 % intervals."""
    tasks = sorted({b["task"] for b in best})
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        mine = [b for b in best if b["task"] == task]
        for i, method in enumerate(sorted({b["method"] for b in mine})):
            pts = sorted((b for b in mine if b["method"] == method), key=lambda b: _xpos(b["x"]))
            f = np.array([b["fraction"] for b in pts])
            err = np.array([[b["fraction"] - b["ci_low"] for b in pts], [b["ci_high"] - b["fraction"] for b in pts]])
            err = np.clip(err, 0.0, None)  # at fraction 0 or 1 the interval's end can round past it
            ax.errorbar([_xpos(b["x"]) for b in pts], f, yerr=err, fmt="o-", capsize=3, color=_color(i),
                        label=method)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("fraction learned (Wilson 95 %)")
        ax.set_title(task)
        _xaxis(ax, [b["x"] for b in mine], x_name[task])
        ax.legend(fontsize=7)
    fig.suptitle("Fraction learned (best α per setting, by grid search)", y=0.965 if note else 1.0)
    return _finish(fig, path, note)


def epochs_figure(best: list[dict], path: Path, *, x_name: dict[str, str | None], note: str = ""):
    """Epochs to converge (median and IQR over the members that learned) vs x."""
    tasks = sorted({b["task"] for b in best})
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        mine = [b for b in best if b["task"] == task]
        for i, method in enumerate(sorted({b["method"] for b in mine})):
            pts = sorted((b for b in mine if b["method"] == method and b["median_epochs"] is not None),
                         key=lambda b: _xpos(b["x"]))
            if not pts:
                continue
            med = np.array([b["median_epochs"] for b in pts])
            err = np.array([[b["median_epochs"] - b["q25_epochs"] for b in pts],
                            [b["q75_epochs"] - b["median_epochs"] for b in pts]])
            ax.errorbar([_xpos(b["x"]) for b in pts], med, yerr=err, fmt="s-", capsize=3, color=_color(i),
                        label=method)
        ax.set_ylabel("epochs to converge (median, IQR)")
        ax.set_title(task)
        _xaxis(ax, [b["x"] for b in mine], x_name[task])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no member converged", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Epochs to converge", y=0.965 if note else 1.0)
    return _finish(fig, path, note)


def test_loss_figure(best: list[dict], members: dict[tuple, list[dict]], path: Path, *,
                     x_name: dict[str, str | None], note: str = ""):
    """Test loss (unforced masked MSE on fresh trials after training; median and IQR over the
    members that have one, i.e. did not diverge) vs x, at each method's best α/lr per x, as the
    EF paper's test-error panels. Nothing is drawn when no member has a test loss."""
    tasks = sorted({b["task"] for b in best})
    losses = {b["setting"]: [m["test_loss"] for m in members[b["setting"]] if m.get("test_loss") is not None]
              for b in best}
    if not any(losses.values()):
        return [], []
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        mine = [b for b in best if b["task"] == task]
        for i, method in enumerate(sorted({b["method"] for b in mine})):
            pts = sorted((b for b in mine if b["method"] == method and losses[b["setting"]]),
                         key=lambda b: _xpos(b["x"]))
            if not pts:
                continue
            med, lo, hi = (np.array([np.percentile(losses[b["setting"]], q) for b in pts]) for q in (50, 25, 75))
            ax.errorbar([_xpos(b["x"]) for b in pts], med, yerr=np.array([med - lo, hi - med]), fmt="D-",
                        capsize=3, color=_color(i), label=method)
        if ax.get_lines():
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_ylabel("test loss (median, IQR)")
        ax.set_title(task)
        _xaxis(ax, [b["x"] for b in mine], x_name[task])
    fig.suptitle("Test loss after training (unforced, fresh trials)", y=0.965 if note else 1.0)
    return _finish(fig, path, note)


def _median_curve(members: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = max(len(m["curves"].get(key, [])) for m in members)
    mat = np.full((len(members), n), np.nan)
    for i, m in enumerate(members):
        v = np.array([np.nan if y is None else y for y in m["curves"].get(key, [])], float)
        mat[i, : len(v)] = v
        if m["converged"] and len(v):  # a converged member keeps its last value after it stops
            mat[i, len(v):] = v[-1]
    with warnings.catch_warnings():  # all-NaN epochs (every member diverged) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        med, lo, hi = (np.nanpercentile(mat, q, axis=0) for q in (50, 25, 75))
    return med, lo, hi


def curves_figure(best: list[dict], members: dict[tuple, list[dict]], path: Path, *, key: str = "val_loss",
                  ylabel: str = "validation loss (unforced)", log: bool = True, max_x: int = 4,
                  x_name: dict[str, str | None], note: str = "", title: str = "Learning curves"):
    """Median (line) and IQR (band) of a per-epoch curve for each method's best setting; one
    panel per task and x value (up to `max_x` x values per task, spread over the range)."""
    panels = []
    for task in sorted({b["task"] for b in best}):
        xs = sorted({b["x"] for b in best if b["task"] == task}, key=_xpos)
        if len(xs) > max_x:
            xs = [xs[round(i)] for i in np.linspace(0, len(xs) - 1, max_x)]
        panels += [(task, x) for x in xs]
    fig, axes = _grid(len(panels))
    methods = sorted({b["method"] for b in best})
    several_lr = len({b["lr"] for b in best}) > 1
    for ax, (task, x) in zip(axes, panels):
        for b in (b for b in best if b["task"] == task and b["x"] == x):
            rows = [m for m in members[b["setting"]] if m["curves"].get(key)]
            if not rows:
                continue
            med, lo, hi = _median_curve(rows, key)
            epochs = np.arange(1, len(med) + 1)
            color = _color(methods.index(b["method"]))
            setting = f"α={b['alpha']:g}" + (f", lr={b['lr']:g}" if several_lr else "")
            ax.plot(epochs, med, color=color, label=f"{b['method']} ({setting})")
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
        if log and ax.get_lines():
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(task if x_name[task] is None else f"{task}, {x_name[task]} = {x:g}")
        if ax.get_lines():
            ax.legend(fontsize=7)
    fig.suptitle(title, y=0.965 if note else 1.0)
    return _finish(fig, path, note)


def heatmap_figure(settings: list[dict], path: Path, *, x_name: dict[str, str | None], note: str = ""):
    """Fraction learned over α × x for each (task, method) that tried more than one α (the
    best lr per cell)."""
    cells: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for s in settings:
        grid = cells[(s["task"], s["method"])]
        key = (s["alpha"], s["x"])
        grid[key] = max(grid.get(key, -1.0), s["fraction"])
    panels = [k for k, grid in sorted(cells.items()) if len({a for a, _ in grid}) > 1]
    if not panels:
        return [], []
    fig, axes = _grid(len(panels), 4.2, 3.6)
    for ax, (task, method) in zip(axes, panels):
        grid = cells[(task, method)]
        alphas = sorted({a for a, _ in grid})
        xs = sorted({x for _, x in grid}, key=_xpos)
        mat = np.array([[grid.get((a, x), np.nan) for x in xs] for a in alphas])
        im = ax.imshow(mat, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(xs)), ["—" if x is None else f"{x:g}" for x in xs])
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        for i in range(len(alphas)):
            for j in range(len(xs)):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="w" if mat[i, j] < 0.6 else "k")
        ax.set_xlabel(x_name[task] or "")
        ax.set_ylabel("α")
        ax.set_title(f"{task}: {method}")
        fig.colorbar(im, ax=ax, label="fraction learned")
    fig.suptitle("Fraction learned over α × delay", y=0.965 if note else 1.0)
    return _finish(fig, path, note)
