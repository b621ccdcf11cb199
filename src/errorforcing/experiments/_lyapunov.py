"""Lyapunov spectra of the trained members of a stored run (SPEC §6)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from ..training import Member, lyapunov_key, task_lyapunov
from ._config import TrainConfig
from ._train import build_trainer


class StoredRunError(ValueError):
    """A request that the store cannot answer (no such run, k out of range); the message starts
    with the offending argument."""


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
    from ..store import RunStore

    store = RunStore(directory, create=False)
    done = [r["run_id"] for r in store.runs(status="done")]
    if run_id is None:
        if not done:
            raise StoredRunError(f"DIR: no finished run in {directory}")
        run_id = done[-1]
    elif run_id not in done:
        raise StoredRunError(f"--run: no finished run {run_id!r} in {directory}")
    if not store.params_path(run_id).exists():
        raise StoredRunError(f"--run: no stored parameters for run {run_id!r} ({store.params_path(run_id)})")
    if trials < 1:
        raise StoredRunError(f"--trials: must be >= 1, got {trials}")
    config = TrainConfig.model_validate(store.config(run_id)["config"])
    trainer = build_trainer(config)
    like = eqx.filter_vmap(trainer.make_cell)(trainer.init_keys)
    cells = store.load_params(run_id, like)
    n_rec = jax.tree_util.tree_map(lambda a: a[0], cells).n_rec
    k = n_rec if k is None else k
    if not 1 <= k <= n_rec:
        raise StoredRunError(f"--k: must be in [1, N = {n_rec}], got {k}")
    keys = jax.numpy.stack([lyapunov_key(m.seed) for m in trainer.members])
    spectra = eqx.filter_jit(eqx.filter_vmap(
        lambda cell, key: task_lyapunov(cell, trainer.task, k, key=key, trials=trials)))(cells, keys)
    return StoredSpectra(run_id, config, trainer.members, np.asarray(spectra, np.float64))
