"""Flags → TrainConfig: the TOML file, then the flags, validated once; inapplicable flags refused."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Optional

from ._errors import fail
from ._options import DEFAULT_OUT


def floats(text: str | None, field: str) -> list[float] | None:
    if text is None:
        return None
    items = [v.strip() for v in text.split(",")]
    if "" in items:
        fail(f"--{field}: empty item in {text!r}; give numbers separated by single commas")
    try:
        values = [float(v) for v in items]
    except ValueError:
        fail(f"--{field}: expected a number or a comma-separated list of numbers, got {text!r}")
    if len(set(values)) != len(values):
        fail(f"--{field}: {text!r} repeats a value (duplicate members would inflate n)")
    return values


def _set(d: dict, dotted: str, value: Any) -> None:
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def _has(data: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def build_config(config_file: Optional[Path], overrides: dict[str, Any], defaults: dict[str, Any] | None = None):
    """`defaults` (a command's own, where the file and the flags say nothing and the chosen
    variant reads them), then the TOML file (if any), then every flag that was given;
    validated once. A flag given for a variant that ignores it is refused."""
    from pydantic import ValidationError

    from ..experiments import FLOSS_STEP_FIELDS, TrainConfig, inapplicable, is_read, read_stored_spellings

    data: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            fail(f"--config: no such file {str(config_file)!r}")
        try:
            data = tomllib.loads(config_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            fail(f"--config: {config_file} is not valid TOML ({e})")
    try:  # a flag overrides the file's field in either spelling ([task] name = ... too)
        data = read_stored_spellings(data)
    except ValueError as e:
        fail(str(e))
    given = {k: v for k, v in overrides.items() if v is not None}
    for dotted, value in given.items():
        _set(data, dotted, value)
    for dotted, value in (defaults or {}).items():
        if dotted not in given and not _has(data, dotted) and is_read(data, dotted):
            _set(data, dotted, value)
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        fail(msg if msg.startswith(field + ".") else f"{field}: {msg}")
    for dotted in given:  # flags equal to a default still ask for something the variant ignores
        section, _, field = dotted.partition(".")
        why = inapplicable(section, getattr(cfg, section), field) if field else None
        if section == "floss" and field in FLOSS_STEP_FIELDS and not cfg.floss.enabled:
            why = f"floss.{field} applies only when flossing is on (--floss-pre or --floss-every > 0)"
        if dotted == "forcing.alpha_estimator" and not why and not cfg.forcing.own("adaptive", False):
            why = "forcing.alpha_estimator applies only to adaptive α (--adaptive-alpha) with a forcing"
        if why:
            fail(why)
    return cfg


def with_default_out(cfg):
    if cfg.out is None:
        cfg.out = DEFAULT_OUT
    return cfg


def common_overrides(task, delay, shift, rule, seeds, seed, epochs, lr, batch, hidden, gain, out, data,
                     checkpoint, threshold, noise, readout, activation, clip, model=None, feedback=None,
                     online=None, online_lr=None, truncation=None, log_alignment=None, dale=None) -> dict[str, Any]:
    return {
        "model.kind": model, "model.excitatory": dale, "rule.feedback": feedback, "rule.online": online, "rule.online_lr": online_lr,
        "rule.truncation": truncation, "rule.log_alignment": log_alignment,
        "task.kind": task, "task.delay": delay, "task.shift": shift, "rule.kind": rule,
        "seeds": seeds, "seed": seed, "epochs": epochs, "optim.lr": floats(lr, "lr"), "batch": batch,
        "model.hidden": hidden, "model.gain": gain, "out": out, "data": data,
        "rule.checkpoint": checkpoint, "threshold": threshold, "model.noise_std": noise,
        "model.readout": readout, "model.activation": activation, "optim.clip_norm": clip,
    }


def selective_overrides(interval, units, estimator, adaptive) -> dict[str, Any]:
    """--forcing-interval, --forcing-units, --alpha-estimator (which turns adaptive α on unless
    --fixed-alpha says otherwise, refused then by the config)."""
    implied = True if estimator is not None and adaptive is None else None
    return {"forcing.interval": interval, "forcing.units": units, "forcing.alpha_estimator": estimator,
            "forcing.adaptive": adaptive if implied is None else implied}


def dynamics_overrides(floss_pre, floss_every, floss_steps, floss_k, floss_lr, floss_local, lyapunov, diagnostics,
                       adaptive) -> dict[str, Any]:
    return {"floss.pre": floss_pre, "floss.every": floss_every, "floss.steps": floss_steps, "floss.k": floss_k,
            "floss.lr": floss_lr, "floss.local": floss_local, "analysis.lyapunov": lyapunov,
            "analysis.diagnostics": diagnostics, "forcing.adaptive": adaptive}
