"""The only place where names (CLI flags, config files) become classes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .. import forcing as F
from .. import models as M
from .. import rules as R
from .. import tasks as T
from ._variants import ForcedConfig, ForcingConfig, ModelConfig, RuleConfig, use_registries


@dataclasses.dataclass(frozen=True)
class Entry:
    build: Callable[..., Any]
    summary: str
    source: str = ""
    config: type | None = None  # the variant's config class (None: the section's custom class, free options)


@dataclasses.dataclass(frozen=True)
class ForcingEntry(Entry):
    """A forcing method: its builder, its config class, and how tables and figures name it.
    Its capabilities are the options its config declares. Every table keyed by forcing kind
    is derived from these entries (`method_label`, `METHOD_COLORS`, `ADAPTIVE_FORCINGS`,
    `SELECTIVE_FORCINGS`, `APPLIES["forcing"]`), so a new forcing method is one entry here."""

    prefix: str = ""  # the method label's prefix: "EF-" + the rule → "EF-BPTT"
    color: str | None = None  # its colour in figures (None: the figure's neutral default)

    def _declares(self, field: str) -> bool:
        return self.config is not None and field in self.config.model_fields

    @property
    def adaptive(self) -> bool:  # α can be adapted during training (forcing.adaptive)
        return self._declares("adaptive")

    @property
    def selective(self) -> bool:  # sparse (forcing.interval) and partial (forcing.units) forcing
        return self._declares("interval")

    @property
    def causal(self) -> bool:  # has a causal form (forcing.causal)
        return self._declares("causal")


def forcing_kinds(capability: str) -> tuple[str, ...]:
    """The forcing kinds whose entry has `capability` (an entry flag, or an option its config
    declares), in registry order."""
    return tuple(k for k, e in FORCINGS.items()
                 if getattr(e, capability, False) is True or (e.config and capability in e.config.model_fields))


def _task_kwargs(cfg, *names):
    return {n: getattr(cfg, n) for n in names} | dict(cfg.options)


TASKS: dict[str, Entry] = {
    "delayed-xor": Entry(lambda c: T.DelayedXOR(**_task_kwargs(c, "delay")),
                         "XOR of two ±1 pulses reported after a delay (T = 45 + delay)",
                         "Error Forcing reference code 'MDXOR'"),
    "evidence-integration": Entry(lambda c: T.EvidenceIntegration(**_task_kwargs(c, "delay")),
                                  "majority of 7 cues on two channels, reported after a delay (T = 70 + delay)",
                                  "Error Forcing reference code 'Cue' (after Liu et al. 2021)"),
    "sine": Entry(lambda c: T.SineGeneration(**_task_kwargs(c, "shift")),
                  "two phase-shifted cosines of a cued period, T = 500",
                  "Error Forcing reference code 'Cos'"),
    "pipelined-xor": Entry(lambda c: T.PipelinedXOR(**c.options), "XOR of two input bits from `lag` steps back",
                           "Williams & Zipser 1989, §3"),
    "sequence-recognition": Entry(lambda c: T.SequenceRecognition(**c.options),
                                  "output 1 right after the first b that follows an a",
                                  "Williams & Zipser 1989, §3"),
    "delayed-nonmatch": Entry(lambda c: T.DelayedNonmatch(**c.options), "0 on match, 1 on mismatch with the cued bit",
                              "Williams & Zipser 1989, §3"),
    "parentheses": Entry(lambda c: T.BalancedParentheses(**c.options),
                         "mimic a parenthesis-balancing Turing machine's controller",
                         "Williams & Zipser 1989, §3"),
    "oscillation": Entry(lambda c: T.Oscillation(**c.options), "free-running 0101…, 00110011… or a sinusoid",
                         "Williams & Zipser 1989, §3"),
    "romo": Entry(lambda c: T.Romo(**c.options), "parametric working memory: which of two flutters was larger",
                  "Romo et al. 1999, as in Liu et al. / Schuessler et al. 2020"),
    "sine-shift": Entry(lambda c: T.SineFrequencyShift(**c.options),
                        "sine and cosine at a cued frequency; option shift = the adaptation's frequency shift",
                        "Kaleb et al. 2024 reference code 'Sinewave' / 'freqshift'"),
    "center-out-reach": Entry(lambda c: T.CenterOutReach(**c.options),
                              "velocity of a reach to a cued target (8 test targets, rotation option)",
                              "Kaleb et al. 2024 (after Feulner et al.)"),
    "perceptual-decision": Entry(lambda c: T.from_neurogym("perceptual-decision", seed=c.options.get("seed", 0),
                                                           **{k: v for k, v in c.options.items() if k != "seed"}),
                                 "two-alternative forced choice (neurogym PerceptualDecisionMaking-v0)",
                                 "neurogym; Britten et al. 1992"),
    "delay-match-sample": Entry(lambda c: T.from_neurogym("delay-match-sample", seed=c.options.get("seed", 0),
                                                          **{k: v for k, v in c.options.items() if k != "seed"}),
                                "delayed match to sample (neurogym DelayMatchSample-v0)",
                                "neurogym; Miller et al. 1996"),
}


class LeakyRNNConfig(ModelConfig):
    """The leaky rate RNN's options (SPEC §1.1 reference defaults)."""

    jacobian_bound: ClassVar[bool] = True

    gain: float = Field(1.5, ge=0)
    tau: float = Field(10.0, gt=0)
    dt: float = Field(1.0, gt=0)
    activation: Literal["tanh", "relu", "softplus", "identity", "logistic"] = "tanh"
    readout: Literal["state", "rate"] = "state"
    density: float = Field(1.0, gt=0, le=1)
    trainable: list[str] = Field(default_factory=lambda: ["W_rec", "b", "W_out", "b_out"])
    excitatory: float | None = Field(None, gt=0, lt=1)  # Dale's law: the fraction of excitatory units


class GRUConfig(ModelConfig):
    """The GRU baseline: its size (and the training noise) only."""


class LSTMConfig(ModelConfig):
    """The LSTM baseline: its size (and the training noise) only."""


class WilliamsZipserConfig(ModelConfig):
    """Williams & Zipser's fully recurrent net: its size (and the training noise) only."""


def _leaky(cfg, task, key):
    return M.LeakyRNN(task.n_in, cfg.hidden, task.n_out, key=key, gain=cfg.gain, tau=cfg.tau, dt=cfg.dt,
                      activation=cfg.activation, readout=cfg.readout, density=cfg.density,
                      trainable=tuple(cfg.trainable), excitatory=cfg.excitatory)


MODELS: dict[str, Entry] = {
    "leaky": Entry(_leaky, "leaky rate RNN, SPEC §1.1 (Error Forcing reference model)", config=LeakyRNNConfig),
    "gru": Entry(lambda c, task, key: M.GRU(task.n_in, c.hidden, task.n_out, key=key), "GRU baseline",
                 config=GRUConfig),
    "lstm": Entry(lambda c, task, key: M.LSTM(task.n_in, c.hidden, task.n_out, key=key), "LSTM baseline",
                  config=LSTMConfig),
    "williams-zipser": Entry(lambda c, task, key: M.WilliamsZipserNet(task.n_in, c.hidden, task.n_out, key=key),
                             "fully recurrent logistic net, outputs are units (Williams & Zipser 1989)",
                             config=WilliamsZipserConfig),
}


class NoForcingConfig(ForcingConfig):
    """No forcing: no options; its members have α = 0 (one member per seed)."""

    fixed: ClassVar[dict[str, Any]] = {"alpha": [0.0]}

    @property
    def alpha(self) -> list[float]:
        """The members' α (not an option: the ensemble's α axis, which every forcing has)."""
        return self.held("alpha")


class _AdaptiveAlpha(ForcedConfig):
    """`adaptive=True` (SPEC §2, Hess et al. 2023): α is adapted during training from the
    Jacobian norm of the forced map, α ← α* = max(0, 1 − 1/‖J‖) when that is larger, else
    α ← 0.999 α + 0.001 α*, every 5 batches. `alpha` is then each member's *start* value;
    left unset it is [1.0], Hess et al.'s start. The member's α per epoch is the curve
    "alpha". `alpha_estimator` picks GTF's estimate of ‖J‖ (`analysis.growth_estimate`)."""

    adaptive: bool = False
    alpha_estimator: Literal["product-upper-bound", "batch-maximum", "arithmetic-mean", "explog-approx",
                             "jacobian-upper-bound"] = "product-upper-bound"

    @model_validator(mode="after")
    def _adaptive_start(self):
        if self.alpha_estimator != "product-upper-bound" and not self.adaptive:
            raise ValueError("forcing.alpha_estimator applies only with forcing.adaptive = true (--adaptive-alpha)")
        if self.adaptive and "alpha" not in self.model_fields_set:
            self.__dict__["alpha"] = [1.0]  # Hess et al. start at full forcing
        return self


class _Selective(ForcedConfig):
    """`interval = k` forces only the steps t with t mod k = 0 (GTF's teacher_forcing_interval);
    `units = M` forces only the first M units (GTF's partial_forcing)."""

    interval: int = Field(1, ge=1)  # force only the steps t with t mod interval == 0
    units: int | None = Field(None, ge=1)  # force only the first `units` units (None: all)


class _Causal(ForcedConfig):
    causal: bool = False  # the correction uses e_{t-1} (the online rules' causal form)


class TeacherForcingConfig(_AdaptiveAlpha, _Selective):
    """Generalized teacher forcing (Hess et al. 2023)."""

    stop_gradient: bool | None = None  # None: the method's reference default
    eps: float = Field(1e-7, gt=0)


class ErrorForcingConfig(TeacherForcingConfig, _Causal):
    """Error forcing (Sağtekin et al. 2025, eq. 4)."""


class KalmanForcingConfig(_AdaptiveAlpha, _Selective, _Causal):
    """Kalman EF (SPEC §2, eq. 5): trained with process noise σ = process_noise (required,
    > 0; the trainer injects it); obs_noise σ_o (default σ); the gain's ratio is σ_o² / σ²."""

    stop_gradient: bool | None = None  # None: the method's reference default
    process_noise: float | None = Field(None, ge=0, validate_default=True)
    obs_noise: float | None = Field(None, ge=0)

    @field_validator("process_noise")
    @classmethod
    def _needs_process_noise(cls, v):
        if not v:
            raise ValueError("kalman forcing is trained with process noise σ: give a value > 0 "
                             f"(--process-noise), got {v}")
        return v

    def training_noise(self, model_noise_std: float) -> float:
        return self.process_noise


class FeedbackForcingConfig(_AdaptiveAlpha, _Causal):
    """Bio-plausible EF through random feedback weights F; `learn_feedback`: learn F with its
    local rule (its rate: options.feedback_lr)."""

    learn_feedback: bool = False
    options: dict = Field(default_factory=dict)  # feedback_lr: F's learning rate (default FeedbackForcing's)

    @field_validator("options")
    @classmethod
    def _known_options(cls, v):
        unknown = sorted(set(v) - {"feedback_lr"})
        if unknown:
            raise ValueError(f"feedback forcing takes options.feedback_lr only, got {', '.join(unknown)}")
        if "feedback_lr" in v and not (isinstance(v["feedback_lr"], (int, float)) and v["feedback_lr"] > 0):
            raise ValueError(f"options.feedback_lr must be a number > 0, got {v['feedback_lr']!r}")
        return v


class WilliamsZipserForcingConfig(ForcedConfig):
    """Williams-Zipser teacher forcing: α only."""


def _sg(cfg, default):
    return default if cfg.stop_gradient is None else cfg.stop_gradient


# Forcing builders take (config, alpha, cell, key): α is vmapped over members; the member's
# cell and key let random feedback weights be drawn per member.
FORCINGS: dict[str, ForcingEntry] = {
    "none": ForcingEntry(lambda c, alpha, cell, key: F.NoForcing(), "no forcing (plain learning)",
                         config=NoForcingConfig, prefix="", color="#555555"),
    "tf": ForcingEntry(lambda c, alpha, cell, key: F.TeacherForcing(
                           alpha=alpha, eps=c.eps, stop_gradient=_sg(c, False), interval=c.interval, units=c.units),
                       "generalized teacher forcing (Hess et al. 2023)",
                       config=TeacherForcingConfig, prefix="TF-", color="#1f77b4"),
    "ef": ForcingEntry(lambda c, alpha, cell, key: F.ErrorForcing(
                           alpha=alpha, eps=c.eps, stop_gradient=_sg(c, True), causal=c.causal, interval=c.interval,
                           units=c.units),
                       "error forcing (Sağtekin et al. 2025, eq. 4)",
                       config=ErrorForcingConfig, prefix="EF-", color="#d62728"),
    "kalman": ForcingEntry(lambda c, alpha, cell, key: F.KalmanErrorForcing(
                               alpha=alpha, process_noise=c.process_noise,
                               obs_noise=c.process_noise if c.obs_noise is None else c.obs_noise,
                               stop_gradient=_sg(c, True), causal=c.causal, interval=c.interval, units=c.units),
                           "stochastic (Kalman) error forcing (eq. 5)",
                           config=KalmanForcingConfig, prefix="KEF-", color="#9467bd"),
    "feedback": ForcingEntry(lambda c, alpha, cell, key: F.FeedbackForcing.random(
                                 cell, key=key, alpha=alpha, causal=c.causal, learn=c.learn_feedback,
                                 **({"lr": c.options["feedback_lr"]} if "feedback_lr" in c.options else {})),
                             "bio-plausible EF through random feedback weights F, fixed or learned",
                             config=FeedbackForcingConfig, prefix="FB-", color="#ff7f0e"),
    "wz-tf": ForcingEntry(lambda c, alpha, cell, key: F.WilliamsZipserTeacherForcing(alpha=alpha),
                          "Williams-Zipser teacher forcing: output units take the target value",
                          config=WilliamsZipserForcingConfig, prefix="wz-tf-"),
}
METHOD_PREFIX = {kind: entry.prefix for kind, entry in FORCINGS.items()}
METHOD_COLORS = {kind: entry.color for kind, entry in FORCINGS.items() if entry.color is not None}


class BPTTConfig(RuleConfig):
    """Backpropagation through time."""

    checkpoint: bool = False  # rematerialise steps in the backward pass


class TBPTTConfig(BPTTConfig):
    """Truncated BPTT(k)."""

    truncation: int = Field(50, ge=1)


class _OnlineRule(RuleConfig):
    """A rule with a real-time form (rules.AbstractOnlineRule). online: θ changed at every
    step while the network runs, by `online_optimizer` (an optax alias, default plain SGD)
    with rate `online_lr`."""

    online: bool = False
    online_lr: float | None = Field(None, gt=0)  # per-step learning rate of online rules
    online_optimizer: str | None = None

    @property
    def learns_online(self) -> bool:
        return self.online

    @field_validator("online_optimizer")
    @classmethod
    def _online_optax_name(cls, v):
        import optax

        if v is not None and not callable(getattr(optax, v, None)):
            raise ValueError(f"unknown optax optimizer {v!r} (e.g. sgd, adam, rmsprop)")
        return v

    @model_validator(mode="after")
    def _online_fields_fit(self):
        if self.online and self.online_lr is None:
            raise ValueError("online learning needs rule.online_lr (the per-step learning rate)")
        for name in ("online_lr", "online_optimizer"):
            if not self.online and getattr(self, name) is not None:
                raise ValueError(f"rule.{name} applies only to online learning (rule.online = true)")
        return self


class RTRLConfig(_OnlineRule):
    """Real-time recurrent learning."""


class UOROConfig(_OnlineRule):
    """Unbiased online recurrent optimisation."""


class KFRTRLConfig(_OnlineRule):
    """Kronecker-factored RTRL."""


class SnApConfig(_OnlineRule):
    """Sparse n-step approximation of RTRL (snap1, snap2: the order is the kind)."""


class _LocalRule(_OnlineRule):
    feedback: Literal["symmetric", "random"] = "symmetric"  # learning signal: W_outᵀ or a random B


class EPropConfig(_LocalRule):
    """e-prop (Bellec et al. 2020)."""


class RFLOConfig(_LocalRule):
    """Random-feedback local online learning (Murray 2019)."""


def _random_key(c, key):
    return key if c.feedback == "random" else None


def _online(c) -> dict[str, Any]:
    """The online-learning arguments of the rules in ONLINE_RULES."""
    import optax

    optimizer = None if c.online_optimizer is None else getattr(optax, c.online_optimizer)
    return {"online": c.online, "lr": c.online_lr, "optimizer": optimizer}


RULES: dict[str, Entry] = {
    "bptt": Entry(lambda c, key: R.BPTT(checkpoint=c.checkpoint), "backpropagation through time", config=BPTTConfig),
    "tbptt": Entry(lambda c, key: R.TruncatedBPTT(c.truncation, checkpoint=c.checkpoint), "truncated BPTT(k)",
                   config=TBPTTConfig),
    "rtrl": Entry(lambda c, key: R.RTRL(**_online(c)), "real-time recurrent learning", config=RTRLConfig),
    "eprop": Entry(lambda c, key: R.EProp(feedback=c.feedback, key=_random_key(c, key), **_online(c)),
                   "e-prop (Bellec et al. 2020)", config=EPropConfig),
    "rflo": Entry(lambda c, key: R.RFLO(feedback=c.feedback, key=_random_key(c, key), **_online(c)),
                  "random-feedback local online learning (Murray 2019)", config=RFLOConfig),
    "uoro": Entry(lambda c, key: R.UORO(**_online(c)),
                  "unbiased online recurrent optimisation, rank-1 influence (Tallec & Ollivier 2018)",
                  config=UOROConfig),
    "kf-rtrl": Entry(lambda c, key: R.KFRTRL(**_online(c)), "Kronecker-factored RTRL (Mujika et al. 2018)",
                     config=KFRTRLConfig),
    "snap1": Entry(lambda c, key: R.SnAp(order=1, **_online(c)),
                   "sparse 1-step approximation of RTRL (Menick et al. 2021)", config=SnApConfig),
    "snap2": Entry(lambda c, key: R.SnAp(order=2, **_online(c)),
                   "sparse 2-step approximation of RTRL (Menick et al. 2021)", config=SnApConfig),
}
# the rules with a real-time form (rules.AbstractOnlineRule): those whose config takes rule.online
ONLINE_RULES = tuple(k for k, e in RULES.items() if "online" in e.config.model_fields)
# the variant a section without `kind` gets
DEFAULT_KINDS = {"model": "leaky", "forcing": "ef", "rule": "bptt"}
use_registries({"model": MODELS, "forcing": FORCINGS, "rule": RULES}, DEFAULT_KINDS)
