"""The dynamics of one trained member: its unforced task trajectories, their principal
components, condition averages, and the fixed points under a constant input (behind
`analyze fixed-points`, `analyze pca`, `compare --dynamics` and the report's Dynamics section)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..analysis import (PCA, FixedPoints, condition_average, condition_labels, find_fixed_points, linearise,
                        pca, sample_states, unforced_states)
from ..tasks import sample_batch
from ._summary import method_label
from ._load import LoadedRun, StoredRunError

INPUTS = ("delay", "zeros", "mean")
DYNAMICS_STREAM = 7_000  # fold_in tag of the member-seed key that draws trials and initial states


@dataclasses.dataclass
class MemberDynamics:
    run_id: str
    member: int
    row: dict[str, Any]
    method: str
    input_name: str
    x: np.ndarray  # [n_in] the constant input of the fixed-point search
    trajectories: np.ndarray  # [B, T, N] unforced, from init_state
    conditions: np.ndarray  # [B] condition index per trial
    condition_names: list[str]
    averages: np.ndarray  # [C, T, N]
    pca: PCA  # fitted on all trajectory states
    fixed_points: FixedPoints

    def summary(self, n_eigenvalues: int = 4) -> dict[str, Any]:
        """JSON-ready: the member, the input, and per point its speed, stability, number of
        unstable modes, how many initial states reached it, the `n_eigenvalues` largest |λ| and
        its coordinates on the leading PCs."""
        fp = self.fixed_points
        coords = self.pca.project(fp.states) if len(fp) else np.zeros((0, self.pca.components.shape[0]))
        points = [{"speed": float(fp.speeds[k]), "stable": bool(fp.stable[k]), "n_unstable": int(fp.n_unstable[k]),
                   "count": int(fp.counts[k]), "max_abs_eigenvalue": float(np.abs(fp.eigenvalues[k, 0])),
                   "eigenvalues_abs": [float(v) for v in np.abs(fp.eigenvalues[k, :n_eigenvalues])],
                   "pc": [float(v) for v in coords[k]]} for k in range(len(fp))]
        return {"run_id": self.run_id, "member": self.member, "seed": self.row["seed"],
                "alpha": self.row["alpha"], "method": self.method, "converged": bool(self.row["converged"]),
                "input": self.input_name, "x": [float(v) for v in self.x],
                "n_initial": fp.n_initial, "n_converged": fp.n_converged, "n_fixed_points": len(fp),
                "n_stable": int(fp.stable.sum()), "points": points,
                "conditions": self.condition_names,
                "explained_variance_ratio": [float(v) for v in self.pca.explained_variance_ratio],
                "participation_ratio": self.pca.participation_ratio}


def resolve_input(spec: str, inputs: np.ndarray) -> tuple[str, np.ndarray]:
    """The constant input named by `spec`, given task inputs [B, T, n_in]: "delay" — the input
    vector held for the most steps (the delay period's in delayed XOR and evidence integration),
    "zeros", "mean" (over trials and steps), or n_in comma-separated numbers."""
    n_in = inputs.shape[-1]
    flat = np.asarray(inputs, np.float64).reshape(-1, n_in)
    if spec == "zeros":
        return spec, np.zeros(n_in)
    if spec == "mean":
        return spec, flat.mean(axis=0)
    if spec == "delay":
        values, counts = np.unique(flat, axis=0, return_counts=True)
        return spec, values[np.argmax(counts)]
    try:
        x = np.array([float(v) for v in spec.split(",")])
    except ValueError:
        raise StoredRunError(f"--input: expected one of {', '.join(INPUTS)} or {n_in} comma-separated numbers, "
                             f"got {spec!r}") from None
    if x.shape != (n_in,):
        raise StoredRunError(f"--input: the task has {n_in} input channels, got {len(x)} numbers ({spec!r})")
    return spec, x


def check_input(spec: str) -> None:
    """Reject a malformed --input before anything is loaded (the channel count is checked later)."""
    if spec in INPUTS:
        return
    try:
        [float(v) for v in spec.split(",")]
    except ValueError:
        raise StoredRunError(f"--input: expected one of {', '.join(INPUTS)} or comma-separated numbers, "
                             f"got {spec!r}") from None


def member_dynamics(run: LoadedRun, member: int | None = None, *, input: str = "delay", trials: int = 64,
                    initial_states: int = 512, noise: float = 0.01, tol: float = 1e-8,
                    unique_tol: float = 1e-3, conditions: tuple[str, ...] | None = None,
                    find_points: bool = True) -> MemberDynamics:
    """Trajectories, PCA and fixed points of one member (default: `run.best_member()`).

    `trials` task trials (drawn from the member's seed, so reruns agree) are run unforced;
    `initial_states` states sampled from them (jittered by `noise`) seed `find_fixed_points`
    under the constant input `input` (see `resolve_input`). The PCA is fitted on every state of
    the trajectories; the condition averages group trials by `condition_labels`.
    `find_points=False` skips the search (no fixed points), for trajectories and PCA alone."""
    if trials < 2:
        raise StoredRunError(f"--trials: must be >= 2, got {trials}")
    if initial_states < 1:
        raise StoredRunError(f"--initial-states: must be >= 1, got {initial_states}")
    i = run.best_member() if member is None else member
    cell = run.cell(i)
    row = run.rows[i]
    if row["diverged"]:
        raise StoredRunError(f"--member: member {i} of run {run.run_id!r} diverged; it has no dynamics to analyse")
    key = jax.random.fold_in(jax.random.key(row["seed"]), DYNAMICS_STREAM)
    k_trials, k_states = jax.random.split(key)
    batch = sample_batch(run.task, trials, key=k_trials)
    name, x = resolve_input(input, np.asarray(batch.inputs))
    trajectories = np.asarray(unforced_states(cell, batch.inputs))
    try:
        labels, names = condition_labels({k: np.asarray(v) for k, v in batch.info.items()}, conditions)
    except ValueError as e:
        raise StoredRunError(f"--conditions: {str(e).removeprefix('keys: ')}") from None
    if find_points:
        h0 = sample_states(cell, batch, initial_states, key=k_states, noise=noise)
        fp = find_fixed_points(cell, jnp.asarray(x, h0.dtype), h0, tol=tol, unique_tol=unique_tol)
    else:
        fp = linearise(cell, x, np.zeros((0, cell.n_rec), trajectories.dtype), n_initial=0, n_converged=0)
    fit = pca(trajectories, min(3, trajectories.shape[-1]))
    return MemberDynamics(run.run_id, i, row, method_label(row["forcing"], row["rule"]), name, np.asarray(x),
                          trajectories, labels, names, condition_average(trajectories, labels), fit, fp)


def compare_dynamics(directory, arms: list[dict[str, Any]], *, input: str = "delay", trials: int = 64,
                     initial_states: int = 256) -> dict[str, Any]:
    """The fixed-point structure of each compared method's networks under `input` (default: the
    delay input): every non-diverged member of the method's best setting. `arms`: one dict per
    method with `label`, `run_id` and the chosen `alpha` and `lr`.

    Returns `summaries` (label -> one `MemberDynamics.summary()` per member) and `table`, one row
    per method: members analysed, how many converged, the median and range of the number of
    stable fixed points, how many members have exactly four (delayed XOR's four memory states
    s1 × s2), the median number of unstable points, and the median |λ|max over the stable points
    (how slowly the slowest memory decays; 1 is marginal)."""
    summaries: dict[str, list[dict[str, Any]]] = {}
    forcings: dict[str, str] = {}
    for arm in arms:
        run = _load(directory, arm["run_id"])
        chosen = [i for i, r in enumerate(run.rows) if r["alpha"] == arm["alpha"]
                  and (arm.get("lr") is None or r["lr"] == arm["lr"]) and not r["diverged"]]
        summaries[arm["label"]] = [member_dynamics(run, i, input=input, trials=trials,
                                                   initial_states=initial_states).summary() for i in chosen]
        forcings[arm["label"]] = run.config.forcing.kind
    table = []
    for label, rows in summaries.items():
        n_stable = [s["n_stable"] for s in rows]
        lam = [p["max_abs_eigenvalue"] for s in rows for p in s["points"] if p["stable"]]
        table.append({"method": label, "alpha": next((a["alpha"] for a in arms if a["label"] == label), None),
                      "members": len(rows), "converged": sum(s["converged"] for s in rows),
                      "median_stable": float(np.median(n_stable)) if rows else None,
                      "min_stable": min(n_stable, default=None), "max_stable": max(n_stable, default=None),
                      "with_four_stable": sum(n == 4 for n in n_stable),
                      "median_unstable": float(np.median([s["n_fixed_points"] - s["n_stable"] for s in rows]))
                      if rows else None,
                      "median_stable_max_abs_eigenvalue": float(np.median(lam)) if lam else None})
    return {"input": input, "summaries": summaries, "table": table, "forcings": forcings}


def _load(directory, run_id: str) -> LoadedRun:
    from ._load import load_run

    return load_run(directory, run_id)
