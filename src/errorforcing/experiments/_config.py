"""Typed, validated run configuration (pydantic v2; JSON and TOML round-trip).

The model, forcing and rule sections are one typed config per variant (`_variants`): each
registry entry's config class declares only the options its variant reads."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializeAsAny, field_validator, model_serializer, model_validator

from ._registry import (  # noqa: F401  (the variant configs, beside their registry entries)
    BPTTConfig, EPropConfig, ErrorForcingConfig, FeedbackForcingConfig, GRUConfig, KalmanForcingConfig, KFRTRLConfig,
    LeakyRNNConfig, LSTMConfig, NoForcingConfig, RFLOConfig, RTRLConfig, SnApConfig, TBPTTConfig,
    TeacherForcingConfig, UOROConfig, WilliamsZipserConfig, WilliamsZipserForcingConfig, forcing_kinds)
from ._variants import (SECTIONS, CustomForcingConfig, CustomModelConfig, CustomRuleConfig, FloatGrid,  # noqa: F401
                        ForcingConfig, ModelConfig, RuleConfig, Strict as _Strict, config_class, default_kind,
                        from_stored, kinds_reading, not_read, read_stored_spellings, registry, to_stored,
                        unknown_kind)

MAX_SEED = 2**32 - 1  # JAX keys are seeded from 32-bit words; the store keeps seeds as INTEGER
ALPHA_GRID = (0.0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


def _registered(what: str, table: str, name: str) -> str:
    """`name` if the registry's `table` has it, else a one-line error listing the choices."""
    from . import _registry

    choices = getattr(_registry, table)
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(sorted(choices))}")
    return name


# Fields that only some variants read: set for another variant, a field would be stored (and
# hashed into a sweep's job id) but change nothing, so it is refused. The model, forcing and
# rule sections declare theirs in their variants' config classes; the table is derived from
# them (section → field → the kinds that read it).
DELAY_TASKS = ("delayed-xor", "evidence-integration")  # the registry passes them `delay`
SELECTIVE_FORCINGS = forcing_kinds("selective")  # sparse (interval) and partial (units) forcing
ADAPTIVE_FORCINGS = forcing_kinds("adaptive")
_TASK_APPLIES = {"delay": DELAY_TASKS, "shift": ("sine",)}


def _variant_applies(section: str) -> dict[str, tuple[str, ...]]:
    from ._variants import RECORD_LAYOUT

    fields = dict.fromkeys(f for k in registry(section) for f in config_class(section, k).model_fields)
    every = tuple(registry(section))
    return {f: kinds for f in dict.fromkeys([*RECORD_LAYOUT[section], *fields]) if f != "kind"
            for kinds in [kinds_reading(section, f)] if kinds != every}


APPLIES: dict[str, dict[str, tuple[str, ...]]] = {"task": _TASK_APPLIES} | {s: _variant_applies(s) for s in SECTIONS}
FLOSS_STEP_FIELDS = ("steps", "k", "lr", "local", "target", "trials")  # read only when flossing is on


def _reads(section: str, kind: str, field: str) -> bool:
    """Whether variant `kind` reads `field` (a field no variant knows: True, so validation names it)."""
    if unknown_kind(section, kind):
        return True
    if field in config_class(section, kind).model_fields:
        return True
    from ._variants import RECORD_LAYOUT, RETIRED

    return not (field in RECORD_LAYOUT[section] or field in RETIRED.get(section, {}) or kinds_reading(section, field))


def inapplicable(section: str, model: BaseModel, field: str) -> str | None:
    """Why `section.field` has no effect for `model`'s kind (None if it has)."""
    if section in SECTIONS:
        return None if _reads(section, model.kind, field) else not_read(section, model.kind, field)
    kinds = _TASK_APPLIES.get(field) if section == "task" else None
    if kinds is None or model.kind in kinds:
        return None
    return f"task.{field} applies only to task.kind {' or '.join(map(repr, kinds))}; {model.kind!r} ignores it"


def is_read(data: dict, dotted: str) -> bool:
    """Whether a config given as nested `data` reads field `dotted` (task.delay only for delay
    tasks, forcing.alpha not without forcing, ...). Sweeps drop grid values a point ignores."""
    section, _, field = dotted.partition(".")
    part = data.get(section, {}) if isinstance(data.get(section), dict) else {}
    if section in SECTIONS:
        kind = part.get("kind", default_kind(section))
        if dotted == "forcing.alpha_estimator":
            return bool(part.get("adaptive", False)) and _reads(section, kind, "adaptive")
        return _reads(section, kind, field)
    if section == "floss" and field in FLOSS_STEP_FIELDS:
        return bool(part.get("pre", 0) or part.get("every", 0))
    kinds = _TASK_APPLIES.get(field) if section == "task" else None
    return kinds is None or task_kind(part) in kinds


def task_kind(task: dict) -> Any:
    """The task a `[task]` table given as input names, in either spelling (default: the default task)."""
    return task.get("kind", task.get("name", TaskConfig.model_fields["kind"].default))


def _refuse_ignored_task(model: "TaskConfig") -> None:
    for name in _TASK_APPLIES:
        default = type(model).model_fields[name].get_default(call_default_factory=True)
        why = inapplicable("task", model, name) if getattr(model, name) != default else None
        if why:
            raise ValueError(why)


class TaskConfig(_Strict):
    """Which task (`kind`, also given as `name`: the record keeps that spelling). `delay`
    applies to delayed-xor and evidence-integration, `shift` to sine; `options` passes further
    keyword arguments to the task class."""

    kind: str = "delayed-xor"
    delay: int = Field(100, ge=0)
    shift: float = 0.0
    options: dict = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _stored_spelling(cls, data: Any) -> Any:
        return from_stored("task", data)

    @field_validator("kind")
    @classmethod
    def _known_task(cls, v):
        return _registered("task", "TASKS", v)

    @model_serializer(mode="wrap")
    def _record(self, handler, info) -> dict[str, Any]:
        own = handler(self)
        if info.exclude_unset or info.exclude_defaults or (info.context or {}).get("own_fields"):
            return own
        return to_stored("task", own)

    @model_validator(mode="after")
    def _no_ignored_fields(self):
        _refuse_ignored_task(self)
        return self


class OptimConfig(_Strict):
    """Any optax optimizer that takes `learning_rate`; `lr` may be a list (vmapped members)."""

    name: str = "adam"
    lr: FloatGrid = Field(default_factory=lambda: [3e-4])
    clip_norm: float | None = Field(None, gt=0)
    options: dict = Field(default_factory=dict)

    @field_validator("lr")
    @classmethod
    def _positive(cls, v):
        if not v or any(x <= 0 for x in v):
            raise ValueError("lr must be a non-empty list of positive numbers")
        if len(set(v)) != len(v):
            raise ValueError(f"repeated value in {v} (duplicate members would inflate n)")
        return v

    @field_validator("name")
    @classmethod
    def _optax_name(cls, v):
        import optax

        if not callable(getattr(optax, v, None)):
            raise ValueError(f"unknown optax optimizer {v!r} (e.g. adam, adamw, sgd, rmsprop)")
        return v


class FlossConfig(_Strict):
    """Gradient flossing (SPEC §6; Engelken 2024, Liu et al.): Adam on the flossing loss
    mean_i (λ_i − target)² over the k leading Lyapunov exponents, on `trials` fresh task trials
    per iteration (unforced, from h = 0, the first T/5 steps a transient). `pre` iterations
    before epoch 1 (pre-flossing); `steps` iterations after every `every`-th epoch
    (inter-flossing; 0: never). `local=True` detaches the state (Liu et al.'s local variant).
    `lr` is the flossing optimizer's own learning rate; the training optimizer is untouched."""

    pre: int = Field(0, ge=0)
    every: int = Field(0, ge=0)
    steps: int = Field(10, ge=1)
    k: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    local: bool = False
    target: float = 0.0
    trials: int = Field(8, ge=1)

    @property
    def enabled(self) -> bool:
        return self.pre > 0 or self.every > 0

    @model_validator(mode="after")
    def _step_fields_need_flossing(self):
        if self.enabled:
            return self
        for name in FLOSS_STEP_FIELDS:
            if getattr(self, name) != type(self).model_fields[name].get_default():
                raise ValueError(f"floss.{name} applies only when flossing is on (floss.pre or floss.every > 0)")
        return self


class AnalysisConfig(_Strict):
    """Measurements during training, all off by default (and then free).

    `lyapunov`: the largest Lyapunov exponent (per step) of every member before epoch 1 (after
    any pre-flossing) and after training, unforced on `lyapunov_trials` task trials
    (store columns lyap_max_before / lyap_max_after). `diagnostics`: per-epoch curves of
    Kaleb et al.'s learning diagnostics (see `errorforcing.training.dynamics_diagnostics`)."""

    lyapunov: bool = False
    lyapunov_trials: int = Field(8, ge=1)
    diagnostics: bool = False


class TrainConfig(_Strict):
    """Everything that defines one ensemble job. Members = seeds × forcing.alpha × optim.lr."""

    task: TaskConfig = Field(default_factory=TaskConfig)
    # each section is its kind's config class (LeakyRNNConfig, ErrorForcingConfig, BPTTConfig, ...)
    model: SerializeAsAny[ModelConfig] = Field(default_factory=lambda: ModelConfig())
    forcing: SerializeAsAny[ForcingConfig] = Field(default_factory=lambda: ForcingConfig())
    rule: SerializeAsAny[RuleConfig] = Field(default_factory=lambda: RuleConfig())
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seeds: int = Field(20, ge=1)
    seed: int = Field(0, ge=0)
    epochs: int = Field(200, ge=1)
    batch: int = Field(128, ge=1)
    data: Literal["fresh", "fixed"] = "fresh"
    # data (SPEC §5): the task's reference data set size (512 delayed XOR, 216 evidence
    # integration, 5000 sine) unless `dataset_size` is given; floor(val_fraction · size) of it
    # held out. Fresh data: size − floor(0.1 size) training and floor(0.1 size) validation trials
    # per epoch, unless `train_trials` / `val_trials` say otherwise (fresh data only).
    train_trials: int | None = Field(None, ge=1)
    val_trials: int | None = Field(None, ge=1)
    dataset_size: int | None = Field(None, ge=2)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_trials: int = Field(200, ge=1)  # fresh trials of each member's test loss after training
    threshold: float | None = Field(None, gt=0)
    patience: int = Field(10, ge=1)
    divergence: float = Field(1e4, gt=0)
    rate_reg: float = Field(1e-5, ge=0)
    readout_reg: float = Field(1e-6, ge=0)
    floss: FlossConfig = Field(default_factory=FlossConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    # continual learning (SPEC §3, real-time RTRL / e-prop / RFLO on a Williams–Zipser task's
    # stream): no epochs or trials; every member learns online on one stream of `steps` steps,
    # checked every `val_every` steps on `val_steps` fresh steps (default: the task's n_steps)
    continual: bool = False
    steps: int | None = Field(None, ge=1)
    val_every: int | None = Field(None, ge=1)
    val_steps: int | None = Field(None, ge=1)
    out: str | None = None

    @field_validator("model", "forcing", "rule", mode="wrap")
    @classmethod
    def _the_kinds_config(cls, value, handler, info):
        # a union discriminated by `kind`, resolved through the registry now (it is open)
        return SECTIONS[info.field_name].base.validate_section(value)

    @model_validator(mode="after")
    def _online_and_continual_fit(self):
        if self.rule.learns_online and self.optim != OptimConfig():
            raise ValueError("optim: does not apply to online learning (its per-step optimizer is "
                             "rule.online_optimizer with rule.online_lr)")
        if not self.continual:
            for name in ("steps", "val_every", "val_steps"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies only to continual learning (continual = true)")
            return self
        if not self.rule.learns_online:
            raise ValueError(f"continual: needs an online rule (rule.online = true with "
                             f"{' or '.join(kinds_reading('rule', 'online'))})")
        if self.steps is None or self.val_every is None:
            raise ValueError("continual: needs steps (the stream's length) and val_every (steps between checks)")
        if self.steps % self.val_every:
            raise ValueError(f"steps must be a multiple of val_every ({self.val_every}), got {self.steps}")
        fields = type(self).model_fields
        for name in ("epochs", "batch", "data", "train_trials", "val_trials", "dataset_size", "val_fraction"):
            if getattr(self, name) != fields[name].default:
                raise ValueError(f"{name} does not apply to continual learning (no epochs or trials)")
        epoch_features = (self.floss.enabled, self.analysis != AnalysisConfig(), self.forcing.own("adaptive", False),
                          self.rule.log_alignment)
        if any(epoch_features):
            raise ValueError("continual: flossing, analysis, adaptive alpha and log_alignment are epoch features")
        from ..tasks import AbstractContinualTask
        from ._registry import TASKS

        if not isinstance(TASKS[self.task.kind].build(self.task), AbstractContinualTask):
            raise ValueError(f"task.kind: continual learning needs a stream task (Williams–Zipser family), "
                             f"got {self.task.kind!r}")
        return self

    @model_validator(mode="after")
    def _trial_counts_need_fresh_data(self):
        for name in ("train_trials", "val_trials"):
            if self.data == "fixed" and getattr(self, name) is not None:
                raise ValueError(f"{name} applies only to data = 'fresh'; fixed data uses dataset_size")
        return self

    @model_validator(mode="after")
    def _one_process_noise(self):
        sigma, noise = self.forcing.training_noise(None), self.model.noise_std
        if sigma is not None and noise not in (0.0, sigma):
            raise ValueError(f"model.noise_std: kalman forcing trains with its own process noise "
                             f"forcing.process_noise = {sigma}; leave model.noise_std at 0, got {noise}")
        return self

    @model_validator(mode="after")
    def _seeds_fit_a_key(self):
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ValueError(f"seed: members' seeds run to seed + seeds - 1 = {self.seed + self.seeds - 1}; a JAX key "
                             f"seed must be <= {MAX_SEED} (2**32 - 1)")
        return self

    @model_validator(mode="after")
    def _forcing_fits_the_model(self):
        units = self.forcing.own("units")
        if units is not None and units > self.model.hidden:
            raise ValueError(f"forcing.units must be <= model.hidden ({self.model.hidden}), got {units}")
        if (self.forcing.own("adaptive", False) and self.forcing.alpha_estimator == "jacobian-upper-bound"
                and not type(self.model).jacobian_bound):
            raise ValueError(f"forcing.alpha_estimator: jacobian-upper-bound bounds the leaky RNN's Jacobian; "
                             f"model.kind {self.model.kind!r} has no such bound")
        return self

    @model_validator(mode="after")
    def _floss_k_fits(self):
        if self.floss.enabled and self.floss.k > self.model.hidden:
            raise ValueError(f"floss.k must be <= model.hidden ({self.model.hidden}), got {self.floss.k}")
        return self

    @property
    def n_members(self) -> int:
        return self.seeds * len(self.forcing.alpha) * len(self.optim.lr)

    def to_toml(self) -> str:
        """The config as TOML: each section with the options its variant reads."""
        import tomli_w

        return tomli_w.dumps(self.model_dump(exclude_none=True, context={"own_fields": True}))

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        return cls.model_validate(tomllib.loads(Path(path).read_text()))
