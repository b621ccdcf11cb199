"""Adapter for tasks of the `neurogym` package (Molano-Mazon et al. 2022, "NeuroGym: An open
resource for developing and sharing neuroscience tasks"), as used by Liu et al. for their
2AF (PerceptualDecisionMaking) and DMS (DelayMatchSample) tasks with neurogym's defaults.

neurogym environments are stateful numpy objects, so they cannot run inside `jit`. The adapter
draws a bank of trials once, on the host, from a seeded environment; `sample` then picks one
trial of the bank with `jax.random` (pure, jit/vmap-able). A second, disjoint bank (the trials
the environment produces next) is where validation and test trials come from. neurogym is an
optional dependency, imported only when a bank is built.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._types import Array, Float, Key
from ._base import AbstractTask, Trials

#: Registry-ready short names for the neurogym tasks of Liu et al.
NEUROGYM_TASKS: dict[str, str] = {
    "perceptual-decision": "PerceptualDecisionMaking-v0",
    "delay-match-sample": "DelayMatchSample-v0",
}


def _import_neurogym():
    try:
        import neurogym
    except ImportError as err:
        raise ImportError(
            "the neurogym task adapter needs the optional `neurogym` package "
            "(pip install 'neurogym>=2,<2.3'; neurogym 2.3 also needs torch to import): "
            f"{err}"
        ) from err
    return neurogym


class NeurogymTask(AbstractTask):
    """A bank of trials drawn from a seeded neurogym environment; `sample` picks one at random.

        inputs  = the environment's observations `env.ob` (fixation input included)
        targets = one_hot(env.gt, n_out), n_out = the size of the action space
                  (action 0 = fixate), for a mean-squared-error loss
        mask    = 1 on every step of the trial, 0 on the padding up to `n_steps`

    Trial k of the bank is the k-th `new_trial()` of the environment after `seed(seed)`, so a
    bank is reproducible and comparable with neurogym's own output. `validation` is a second
    bank, of the trials the same environment produces after the training bank's (any that
    equals a training trial dropped): `validation_source()` returns it, so validation and test
    trials never repeat a training trial. `info`: gt (the discrete
    ground truth per step, -1 on padding), length, trial_index, and every numeric scalar of
    neurogym's trial dict (e.g. ground_truth, coh). Build with `from_neurogym`.
    `threshold` (0.01) is this library's choice. The bank arrays are fields, so unlike the
    other tasks this one is not hashable: close over it or use `eqx.filter_jit`, not
    `jit(static_argnums=...)`.
    """

    threshold = 0.01
    classification = False
    dataset_size = 512

    bank_inputs: Float[Array, "K T n_in"]
    bank_targets: Float[Array, "K T n_out"]
    bank_mask: Float[Array, "K T n_out"]
    bank_gt: Array
    bank_lengths: Array
    bank_info: dict[str, Array]
    env_id: str = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    validation: "NeurogymTask | None" = None

    @property
    def n_in(self) -> int:
        return self.bank_inputs.shape[-1]

    @property
    def n_out(self) -> int:
        return self.bank_targets.shape[-1]

    @property
    def n_steps(self) -> int:
        return self.bank_inputs.shape[1]

    @property
    def n_trials(self) -> int:
        return self.bank_inputs.shape[0]

    def validation_source(self) -> "NeurogymTask":
        if self.validation is None:
            raise ValueError(f"{self.env_id}: this bank has no disjoint validation bank (build it with from_neurogym)")
        return self.validation

    def sample(self, *, key: Key) -> Trials:
        i = jax.random.randint(key, (), 0, self.n_trials)
        info = {"gt": self.bank_gt[i], "length": self.bank_lengths[i], "trial_index": i}
        info.update({name: values[i] for name, values in self.bank_info.items()})
        return Trials(self.bank_inputs[i], self.bank_targets[i], self.bank_mask[i], info)


def _trial_source(env: Any):
    """The outermost layer of `env` that defines `new_trial` (a neurogym trial wrapper or the
    task itself); gymnasium's own wrappers (order enforcing, checkers) do not."""
    layer = env
    while not hasattr(type(layer), "new_trial"):
        if not hasattr(layer, "env"):
            raise TypeError(f"{type(env).__name__} is not a neurogym trial environment (no new_trial)")
        layer = layer.env
    return layer


def from_neurogym(
    env_id_or_env: str | Any,
    *,
    seed: int,
    dt: int | None = None,
    n_steps: int | None = None,
    n_trials: int = 1024,
    n_val_trials: int = 256,
    **env_kwargs: Any,
) -> NeurogymTask:
    """Build a `NeurogymTask` from a neurogym environment id, one of the short names in
    `NEUROGYM_TASKS`, or an environment object.

    The training bank holds the first `n_trials` trials of the environment after
    `seed(seed)`; its `validation` bank the next `n_val_trials` (less any that equals a
    training trial). `dt` (ms) defaults to neurogym's 100 when making an environment from an
    id; with an environment object it must be left out or equal the object's dt. `n_steps`
    defaults to the longest trial of either bank; a trial longer than `n_steps` is an error.
    `env_kwargs` go to `neurogym.make`. Step-time wrappers (e.g. observation noise added in
    `step`) are not applied: trials come from `new_trial`.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n_val_trials < 1:
        raise ValueError(f"n_val_trials must be >= 1, got {n_val_trials}")
    if n_steps is not None and n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if isinstance(env_id_or_env, str):
        ngym = _import_neurogym()
        env_id = NEUROGYM_TASKS.get(env_id_or_env, env_id_or_env)
        with warnings.catch_warnings():
            # gymnasium warns that neurogym's metadata lacks `render_modes`; harmless here.
            warnings.simplefilter("ignore", UserWarning)
            env = ngym.make(env_id, dt=100 if dt is None else dt, **env_kwargs)
    else:
        if env_kwargs:
            raise ValueError("env_kwargs apply only when building an environment from an id")
        env = env_id_or_env
        env_id = getattr(getattr(env, "spec", None), "id", None) or type(env.unwrapped).__name__
    task_env = env.unwrapped
    if dt is not None and task_env.dt != dt:
        raise ValueError(f"dt={dt} differs from the environment's dt={task_env.dt}")
    n_out = getattr(task_env.action_space, "n", None)
    if n_out is None:
        raise ValueError(f"{env_id}: only discrete action spaces are supported, got {task_env.action_space}")

    task_env.seed(seed)
    source = _trial_source(env)
    trials = [_draw_trial(source, task_env) for _ in range(n_trials + n_val_trials)]
    if trials[0][1].ndim != 1:
        raise ValueError(f"{env_id}: ground truth must be one action per step, got shape {trials[0][1].shape}")
    longest = max(len(ob) for ob, _, _ in trials)
    if n_steps is None:
        n_steps = longest
    elif longest > n_steps:
        raise ValueError(f"{env_id}: a trial lasts {longest} steps, longer than n_steps={n_steps}")

    def numeric(value) -> bool:
        return isinstance(value, (numbers.Number, np.number)) and not isinstance(value, bool)

    names = [name for name in trials[0][2] if all(numeric(d.get(name)) for _, _, d in trials)]
    train = _bank(trials[:n_trials], n_steps, n_out, names)
    seen = {_fingerprint(train, k) for k in range(n_trials)}
    drawn = _bank(trials[n_trials:], n_steps, n_out, names)
    kept = [trials[n_trials + k] for k in range(n_val_trials) if _fingerprint(drawn, k) not in seen]
    if not kept:
        raise ValueError(f"{env_id}: every validation trial repeats a training trial; raise n_val_trials")
    statics = dict(env_id=str(env_id), dt=float(task_env.dt), seed=int(seed))
    validation = NeurogymTask(**_bank(kept, n_steps, n_out, names), **statics)
    return NeurogymTask(**train, **statics, validation=validation)


def _draw_trial(source: Any, task_env: Any) -> tuple[np.ndarray, np.ndarray, dict]:
    """The environment's next trial: (observations, ground truth, neurogym's trial dict)."""
    trial = source.new_trial()
    return np.asarray(task_env.ob, np.float32), np.asarray(task_env.gt), trial


def _fingerprint(bank: dict[str, Any], k: int) -> tuple[bytes, bytes]:
    """Trial k of a bank as bytes (its padded inputs and ground truth), to find repeats."""
    return np.asarray(bank["bank_inputs"][k]).tobytes(), np.asarray(bank["bank_gt"][k]).tobytes()


def _bank(trials: list[tuple[np.ndarray, np.ndarray, dict]], n_steps: int, n_out: int,
          names: list[str]) -> dict[str, Any]:
    """The bank fields of `NeurogymTask` for `trials`, padded to `n_steps` steps."""
    lengths = np.array([len(ob) for ob, _, _ in trials])
    n_in = trials[0][0].shape[-1]
    inputs = np.zeros((len(trials), n_steps, n_in), np.float32)
    gt = np.full((len(trials), n_steps), -1, np.int32)
    for k, (ob, truth, _) in enumerate(trials):
        inputs[k, : len(ob)] = ob
        gt[k, : len(truth)] = truth
    live = (np.arange(n_steps)[None, :] < lengths[:, None]).astype(np.float32)
    targets = np.eye(n_out, dtype=np.float32)[np.maximum(gt, 0)] * live[..., None]
    mask = np.broadcast_to(live[..., None], targets.shape).copy()
    info = {name: jnp.asarray(np.array([d[name] for _, _, d in trials])) for name in names}
    return dict(bank_inputs=jnp.asarray(inputs), bank_targets=jnp.asarray(targets), bank_mask=jnp.asarray(mask),
                bank_gt=jnp.asarray(gt), bank_lengths=jnp.asarray(lengths.astype(np.int32)), bank_info=info)
