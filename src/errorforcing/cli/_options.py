"""The options the commands share, defined once, each in its help panel with its default.

A training flag's value is None unless it is given, so the TOML file, a command's own
defaults and the chosen variant decide; --help shows the value that then applies."""

from __future__ import annotations

from typing import Any

import typer

from ..experiments import APPLIES, FORCINGS, MODELS, RULES, TrainConfig, read_stored_spellings

DEFAULT_OUT = "errorforcing-runs"

TASK, MODEL, FORCING, RULE = "Task", "Model", "Forcing", "Learning rule"
SCHEDULE, DYNAMICS, OUTPUT = "Schedule", "Dynamics", "Input and output"

_TRAIN_DEFAULTS = read_stored_spellings(TrainConfig().model_dump())  # the record, in the fields' spelling


def _kinds(section: str, field: str, sep: str = "/") -> str:
    """The kinds whose config reads `section.field` (the help names the variants from the registry)."""
    return sep.join(APPLIES[section][field])


def _default(dotted: str, defaults: dict[str, Any]) -> Any:
    if dotted in defaults:
        return defaults[dotted]
    value: Any = _TRAIN_DEFAULTS
    for part in dotted.split("."):
        value = value[part]
    return value


def _shown(value: Any, decl: str) -> str:
    if isinstance(value, bool):  # the flag that is in effect
        on, _, off = decl.partition("/")
        return on if value else off
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(v, decl) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def option(field: str | None, decl: str, help: str, panel: str, *, shown: str | None = None,
           defaults: dict[str, Any] | None = None) -> Any:
    """A flag for config field `field` (dotted), shown in `panel` with its default: `shown`
    where the default is not a plain value (the task's, the variant's), else the config's
    (or the command's `defaults`)."""
    if shown is None:
        shown = _shown(_default(field, defaults or {}), decl)
    return typer.Option(None, decl, help=help, rich_help_panel=panel, show_default=shown)


# Task
TaskOpt = option("task.kind", "--task", "task name (see `errorforcing tasks`)", TASK)
DelayOpt = option("task.delay", "--delay", "delay in steps (delayed-xor, evidence-integration)", TASK)
ShiftOpt = option("task.shift", "--shift", "period shift (sine)", TASK)

# Model
ModelOpt = option("model.kind", "--model", ", ".join(MODELS), MODEL)
HiddenOpt = option("model.hidden", "--hidden", "number of recurrent units N", MODEL)
GainOpt = option("model.gain", "--gain", "recurrent gain g", MODEL)
DaleOpt = option("model.excitatory", "--dale",
                 f"Dale's law: fraction of excitatory units, e.g. 0.8 ({_kinds('model', 'excitatory')} model)",
                 MODEL, shown="off")
NoiseOpt = option("model.noise_std", "--noise", "process noise σ during training", MODEL)
ReadoutOpt = option("model.readout", "--readout", "state or rate", MODEL)
ActOpt = option("model.activation", "--activation", "tanh, relu, softplus, identity, logistic", MODEL)

# Forcing
ForcingOpt = option("forcing.kind", "--forcing", ", ".join(FORCINGS), FORCING)
AlphaOpt = option("forcing.alpha", "--alpha", "forcing strength(s), comma-separated", FORCING)
CausalOpt = option("forcing.causal", "--causal/--no-causal", "forcing uses e_{t-1}", FORCING)
ProcessNoiseOpt = option("forcing.process_noise", "--process-noise",
                         f"--forcing {_kinds('forcing', 'process_noise')}: process noise σ it trains with "
                         "(required, > 0)", FORCING, shown="none")
ObsNoiseOpt = option("forcing.obs_noise", "--obs-noise",
                     f"--forcing {_kinds('forcing', 'obs_noise')}: observation noise σ_o; gain ratio σ_o²/σ²", FORCING,
                     shown="σ")
LearnFeedbackOpt = option("forcing.learn_feedback", "--learn-feedback/--fixed-feedback",
                          f"--forcing {_kinds('forcing', 'learn_feedback')}: learn F with its local rule", FORCING)
AdaptiveOpt = option("forcing.adaptive", "--adaptive-alpha/--fixed-alpha",
                     "adapt α during training (Hess et al.); --alpha is then the start (default 1)", FORCING)
EstimatorOpt = option("forcing.alpha_estimator", "--alpha-estimator",
                      "adaptive α's estimate of ‖J‖ (implies --adaptive-alpha): product-upper-bound, "
                      "batch-maximum, arithmetic-mean, explog-approx, jacobian-upper-bound", FORCING)
IntervalOpt = option("forcing.interval", "--forcing-interval",
                     f"{_kinds('forcing', 'interval')}: force only the steps t with t mod k == 0 (GTF's sparse forcing)",
                     FORCING)
UnitsOpt = option("forcing.units", "--forcing-units",
                  f"{_kinds('forcing', 'units')}: force only the first M units (partial forcing)",
                  FORCING, shown="all")

# Learning rule
RuleOpt = option("rule.kind", "--rule", "learning rule: " + ", ".join(RULES), RULE)
FeedbackOpt = option("rule.feedback", "--feedback",
                     f"{_kinds('rule', 'feedback')} learning signal: symmetric (W_outᵀ) or random", RULE)
OnlineOpt = option("rule.online", "--online/--offline",
                   f"apply updates at every step ({_kinds('rule', 'online', ', ')})", RULE)
OnlineLrOpt = option("rule.online_lr", "--online-lr", "per-step learning rate of --online rules", RULE,
                     shown="--lr")
OnlineOptimOpt = option("rule.online_optimizer", "--online-optimizer",
                        "per-step optax optimizer of --online rules, e.g. adam", RULE, shown="sgd")
TruncOpt = option("rule.truncation", "--truncation", f"k of truncated BPTT (--rule {_kinds('rule', 'truncation')})",
                  RULE)
CkptOpt = option("rule.checkpoint", "--checkpoint/--no-checkpoint",
                 f"rematerialise steps in the backward pass ({_kinds('rule', 'checkpoint')})", RULE)
AlignOpt = option("rule.log_alignment", "--log-alignment/--no-log-alignment",
                  "record cos(rule gradient, exact BPTT gradient) every epoch", RULE)

# Schedule
SeedsOpt = option("seeds", "--seeds", "number of seeds (ensemble members per α)", SCHEDULE)
SeedOpt = option("seed", "--seed", "first seed", SCHEDULE)
EpochsOpt = option("epochs", "--epochs", "epoch budget", SCHEDULE)
LrOpt = option("optim.lr", "--lr", "learning rate(s), comma-separated", SCHEDULE)
BatchOpt = option("batch", "--batch", "batch size", SCHEDULE)
DataOpt = option("data", "--data", "fresh (new trials every epoch) or fixed (one data set)", SCHEDULE)
ThrOpt = option("threshold", "--threshold", "convergence threshold", SCHEDULE, shown="the task's")
ClipOpt = option("optim.clip_norm", "--clip", "gradient-norm clipping", SCHEDULE, shown="none")
ContinualOpt = option("continual", "--continual/--no-continual",
                      "online learning on one stream per member (Williams–Zipser tasks), no epochs: --steps, "
                      "--val-every", SCHEDULE)
StepsOpt = option("steps", "--steps", "--continual: length of each member's stream", SCHEDULE, shown="none")
ValEveryOpt = option("val_every", "--val-every", "--continual: steps between validation checks", SCHEDULE,
                     shown="none")
ValStepsOpt = option("val_steps", "--val-steps", "--continual: steps of each validation stream", SCHEDULE,
                     shown="the task's")

# Dynamics
FlossPreOpt = option("floss.pre", "--floss-pre", "gradient-flossing iterations before training (0: none)", DYNAMICS)
FlossEveryOpt = option("floss.every", "--floss-every", "inter-flossing after every E epochs (0: never)", DYNAMICS)
FlossStepsOpt = option("floss.steps", "--floss-steps", "iterations per inter-floss", DYNAMICS)
FlossKOpt = option("floss.k", "--floss-k", "number of Lyapunov exponents flossed toward 0", DYNAMICS)
FlossLrOpt = option("floss.lr", "--floss-lr", "flossing Adam learning rate", DYNAMICS)
FlossLocalOpt = option("floss.local", "--floss-local/--floss-exact", "detach the state in flossing (Liu et al.)",
                       DYNAMICS)
LyapunovOpt = option("analysis.lyapunov", "--lyapunov/--no-lyapunov", "store λ_max of each member before/after training",
                     DYNAMICS)
DiagnosticsOpt = option("analysis.diagnostics", "--diagnostics/--no-diagnostics",
                        "record Jacobian norm, update alignment and efficiency curves per epoch", DYNAMICS)

# Input and output
OutOpt = option("out", "--out", "results directory", OUTPUT, shown=f"./{DEFAULT_OUT}")
ConfigOpt = option(None, "--config", "TOML config file; flags override it", OUTPUT, shown="none")
JsonOpt = typer.Option(False, "--json", help="print a machine-readable summary on stdout")
OutputJsonOpt = typer.Option(False, "--json", help="print a machine-readable summary on stdout", rich_help_panel=OUTPUT)

# Commands that run sweeps: where they run.
ExecutorOpt = typer.Option("local", "--executor", help="local (this machine) or ray (a Ray cluster)", show_default=True)
WorkersOpt = typer.Option(1, "--workers", help="local executor: worker processes (1 = in this process)",
                          show_default=True)
AddressOpt = typer.Option(None, "--address", help="ray executor: HOST:PORT of a running Ray head",
                          show_default="a local Ray instance")
