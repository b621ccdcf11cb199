"""Principal components of population activity and condition-averaged trajectories.

For states h_i (rows, any leading axes flattened) with mean m and covariance
C = (1/(n−1)) Σ_i (h_i − m)(h_i − m)ᵀ = U diag(λ) Uᵀ (λ descending), the principal axes are
U's columns, the explained variance of axis j is λ_j, and the participation ratio

    PR = (Σ_j λ_j)² / Σ_j λ_j²

is the effective dimensionality (1 for one dominant axis, N for isotropic activity).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from jaxtyping import Float, Int


class PCA(NamedTuple):
    """A fitted PCA: `project(h)` maps states [..., N] to their first k coordinates [..., k]."""

    mean: Float[np.ndarray, " N"]
    components: Float[np.ndarray, "k N"]  # rows: unit principal axes, by explained variance
    explained_variance: Float[np.ndarray, " k"]
    explained_variance_ratio: Float[np.ndarray, " k"]
    total_variance: float
    participation_ratio: float  # over all N eigenvalues of the covariance, not just the k kept

    def project(self, states) -> np.ndarray:
        return (np.asarray(states, np.float64) - self.mean) @ self.components.T

    def directions(self, vectors) -> np.ndarray:
        """Coordinates of direction vectors [..., N] (e.g. eigenvectors): no mean subtracted."""
        return np.asarray(vectors) @ self.components.T


def pca(states, k: int) -> PCA:
    """PCA of `states` [..., N] (all leading axes are samples), keeping k components.

    Computed from the eigen-decomposition of the N × N covariance (numpy `eigh`, float64); each
    axis's sign is fixed so that its largest-magnitude entry is positive.

    Arguments:
        states: states [..., N]; every leading axis is a sample axis (e.g. [B, T, N]).
        k: the number of components kept, 1 <= k <= N.

    Returns:
        `PCA`: the mean [N], the axes, the explained variance, the participation ratio
        (Σλ)²/Σλ² over all N eigenvalues, and `project(states) -> [..., k]`.
    """
    h = np.asarray(states, np.float64)
    if h.ndim < 2:
        raise ValueError(f"states must have shape [..., N] with at least one sample axis, got {h.shape}")
    h = h.reshape(-1, h.shape[-1])
    n, N = h.shape
    if n < 2:
        raise ValueError(f"pca needs at least 2 states, got {n}")
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, N = {N}], got {k}")
    mean = h.mean(axis=0)
    centred = h - mean
    cov = centred.T @ centred / (n - 1)
    lam, vecs = np.linalg.eigh(cov)
    lam, vecs = np.clip(lam[::-1], 0.0, None), vecs[:, ::-1]
    axes = vecs[:, :k].T
    axes = axes * np.sign(axes[np.arange(k), np.argmax(np.abs(axes), axis=1)])[:, None]
    total = float(lam.sum())
    pr = float(total ** 2 / np.sum(lam ** 2)) if total > 0 else 0.0
    ratio = lam[:k] / total if total > 0 else np.zeros(k)
    return PCA(mean, axes, lam[:k], ratio, total, pr)


def condition_labels(info: dict[str, Any], keys: tuple[str, ...] | None = None,
                     max_values: int = 8) -> tuple[Int[np.ndarray, " B"], list[str]]:
    """An integer condition per trial from a batch's `Trials.info`, and a name per condition.

    `keys=None` uses every per-trial scalar in `info` that takes at most `max_values` distinct
    values in this batch, except timing variables (names ending in start, length, delay or
    index, and the padding weight): for delayed XOR s1, s2 and label, i.e. its four input
    conditions; for evidence integration c1 and the majority label. A column that the others
    determine (label = s1·s2) is left out of the names, which read like "s1=-1 s2=1"."""
    columns = {}
    timing = lambda name: name == "weight" or name.endswith(("start", "length", "delay", "index"))  # noqa: E731
    for name in (sorted(n for n in info if not timing(n)) if keys is None else keys):
        if name not in info:
            raise ValueError(f"keys: {name!r} is not in the trials' info (has {sorted(info)})")
        v = np.asarray(info[name])
        if v.ndim != 1:
            if keys is not None:
                raise ValueError(f"keys: info[{name!r}] is not one scalar per trial (shape {v.shape})")
            continue
        if keys is None and len(np.unique(v)) > max_values:
            continue
        columns[name] = v
    if not columns:
        B = len(next(iter(info.values()))) if info else 0
        return np.zeros(B, np.int64), ["all trials"]
    stacked = np.stack(list(columns.values()), axis=1)
    values, codes = np.unique(stacked, axis=0, return_inverse=True)
    # a column that is a function of the others (label = s1·s2) adds nothing to the name
    shown = list(range(len(columns)))
    for j in range(len(columns)):
        rest = [i for i in shown if i != j]
        if rest and len(np.unique(values[:, rest], axis=0)) == len(values):
            shown = rest
    names = [" ".join(f"{list(columns)[j]}={_num(row[j])}" for j in shown) for row in values]
    return codes.reshape(-1).astype(np.int64), names


def condition_average(states, labels) -> Float[np.ndarray, "C T N"]:
    """Mean trajectory per condition: states [B, T, N], labels [B] in 0..C−1 → [C, T, N]."""
    h = np.asarray(states, np.float64)
    labels = np.asarray(labels)
    if h.ndim != 3 or labels.shape != (h.shape[0],):
        raise ValueError(f"need states [B, T, N] and labels [B], got {h.shape} and {labels.shape}")
    C = int(labels.max()) + 1
    return np.stack([h[labels == c].mean(axis=0) for c in range(C)])


def _num(v) -> str:
    v = float(v)
    return f"{int(v)}" if v.is_integer() else f"{v:g}"
