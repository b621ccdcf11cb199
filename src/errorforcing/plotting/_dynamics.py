"""Figures of a trained network's dynamics: trajectories in PC space with the fixed points on
top, eigenvalue spectra against the unit circle, explained variance, and the fixed-point
structure of several methods side by side (`compare --dynamics`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ._figures import METHOD_COLORS, _save  # noqa: E402

# half-length of an unstable-direction segment, as a fraction of the trajectories' PC range
DIRECTION_SCALE = 0.08


def _condition_colors(n: int):
    cmap = plt.get_cmap("tab10")
    return [cmap(c % 10) for c in range(n)]


def _at_least(points: np.ndarray, k: int) -> np.ndarray:
    """Pad the last axis with zeros to k coordinates (a network with fewer units than axes)."""
    points = np.asarray(points)
    missing = k - points.shape[-1]
    return points if missing <= 0 else np.concatenate([points, np.zeros(points.shape[:-1] + (missing,))], axis=-1)


def _draw_state_space(ax, dyn, three_d: bool) -> None:
    """Condition-averaged trajectories, stable points filled, unstable open with their unstable
    eigenvector directions as short segments."""
    k = 3 if three_d else 2
    proj = _at_least(dyn.pca.project(dyn.averages)[..., :k], k)
    span = np.ptp(proj.reshape(-1, k), axis=0).max() or 1.0
    for c, (traj, name, color) in enumerate(zip(proj, dyn.condition_names, _condition_colors(len(proj)))):
        ax.plot(*traj.T, color=color, lw=1.2, label=name)
        ax.scatter(*traj[0][:, None], color=color, marker="^", s=18)
    fp = dyn.fixed_points
    if len(fp):
        pts = _at_least(dyn.pca.project(fp.states)[:, :k], k)
        stable = fp.stable
        ax.scatter(*pts[stable].T, s=40, facecolors="k", edgecolors="k", label="stable fixed point", zorder=5)
        ax.scatter(*pts[~stable].T, s=40, facecolors="none", edgecolors="k", label="unstable fixed point", zorder=5)
        for p, lam, vecs in zip(pts[~stable], fp.eigenvalues[~stable], fp.eigenvectors[~stable]):
            for j in np.flatnonzero(np.abs(lam) >= 1):
                v = _at_least(dyn.pca.directions(vecs[:, j].real)[:k], k)
                norm = np.linalg.norm(v)
                if norm > 0:
                    d = DIRECTION_SCALE * span * v / norm
                    ax.plot(*np.stack([p - d, p + d]).T, color="#d62728", lw=1.0)
    ratio = _at_least(np.asarray(dyn.pca.explained_variance_ratio), k)
    for axis, name in zip(("x", "y", "z")[:k], range(k)):
        getattr(ax, f"set_{axis}label")(f"PC{name + 1} ({100 * ratio[name]:.0f} %)", fontsize=8)


def fixed_points_figure(dyn, path: str | Path, *, title: str = "", formats=("png",)) -> list[Path]:
    """Left: condition-averaged trajectories in the top-3 PC space with the fixed points
    (stable filled, unstable open, unstable eigenvector directions red). Right: every point's
    eigenvalues in the complex plane against the unit circle (stable points' filled)."""
    fig = plt.figure(figsize=(12, 5))
    three_d = dyn.pca.components.shape[0] >= 3
    ax = fig.add_subplot(1, 2, 1, projection="3d" if three_d else None)
    _draw_state_space(ax, dyn, three_d)
    ax.legend(fontsize=6, loc="upper left")
    fp = dyn.fixed_points
    ax.set_title(f"{len(fp)} fixed points ({int(fp.stable.sum())} stable) under input {dyn.input_name}", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    t = np.linspace(0, 2 * np.pi, 200)
    ax2.plot(np.cos(t), np.sin(t), "k--", lw=0.8)
    cmap = plt.get_cmap("viridis", max(len(fp), 2))
    for k in range(len(fp)):
        lam = fp.eigenvalues[k]
        ax2.scatter(lam.real, lam.imag, s=12, color=cmap(k), facecolors=cmap(k) if fp.stable[k] else "none",
                    label=f"point {k}: {'stable' if fp.stable[k] else f'{fp.n_unstable[k]} unstable'}"
                    if k < 8 else None)
    ax2.set_aspect("equal")
    ax2.set_xlabel("Re λ")
    ax2.set_ylabel("Im λ")
    ax2.set_title("eigenvalues of the Jacobian at each fixed point", fontsize=9)
    if len(fp):
        ax2.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path, formats)


def pca_figure(dyn, path: str | Path, *, title: str = "", formats=("png",)) -> list[Path]:
    """Left: condition-averaged trajectories on PC1–PC2. Middle: each of the top PCs over time.
    Right: explained variance per PC (and cumulative), with the participation ratio."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    proj = dyn.pca.project(dyn.averages)
    k = proj.shape[-1]
    colors = _condition_colors(len(proj))
    for traj, name, color in zip(proj, dyn.condition_names, colors):
        axes[0].plot(traj[:, 0], traj[:, 1] if k > 1 else np.zeros(len(traj)), color=color, lw=1.2, label=name)
        axes[0].scatter(traj[0, 0], traj[0, 1] if k > 1 else 0.0, color=color, marker="^", s=18)
        for j in range(k):
            axes[1].plot(traj[:, j], color=color, lw=1.0, ls=("-", "--", ":")[j % 3])
    axes[0].set_xlabel("PC1")
    axes[0].set_ylabel("PC2")
    axes[0].legend(fontsize=6)
    axes[0].set_title("condition-averaged trajectories", fontsize=9)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("PC coordinate (PC1 solid, PC2 dashed, PC3 dotted)")
    ratio = dyn.pca.explained_variance_ratio
    idx = np.arange(1, len(ratio) + 1)
    axes[2].bar(idx, ratio, color="#1f77b4", label="per PC")
    axes[2].plot(idx, np.cumsum(ratio), "ko-", ms=3, label="cumulative")
    axes[2].set_xticks(idx)
    axes[2].set_ylim(0, 1.05)
    axes[2].set_xlabel("PC")
    axes[2].set_ylabel("fraction of variance")
    axes[2].set_title(f"participation ratio {dyn.pca.participation_ratio:.2f} (of N = {dyn.pca.mean.shape[0]})",
                      fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path, formats)


def dynamics_comparison_figure(summaries: dict[str, list[dict[str, Any]]], path: str | Path, *, title: str = "",
                               forcings: dict[str, str] | None = None, formats=("png",)) -> list[Path]:
    """Fixed-point structure per method (`summaries[method]`: one `MemberDynamics.summary()` per
    member). Left: the number of stable fixed points of each member (jittered dots, converged
    members filled). Right: |λ|max of every stable point (how slowly it forgets; 1 = marginal)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rng = np.random.default_rng(0)
    methods = list(summaries)
    for m, method in enumerate(methods):
        color = METHOD_COLORS.get((forcings or {}).get(method, ""), "#555555")
        for s in summaries[method]:
            jitter = rng.uniform(-0.15, 0.15)
            axes[0].scatter(m + jitter, s["n_stable"], color=color, facecolors=color if s["converged"] else "none",
                            s=30)
            lam = [p["max_abs_eigenvalue"] for p in s["points"] if p["stable"]]
            axes[1].scatter(m + jitter + np.zeros(len(lam)), lam, color=color, s=14, alpha=0.8)
    for ax in axes:
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods)
    axes[0].axhline(4, ls=":", color="k", lw=0.8)
    axes[0].set_ylabel("stable fixed points under the delay input")
    axes[0].set_title("memory states (dotted: the 4 expected for delayed XOR; open: not converged)", fontsize=8)
    axes[1].axhline(1, ls="--", color="k", lw=0.8)
    axes[1].set_ylabel("|λ|max of each stable point")
    axes[1].set_title("slowest mode of each stable fixed point", fontsize=9)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path, formats)


def report_dynamics(directory: str | Path, rows: list[dict[str, Any]], fig_dir: Path, *, root: Path,
                    trials: int = 32, initial_states: int = 256) -> list[dict[str, Any]]:
    """The report's Dynamics section: for each (task, method) of the annotated member `rows`, its
    best network (converged first, then the lowest final validation loss; never a diverged
    one), with its fixed points under the delay input and its PCA trajectories drawn into
    `fig_dir`. Paths in the entries are relative to `root`. A method whose run has no stored
    parameters gets an entry saying so."""
    from ..experiments import StoredRunError, load_run
    from ..experiments import member_dynamics

    entries = []
    loaded: dict[str, Any] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if not r["diverged"] and r["final_val_loss"] is not None:
            groups.setdefault((r["task"], r["method"]), []).append(r)
    for (task, method), members in sorted(groups.items()):
        best = min(members, key=lambda r: (not r["converged"], r["final_val_loss"]))
        entry = {"task": task, "method": method, "run_id": best["run_id"], "member": best["member"],
                 "seed": best["seed"], "alpha": best["alpha"], "converged": bool(best["converged"])}
        try:
            if best["run_id"] not in loaded:
                loaded[best["run_id"]] = load_run(directory, best["run_id"])
            dyn = member_dynamics(loaded[best["run_id"]], best["member"], trials=trials, initial_states=initial_states)
        except StoredRunError as e:
            entries.append(entry | {"error": str(e)})
            continue
        stem = f"dynamics_{task}_{method}".replace(" ", "_").replace("=", "-").replace("/", "-")
        title = f"{task} · {method} · run {best['run_id']} member {best['member']} (seed {best['seed']})"
        fp = fixed_points_figure(dyn, fig_dir / f"{stem}_fixed_points", title=title)[0]
        pc = pca_figure(dyn, fig_dir / f"{stem}_pca", title=title)[0]
        s = dyn.summary()
        entries.append(entry | {k: s[k] for k in ("input", "n_fixed_points", "n_stable", "participation_ratio")}
                       | {"fixed_points_figure": fp.relative_to(root).as_posix(),
                          "pca_figure": pc.relative_to(root).as_posix()})
    return entries
