"""Typed, validated run configuration (pydantic v2; JSON and TOML round-trip)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._registry import forcing_kinds

MAX_SEED = 2**32 - 1  # JAX keys are seeded from 32-bit words; the store keeps seeds as INTEGER
ALPHA_GRID = (0.0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


def _registered(what: str, table: str, name: str) -> str:
    """`name` if the registry's `table` has it, else a one-line error listing the choices."""
    from . import _registry

    choices = getattr(_registry, table)
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(sorted(choices))}")
    return name


class _Strict(BaseModel):
    # allow_inf_nan=False: nan, inf (and 1e999, which parses as inf) are refused in every float field
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Fields that only some variants read: set away from its default for another variant, a field
# would be stored (and hashed into a sweep's job id) but change nothing, so it is refused.
# section → field → the kinds (task names) that read it.
DELAY_TASKS = ("delayed-xor", "evidence-integration")  # the registry passes them `delay`
SELECTIVE_FORCINGS = forcing_kinds("selective")  # sparse (interval) and partial (units) forcing
APPLIES: dict[str, dict[str, tuple[str, ...]]] = {
    "task": {"delay": DELAY_TASKS, "shift": ("sine",)},
    "model": {f: ("leaky",) for f in ("gain", "tau", "dt", "activation", "readout", "density", "trainable",
                                      "excitatory")},
    "rule": {"truncation": ("tbptt",), "feedback": ("eprop", "rflo")},
    # from the forcing registry's entries (their capabilities and kind-specific options)
    "forcing": {"causal": forcing_kinds("causal"), "learn_feedback": forcing_kinds("learn_feedback"),
                "process_noise": forcing_kinds("process_noise"), "obs_noise": forcing_kinds("obs_noise"),
                "interval": SELECTIVE_FORCINGS, "units": SELECTIVE_FORCINGS},
}
FLOSS_STEP_FIELDS = ("steps", "k", "lr", "local", "target", "trials")  # read only when flossing is on


def _kind_of(section: str, model: BaseModel) -> str:
    return model.name if section == "task" else model.kind


def inapplicable(section: str, model: BaseModel, field: str) -> str | None:
    """Why `section.field` has no effect for `model`'s kind (None if it has)."""
    kinds = APPLIES.get(section, {}).get(field)
    kind = _kind_of(section, model)
    if kinds is None or kind in kinds:
        return None
    what = "task.name" if section == "task" else f"{section}.kind"
    return f"{section}.{field} applies only to {what} {' or '.join(map(repr, kinds))}; {kind!r} ignores it"


def is_read(data: dict, dotted: str) -> bool:
    """Whether a config given as nested `data` reads field `dotted` (task.delay only for delay
    tasks, forcing.alpha not without forcing, ...). Sweeps drop grid values a point ignores."""
    section, _, field = dotted.partition(".")
    part = data.get(section, {}) if isinstance(data.get(section), dict) else {}
    if dotted in ("forcing.alpha", "forcing.adaptive"):
        return part.get("kind", ForcingConfig.model_fields["kind"].default) != "none"
    if dotted == "forcing.alpha_estimator":
        return bool(part.get("adaptive", False)) and part.get("kind", ForcingConfig.model_fields["kind"].default) != "none"
    if section == "floss" and field in FLOSS_STEP_FIELDS:
        return bool(part.get("pre", 0) or part.get("every", 0))
    kinds = APPLIES.get(section, {}).get(field)
    if kinds is None:
        return True
    key = "name" if section == "task" else "kind"
    defaults = {"task": TaskConfig, "model": ModelConfig, "rule": RuleConfig, "forcing": ForcingConfig}[section]
    return part.get(key, defaults.model_fields[key].default) in kinds


def _refuse_ignored(section: str, model: BaseModel) -> None:
    for name in APPLIES[section]:
        default = type(model).model_fields[name].get_default(call_default_factory=True)
        why = inapplicable(section, model, name) if getattr(model, name) != default else None
        if why:
            raise ValueError(why)


class TaskConfig(_Strict):
    """Which task. `delay` applies to delayed-xor and evidence-integration, `shift` to sine;
    `options` passes further keyword arguments to the task class."""

    name: str = "delayed-xor"
    delay: int = Field(100, ge=0)
    shift: float = 0.0
    options: dict = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_task(cls, v):
        return _registered("task", "TASKS", v)

    @model_validator(mode="after")
    def _no_ignored_fields(self):
        _refuse_ignored("task", self)
        return self


class ModelConfig(_Strict):
    """The network (SPEC §1.1 reference defaults)."""

    kind: str = "leaky"
    hidden: int = Field(50, ge=1)
    gain: float = Field(1.5, ge=0)
    tau: float = Field(10.0, gt=0)
    dt: float = Field(1.0, gt=0)
    activation: Literal["tanh", "relu", "softplus", "identity", "logistic"] = "tanh"
    readout: Literal["state", "rate"] = "state"
    density: float = Field(1.0, gt=0, le=1)
    trainable: list[str] = Field(default_factory=lambda: ["W_rec", "b", "W_out", "b_out"])
    noise_std: float = Field(0.0, ge=0)
    excitatory: float | None = Field(None, gt=0, lt=1)  # Dale's law: the fraction of excitatory units

    @field_validator("kind")
    @classmethod
    def _known_model(cls, v):
        return _registered("model", "MODELS", v)

    @model_validator(mode="after")
    def _no_ignored_fields(self):
        _refuse_ignored("model", self)
        return self


ADAPTIVE_FORCINGS = forcing_kinds("adaptive")


class ForcingConfig(_Strict):
    """How feedback moves the state during training. `alpha` is a list: every value becomes
    a member of the same compiled ensemble.

    `adaptive=True` (SPEC §2, Hess et al. 2023): α is adapted during training from the Jacobian
    norm of the forced map, α ← α* = max(0, 1 − 1/‖J‖) when that is larger, else
    α ← 0.999 α + 0.001 α*, every 5 batches. `alpha` is then each member's *start* value;
    left unset it is [1.0], Hess et al.'s start. The member's α per epoch is the curve "alpha".
    Only for tf, ef, kalman and feedback forcing (ignored for none). `alpha_estimator` picks
    GTF's estimate of ‖J‖ (`analysis.growth_estimate`); the default is the one above.

    `interval = k` forces only the steps t with t mod k = 0 (GTF's teacher_forcing_interval);
    `units = M` forces only the first M units (GTF's partial_forcing). Both for tf, ef, kalman.
    """

    kind: str = "ef"
    alpha: list[float] = Field(default_factory=lambda: [0.5])
    stop_gradient: bool | None = None  # None: the method's reference default
    causal: bool = False
    # Kalman EF (SPEC §2, eq. 5): trained with process noise σ = process_noise (required, > 0;
    # the trainer injects it); obs_noise σ_o (default σ); the gain's ratio is σ_o² / σ²
    process_noise: float | None = Field(None, ge=0, validate_default=True)
    obs_noise: float | None = Field(None, ge=0)
    learn_feedback: bool = False  # feedback forcing: learn F with its local rule
    eps: float = Field(1e-7, gt=0)
    options: dict = Field(default_factory=dict)
    adaptive: bool = False
    alpha_estimator: Literal["product-upper-bound", "batch-maximum", "arithmetic-mean", "explog-approx",
                             "jacobian-upper-bound"] = "product-upper-bound"
    interval: int = Field(1, ge=1)  # force only the steps t with t mod interval == 0
    units: int | None = Field(None, ge=1)  # force only the first `units` units (None: all)

    @field_validator("kind")
    @classmethod
    def _known_forcing(cls, v):
        return _registered("forcing", "FORCINGS", v)

    @field_validator("alpha", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, (int, float)) else v

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, v):
        if not v:
            raise ValueError("give at least one value")
        if len(set(v)) != len(v):
            raise ValueError(f"repeated value in {v} (duplicate members would inflate n)")
        for a in v:
            if not 0.0 <= a <= 1.0:
                raise ValueError(f"forcing strength must be in [0, 1], got {a}")
        return v

    @field_validator("process_noise")
    @classmethod
    def _kalman_needs_process_noise(cls, v, info):
        if info.data.get("kind") == "kalman" and not v:
            raise ValueError("kalman forcing is trained with process noise σ: give a value > 0 "
                             f"(--process-noise), got {v}")
        return v

    def training_noise(self, model_noise_std: float) -> float:
        """The process noise σ of training rollouts: Kalman EF's own σ, else the model's."""
        return model_noise_std if self.process_noise is None else self.process_noise

    @field_validator("adaptive")
    @classmethod
    def _adaptive_kind(cls, v, info):
        kind = info.data.get("kind")
        if v and kind not in ADAPTIVE_FORCINGS:
            raise ValueError(f"adaptive α needs forcing {', '.join(ADAPTIVE_FORCINGS)}; got {kind!r}")
        return v

    @model_validator(mode="after")
    def _no_alpha_without_forcing(self):
        _refuse_ignored("forcing", self)
        if self.alpha_estimator != "product-upper-bound" and not self.adaptive:
            raise ValueError("forcing.alpha_estimator applies only with forcing.adaptive = true (--adaptive-alpha)")
        if self.kind == "none":
            if "alpha" in self.model_fields_set and self.alpha != [0.0]:
                raise ValueError("forcing.alpha applies only to a forcing; forcing.kind 'none' ignores it")
            self.__dict__["alpha"] = [0.0]
        elif self.adaptive and "alpha" not in self.model_fields_set:
            self.__dict__["alpha"] = [1.0]  # Hess et al. start at full forcing
        return self


class RuleConfig(_Strict):
    """How weights learn."""

    kind: str = "bptt"
    checkpoint: bool = False
    truncation: int = Field(50, ge=1)
    feedback: Literal["symmetric", "random"] = "symmetric"
    # online: θ changed at every step while the network runs (the registry's ONLINE_RULES), by
    # `online_optimizer` (an optax alias, default plain SGD) with rate `online_lr`
    online: bool = False
    online_lr: float | None = Field(None, gt=0)  # per-step learning rate of online rules
    online_optimizer: str | None = None
    log_alignment: bool = False  # record cos(rule gradient, BPTT gradient) every epoch
    options: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _online_fields_fit(self):
        from ._registry import ONLINE_RULES

        if self.online and self.kind not in ONLINE_RULES:
            raise ValueError(f"rule.online: {self.kind} has no online form; online rules: {', '.join(ONLINE_RULES)}")
        if self.online and self.online_lr is None:
            raise ValueError("online learning needs rule.online_lr (the per-step learning rate)")
        for name in ("online_lr", "online_optimizer"):
            if not self.online and getattr(self, name) is not None:
                raise ValueError(f"rule.{name} applies only to online learning (rule.online = true)")
        return self

    @field_validator("online_optimizer")
    @classmethod
    def _online_optax_name(cls, v):
        import optax

        if v is not None and not callable(getattr(optax, v, None)):
            raise ValueError(f"unknown optax optimizer {v!r} (e.g. sgd, adam, rmsprop)")
        return v

    @field_validator("kind")
    @classmethod
    def _known_rule(cls, v):
        return _registered("rule", "RULES", v)

    @model_validator(mode="after")
    def _no_ignored_fields(self):
        _refuse_ignored("rule", self)
        return self


class OptimConfig(_Strict):
    """Any optax optimizer that takes `learning_rate`; `lr` may be a list (vmapped members)."""

    name: str = "adam"
    lr: list[float] = Field(default_factory=lambda: [3e-4])
    clip_norm: float | None = Field(None, gt=0)
    options: dict = Field(default_factory=dict)

    @field_validator("lr", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, (int, float)) else v

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
    model: ModelConfig = Field(default_factory=ModelConfig)
    forcing: ForcingConfig = Field(default_factory=ForcingConfig)
    rule: RuleConfig = Field(default_factory=RuleConfig)
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

    @model_validator(mode="after")
    def _online_and_continual_fit(self):
        if self.rule.online and self.optim != OptimConfig():
            raise ValueError("optim: does not apply to online learning (its per-step optimizer is "
                             "rule.online_optimizer with rule.online_lr)")
        if not self.continual:
            for name in ("steps", "val_every", "val_steps"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies only to continual learning (continual = true)")
            return self
        if not self.rule.online:
            raise ValueError("continual: needs an online rule (rule.online = true with rtrl, eprop or rflo)")
        if self.steps is None or self.val_every is None:
            raise ValueError("continual: needs steps (the stream's length) and val_every (steps between checks)")
        if self.steps % self.val_every:
            raise ValueError(f"steps must be a multiple of val_every ({self.val_every}), got {self.steps}")
        fields = type(self).model_fields
        for name in ("epochs", "batch", "data", "train_trials", "val_trials", "dataset_size", "val_fraction"):
            if getattr(self, name) != fields[name].default:
                raise ValueError(f"{name} does not apply to continual learning (no epochs or trials)")
        if self.floss.enabled or self.analysis != AnalysisConfig() or self.forcing.adaptive or self.rule.log_alignment:
            raise ValueError("continual: flossing, analysis, adaptive alpha and log_alignment are epoch features")
        from ..tasks import AbstractContinualTask
        from ._registry import TASKS

        if not isinstance(TASKS[self.task.name].build(self.task), AbstractContinualTask):
            raise ValueError(f"task.name: continual learning needs a stream task (Williams–Zipser family), "
                             f"got {self.task.name!r}")
        return self

    @model_validator(mode="after")
    def _trial_counts_need_fresh_data(self):
        for name in ("train_trials", "val_trials"):
            if self.data == "fixed" and getattr(self, name) is not None:
                raise ValueError(f"{name} applies only to data = 'fresh'; fixed data uses dataset_size")
        return self

    @model_validator(mode="after")
    def _one_process_noise(self):
        sigma, noise = self.forcing.process_noise, self.model.noise_std
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
        if self.forcing.units is not None and self.forcing.units > self.model.hidden:
            raise ValueError(f"forcing.units must be <= model.hidden ({self.model.hidden}), got {self.forcing.units}")
        if self.forcing.adaptive and self.forcing.alpha_estimator == "jacobian-upper-bound" and self.model.kind != "leaky":
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
        import tomli_w

        return tomli_w.dumps(self.model_dump(exclude_none=True))

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        return cls.model_validate(tomllib.loads(Path(path).read_text()))
