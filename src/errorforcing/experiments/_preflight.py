"""Checks that a config can run, made before anything is written: the estimated peak memory
against the machine's limit, and one abstract trace (`jax.eval_shape`, no arrays allocated) of
the rule × forcing × model step, which raises exactly where the compiled program would."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax

from ._config import TrainConfig
from ._registry import FORCINGS, MODELS, RULES, TASKS

# Floats kept per trial per step by rules that store the trajectory for a backward pass
# (state, forced state, rate, readout, their cotangents, rounded up).
TRAJECTORY_FLOATS_PER_UNIT = 4
# Influence-matrix copies of RTRL alive at once (M_{t-1}, J M, the new M).
RTRL_COPIES = 3
# Parameters, gradients and Adam's two moments.
PARAM_COPIES = 4


class InfeasibleConfig(ValueError):
    """A config that validates but cannot run here; the message names the field, the
    estimate and the limit, and the way out."""


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    bytes: float
    members: int
    batch: int
    n_steps: int
    n_params: int  # per member

    @property
    def gigabytes(self) -> float:
        return self.bytes / 1e9


def memory_limit() -> tuple[float, str]:
    """Bytes the ensemble may use, and what that limit is: the accelerator's memory when JAX
    runs on one that reports it, else this machine's physical memory."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"]), f"the {device.platform.upper()}'s memory"
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "this machine's memory"


def _n_params(config: TrainConfig, task) -> int:
    shapes = jax.eval_shape(lambda key: MODELS[config.model.kind].build(config.model, task, key), jax.random.key(0))
    return int(sum(leaf.size for leaf in jax.tree.leaves(shapes) if hasattr(leaf, "size")))


def estimate_memory(config: TrainConfig) -> MemoryEstimate:
    """Peak bytes of one epoch from the shapes alone: every member's parameters and optimizer
    state, plus per trial of a batch what the rule keeps alive (the whole trajectory for the
    BPTT family and offline e-prop/RFLO, RTRL's N × P influence matrices, the online rules'
    N × P traces), plus the batch's inputs, targets and masks."""
    task = check_task(config)
    itemsize = jax.numpy.zeros((), float).dtype.itemsize
    n, T = config.model.hidden, task.n_steps
    params = _n_params(config, task)
    recurrent = max(params - (n + 1) * task.n_out, 1)  # the readout needs no influence matrix
    kind = config.rule.kind
    if kind in ("rtrl", "snap1", "snap2"):  # SnAp stores its masked influence matrix densely
        per_trial = RTRL_COPIES * n * recurrent
    elif kind in ("eprop", "rflo") and config.rule.online:
        per_trial = n * recurrent
    else:
        per_trial = TRAJECTORY_FLOATS_PER_UNIT * T * n
    per_trial += T * (task.n_in + 2 * task.n_out)
    members = config.n_members
    total = members * (config.batch * per_trial + PARAM_COPIES * params) * itemsize
    return MemoryEstimate(float(total), members, config.batch, T, params)


def _largest_hidden(config: TrainConfig, limit: float) -> int | None:
    """The largest N whose estimate fits (None if not even N = 1 does)."""
    def fits(n: int) -> bool:
        return estimate_memory(config.model_copy(update={"model": config.model.model_copy(update={"hidden": n})})
                               ).bytes <= limit
    if not fits(1):
        return None
    lo, hi = 1, config.model.hidden
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def check_memory(config: TrainConfig) -> MemoryEstimate:
    estimate = estimate_memory(config)
    limit, what = memory_limit()
    if estimate.bytes <= limit:
        return estimate
    c = config
    need = (f"needs ~{_fmt_bytes(estimate.bytes)} for N = {c.model.hidden}, {estimate.members} members "
            f"× batch {c.batch}, T = {estimate.n_steps}; the limit is {_fmt_bytes(limit)} ({what})")
    one = c.model_copy(update={"seeds": 1, "forcing": _first_alpha(c.forcing),
                               "optim": c.optim.model_copy(update={"lr": c.optim.lr[:1]})})
    n_max = _largest_hidden(config, limit)
    ways = ["--rule eprop"] if c.rule.kind == "rtrl" else []
    if estimate.members > 1 and estimate_memory(one).bytes <= limit:
        field = "seeds"
        ways.append(f"fewer members (now seeds × α × lr = {estimate.members})")
    elif n_max is not None and n_max < c.model.hidden:
        field = "model.hidden"
        ways.append(f"N ≤ {n_max}")
    else:
        field = "task.delay" if "delay" in c.task.model_fields_set or c.task.delay else "task"
        ways.append(f"a shorter task (T = {estimate.n_steps} steps now)")
    if c.batch > 1:
        ways.append("a smaller --batch")
    raise InfeasibleConfig(f"{field}: {c.rule.kind.upper()} {need}; use " + ", or ".join(ways))


def _first_alpha(forcing):
    """The forcing with its first α only (a forcing without a strength has one α already)."""
    alpha = forcing.own("alpha")
    return forcing if alpha is None else forcing.model_copy(update={"alpha": alpha[:1]})


def _fmt_bytes(n: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1e3:.3g} kB"


def check_compatible(config: TrainConfig) -> None:
    """Trace one forced learning step abstractly; what the compiled program would refuse
    (teacher forcing an LSTM, Williams-Zipser forcing a cell without output units, ...) is
    refused here, naming the fields."""
    c = config
    small = c.model_copy(update={"model": c.model.model_copy(update={"hidden": min(c.model.hidden, 4)})})
    units = c.forcing.own("units")
    if units is not None:  # partial forcing of the 4-unit copy: at most its units
        small = small.model_copy(update={"forcing": c.forcing.model_copy(update={"units": min(units, 4)})})
    _probe(small.model.kind, small.forcing.kind, small.rule.kind, small.task.kind,
           small.model_dump_json(include={"model", "forcing", "rule", "task"}))


@functools.lru_cache(maxsize=256)
def _probe(model: str, forcing: str, rule: str, task_kind: str, parts_json: str) -> None:
    from ..tasks import sample_batch

    parts = TrainConfig.model_validate_json(parts_json)
    key = jax.random.key(0)
    task = check_task(parts)
    try:
        cell = MODELS[model].build(parts.model, task, key)
        force = FORCINGS[forcing].build(parts.forcing, parts.forcing.alpha[0], cell, key)
        learning_rule = RULES[rule].build(parts.rule, key)
        jax.eval_shape(lambda k: learning_rule.value_and_grad(cell, force, sample_batch(task, 2, key=k), key=k), key)
    except (TypeError, ValueError, NotImplementedError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InfeasibleConfig(f"forcing.kind / model.kind / rule.kind: {forcing} × {model} × {rule} cannot run: "
                               f"{why}") from None


def check_task(config: TrainConfig):
    """The task builds from its options (an unknown option is a one-line error, not a TypeError)."""
    try:
        return TASKS[config.task.kind].build(config.task)
    except ImportError as e:
        raise InfeasibleConfig(f"task.kind: {config.task.kind!r} needs an optional dependency ({e})") from None
    except (TypeError, ValueError) as e:
        field = "task.options" if config.task.options else "task"
        raise InfeasibleConfig(f"{field}: cannot build task {config.task.kind!r}: {str(e).strip().splitlines()[0]}"
                               ) from None


def preflight(config: TrainConfig) -> MemoryEstimate:
    """All checks; raises InfeasibleConfig. Memory before the trace, which builds a (small) cell."""
    check_task(config)
    estimate = check_memory(config)
    check_compatible(config)
    return estimate
