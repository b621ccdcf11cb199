"""The training commands: `train` (one ensemble) and `compare` (BPTT vs TF vs EF, with verdicts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ._config import build_config, common_overrides, dynamics_overrides, floats, selective_overrides, with_default_out
from ._errors import fail
from ._options import (
    FORCING, SCHEDULE, TASK, ActOpt, AdaptiveOpt, AlignOpt, AlphaOpt, BatchOpt, CausalOpt, CkptOpt, ClipOpt, ConfigOpt,
    ContinualOpt, DaleOpt, DataOpt, DelayOpt, DiagnosticsOpt, EpochsOpt, EstimatorOpt, FeedbackOpt, FlossEveryOpt,
    FlossKOpt, FlossLocalOpt, FlossLrOpt, FlossPreOpt, FlossStepsOpt, ForcingOpt, GainOpt, HiddenOpt, IntervalOpt,
    LearnFeedbackOpt, LrOpt, LyapunovOpt, ModelOpt, NoiseOpt, ObsNoiseOpt, OnlineLrOpt, OnlineOpt, OnlineOptimOpt,
    OutOpt, OutputJsonOpt, ProcessNoiseOpt, ReadoutOpt, RuleOpt, SeedOpt, SeedsOpt, ShiftOpt, StepsOpt, TaskOpt,
    ThrOpt, TruncOpt, UnitsOpt, ValEveryOpt, ValStepsOpt, option,
)
from ._output import dumps, print_settings, setting_keys

# The main job's defaults: long enough a delay that plain BPTT struggles, short enough to
# finish in minutes on 2 cores (README states the measured time).
COMPARE_DEFAULTS: dict[str, Any] = {"task.delay": 400, "seeds": 8, "epochs": 100}
CompareDelayOpt = option("task.delay", "--delay", "delay in steps (delayed-xor, evidence-integration)", TASK,
                         defaults=COMPARE_DEFAULTS)
CompareSeedsOpt = option("seeds", "--seeds", "number of seeds (ensemble members per α)", SCHEDULE,
                         defaults=COMPARE_DEFAULTS)
CompareEpochsOpt = option("epochs", "--epochs", "epoch budget", SCHEDULE, defaults=COMPARE_DEFAULTS)


def train(
    task: Optional[str] = TaskOpt, delay: Optional[int] = DelayOpt, shift: Optional[float] = ShiftOpt,
    model: Optional[str] = ModelOpt, hidden: Optional[int] = HiddenOpt, gain: Optional[float] = GainOpt,
    dale: Optional[float] = DaleOpt, noise: Optional[float] = NoiseOpt, readout: Optional[str] = ReadoutOpt,
    activation: Optional[str] = ActOpt,
    forcing: Optional[str] = ForcingOpt, alpha: Optional[str] = AlphaOpt, causal: Optional[bool] = CausalOpt,
    process_noise: Optional[float] = ProcessNoiseOpt, obs_noise: Optional[float] = ObsNoiseOpt,
    learn_feedback: Optional[bool] = LearnFeedbackOpt,
    adaptive_alpha: Optional[bool] = AdaptiveOpt, alpha_estimator: Optional[str] = EstimatorOpt,
    forcing_interval: Optional[int] = IntervalOpt, forcing_units: Optional[int] = UnitsOpt,
    rule: Optional[str] = RuleOpt, feedback: Optional[str] = FeedbackOpt, online: Optional[bool] = OnlineOpt,
    online_lr: Optional[float] = OnlineLrOpt, online_optimizer: Optional[str] = OnlineOptimOpt,
    truncation: Optional[int] = TruncOpt, checkpoint: Optional[bool] = CkptOpt,
    log_alignment: Optional[bool] = AlignOpt,
    seeds: Optional[int] = SeedsOpt, seed: Optional[int] = SeedOpt, epochs: Optional[int] = EpochsOpt,
    lr: Optional[str] = LrOpt, batch: Optional[int] = BatchOpt, data: Optional[str] = DataOpt,
    threshold: Optional[float] = ThrOpt, clip: Optional[float] = ClipOpt,
    continual: Optional[bool] = ContinualOpt, steps: Optional[int] = StepsOpt, val_every: Optional[int] = ValEveryOpt,
    val_steps: Optional[int] = ValStepsOpt,
    floss_pre: Optional[int] = FlossPreOpt, floss_every: Optional[int] = FlossEveryOpt,
    floss_steps: Optional[int] = FlossStepsOpt, floss_k: Optional[int] = FlossKOpt,
    floss_lr: Optional[float] = FlossLrOpt, floss_local: Optional[bool] = FlossLocalOpt,
    lyapunov: Optional[bool] = LyapunovOpt, diagnostics: Optional[bool] = DiagnosticsOpt,
    out: Optional[str] = OutOpt, config: Optional[Path] = ConfigOpt, json_out: bool = OutputJsonOpt,
):
    """Train one ensemble (seeds × α × lr) and record it in OUT/runs.sqlite."""
    overrides = common_overrides(task, delay, shift, rule, seeds, seed, epochs, lr, batch, hidden, gain,
                                 out, data, checkpoint, threshold, noise, readout, activation, clip, model,
                                 feedback, online, online_lr, truncation, log_alignment, dale=dale)
    overrides |= dynamics_overrides(floss_pre, floss_every, floss_steps, floss_k, floss_lr, floss_local, lyapunov,
                                    diagnostics, adaptive_alpha)
    overrides |= {"forcing.kind": forcing, "forcing.alpha": floats(alpha, "alpha"),
                  "forcing.process_noise": process_noise, "forcing.obs_noise": obs_noise,
                  "forcing.causal": causal, "forcing.learn_feedback": learn_feedback}
    overrides |= selective_overrides(forcing_interval, forcing_units, alpha_estimator, adaptive_alpha)
    overrides |= {"rule.online_optimizer": online_optimizer, "continual": continual, "steps": steps,
                  "val_every": val_every, "val_steps": val_steps}
    cfg = with_default_out(build_config(config, overrides))
    from ..experiments import summarize, train as run_train
    from ..plotting import learning_curves

    result = run_train(cfg, progress=True)
    rows = [r | {"curves": json.loads(r["curves"])} for r in result.rows]
    fig = learning_curves(rows, Path(cfg.out) / f"curves-{result.run_id}.png",
                          title=f"{cfg.rule.kind}/{cfg.forcing.kind} on {cfg.task.kind}")[0]
    summary = summarize(result.rows, keys=setting_keys(result.rows))
    if json_out:
        members = [{k: r.get(k) for k in ("member", "seed", "alpha", "lr", "converged", "diverged", "test_loss")}
                   for r in result.rows]
        print(dumps({"run_id": result.run_id, "out": cfg.out, "settings": summary, "members": members,
                     "figure": str(fig)}))
    else:
        print_settings(summary, f"run {result.run_id} → {cfg.out}")
        print(f"figure: {fig}")


def compare(
    task: Optional[str] = TaskOpt, delay: Optional[int] = CompareDelayOpt, shift: Optional[float] = ShiftOpt,
    model: Optional[str] = ModelOpt, hidden: Optional[int] = HiddenOpt, gain: Optional[float] = GainOpt,
    dale: Optional[float] = DaleOpt, noise: Optional[float] = NoiseOpt, readout: Optional[str] = ReadoutOpt,
    activation: Optional[str] = ActOpt,
    alphas: Optional[str] = option("forcing.alpha", "--alphas", "α grid for TF and EF (with --adaptive-alpha the "
                                   "start values, default 1.0)", FORCING, shown="0.1,0.5,1.0"),
    causal: Optional[bool] = option("forcing.causal", "--causal/--no-causal", "EF uses e_{t-1} (online rules)",
                                    FORCING),
    adaptive_alpha: Optional[bool] = AdaptiveOpt, alpha_estimator: Optional[str] = EstimatorOpt,
    forcing_interval: Optional[int] = IntervalOpt, forcing_units: Optional[int] = UnitsOpt,
    rule: Optional[str] = RuleOpt, feedback: Optional[str] = FeedbackOpt, online: Optional[bool] = OnlineOpt,
    online_lr: Optional[float] = OnlineLrOpt, truncation: Optional[int] = TruncOpt,
    checkpoint: Optional[bool] = CkptOpt, log_alignment: Optional[bool] = AlignOpt,
    seeds: Optional[int] = CompareSeedsOpt, seed: Optional[int] = SeedOpt, epochs: Optional[int] = CompareEpochsOpt,
    lr: Optional[str] = LrOpt, batch: Optional[int] = BatchOpt, data: Optional[str] = DataOpt,
    threshold: Optional[float] = ThrOpt, clip: Optional[float] = ClipOpt,
    floss_pre: Optional[int] = FlossPreOpt, floss_every: Optional[int] = FlossEveryOpt,
    floss_steps: Optional[int] = FlossStepsOpt, floss_k: Optional[int] = FlossKOpt,
    floss_lr: Optional[float] = FlossLrOpt, floss_local: Optional[bool] = FlossLocalOpt,
    lyapunov: Optional[bool] = LyapunovOpt, diagnostics: Optional[bool] = DiagnosticsOpt,
    selection: str = typer.Option("split", "--selection",
                                  help="how the verdicts account for each method's best α being picked from the "
                                       "grid: split (pick on half the seeds, compare on the other half) or "
                                       "bonferroni (pick on all seeds, p × grid pairs)",
                                  rich_help_panel="Comparison", show_default=True),
    dynamics: bool = typer.Option(False, "--dynamics", help="also compare the fixed points of each method's "
                                  "best networks under the delay input (table, OUT/compare-dynamics.png)",
                                  rich_help_panel="Comparison", show_default=True),
    out: Optional[str] = OutOpt, config: Optional[Path] = ConfigOpt, json_out: bool = OutputJsonOpt,
):
    """No forcing vs teacher forcing vs error forcing on one task (best α per method), ending
    with the verdicts "EF beats TF" and "EF beats BPTT" (one-sided Fisher exact, α = 0.05).
    Defaults (the main job): delayed XOR, delay 400, 8 seeds, 100 epochs, α ∈ {0.1, 0.5, 1}."""
    from ..experiments import COMPARE_ALPHAS, SELECTIONS, compare as run_compare, save_dynamics

    if selection not in SELECTIONS:
        fail(f"--selection: expected one of {', '.join(SELECTIONS)}, got {selection!r}")

    overrides = common_overrides(task, delay, shift, rule, seeds, seed, epochs, lr, batch, hidden, gain,
                                 out, data, checkpoint, threshold, noise, readout, activation, clip, model,
                                 feedback, online, online_lr, truncation, log_alignment, dale=dale)
    overrides["forcing.causal"] = causal
    overrides |= dynamics_overrides(floss_pre, floss_every, floss_steps, floss_k, floss_lr, floss_local, lyapunov,
                                    diagnostics, adaptive_alpha)
    overrides |= selective_overrides(forcing_interval, forcing_units, alpha_estimator, adaptive_alpha)
    overrides["forcing.alpha"] = floats(alphas, "alphas")  # validated here, before anything runs or is written
    defaults = COMPARE_DEFAULTS | {"forcing.alpha": [1.0] if overrides["forcing.adaptive"] else list(COMPARE_ALPHAS)}
    cfg = with_default_out(build_config(config, overrides, defaults=defaults))
    grid = cfg.forcing.alpha  # --alphas, else the file's forcing.alpha, else the default grid
    result = run_compare(cfg, alphas=grid, progress=True, selection=selection, dynamics=dynamics)
    from ..plotting import compare_figures

    compare_figures(result, cfg)
    if dynamics:
        save_dynamics(result, cfg.out)
    if json_out:
        print(dumps({"out": cfg.out, "best": result.best, "settings": result.settings,
                     "runs": [r.run_id for r in result.runs],
                     "figure": str(result.figure) if result.figure else None,
                     "verdicts": result.verdicts}
                    | ({"dynamics": {k: result.dynamics[k] for k in ("input", "table", "figure", "json")}}
                       if dynamics else {})))
    else:
        print_settings(result.best, f"{cfg.task.kind}, delay {cfg.task.delay}: best α per method → {cfg.out}",
                       label=True)
        print(f"figure: {result.figure}")
        print_verdicts(result.verdicts)
        if dynamics:
            print_dynamics(result.dynamics)


def print_dynamics(dynamics: dict[str, Any]) -> None:
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


def print_verdicts(verdicts: list[dict[str, Any]]) -> None:
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
