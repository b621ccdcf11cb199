"""One typed config per variant: the base classes of the model, forcing and rule sections.

Every registry entry names its variant's config class (`Entry.config`, declared beside the
entry in `_registry.py`). The class declares exactly the options that variant reads
(`BPTTConfig` has `checkpoint`, `TBPTTConfig` also `truncation`, ...) with extra="forbid", so
an option another variant reads is a validation error naming the field. A section is a union
discriminated by `kind`, resolved through the registry when it is validated (so a variant
registered at run time is a member as well): `TrainConfig` validates its `rule` section with
the class of `RULES[kind]`, and `RuleConfig(kind="tbptt", truncation=5)` returns a
`TBPTTConfig`.

Stored records keep the flat layout of earlier versions (`RECORD_LAYOUT`: the fields of the
single config class each section had, in its order). A variant's record holds its own fields
and every other layout field at the value the variant holds for it (`fixed`, else the
field's default). Sweep job ids hash that record, so they are unchanged for every config that
could be written before; reading a record back drops the layout fields a variant does not
declare while they hold that value, and refuses them otherwise. On a config, a field its
variant does not declare is an AttributeError: a reader outside the variant asks
`config.own(field, absent)`, one that builds a record row reads the record (`model_dump`)."""

from __future__ import annotations

import copy
from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_serializer,
                      model_validator)
from pydantic_core import PydanticUndefined

# The stored layout of each section: frozen, job ids hash it.
RECORD_LAYOUT: dict[str, tuple[str, ...]] = {
    "model": ("kind", "hidden", "gain", "tau", "dt", "activation", "readout", "density", "trainable", "noise_std",
              "excitatory"),
    "forcing": ("kind", "alpha", "stop_gradient", "causal", "process_noise", "obs_noise", "learn_feedback", "eps",
                "options", "adaptive", "alpha_estimator", "interval", "units"),
    "rule": ("kind", "checkpoint", "truncation", "feedback", "online", "online_lr", "online_optimizer",
             "log_alignment", "options"),
}
# Layout fields no built-in variant reads any more (stored at this value, refused otherwise).
RETIRED: dict[str, dict[str, Any]] = {"rule": {"options": {}}}
# Fields a record stores under an earlier spelling (section → field → its stored key, still
# accepted on input): frozen, job ids hash it.
STORED_AS: dict[str, dict[str, str]] = {"task": {"kind": "name"}}


def stored_key(dotted: str) -> str:
    """Where a record keeps field `dotted` (`task.kind` → `task.name`)."""
    section, _, field = dotted.partition(".")
    return f"{section}.{STORED_AS[section][field]}" if field in STORED_AS.get(section, {}) else dotted


def field_key(dotted: str) -> str:
    """The field a dotted key names, in either spelling (`task.name` → `task.kind`)."""
    section, _, key = dotted.partition(".")
    field = next((f for f, old in STORED_AS.get(section, {}).items() if old == key), key)
    return f"{section}.{field}" if field != key else dotted


def from_stored(section: str, data: Any) -> Any:
    """A section's input with its stored spellings read as the fields; both spellings of one
    field is an error naming it."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for field, old in STORED_AS.get(section, {}).items():
        if old in data:
            if field in data:
                raise ValueError(f"{section}.{field}: give {section}.{field} or its old spelling {section}.{old}, "
                                 f"not both")
            data[field] = data.pop(old)
    return data


def read_stored_spellings(config: dict[str, Any]) -> dict[str, Any]:
    """A whole config's input (nested tables) with each section's stored spellings read as its fields."""
    return config | {s: from_stored(s, config[s]) for s in STORED_AS if isinstance(config.get(s), dict)}


def to_stored(section: str, dumped: dict[str, Any]) -> dict[str, Any]:
    """A section's dump with its fields under their stored keys, in the same order."""
    renamed = STORED_AS.get(section, {})
    return {renamed.get(k, k): v for k, v in dumped.items()}


def _one_element_list(value: Any) -> Any:
    return [value] if isinstance(value, (int, float)) else value


# The values of a vmapped hyperparameter (forcing.alpha, optim.lr): a number is a one-element list.
FloatGrid = Annotated[list[float], BeforeValidator(_one_element_list)]


class Strict(BaseModel):
    # allow_inf_nan=False: nan, inf (and 1e999, which parses as inf) are refused in every float field
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


_REGISTRIES: dict[str, dict[str, Any]] = {}  # section → its registry (`_registry.py` hands them over)
_DEFAULT_KINDS: dict[str, str] = {}


def use_registries(registries: dict[str, dict[str, Any]], default_kinds: dict[str, str]) -> None:
    """The registries whose entries name the variants' classes, and each section's default
    kind (called once by `_registry`, which imports this module: no cycle)."""
    _REGISTRIES.update(registries)
    _DEFAULT_KINDS.update(default_kinds)


def registry(section: str) -> dict[str, Any]:
    return _REGISTRIES[section]


def default_kind(section: str) -> str:
    return _DEFAULT_KINDS[section]


def config_class(section: str, kind: str) -> type["Variant"]:
    """The config class of registered `kind` (a variant registered without one: the section's
    `custom` class, which takes free `options`)."""
    entry = registry(section)[kind]
    return getattr(entry, "config", None) or SECTIONS[section].custom


def unknown_kind(section: str, kind: Any) -> str | None:
    choices = registry(section)
    if isinstance(kind, str) and kind in choices:
        return None
    return f"{section}.kind: unknown {section} {kind!r}; choose one of: {', '.join(sorted(choices))}"


def kinds_reading(section: str, field: str) -> tuple[str, ...]:
    """The registered kinds whose config declares `field`, in registry order."""
    return tuple(k for k in registry(section) if field in config_class(section, k).model_fields)


def not_read(section: str, kind: str, field: str) -> str:
    kinds = kinds_reading(section, field)
    where = f"{section}.kind {' or '.join(map(repr, kinds))}" if kinds else "no registered variant"
    return f"{section}.{field} applies only to {where}; {kind!r} ignores it"


def layout_default(section: str, field: str) -> Any:
    """A layout field's default: the declaring classes' (all agree), else the retired value."""
    if field in RETIRED.get(section, {}):
        return RETIRED[section][field]
    values = []
    for kind in kinds_reading(section, field):
        info = config_class(section, kind).model_fields[field]
        values.append(info.get_default(call_default_factory=True))
    if not values or any(v != values[0] for v in values):
        return PydanticUndefined
    return values[0]


def _same(value: Any, held: Any) -> bool:
    if isinstance(held, list) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]  # a scalar α is a one-element grid
    return value == held


class Variant(Strict):
    """A section's variant config. Subclasses of a section class (`RuleConfig`, ...) declare
    the options their variant reads; `fixed` holds the value of a layout field the variant
    does not read but stands for (no forcing: α = 0, one member per seed)."""

    section: ClassVar[str]
    fixed: ClassVar[dict[str, Any]] = {}
    kind: str

    def __new__(cls, *args: Any, **data: Any):
        if cls is SECTIONS.get(getattr(cls, "section", ""), _NoSection).base:  # the union: the kind's class
            kind = data.get("kind", default_kind(cls.section))
            why = unknown_kind(cls.section, kind)
            if why:
                raise ValueError(why)
            return config_class(cls.section, kind)(**data)
        return super().__new__(cls)

    @classmethod
    def validate_section(cls, data: Any) -> "Variant":
        """`data` (a dict or a config) as its kind's config class; what `TrainConfig` calls."""
        if isinstance(data, Variant):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"expected a table of {cls.section} options, got {data!r}")
        kind = data.get("kind", default_kind(cls.section))
        why = unknown_kind(cls.section, kind)
        if why:
            raise ValueError(why)
        return config_class(cls.section, kind).model_validate(data)

    @classmethod
    def held(cls, field: str) -> Any:
        """The value this variant stands for in a layout field it does not declare."""
        return copy.deepcopy(cls.fixed[field]) if field in cls.fixed else layout_default(cls.section, field)

    @model_validator(mode="before")
    @classmethod
    def _own_kind_and_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        mine = tuple(k for k in registry(cls.section) if config_class(cls.section, k) is cls)
        if "kind" not in data and len(mine) == 1:
            data["kind"] = mine[0]
        kind = data.get("kind")
        why = unknown_kind(cls.section, kind)
        if why:
            raise ValueError(why)
        if kind not in mine:
            raise ValueError(f"{cls.section}.kind: {kind!r} is configured by "
                             f"{config_class(cls.section, kind).__name__}, not {cls.__name__}")
        layout = RECORD_LAYOUT.get(cls.section, ()) + tuple(RETIRED.get(cls.section, {}))
        for field in [f for f in data if f not in cls.model_fields]:
            if field not in layout and not kinds_reading(cls.section, field):
                continue  # not an option of any variant: extra="forbid" names it
            held = cls.held(field)
            if held is not PydanticUndefined and _same(data[field], held):
                del data[field]  # a stored record's placeholder (or the value the variant holds)
            else:
                raise ValueError(not_read(cls.section, kind, field))
        return data

    @model_serializer(mode="wrap")
    def _record(self, handler, info) -> dict[str, Any]:
        own = handler(self)
        if info.exclude_unset or info.exclude_defaults or (info.context or {}).get("own_fields"):
            return own
        out: dict[str, Any] = {}
        for field in RECORD_LAYOUT.get(self.section, ()) + tuple(own):
            if field in out:
                continue
            if field in own:
                out[field] = own[field]
            elif field not in type(self).model_fields:
                value = self.held(field)
                if value is not PydanticUndefined and not (value is None and info.exclude_none):
                    out[field] = value
        return out

    def own(self, field: str, absent: Any = None) -> Any:
        """`field` if this variant declares it, else `absent` (a reader outside the variant
        asks this way: an undeclared field is an AttributeError)."""
        return getattr(self, field) if field in type(self).model_fields else absent


class _Section(NamedTuple):
    base: type[Variant] | None = None  # the union class, dispatching on kind
    custom: type[Variant] | None = None  # the config of variants registered without a class


_NoSection = _Section()
SECTIONS: dict[str, _Section] = {}


def section(base: type[Variant], custom: type[Variant]) -> None:
    """Register `base` as a section's union class and `custom` as the config of variants
    registered without a class of their own."""
    SECTIONS[base.section] = _Section(base, custom)


class ModelConfig(Variant):
    """The network (SPEC §1.1 reference defaults): options every model reads. Its variants
    (`MODELS[kind].config`) add their own."""

    section: ClassVar[str] = "model"
    jacobian_bound: ClassVar[bool] = False  # analysis bounds its Jacobian (alpha_estimator jacobian-upper-bound)
    hidden: int = Field(50, ge=1)
    noise_std: float = Field(0.0, ge=0)  # process noise σ of training rollouts


class ForcingConfig(Variant):
    """How feedback moves the state during training; its variants (`FORCINGS[kind].config`)
    declare their options."""

    section: ClassVar[str] = "forcing"

    def training_noise(self, model_noise_std: float) -> float:
        """The process noise σ of training rollouts: the model's, unless the forcing trains
        with its own (Kalman EF)."""
        return model_noise_std


class RuleConfig(Variant):
    """How weights learn; its variants (`RULES[kind].config`) declare their options."""

    section: ClassVar[str] = "rule"
    log_alignment: bool = False  # record cos(rule gradient, BPTT gradient) every epoch

    @property
    def learns_online(self) -> bool:
        """θ changes at every step while the network runs (rule.online of an online rule)."""
        return False


class CustomModelConfig(ModelConfig):
    """A model registered without a config class of its own."""


class ForcedConfig(ForcingConfig):
    """A forcing with a strength α. `alpha` is a list: every value becomes a member of the
    same compiled ensemble."""

    alpha: FloatGrid = Field(default_factory=lambda: [0.5])

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


class CustomForcingConfig(ForcedConfig):
    """A forcing registered without a config class of its own: α, and free `options` for
    its builder."""

    options: dict = Field(default_factory=dict)


class CustomRuleConfig(RuleConfig):
    """A rule registered without a config class of its own: free `options` for its builder."""

    options: dict = Field(default_factory=dict)


section(ModelConfig, CustomModelConfig)
section(ForcingConfig, CustomForcingConfig)
section(RuleConfig, CustomRuleConfig)
