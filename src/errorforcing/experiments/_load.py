"""`load_run(DIR)`: the trained networks of a stored run, rebuilt from its stored config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
from pydantic import ValidationError

from ..forcing import AbstractForcing
from ..models import AbstractCell
from ..tasks import AbstractTask
from ..training import Member
from ._config import TrainConfig
from ._train import build_trainer


class StoredRunError(ValueError):
    """A request that the store cannot answer (no such run or member, no stored parameters);
    the message starts with the offending argument."""


@dataclasses.dataclass
class LoadedRun:
    """A finished run: `cells` (batched over members, leading axis), each member's store row
    (`rows[i]`, the `members` table's columns) and ensemble member (seed, α, lr), the task and
    the forcings as built from the config (batched; what training learned inside a forcing,
    e.g. learned feedback weights or an adapted α, is not stored)."""

    run_id: str
    directory: Path
    config: TrainConfig
    task: AbstractTask
    cells: AbstractCell
    forcings: AbstractForcing
    members: list[Member]
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.members)

    def cell(self, i: int) -> AbstractCell:
        """The trained network of member i (unbatched)."""
        self._check(i)
        return jax.tree_util.tree_map(lambda a: a[i] if eqx.is_array(a) else a, self.cells)

    def forcing(self, i: int) -> AbstractForcing:
        self._check(i)
        return jax.tree_util.tree_map(lambda a: a[i] if eqx.is_array(a) else a, self.forcings)

    def best_member(self) -> int:
        """The member with the lowest final validation loss among those that did not diverge
        (converged ones first)."""
        usable = [i for i, r in enumerate(self.rows) if not r["diverged"] and r["final_val_loss"] is not None]
        if not usable:
            raise StoredRunError(f"--member: every member of run {self.run_id!r} diverged")
        return min(usable, key=lambda i: (not self.rows[i]["converged"], self.rows[i]["final_val_loss"]))

    def _check(self, i: int) -> None:
        if not 0 <= i < len(self.members):
            raise StoredRunError(f"--member: run {self.run_id!r} has members 0..{len(self.members) - 1}, got {i}")


def load_run(directory: str | Path, run_id: str | None = None) -> LoadedRun:
    """The trained networks of a finished run in `directory` (`run_id=None`: the latest one):
    the run's TrainConfig rebuilds the ensemble's structure, into which the stored parameters
    (DIR/params/RUN.eqx) are read.

    Arguments:
        directory: a results directory (holding runs.sqlite).
        run_id: the run to load (None: the latest finished run).

    Returns:
        `LoadedRun`: `cells` (batched over members), `cell(i)`, `forcing(i)`, `rows`, `task`,
        `best_member()`.

    Raises:
        StoredRunError: no store, no finished run, or an unknown `run_id`.
    """
    from ..store import RunStore

    directory = Path(directory)
    if not (directory / "runs.sqlite").exists():
        raise StoredRunError(f"DIR: no results store at {directory / 'runs.sqlite'}")
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
    try:
        config = TrainConfig.model_validate(store.config(run_id)["config"])
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        raise StoredRunError(f"--run: the stored config of run {run_id!r} does not validate with this version of "
                             f"errorforcing ({field}: {err['msg']})") from None
    trainer = build_trainer(config)
    like, forcings = trainer.init()[:2]  # the trainer's own construction: the same pytree structure
    cells = store.load_params(run_id, like)
    rows = store.members(run_id)
    return LoadedRun(run_id, directory, config, trainer.task, cells, forcings, trainer.members, rows)
