"""The figures of the Kaleb et al. reproductions (`reproductions.kaleb`), drawn from what their
workflows wrote into their results directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..reproductions import kaleb  # noqa: E402
from ._figures import _save  # noqa: E402

METHOD_COLORS = {"RFLO": "#ff7f0e", "RFLO+c": "#d62728", "BPTT": "#1f77b4", "BPTT+c": "#9467bd"}


def kaleb_figures(out: str | Path, name: str) -> list[Path]:
    """Draw the figures of Kaleb reproduction `name` ("kaleb-adaptation" or "kaleb-sine-shift")
    from the summary and arrays its workflow wrote into `out`; returns their paths.
    kaleb-adaptation: `kaleb-adaptation.png`, `kaleb-alignment.png`, and `kaleb-heatmap.png`
    when the run swept rotations; kaleb-sine-shift: `kaleb-sine-shift.png`."""
    drawers = {kaleb.NAME: _adaptation_figures, kaleb.SINE_NAME: _sine_figures}
    if name not in drawers:
        raise ValueError(f"name: {name!r} is not a Kaleb reproduction; choose one of: {', '.join(drawers)}")
    return drawers[name](Path(out))


def _adaptation_figures(out: Path) -> list[Path]:
    summary = json.loads((out / kaleb.SUMMARY_FILE).read_text())
    arrays = np.load(out / kaleb.ARRAYS_FILE)
    methods, quick = summary["methods"], summary["quick"]
    paths = {k: arrays[f"path:{k}"] for k in kaleb.PATH_KEYS}
    figures = [kaleb_figure(paths, _curves(summary["adaptation_curves_position_mse"]), arrays["targets"],
                            out / "kaleb-adaptation.png", quick=quick, rotation=summary["config"]["rotation"],
                            before=summary["before"]["rotated_control_off"]["position_mse"],
                            after={m: methods[m]["test_after"]["position_mse"] for m in methods}),
               kaleb_alignment_figure(methods, out / "kaleb-alignment.png", quick=quick)]
    heatmap = summary["heatmap"]
    if heatmap["rotations"]:
        errors = {m: _nan(rows) for m, rows in heatmap["position_mse_after"].items()}
        figures.append(kaleb_heatmap(errors, heatmap["rotations"], heatmap["learning_rates"],
                                     out / "kaleb-heatmap.png", quick=quick))
    return figures


def _sine_figures(out: Path) -> list[Path]:
    summary = json.loads((out / kaleb.SINE_SUMMARY_FILE).read_text())
    arrays = np.load(out / kaleb.SINE_ARRAYS_FILE)
    examples = {"target": arrays["target"]} | {k: arrays[f"output:{k}"] for k in kaleb.EXAMPLE_KEYS}
    methods = summary["methods"]
    return [kaleb_sine_figure(examples, _curves(summary["adaptation_curves_output_mse"]),
                              out / "kaleb-sine-shift.png", quick=summary["quick"],
                              shift=summary["config"]["frequency_shift"], before=summary["before"]["shifted_control_off"],
                              after={m: methods[m]["test_after"] for m in methods})]


def _nan(values: list[Any]) -> np.ndarray:
    """A summary's (nested) list of numbers, None where not finite, as floats (None → NaN)."""
    return np.array(values, float)


def _curves(curves: dict[str, list[float | None]]) -> dict[str, np.ndarray]:
    return {m: _nan(c) for m, c in curves.items()}


def kaleb_figure(paths: dict[str, np.ndarray], curves: dict[str, np.ndarray], targets, path: str | Path, *,
                 quick: bool, rotation: float, before: float, after: dict[str, float | None]) -> Path:
    """Top: cursor paths to the 8 targets under the rotation before adaptation (control off, and
    on), and the test error (control off) over adaptation trials. Bottom: cursor paths after
    adaptation with each method (control off), the paths before in grey."""
    targets = np.asarray(targets)
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.5), layout="constrained")
    colors = plt.get_cmap("hsv", len(targets) + 1)

    def draw(ax, xy, title, reference=None):
        if reference is not None:
            for p in reference:
                ax.plot(p[:, 0], p[:, 1], color="0.8", lw=1)
        for k, p in enumerate(xy):
            ax.plot(p[:, 0], p[:, 1], color=colors(k), lw=1.3)
        # each target ringed in its path's colour (at 45° a rotated path ends on the next target)
        ax.scatter(targets[:, 0], targets[:, 1], s=70, facecolors="none",
                   edgecolors=[colors(k) for k in range(len(targets))], lw=1.5)
        ax.scatter([0], [0], s=15, color="k")
        lim = 1.35 * float(np.max(np.abs(targets)))
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)

    draw(axes[0, 0], paths["before"], f"before adaptation, control off\nposition MSE {before:.3g}")
    draw(axes[0, 1], paths["before, control on"], "before adaptation, control on")
    _adaptation_curves(fig, axes, curves, "test position MSE (control off)")
    for ax, method in zip(axes[1], ("RFLO", "RFLO+c", "BPTT", "BPTT+c")):
        if method in paths:
            value = after.get(method)
            score = "diverged" if value is None else f"{value:.3g}"
            draw(ax, paths[method], f"after {method}, control off\nposition MSE {score}", reference=paths["before"])
        else:
            ax.axis("off")
    title = f"Kaleb et al. 2024: adaptation to a {rotation:g}° visuomotor rotation"
    if quick:
        title += " — QUICK run (smaller network, fewer iterations; not the paper's settings)"
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)[0]


def kaleb_heatmap(errors: dict[str, np.ndarray], rotations, learning_rates: dict[str, list[float]], path: str | Path,
                  *, quick: bool) -> Path:
    """Test position MSE after adaptation (control off, log colour scale shared by all panels),
    one panel per method: rotation angle (rows) × learning rate (columns), as the paper's
    learning-rate sweeps. `errors[method]` is [rotations, learning rates] (NaN: diverged)."""
    methods = list(errors)
    finite = np.concatenate([np.ravel(e)[np.isfinite(np.ravel(e))] for e in errors.values()])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (1e-3, 1.0)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.4), layout="constrained", squeeze=False)
    norm = matplotlib.colors.LogNorm(vmin=max(vmin, 1e-12), vmax=max(vmax, 2 * max(vmin, 1e-12)))
    for ax, method in zip(axes[0], methods):
        grid = np.asarray(errors[method], float)
        image = ax.imshow(np.where(np.isfinite(grid), grid, np.nan), norm=norm, cmap="viridis_r", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "div." if not np.isfinite(v) else f"{v:.2g}", ha="center", va="center", fontsize=7,
                    color="w" if np.isfinite(v) and v > np.sqrt(norm.vmin * norm.vmax) else "k")
        ax.set_xticks(range(grid.shape[1]), [f"{lr:g}" for lr in learning_rates[method]], fontsize=7, rotation=45)
        ax.set_yticks(range(len(rotations)), [f"{r:g}°" for r in rotations], fontsize=8)
        ax.set_xlabel("learning rate")
        ax.set_title(method, fontsize=10)
    axes[0, 0].set_ylabel("rotation")
    fig.colorbar(image, ax=axes[0, -1], label="test position MSE after adaptation")
    title = "Kaleb et al. 2024: adaptation over rotation angle × learning rate"
    if quick:
        title += " — QUICK run"
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)[0]


ALIGNMENT_PANELS = (
    ("update_efficiency", "update efficiency\n‖Σ_t Δ_t‖ / Σ_t ‖Δ_t‖ (Fig. 5a)"),
    ("local_alignment", "local alignment\ncos(Δ_t, -∇ℓ_t) (Fig. 4b)"),
    ("second_order_alignment", "second-order alignment\ncos(Δ_t, -(G_t + λI)⁻¹∇ℓ_t) (Fig. 5b)"),
    ("control_second_order_alignment", "the control's induced update\ncos(ΔW^c_t, -(G_t + λI)⁻¹∇ℓ_t)"),
)


def kaleb_alignment_figure(methods: dict[str, dict], path: str | Path, *, quick: bool) -> Path:
    """Per diagnostic trial (dots) and median (bar), per method: update efficiency, local
    alignment with the exact online gradient, alignment with the damped Gauss–Newton direction,
    and that of the control's induced update. `methods[m][key]` is a list (None: not finite)."""
    fig, axes = plt.subplots(1, len(ALIGNMENT_PANELS), figsize=(3.8 * len(ALIGNMENT_PANELS), 3.6),
                             layout="constrained")
    for ax, (key, title) in zip(axes, ALIGNMENT_PANELS):
        shown = [m for m in methods if key in methods[m]]
        for i, m in enumerate(shown):
            values = np.array([v for v in methods[m][key] if v is not None], float)
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.scatter(i + jitter, values, s=10, color=METHOD_COLORS.get(m), alpha=0.6)
            if len(values):
                ax.hlines(np.median(values), i - 0.3, i + 0.3, color="k", lw=2)
        ax.set_xticks(range(len(shown)), shown, fontsize=8)
        ax.set_xlim(-0.6, max(len(shown), 1) - 0.4)
        ax.axhline(0, color="0.8", lw=0.8, zorder=0)
        ax.set_title(title, fontsize=9)
    title = "Kaleb et al. 2024: update diagnostics on the first adaptation trials (pre-trained W_rec)"
    if quick:
        title += " — QUICK run"
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)[0]


def kaleb_sine_figure(examples: dict[str, np.ndarray], curves: dict[str, np.ndarray], path: str | Path, *,
                      quick: bool, shift: float, before: float | None, after: dict[str, float | None]) -> Path:
    """Top left: one shifted test trial's sine channel, the target and the output before adaptation
    (control off, and on); top right: the test output MSE (control off) over adaptation trials.
    Bottom: the same trial after adaptation with each method (control off)."""
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), layout="constrained")
    target = examples["target"][:, 0]
    score = lambda v: "diverged" if v is None else f"{v:.3g}"

    def draw(ax, output, title):
        ax.plot(target, color="k", lw=1.5, label="target (shifted)")
        ax.plot(output[:, 0], color="tab:red", lw=1.2, ls="--", label="output")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)

    draw(axes[0, 0], examples["before"], f"before adaptation, control off\ntest output MSE {score(before)}")
    axes[0, 0].legend(fontsize=7)
    draw(axes[0, 1], examples["before, control on"], "before adaptation, control on")
    _adaptation_curves(fig, axes, curves, "test output MSE (control off)")
    for ax, method in zip(axes[1], ("RFLO", "RFLO+c", "BPTT", "BPTT+c")):
        if method in examples:
            draw(ax, examples[method], f"after {method}, control off\ntest output MSE {score(after.get(method))}")
        else:
            ax.axis("off")
    title = f"Kaleb et al. 2024: adaptation to a frequency shift of +{shift:g} (sine/cosine task)"
    if quick:
        title += " — QUICK run (smaller network, fewer iterations; not the paper's settings)"
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)[0]


def _adaptation_curves(fig, axes, curves: dict[str, np.ndarray], ylabel: str) -> None:
    """Each method's test error per adaptation trial, in the top row's right half (axes[0, 2:])."""
    gs = axes[0, 2].get_gridspec()
    axes[0, 2].remove()
    axes[0, 3].remove()
    ax = fig.add_subplot(gs[0, 2:])
    for method, curve in curves.items():
        ax.plot(np.arange(len(curve)), curve, color=METHOD_COLORS.get(method), label=method)
    ax.set_yscale("log")
    ax.set_xlabel("adaptation trial")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
