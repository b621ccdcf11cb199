"""The only place where names (CLI flags, config files) become classes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .. import forcing as F
from .. import models as M
from .. import rules as R
from .. import tasks as T


@dataclasses.dataclass(frozen=True)
class Entry:
    build: Callable[..., Any]
    summary: str
    source: str = ""


@dataclasses.dataclass(frozen=True)
class ForcingEntry(Entry):
    """A forcing method: its builder, how tables and figures name it, and which of the shared
    `ForcingConfig` options it reads. Every table keyed by forcing kind is derived from these
    entries (`method_label`, `METHOD_COLORS`, `ADAPTIVE_FORCINGS`, `SELECTIVE_FORCINGS`,
    `APPLIES["forcing"]`), so a new forcing method is one entry here."""

    prefix: str = ""  # the method label's prefix: "EF-" + the rule → "EF-BPTT"
    color: str | None = None  # its colour in figures (None: the figure's neutral default)
    adaptive: bool = False  # α can be adapted during training (forcing.adaptive)
    selective: bool = False  # sparse (forcing.interval) and partial (forcing.units) forcing
    causal: bool = False  # has a causal form (forcing.causal)
    options: tuple[str, ...] = ()  # the other kind-specific ForcingConfig fields it reads


def forcing_kinds(capability: str) -> tuple[str, ...]:
    """The forcing kinds whose entry has `capability` (an entry flag, or a name in `options`),
    in registry order."""
    return tuple(k for k, e in FORCINGS.items() if capability in e.options or getattr(e, capability, False) is True)


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


def _leaky(cfg, task, key):
    return M.LeakyRNN(task.n_in, cfg.hidden, task.n_out, key=key, gain=cfg.gain, tau=cfg.tau, dt=cfg.dt,
                      activation=cfg.activation, readout=cfg.readout, density=cfg.density,
                      trainable=tuple(cfg.trainable), excitatory=cfg.excitatory)


MODELS: dict[str, Entry] = {
    "leaky": Entry(_leaky, "leaky rate RNN, SPEC §1.1 (Error Forcing reference model)"),
    "gru": Entry(lambda c, task, key: M.GRU(task.n_in, c.hidden, task.n_out, key=key), "GRU baseline"),
    "lstm": Entry(lambda c, task, key: M.LSTM(task.n_in, c.hidden, task.n_out, key=key), "LSTM baseline"),
    "williams-zipser": Entry(lambda c, task, key: M.WilliamsZipserNet(task.n_in, c.hidden, task.n_out, key=key),
                             "fully recurrent logistic net, outputs are units (Williams & Zipser 1989)"),
}


def _sg(cfg, default):
    return default if cfg.stop_gradient is None else cfg.stop_gradient


# Forcing builders take (config, alpha, cell, key): α is vmapped over members; the member's
# cell and key let random feedback weights be drawn per member.
FORCINGS: dict[str, ForcingEntry] = {
    "none": ForcingEntry(lambda c, alpha, cell, key: F.NoForcing(), "no forcing (plain learning)",
                         prefix="", color="#555555"),
    "tf": ForcingEntry(lambda c, alpha, cell, key: F.TeacherForcing(
                           alpha=alpha, eps=c.eps, stop_gradient=_sg(c, False), interval=c.interval, units=c.units),
                       "generalized teacher forcing (Hess et al. 2023)",
                       prefix="TF-", color="#1f77b4", adaptive=True, selective=True),
    "ef": ForcingEntry(lambda c, alpha, cell, key: F.ErrorForcing(
                           alpha=alpha, eps=c.eps, stop_gradient=_sg(c, True), causal=c.causal, interval=c.interval,
                           units=c.units),
                       "error forcing (Sağtekin et al. 2025, eq. 4)",
                       prefix="EF-", color="#d62728", adaptive=True, selective=True, causal=True),
    "kalman": ForcingEntry(lambda c, alpha, cell, key: F.KalmanErrorForcing(
                               alpha=alpha, process_noise=c.process_noise,
                               obs_noise=c.process_noise if c.obs_noise is None else c.obs_noise,
                               stop_gradient=_sg(c, True), causal=c.causal, interval=c.interval, units=c.units),
                           "stochastic (Kalman) error forcing (eq. 5)",
                           prefix="KEF-", color="#9467bd", adaptive=True, selective=True, causal=True,
                           options=("process_noise", "obs_noise")),
    "feedback": ForcingEntry(lambda c, alpha, cell, key: F.FeedbackForcing.random(
                                 cell, key=key, alpha=alpha, causal=c.causal, learn=c.learn_feedback,
                                 **({"learning_rate": c.options["feedback_lr"]} if "feedback_lr" in c.options else {})),
                             "bio-plausible EF through random feedback weights F, fixed or learned",
                             prefix="FB-", color="#ff7f0e", adaptive=True, causal=True, options=("learn_feedback",)),
    "wz-tf": ForcingEntry(lambda c, alpha, cell, key: F.WilliamsZipserTeacherForcing(alpha=alpha),
                          "Williams-Zipser teacher forcing: output units take the target value", prefix="wz-tf-"),
}
METHOD_PREFIX = {kind: entry.prefix for kind, entry in FORCINGS.items()}
METHOD_COLORS = {kind: entry.color for kind, entry in FORCINGS.items() if entry.color is not None}


def _random_key(c, key):
    return key if c.feedback == "random" else None


def _online(c) -> dict[str, Any]:
    """The online-learning arguments of the rules in ONLINE_RULES."""
    import optax

    optimizer = None if c.online_optimizer is None else getattr(optax, c.online_optimizer)
    return {"online": c.online, "lr": c.online_lr, "optimizer": optimizer}


RULES: dict[str, Entry] = {
    "bptt": Entry(lambda c, key: R.BPTT(checkpoint=c.checkpoint), "backpropagation through time"),
    "tbptt": Entry(lambda c, key: R.TruncatedBPTT(c.truncation, checkpoint=c.checkpoint), "truncated BPTT(k)"),
    "rtrl": Entry(lambda c, key: R.RTRL(**_online(c)), "real-time recurrent learning"),
    "eprop": Entry(lambda c, key: R.EProp(feedback=c.feedback, key=_random_key(c, key), **_online(c)),
                   "e-prop (Bellec et al. 2020)"),
    "rflo": Entry(lambda c, key: R.RFLO(feedback=c.feedback, key=_random_key(c, key), **_online(c)),
                  "random-feedback local online learning (Murray 2019)"),
    "uoro": Entry(lambda c, key: R.UORO(**_online(c)),
                  "unbiased online recurrent optimisation, rank-1 influence (Tallec & Ollivier 2018)"),
    "kf-rtrl": Entry(lambda c, key: R.KFRTRL(**_online(c)), "Kronecker-factored RTRL (Mujika et al. 2018)"),
    "snap1": Entry(lambda c, key: R.SnAp(order=1, **_online(c)),
                   "sparse 1-step approximation of RTRL (Menick et al. 2021)"),
    "snap2": Entry(lambda c, key: R.SnAp(order=2, **_online(c)),
                   "sparse 2-step approximation of RTRL (Menick et al. 2021)"),
}
# the rules with a real-time form (rules.AbstractOnlineRule)
ONLINE_RULES = ("rtrl", "eprop", "rflo", "uoro", "kf-rtrl", "snap1", "snap2")
