"""The options several commands share, defined once (typer wants them spelled out per command)."""

from __future__ import annotations

import typer

DEFAULT_OUT = "errorforcing-runs"

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

# Commands that run sweeps: where they run.
ExecutorOpt = typer.Option("local", "--executor", help="local (this machine) or ray (a Ray cluster)")
WorkersOpt = typer.Option(1, "--workers", help="local executor: worker processes (1 = in this process)")
AddressOpt = typer.Option(None, "--address", help="ray executor: HOST:PORT of a running Ray head "
                          "(default: start a local Ray instance)")
