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
}


def _leaky(cfg, task, key):
    return M.LeakyRNN(task.n_in, cfg.hidden, task.n_out, key=key, gain=cfg.gain, tau=cfg.tau, dt=cfg.dt,
                      activation=cfg.activation, readout=cfg.readout, density=cfg.density,
                      trainable=tuple(cfg.trainable))


MODELS: dict[str, Entry] = {
    "leaky": Entry(_leaky, "leaky rate RNN, SPEC §1.1 (Error Forcing reference model)"),
}


def _sg(cfg, default):
    return default if cfg.stop_gradient is None else cfg.stop_gradient


FORCINGS: dict[str, Entry] = {
    "none": Entry(lambda c, alpha: F.NoForcing(), "no forcing (plain learning)"),
    "tf": Entry(lambda c, alpha: F.TeacherForcing(alpha=alpha, eps=c.eps, stop_gradient=_sg(c, False)),
                "generalized teacher forcing (Hess et al. 2023)"),
    "ef": Entry(lambda c, alpha: F.ErrorForcing(alpha=alpha, eps=c.eps, stop_gradient=_sg(c, True),
                                                causal=c.causal),
                "error forcing (Sağtekin et al. 2025, eq. 4)"),
    "kalman": Entry(lambda c, alpha: F.KalmanErrorForcing(alpha=alpha, ratio=c.ratio,
                                                          stop_gradient=_sg(c, True), causal=c.causal),
                    "stochastic (Kalman) error forcing (eq. 5)"),
}

RULES: dict[str, Entry] = {
    "bptt": Entry(lambda c, key: R.BPTT(checkpoint=c.checkpoint), "backpropagation through time"),
}
