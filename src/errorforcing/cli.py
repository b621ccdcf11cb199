"""The `errorforcing` command line: parses flags into a TrainConfig and calls experiments."""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Train RNNs with error forcing, teacher forcing and "
                  "local learning rules, in seed × α ensembles.")

DEFAULT_OUT = "errorforcing-runs"


class BadInput(Exception):
    """Invalid user input: reported as one line on stderr, exit code 2, nothing written."""


def _fail(message: str) -> None:
    raise BadInput(message)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """JSON for --json: non-finite numbers become null (NaN is not JSON)."""
    return json.dumps(_finite(obj), allow_nan=False)


def _floats(text: str | None, field: str) -> list[float] | None:
    if text is None:
        return None
    items = [v.strip() for v in text.split(",")]
    if "" in items:
        _fail(f"--{field}: empty item in {text!r}; give numbers separated by single commas")
    try:
        values = [float(v) for v in items]
    except ValueError:
        _fail(f"--{field}: expected a number or a comma-separated list of numbers, got {text!r}")
    if len(set(values)) != len(values):
        _fail(f"--{field}: {text!r} repeats a value (duplicate members would inflate n)")
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

    from .experiments import TrainConfig
    from .experiments._config import APPLIES, FLOSS_STEP_FIELDS, inapplicable, is_read

    data: dict[str, Any] = {}
    if config_file is not None:
        if not config_file.is_file():
            _fail(f"--config: no such file {str(config_file)!r}")
        try:
            data = tomllib.loads(config_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            _fail(f"--config: {config_file} is not valid TOML ({e})")
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
        _fail(msg if msg.startswith(field + ".") else f"{field}: {msg}")
    for dotted in given:  # flags equal to a default still ask for something the variant ignores
        section, _, field = dotted.partition(".")
        why = inapplicable(section, getattr(cfg, section), field) if field in APPLIES.get(section, {}) else None
        if section == "floss" and field in FLOSS_STEP_FIELDS and not cfg.floss.enabled:
            why = f"floss.{field} applies only when flossing is on (--floss-pre or --floss-every > 0)"
        if dotted == "forcing.adaptive" and cfg.forcing.kind == "none":
            why = "forcing.adaptive applies only to a forcing; forcing.kind 'none' ignores it"
        if dotted == "forcing.alpha_estimator" and not (cfg.forcing.adaptive and cfg.forcing.kind != "none"):
            why = "forcing.alpha_estimator applies only to adaptive α (--adaptive-alpha) with a forcing"
        if why:
            _fail(why)
    return cfg


def _common_overrides(task, delay, shift, rule, seeds, seed, epochs, lr, batch, hidden, gain, out, data,
                      checkpoint, threshold, noise, readout, activation, clip, model=None, feedback=None,
                      online=None, online_lr=None, truncation=None, log_alignment=None, dale=None) -> dict[str, Any]:
    return {
        "model.kind": model, "model.excitatory": dale, "rule.feedback": feedback, "rule.online": online, "rule.online_lr": online_lr,
        "rule.truncation": truncation, "rule.log_alignment": log_alignment,
        "task.name": task, "task.delay": delay, "task.shift": shift, "rule.kind": rule,
        "seeds": seeds, "seed": seed, "epochs": epochs, "optim.lr": _floats(lr, "lr"), "batch": batch,
        "model.hidden": hidden, "model.gain": gain, "out": out, "data": data,
        "rule.checkpoint": checkpoint, "threshold": threshold, "model.noise_std": noise,
        "model.readout": readout, "model.activation": activation, "optim.clip_norm": clip,
    }


# Shared options (typer wants them spelled out per command).
TaskOpt = typer.Option(None, "--task", help="task name (see `errorforcing tasks`)")
DaleOpt = typer.Option(None, "--dale", help="Dale's law: fraction of excitatory units, e.g. 0.8 (leaky model)")
DelayOpt = typer.Option(None, "--delay", help="delay in steps (delayed-xor, evidence-integration)")
ShiftOpt = typer.Option(None, "--shift", help="period shift (sine)")
RuleOpt = typer.Option(None, "--rule", help="learning rule: bptt, tbptt, rtrl, eprop, rflo, uoro, kf-rtrl, snap1, snap2")
SeedsOpt = typer.Option(None, "--seeds", help="number of seeds (ensemble members per α)")
SeedOpt = typer.Option(None, "--seed", help="first seed")
EpochsOpt = typer.Option(None, "--epochs", help="epoch budget")
LrOpt = typer.Option(None, "--lr", help="learning rate(s), comma-separated")
BatchOpt = typer.Option(None, "--batch", help="batch size")
HiddenOpt = typer.Option(None, "--hidden", help="number of recurrent units N")
GainOpt = typer.Option(None, "--gain", help="recurrent gain g")
OutOpt = typer.Option(None, "--out", help=f"results directory (default ./{DEFAULT_OUT})")
DataOpt = typer.Option(None, "--data", help="fresh (new trials every epoch) or fixed (one data set)")
CkptOpt = typer.Option(None, "--checkpoint/--no-checkpoint", help="rematerialise steps in the backward pass")
ThrOpt = typer.Option(None, "--threshold", help="convergence threshold (default: the task's)")
NoiseOpt = typer.Option(None, "--noise", help="process noise σ during training")
ReadoutOpt = typer.Option(None, "--readout", help="state or rate")
ActOpt = typer.Option(None, "--activation", help="tanh, relu, softplus, identity, logistic")
ClipOpt = typer.Option(None, "--clip", help="gradient-norm clipping")
ConfigOpt = typer.Option(None, "--config", help="TOML config file; flags override it")
ModelOpt = typer.Option(None, "--model", help="leaky (default), gru, lstm, williams-zipser")
FeedbackOpt = typer.Option(None, "--feedback", help="e-prop/RFLO learning signal: symmetric (W_outᵀ) or random")
OnlineOpt = typer.Option(None, "--online/--offline", help="apply updates at every step (RTRL, e-prop, RFLO, UORO, KF-RTRL, SnAp)")
OnlineLrOpt = typer.Option(None, "--online-lr", help="per-step learning rate of --online rules")
OnlineOptimOpt = typer.Option(None, "--online-optimizer",
                              help="per-step optax optimizer of --online rules (default sgd), e.g. adam")
TruncOpt = typer.Option(None, "--truncation", help="k of truncated BPTT (--rule tbptt)")
AlignOpt = typer.Option(None, "--log-alignment/--no-log-alignment",
                        help="record cos(rule gradient, exact BPTT gradient) every epoch")
JsonOpt = typer.Option(False, "--json", help="print a machine-readable summary on stdout")
FlossPreOpt = typer.Option(None, "--floss-pre", help="gradient-flossing iterations before training (0: none)")
FlossEveryOpt = typer.Option(None, "--floss-every", help="inter-flossing after every E epochs (0: never)")
FlossStepsOpt = typer.Option(None, "--floss-steps", help="iterations per inter-floss (default 10)")
FlossKOpt = typer.Option(None, "--floss-k", help="number of Lyapunov exponents flossed toward 0 (default 1)")
FlossLrOpt = typer.Option(None, "--floss-lr", help="flossing Adam learning rate (default 1e-3)")
FlossLocalOpt = typer.Option(None, "--floss-local/--floss-exact", help="detach the state in flossing (Liu et al.)")
LyapunovOpt = typer.Option(None, "--lyapunov/--no-lyapunov", help="store λ_max of each member before/after training")
DiagnosticsOpt = typer.Option(None, "--diagnostics/--no-diagnostics",
                              help="record Jacobian norm, update alignment and efficiency curves per epoch")
AdaptiveOpt = typer.Option(None, "--adaptive-alpha/--fixed-alpha",
                           help="adapt α during training (Hess et al.); --alpha is then the start (default 1)")
EstimatorOpt = typer.Option(None, "--alpha-estimator",
                            help="adaptive α's estimate of ‖J‖ (implies --adaptive-alpha): product-upper-bound "
                                 "(default), batch-maximum, arithmetic-mean, explog-approx, jacobian-upper-bound")
IntervalOpt = typer.Option(None, "--forcing-interval",
                           help="tf/ef/kalman: force only the steps t with t mod k == 0 (GTF's sparse forcing)")
UnitsOpt = typer.Option(None, "--forcing-units", help="tf/ef/kalman: force only the first M units (partial forcing)")


def _selective_overrides(interval, units, estimator, adaptive) -> dict[str, Any]:
    """--forcing-interval, --forcing-units, --alpha-estimator (which turns adaptive α on unless
    --fixed-alpha says otherwise, refused then by the config)."""
    implied = True if estimator is not None and adaptive is None else None
    return {"forcing.interval": interval, "forcing.units": units, "forcing.alpha_estimator": estimator,
            "forcing.adaptive": adaptive if implied is None else implied}


def _dynamics_overrides(floss_pre, floss_every, floss_steps, floss_k, floss_lr, floss_local, lyapunov, diagnostics,
                        adaptive) -> dict[str, Any]:
    return {"floss.pre": floss_pre, "floss.every": floss_every, "floss.steps": floss_steps, "floss.k": floss_k,
            "floss.lr": floss_lr, "floss.local": floss_local, "analysis.lyapunov": lyapunov,
            "analysis.diagnostics": diagnostics, "forcing.adaptive": adaptive}


def _with_default_out(cfg):
    if cfg.out is None:
        cfg.out = DEFAULT_OUT
    return cfg


@app.command()
def train(
    task: Optional[str] = TaskOpt, delay: Optional[int] = DelayOpt, shift: Optional[float] = ShiftOpt,
    forcing: Optional[str] = typer.Option(None, "--forcing", help="none, tf, ef, kalman, feedback, wz-tf"),
    alpha: Optional[str] = typer.Option(None, "--alpha", help="forcing strength(s), comma-separated"),
    rule: Optional[str] = RuleOpt, seeds: Optional[int] = SeedsOpt, seed: Optional[int] = SeedOpt,
    epochs: Optional[int] = EpochsOpt, lr: Optional[str] = LrOpt, batch: Optional[int] = BatchOpt,
    hidden: Optional[int] = HiddenOpt, gain: Optional[float] = GainOpt, out: Optional[str] = OutOpt,
    data: Optional[str] = DataOpt, checkpoint: Optional[bool] = CkptOpt, threshold: Optional[float] = ThrOpt,
    noise: Optional[float] = NoiseOpt, readout: Optional[str] = ReadoutOpt, activation: Optional[str] = ActOpt,
    clip: Optional[float] = ClipOpt, model: Optional[str] = ModelOpt, feedback: Optional[str] = FeedbackOpt,
    online: Optional[bool] = OnlineOpt, online_lr: Optional[float] = OnlineLrOpt,
    online_optimizer: Optional[str] = OnlineOptimOpt,
    continual: Optional[bool] = typer.Option(None, "--continual/--no-continual",
                                             help="online learning on one stream per member (Williams–Zipser "
                                                  "tasks), no epochs: --steps, --val-every"),
    steps: Optional[int] = typer.Option(None, "--steps", help="--continual: length of each member's stream"),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="--continual: steps between validation checks"),
    val_steps: Optional[int] = typer.Option(None, "--val-steps",
                                            help="--continual: steps of each validation stream (default: the task's)"),
    truncation: Optional[int] = TruncOpt, log_alignment: Optional[bool] = AlignOpt,
    dale: Optional[float] = DaleOpt,
    process_noise: Optional[float] = typer.Option(
        None, "--process-noise", help="--forcing kalman: process noise σ it trains with (required, > 0)"),
    obs_noise: Optional[float] = typer.Option(
        None, "--obs-noise", help="--forcing kalman: observation noise σ_o (default σ); gain ratio σ_o²/σ²"),
    learn_feedback: Optional[bool] = typer.Option(None, "--learn-feedback/--fixed-feedback",
                                                  help="--forcing feedback: learn F with its local rule"),
    causal: Optional[bool] = typer.Option(None, "--causal/--no-causal", help="forcing uses e_{t-1}"),
    floss_pre: Optional[int] = FlossPreOpt, floss_every: Optional[int] = FlossEveryOpt,
    floss_steps: Optional[int] = FlossStepsOpt, floss_k: Optional[int] = FlossKOpt,
    floss_lr: Optional[float] = FlossLrOpt, floss_local: Optional[bool] = FlossLocalOpt,
    lyapunov: Optional[bool] = LyapunovOpt, diagnostics: Optional[bool] = DiagnosticsOpt,
    adaptive_alpha: Optional[bool] = AdaptiveOpt, alpha_estimator: Optional[str] = EstimatorOpt,
    forcing_interval: Optional[int] = IntervalOpt, forcing_units: Optional[int] = UnitsOpt,
    config: Optional[Path] = ConfigOpt, json_out: bool = JsonOpt,
):
    """Train one ensemble (seeds × α × lr) and record it in OUT/runs.sqlite."""
    overrides = _common_overrides(task, delay, shift, rule, seeds, seed, epochs, lr, batch, hidden, gain,
                                  out, data, checkpoint, threshold, noise, readout, activation, clip, model,
                                  feedback, online, online_lr, truncation, log_alignment, dale=dale)
    overrides |= _dynamics_overrides(floss_pre, floss_every, floss_steps, floss_k, floss_lr, floss_local, lyapunov,
                                     diagnostics, adaptive_alpha)
    overrides |= {"forcing.kind": forcing, "forcing.alpha": _floats(alpha, "alpha"),
                  "forcing.process_noise": process_noise, "forcing.obs_noise": obs_noise,
                  "forcing.causal": causal, "forcing.learn_feedback": learn_feedback}
    overrides |= _selective_overrides(forcing_interval, forcing_units, alpha_estimator, adaptive_alpha)
    overrides |= {"rule.online_optimizer": online_optimizer, "continual": continual, "steps": steps,
                  "val_every": val_every, "val_steps": val_steps}
    cfg = _with_default_out(build_config(config, overrides))
    from .experiments import summarize, train as run_train
    from .plotting import learning_curves

    result = run_train(cfg, progress=True)
    rows = [r | {"curves": json.loads(r["curves"])} for r in result.rows]
    fig = learning_curves(rows, Path(cfg.out) / f"curves-{result.run_id}.png",
                          title=f"{cfg.rule.kind}/{cfg.forcing.kind} on {cfg.task.name}")[0]
    summary = summarize(result.rows, keys=_setting_keys(result.rows))
    if json_out:
        members = [{k: r.get(k) for k in ("member", "seed", "alpha", "lr", "converged", "diverged", "test_loss")}
                   for r in result.rows]
        print(dumps({"run_id": result.run_id, "out": cfg.out, "settings": summary, "members": members,
                          "figure": str(fig)}))
    else:
        _print_table(summary, f"run {result.run_id} → {cfg.out}")
        print(f"figure: {fig}")


@app.command()
def compare(
    task: Optional[str] = TaskOpt, delay: Optional[int] = DelayOpt, shift: Optional[float] = ShiftOpt,
    rule: Optional[str] = RuleOpt, seeds: Optional[int] = SeedsOpt, seed: Optional[int] = SeedOpt,
    epochs: Optional[int] = EpochsOpt, lr: Optional[str] = LrOpt, batch: Optional[int] = BatchOpt,
    hidden: Optional[int] = HiddenOpt, gain: Optional[float] = GainOpt, out: Optional[str] = OutOpt,
    data: Optional[str] = DataOpt, checkpoint: Optional[bool] = CkptOpt, threshold: Optional[float] = ThrOpt,
    noise: Optional[float] = NoiseOpt, readout: Optional[str] = ReadoutOpt, activation: Optional[str] = ActOpt,
    clip: Optional[float] = ClipOpt, model: Optional[str] = ModelOpt, feedback: Optional[str] = FeedbackOpt,
    online: Optional[bool] = OnlineOpt, online_lr: Optional[float] = OnlineLrOpt,
    truncation: Optional[int] = TruncOpt, log_alignment: Optional[bool] = AlignOpt,
    dale: Optional[float] = DaleOpt,
    causal: Optional[bool] = typer.Option(None, "--causal/--no-causal", help="EF uses e_{t-1} (online rules)"),
    alphas: Optional[str] = typer.Option(None, "--alphas", help="α grid for TF and EF (default 0.1,0.5,1.0; "
                                         "with --adaptive-alpha the start values, default 1.0)"),
    floss_pre: Optional[int] = FlossPreOpt, floss_every: Optional[int] = FlossEveryOpt,
    floss_steps: Optional[int] = FlossStepsOpt, floss_k: Optional[int] = FlossKOpt,
    floss_lr: Optional[float] = FlossLrOpt, floss_local: Optional[bool] = FlossLocalOpt,
    lyapunov: Optional[bool] = LyapunovOpt, diagnostics: Optional[bool] = DiagnosticsOpt,
    adaptive_alpha: Optional[bool] = AdaptiveOpt, alpha_estimator: Optional[str] = EstimatorOpt,
    forcing_interval: Optional[int] = IntervalOpt, forcing_units: Optional[int] = UnitsOpt,
    selection: str = typer.Option("split", "--selection",
                                  help="how the verdicts account for each method's best α being picked from the "
                                       "grid: split (pick on half the seeds, compare on the other half) or "
                                       "bonferroni (pick on all seeds, p × grid pairs)"),
    dynamics: bool = typer.Option(False, "--dynamics", help="also compare the fixed points of each method's "
                                  "best networks under the delay input (table, OUT/compare-dynamics.png)"),
    config: Optional[Path] = ConfigOpt, json_out: bool = JsonOpt,
):
    """No forcing vs teacher forcing vs error forcing on one task (best α per method), ending
    with the verdicts "EF beats TF" and "EF beats BPTT" (one-sided Fisher exact, α = 0.05).
    Defaults (the main job): delayed XOR, delay 400, 8 seeds, 100 epochs, α ∈ {0.1, 0.5, 1}."""
    from .experiments import COMPARE_ALPHAS, compare as run_compare
    from .experiments._stats import SELECTIONS

    if selection not in SELECTIONS:
        _fail(f"--selection: expected one of {', '.join(SELECTIONS)}, got {selection!r}")

    overrides = _common_overrides(task, delay, shift, rule, seeds, seed, epochs, lr, batch, hidden, gain,
                                  out, data, checkpoint, threshold, noise, readout, activation, clip, model,
                                  feedback, online, online_lr, truncation, log_alignment, dale=dale)
    overrides["forcing.causal"] = causal
    overrides |= _dynamics_overrides(floss_pre, floss_every, floss_steps, floss_k, floss_lr, floss_local, lyapunov,
                                     diagnostics, adaptive_alpha)
    overrides |= _selective_overrides(forcing_interval, forcing_units, alpha_estimator, adaptive_alpha)
    overrides["forcing.alpha"] = _floats(alphas, "alphas")  # validated here, before anything runs or is written
    defaults = COMPARE_DEFAULTS | {"forcing.alpha": [1.0] if overrides["forcing.adaptive"] else list(COMPARE_ALPHAS)}
    cfg = _with_default_out(build_config(config, overrides, defaults=defaults))
    grid = cfg.forcing.alpha  # --alphas, else the file's forcing.alpha, else the default grid
    result = run_compare(cfg, alphas=grid, progress=True, selection=selection, dynamics=dynamics)
    if json_out:
        print(dumps({"out": cfg.out, "best": result.best, "settings": result.settings,
                          "runs": [r.run_id for r in result.runs],
                          "figure": str(result.figure) if result.figure else None,
                          "verdicts": result.verdicts}
                    | ({"dynamics": {k: result.dynamics[k] for k in ("input", "table", "figure", "json")}}
                       if dynamics else {})))
    else:
        _print_table(result.best, f"{cfg.task.name}, delay {cfg.task.delay}: best α per method → {cfg.out}",
                     label=True)
        print(f"figure: {result.figure}")
        _print_verdicts(result.verdicts)
        if dynamics:
            _print_dynamics(result.dynamics)


def _print_dynamics(dynamics: dict[str, Any]) -> None:
    """compare --dynamics: the fixed-point structure per method under the delay input."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fixed points under the {dynamics['input']} input, best α per method")
    for col in ("method", "α", "members", "converged", "stable points: median [min, max]", "members with 4 stable",
                "median unstable points", "median |λ|max of stable points"):
        table.add_column(col, justify="right")
    fmt = lambda v, f="{:g}": "—" if v is None else f.format(v)  # noqa: E731
    for r in dynamics["table"]:
        table.add_row(r["method"], fmt(r["alpha"]), str(r["members"]), str(r["converged"]),
                      f"{fmt(r['median_stable'])} [{fmt(r['min_stable'])}, {fmt(r['max_stable'])}]",
                      str(r["with_four_stable"]), fmt(r["median_unstable"]),
                      fmt(r["median_stable_max_abs_eigenvalue"], "{:.4f}"))
    Console(width=160).print(table)
    print(f"dynamics figure: {dynamics['figure']}")


def _print_verdicts(verdicts: list[dict[str, Any]]) -> None:
    """compare's last lines: each verdict with the counts it rests on and the test used."""
    if not verdicts:
        return
    print(f"verdicts ({'; '.join(dict.fromkeys(v['test'] for v in verdicts))}):")
    for v in verdicts:
        if "p" not in v:
            print(f"  {v['claim']}: {v['verdict']} — {v.get('why', '')}")
            continue
        counts = []
        for label in v["claim"].split(" beats "):
            c = v[label]
            counts.append(f"{label} {c['learned']}/{c['n']} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
                          f" at α = {c['setting'][0]:g}")
        print(f"  {v['claim']}: {v['verdict'].upper()} ({', '.join(counts)}; p = {v['p']:.3g}, "
              f"opposite p = {v['p_opposite']:.3g})")


# The main job's defaults: long enough a delay that plain BPTT struggles, short enough to
# finish in minutes on 2 cores (README states the measured time).
COMPARE_DEFAULTS: dict[str, Any] = {"task.delay": 400, "seeds": 8, "epochs": 100}


tasks_app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                        help="List the tasks (inputs, outputs, length, source); `tasks show NAME` draws a trial.")
app.add_typer(tasks_app, name="tasks")


def _task_rows() -> list[dict]:
    from .experiments import TASKS, TaskConfig

    rows = []
    for name, entry in TASKS.items():
        row = {"name": name, "summary": entry.summary, "source": entry.source}
        try:
            t = entry.build(TaskConfig(name=name))
            row |= {"n_in": t.n_in, "n_out": t.n_out, "n_steps": t.n_steps}
        except ImportError as e:  # optional dependency (neurogym) missing
            row |= {"n_in": None, "n_out": None, "n_steps": None, "unavailable": str(e).splitlines()[0]}
        rows.append(row)
    return rows


@tasks_app.callback(invoke_without_command=True)
def tasks(ctx: typer.Context, json_out: bool = JsonOpt):
    """List the tasks, with their inputs, outputs, default length and source."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _task_rows()
    if json_out:
        print(dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("task", no_wrap=True)  # names are never cut: descriptions fold instead
    for col in ("in", "out", "T"):
        table.add_column(col, no_wrap=True, justify="right")
    table.add_column("what", overflow="fold", ratio=3)
    table.add_column("source", overflow="fold", ratio=2)
    fmt = lambda v: "—" if v is None else str(v)
    for r in rows:
        table.add_row(r["name"], fmt(r["n_in"]), fmt(r["n_out"]), fmt(r["n_steps"]), r["summary"], r["source"])
    Console().print(table)


@tasks_app.command("show")
def tasks_show(
    name: str = typer.Argument(..., help="task name"),
    out: Path = typer.Option(Path("trial.png"), "--out", help="figure file (PNG or SVG)"),
    delay: Optional[int] = DelayOpt, seed: int = typer.Option(0, "--seed", help="key for the sample"),
    config: Optional[Path] = ConfigOpt,
):
    """Draw one sample trial of a task: inputs, targets and mask."""
    import jax

    from .experiments import build_task
    from .plotting import trial_figure

    if seed < 0:
        _fail(f"--seed: must be >= 0, got {seed}")
    if out.suffix.lower() not in (".png", ".svg"):
        _fail(f"--out: the figure must be .png or .svg, got {str(out)!r}")
    if out.is_dir():
        _fail(f"--out: {str(out)!r} is a directory; name the figure file")
    cfg = build_config(config, {"task.name": name, "task.delay": delay, "seed": seed})
    from .experiments import InfeasibleConfig
    from .experiments._preflight import check_task

    try:
        task = check_task(cfg)
    except InfeasibleConfig as e:
        _fail(str(e))
    trial = task.sample(key=jax.random.key(seed))
    path = trial_figure(trial, out, title=f"{name} (T = {task.n_steps}, seed {seed})")
    print(f"figure: {path}")


@app.command()
def bench(json_out: bool = JsonOpt, quick: bool = typer.Option(False, "--quick", help="fewer repeats")):
    """Performance figures of the reference configuration (see benchmarks/)."""
    from .experiments._bench import run_benchmarks

    results = run_benchmarks(quick=quick)
    if json_out:
        print(dumps(results))


def _setting_keys(rows: list[dict]) -> tuple[str, ...]:
    """Group members by every hyperparameter that varies between them (α and lr), as report does."""
    keys = ("task", "rule", "forcing", "alpha")
    return keys + (("lr",) if len({r.get("lr") for r in rows}) > 1 else ())


def _print_table(settings: list[dict], title: str, label: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    # Identifiers and the interval never wrap or truncate; headers fold instead (80 columns, pipes).
    with_lr = any("lr" in s for s in settings)
    table = Table(title=title)
    for col in (["method"] if label else []) + ["forcing", "α"] + (["lr"] if with_lr else []) + ["learned"]:
        table.add_column(col, no_wrap=True)
    table.add_column("fraction [95% CI]", no_wrap=True)
    for col in ("median epochs", "diverged", "median val loss", "median test loss"):
        table.add_column(col, overflow="fold")
    for s in settings:
        med = "—" if s["median_epochs"] is None else f"{s['median_epochs']:.0f}"
        test = "—" if s.get("median_test_loss") is None else f"{s['median_test_loss']:.4g}"
        val = "—" if s["median_final_val_loss"] is None or not math.isfinite(s["median_final_val_loss"]) else (
            f"{s['median_final_val_loss']:.4g}")
        table.add_row(*([s["label"]] if label else []), s["forcing"], f"{s['alpha']:g}",
                      *([f"{s['lr']:g}"] if with_lr else []), f"{s['learned']}/{s['n']}",
                      f"{s['fraction']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]",
                      med, str(s["diverged"]), val, test)
    Console().print(table)


from ._cli_experiments import register as _register_experiments; _register_experiments(app)  # noqa: E402, E702
from ._cli_analysis import register as _register_analysis; _register_analysis(app)  # noqa: E402, E702


def _check_environment() -> None:
    from .training import threads_from_env

    try:
        threads_from_env()
    except ValueError as e:
        raise BadInput(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    from typer._click import exceptions as click_exceptions

    from .experiments import InfeasibleConfig
    from .store import StoreError

    try:
        _check_environment()
        code = app(args=argv, standalone_mode=False)  # a command's typer.Exit(n) comes back as n
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (StoreError, InfeasibleConfig) as e:  # raised before anything is written
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click_exceptions.UsageError as e:
        print(f"error: {e.format_message()}".splitlines()[0], file=sys.stderr)
        return 2
    except typer.Abort:  # typer's vendored click has no exceptions.Abort
        print("aborted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    sys.exit(main())
