"""Sweep specs (TOML): a base config, `grid` (product) and `zip` overrides over any config
field, expanded into ensemble jobs.

    name = "xor-delays"          # optional; default: the file's stem
    note = "..."                 # optional; shown on the report's figures
    seeds = 20                   # optional; the same as base.seeds
    [base]                       # any TrainConfig fields
    epochs = 200
    task.kind = "delayed-xor"
    [grid]                       # every combination
    "task.delay" = [50, 100, 200]
    "forcing.alpha" = [0.1, 0.5, 1.0]
    [[zip]]                      # lists of equal length, taken together (several [[zip]] tables
    "forcing.kind" = ["tf", "ef"] # combine with each other and with the grid by product)
    "rule.kind" = ["bptt", "bptt"]

Members that differ only in vmappable values (seed, α, lr) are grouped into one ensemble job
(one compiled program); structural differences (task, delay, rule, model, ...) become separate
jobs. A job is identified by a hash of its grouped config, so reruns can skip it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import tomllib
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ._config import SECTIONS, TrainConfig, config_class, is_read, registry
from ._registry import FORCINGS, MODELS, RULES, TASKS
from ._variants import Variant, field_key, stored_key

SPEC_KEYS = ("name", "note", "seeds", "base", "grid", "zip")
# Fields that may differ between members of one compiled ensemble.
VMAPPABLE = ("seed", "seeds", "forcing.alpha", "optim.lr")
# Fields naming registry entries, so a reproduction can skip names not registered yet.
REGISTRY_FIELDS = {"task.kind": TASKS, "model.kind": MODELS, "forcing.kind": FORCINGS, "rule.kind": RULES}


class SpecError(ValueError):
    """An invalid sweep spec; `field` names the offending entry."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict[str, Any]
    grid: dict[str, list]
    zips: tuple[dict[str, list], ...] = ()
    seeds: int | None = None
    note: str = ""
    text: str = ""  # the TOML as written, stored with the results

    @property
    def varied(self) -> list[str]:
        """The structural fields this spec varies (they label its jobs)."""
        keys = list(self.grid) + [k for z in self.zips for k in z]
        return [k for k in dict.fromkeys(keys) if k not in VMAPPABLE]


@dataclasses.dataclass(frozen=True)
class Job:
    """One ensemble: a TrainConfig whose members are seeds × forcing.alpha × optim.lr."""

    job_id: str
    config: TrainConfig
    sweep: str
    position: int
    label: str
    cost: float  # relative compute estimate, for the ETA

    @property
    def n_members(self) -> int:
        return self.config.n_members

    @property
    def members_label(self) -> str:
        c = self.config
        return f"{len(c.forcing.alpha)} α × {len(c.optim.lr)} lr × {c.seeds} seeds"


@dataclasses.dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    jobs: list[Job]
    skipped: list[str]  # one note per registry name that is not registered (yet)


# ----- parsing -----
def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.exists():
        raise SpecError("SPEC", f"no such file {str(path)!r}")
    return parse_spec(path.read_text(), default_name=path.stem)


def parse_spec(text: str, *, default_name: str = "sweep") -> SweepSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError("SPEC", f"not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise SpecError(unknown[0], f"unknown sweep key; allowed: {', '.join(SPEC_KEYS)}")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise SpecError("base", "expected a table of config fields")
    base = dict(base)
    base.pop("out", None)  # the sweep's --out decides where results go
    grid = _overrides(data.get("grid", {}), "grid")
    if "grid" in data and not grid:
        raise SpecError("grid", "empty table: give at least one field = [values], or leave [grid] out")
    raw_zips = data.get("zip", [])
    raw_zips = [raw_zips] if isinstance(raw_zips, dict) else raw_zips
    if not isinstance(raw_zips, list):
        raise SpecError("zip", "expected a table or an array of tables")
    zips = []
    for i, z in enumerate(raw_zips):
        where = "zip" if len(raw_zips) == 1 else f"zip[{i}]"
        z = _overrides(z, where)
        if not z:
            raise SpecError(where, "empty table: give at least one field = [values], or leave it out")
        lengths = {k: len(v) for k, v in z.items()}
        if len(set(lengths.values())) > 1:
            raise SpecError(where, "lists differ in length (" + ", ".join(f"{k}: {n}" for k, n in lengths.items()) + ")")
        zips.append(z)
    seen = [field_key(k) for k in [*grid, *(k for z in zips for k in z)]]
    dup = next((k for k in seen if seen.count(k) > 1), None)
    if dup:
        raise SpecError(dup, "varied in more than one place (grid and zip, or in both its spellings)")
    seeds = data.get("seeds")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise SpecError("seeds", f"expected a positive integer, got {seeds!r}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise SpecError("name", "expected a non-empty string")
    note = data.get("note", "")
    if not isinstance(note, str):
        raise SpecError("note", "expected a string")
    for dotted in _flatten(base):
        check_field(dotted, where="base")
    spelled = [field_key(k) for k in _flatten(base)]
    both = next((k for k in spelled if spelled.count(k) > 1), None)
    if both:
        raise SpecError(f"base.{both}", f"given in both its spellings ({stored_key(both)} is the old one)")
    return SweepSpec(name, base, grid, tuple(zips), seeds, note, text)


def _overrides(table: Any, where: str) -> dict[str, list]:
    if not isinstance(table, dict):
        raise SpecError(where, "expected a table of field = [values]")
    out = {}
    # TOML turns `task.delay = [...]` into nested tables; quoted "task.delay" stays flat.
    for dotted, values in _flatten(table, leaf_lists=True).items():
        check_field(dotted, where=where)
        if not isinstance(values, list):
            raise SpecError(f"{where}.{dotted}", f"expected a list of values, got {values!r}")
        if not values:
            raise SpecError(f"{where}.{dotted}", "empty list: give at least one value")
        out[dotted] = values
    return out


def _flatten(table: dict, prefix: str = "", leaf_lists: bool = False) -> dict[str, Any]:
    """Nested tables → dotted keys. Free-form dict fields (`options`) stay whole, unless every
    leaf must be a list of values (grid and zip)."""
    flat = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and (leaf_lists or not _is_dict_field(dotted)):
            flat |= _flatten(value, dotted + ".", leaf_lists)
        else:
            flat[dotted] = value
    return flat


def _is_dict_field(dotted: str) -> bool:
    try:
        return _field_annotation(dotted) is dict
    except SpecError:
        return False


def _field_annotation(dotted: str):
    model: type[BaseModel] = TrainConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = _fields(model)
        field = fields.get(part)
        if field is None:
            where = ".".join(parts[:i]) or "the config"
            raise SpecError(dotted, f"unknown config field; {where} has: {', '.join(fields)}")
        ann = field.annotation
        origin = typing.get_origin(ann) or ann
        if origin is dict:
            return dict  # free-form options: any keys below
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
            if i == len(parts) - 1:
                raise SpecError(dotted, f"is a section; name one of its fields: {', '.join(_fields(ann))}")
            continue
        if i != len(parts) - 1:
            raise SpecError(dotted, f"unknown config field; {'.'.join(parts[: i + 1])} has no sub-fields")
        return ann
    return None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields; a variant section's: those of every registered variant (each point's
    kind then decides which it reads)."""
    if issubclass(model, Variant) and model is SECTIONS[model.section].base:
        return {name: info for kind in registry(model.section)
                for name, info in config_class(model.section, kind).model_fields.items()}
    return model.model_fields


def check_field(dotted: str, *, where: str) -> None:
    """Raise SpecError naming `where.dotted` unless `dotted` is a TrainConfig field (or a key
    below a free-form `options` field)."""
    try:
        _field_annotation(field_key(dotted))
    except SpecError as e:
        raise SpecError(f"{where}.{dotted}", str(e).split(": ", 1)[1]) from None


# ----- expansion -----
def points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every override combination: the grid's product × each zip group's rows."""
    axes = [[dict(zip(spec.grid, combo)) for combo in itertools.product(*spec.grid.values())]]
    for z in spec.zips:
        axes.append([dict(zip(z, row)) for row in zip(*z.values())])
    return [dict(itertools.chain.from_iterable(d.items() for d in combo)) for combo in itertools.product(*axes)]


def _set(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for dotted, value in flat.items():
        _set(data, dotted, value)
    return data


def point_config(spec: SweepSpec, point: dict[str, Any]) -> TrainConfig:
    given = _flatten(spec.base) | ({"seeds": spec.seeds} if spec.seeds is not None else {}) | point
    flat = copy.deepcopy({field_key(k): v for k, v in given.items()})  # an axis overrides base in either spelling
    whole = _nested(flat)
    for dotted in map(field_key, point):  # a grid axis does not apply to the variants that ignore it (α without forcing)
        if not is_read(whole, dotted):
            del flat[dotted]
    try:
        return TrainConfig.model_validate(_nested(flat))
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith(field + "."):  # the message names the field itself ("rule.kind: ..." too)
            field, msg = msg.split(" ", 1)
            field = field.removesuffix(":")
        at = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise SpecError(field, msg + (f" (at {at})" if at else "")) from None


def _unregistered(spec: SweepSpec, point: dict[str, Any]) -> list[tuple[str, Any]]:
    flat = _flatten(spec.base) | point
    defaults = TrainConfig()
    missing = []
    for dotted, registry in REGISTRY_FIELDS.items():
        section, field = dotted.split(".")
        value = flat.get(dotted, flat.get(stored_key(dotted), getattr(getattr(defaults, section), field)))
        if value not in registry:
            missing.append((dotted, value))
    return missing


def expand(spec: SweepSpec, *, skip_unregistered: bool = False) -> Plan:
    """Validate every point and group members into jobs. Raises SpecError on the first invalid
    point; with `skip_unregistered`, points naming an unregistered task/model/forcing/rule are
    left out and reported in `Plan.skipped` instead."""
    skipped: dict[tuple[str, Any], int] = defaultdict(int)
    groups: dict[str, dict[tuple, None]] = {}  # structural key → ordered set of members
    for point in points(spec):
        if skip_unregistered:
            missing = _unregistered(spec, point)
            for m in missing:
                skipped[m] += 1
            if missing:
                continue
        cfg = point_config(spec, point)
        members = groups.setdefault(_structural_key(cfg), {})
        for lr in cfg.optim.lr:
            for alpha in cfg.forcing.alpha:
                for s in range(cfg.seeds):
                    members[(cfg.seed + s, float(alpha), float(lr))] = None
    jobs = []
    for key, members in groups.items():
        for seed0, n_seeds, alphas, lrs in _ensembles(list(members)):
            data = json.loads(key)
            data |= {"seed": seed0, "seeds": n_seeds}
            data["forcing"]["alpha"] = alphas
            data["optim"]["lr"] = lrs
            cfg = TrainConfig.model_validate(data)
            jobs.append(Job(job_id(cfg), cfg, spec.name, len(jobs), _label(spec, cfg), _cost(cfg)))
    notes = [f"skipped {n} point(s) of sweep {spec.name!r}: {field} = {value!r} is not registered yet"
             for (field, value), n in skipped.items()]
    return Plan(spec, jobs, notes)


def _structural_key(cfg: TrainConfig) -> str:
    data = cfg.model_dump(mode="json", exclude={"out", "seed", "seeds"})
    data["forcing"].pop("alpha")
    data["optim"].pop("lr")
    return json.dumps(data, sort_keys=True)


def _ensembles(members: list[tuple[int, float, float]]) -> list[tuple[int, int, list[float], list[float]]]:
    """Split a member set into products seeds × α × lr (what one TrainConfig can express):
    α values sharing a seed set, then lrs sharing (seed set, α set), then contiguous seed runs."""
    seeds_of: dict[tuple[float, float], set[int]] = defaultdict(set)
    for seed, alpha, lr in members:
        seeds_of[(lr, alpha)].add(seed)
    alphas_of: dict[tuple[float, frozenset], list[float]] = defaultdict(list)
    for (lr, alpha), seeds in seeds_of.items():
        alphas_of[(lr, frozenset(seeds))].append(alpha)
    lrs_of: dict[tuple[frozenset, tuple], list[float]] = defaultdict(list)
    for (lr, seeds), alphas in alphas_of.items():
        lrs_of[(seeds, tuple(sorted(alphas)))].append(lr)
    out = []
    for (seeds, alphas), lrs in lrs_of.items():
        for start, count in _runs(sorted(seeds)):
            out.append((start, count, list(alphas), sorted(lrs)))
    return out


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    return [(a, n) for a, n in runs]


def job_problems(plan: Plan) -> dict[str, str]:
    """job_id → why that job cannot run (memory, an incompatible rule × forcing × model), for
    every job that cannot; checked before a sweep writes anything."""
    from ._preflight import InfeasibleConfig, preflight

    problems = {}
    for job in plan.jobs:
        try:
            preflight(job.config)
        except InfeasibleConfig as e:
            problems[job.job_id] = str(e)
    return problems


def job_id(cfg: TrainConfig) -> str:
    """Stable across processes and machines: a hash of the grouped config (minus `out`)."""
    canonical = json.dumps(cfg.model_dump(mode="json", exclude={"out"}), sort_keys=True, separators=(",", ":"))
    return "j" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _label(spec: SweepSpec, cfg: TrainConfig) -> str:
    # from the stored record (the store keeps the labels): a field the job's variant does not
    # declare reads as the record holds it (rule.truncation=50 for bptt)
    record = cfg.model_dump()
    return " ".join(f"{k}={_get(record, stored_key(field_key(k)))}" for k in spec.varied) or spec.name


def _cost(cfg: TrainConfig) -> float:
    from ._train import build_schedule, build_task

    try:  # building the task here also catches bad task options before anything runs
        task = build_task(cfg)
    except Exception as e:
        field = "task.options" if cfg.task.options else "task"
        raise SpecError(field, f"cannot build task {cfg.task.kind!r}: {e}") from None
    schedule = build_schedule(cfg, task)
    trials = schedule.n_train + schedule.n_val
    return float(cfg.n_members * cfg.epochs * trials * task.n_steps * cfg.model.hidden ** 2)
