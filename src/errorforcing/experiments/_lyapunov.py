"""Lyapunov spectra of the trained members of a stored run (SPEC §6)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from ..training import Member, lyapunov_key, task_lyapunov
from ._config import TrainConfig
from ._load import StoredRunError, load_run

__all__ = ["StoredRunError", "StoredSpectra", "stored_spectra"]


@dataclasses.dataclass
class StoredSpectra:
    run_id: str
    config: TrainConfig
    members: list[Member]
    spectra: np.ndarray  # [M, k] per step, mean over the trials

    def table(self) -> list[dict]:
        """One row per member: member, seed, alpha, lambda_max, lambda_sum (Σ of the k exponents)."""
        return [{"member": i, "seed": m.seed, "alpha": m.alpha, "lambda_max": float(lam[0]),
                 "lambda_sum": float(lam.sum())} for i, (m, lam) in enumerate(zip(self.members, self.spectra))]


def stored_spectra(directory: str | Path, run_id: str | None = None, *, k: int | None = None,
                   trials: int = 8) -> StoredSpectra:
    """The k leading exponents (default all N) of every member of a finished run, as trained
    (its parameters in DIR/params/RUN.eqx), unforced on `trials` task trials after a transient
    of T/5 steps (`training.task_lyapunov`). Each member's trials and bases come from its seed
    (the same key as the stored lyap_max_before/after), so reruns give the same numbers.
    `run_id=None`: the latest finished run."""
    if trials < 1:
        raise StoredRunError(f"--trials: must be >= 1, got {trials}")
    run = load_run(directory, run_id)
    cells = run.cells
    n_rec = jax.tree_util.tree_map(lambda a: a[0], cells).n_rec
    k = n_rec if k is None else k
    if not 1 <= k <= n_rec:
        raise StoredRunError(f"--k: must be in [1, N = {n_rec}], got {k}")
    keys = jax.numpy.stack([lyapunov_key(m.seed) for m in run.members])
    spectra = eqx.filter_jit(eqx.filter_vmap(
        lambda cell, key: task_lyapunov(cell, run.task, k, key=key, trials=trials)))(cells, keys)
    return StoredSpectra(run.run_id, run.config, run.members, np.asarray(spectra, np.float64))
