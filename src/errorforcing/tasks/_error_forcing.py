"""The three tasks of the Error Forcing paper (Sağtekin, Bredenberg & Savin, CCN 2025 /
NeurIPS 2025), as in the reference code's "MDXOR", "Cue" and "Cos" task objects.
Time is in steps of dt = 1 ms."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._types import Key
from ._base import AbstractTask, Trials, window


class DelayedXOR(AbstractTask):
    """Delayed XOR ("MDXOR"). Two ±1 pulses of `pulse` steps, a delay, then a report cue.

        T = 4.5 d + D
        ch0 = s1 on [0, d);  ch1 = s2 on [2d, 3d);  ch2 = 1 except in the response window
        response window [R, R + d), R = 3d + D + j,  j ~ U{-d/2, ..., d/2 - 1}
        target = +1 if s1 == s2 else -1, defined (mask = 1) only in the window

    Source: Error Forcing reference code, task "MDXOR"; SPEC §4.
    """

    threshold = 0.01
    classification = True
    dataset_size = 512

    delay: int = 100
    pulse: int = 10

    def __check_init__(self):
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if self.pulse < 2 or self.pulse % 2:
            raise ValueError(f"pulse must be an even number >= 2, got {self.pulse}")

    @property
    def n_in(self) -> int:
        return 3

    @property
    def n_out(self) -> int:
        return 1

    @property
    def n_steps(self) -> int:
        return int(4.5 * self.pulse) + self.delay

    def sample(self, *, key: Key) -> Trials:
        d, T = self.pulse, self.n_steps
        k1, k2, k3 = jax.random.split(key, 3)
        s1 = jnp.where(jax.random.bernoulli(k1), 1.0, -1.0)
        s2 = jnp.where(jax.random.bernoulli(k2), 1.0, -1.0)
        jitter = jax.random.randint(k3, (), -(d // 2), d // 2)
        start = 3 * d + self.delay + jitter
        resp = window(T, start, d)
        inputs = jnp.stack([s1 * window(T, 0, d), s2 * window(T, 2 * d, d), 1.0 - resp], axis=-1)
        label = jnp.where(s1 == s2, 1.0, -1.0)
        targets = (label * resp)[:, None]
        info = {"s1": s1, "s2": s2, "label": label, "response_start": start}
        return Trials(inputs, targets, resp[:, None], info)


class EvidenceIntegration(AbstractTask):
    """Cued evidence integration ("Cue"). Seven 5-step cues split between two channels.

        cue k occupies [10 k, 10 k + 5), k = 0..6;  c1 ~ U{1..6} cues on channel 0,
        c2 = 7 - c1 on channel 1, in random order
        response window: 5 steps from 65 + D;  T = 70 + D
        target = +1 if c1 > c2 else -1 in the window (mask only there)

    Source: Error Forcing reference code, task "Cue" (after Liu et al. 2021, PNAS); SPEC §4.
    """

    threshold = 0.1
    classification = True
    dataset_size = 216

    delay: int = 100

    def __check_init__(self):
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")

    @property
    def n_in(self) -> int:
        return 2

    @property
    def n_out(self) -> int:
        return 1

    @property
    def n_steps(self) -> int:
        return 70 + self.delay

    def sample(self, *, key: Key) -> Trials:
        T = self.n_steps
        k1, k2 = jax.random.split(key)
        c1 = jax.random.randint(k1, (), 1, 7)
        on_ch0 = jax.random.permutation(k2, jnp.arange(7) < c1)  # which cues go to channel 0
        t = jnp.arange(T)
        cue_index = t // 10
        in_cue = (t % 10 < 5) & (cue_index < 7)
        ch0_at_t = on_ch0[jnp.clip(cue_index, 0, 6)]
        ch0 = (in_cue & ch0_at_t).astype(jnp.float32)
        ch1 = (in_cue & ~ch0_at_t).astype(jnp.float32)
        resp = window(T, 65 + self.delay, 5)
        label = jnp.where(c1 > 7 - c1, 1.0, -1.0)
        info = {"c1": c1, "label": label}
        return Trials(jnp.stack([ch0, ch1], -1), (label * resp)[:, None], resp[:, None], info)


class SineGeneration(AbstractTask):
    """Sine generation ("Cos"): produce two phase-shifted cosines of a cued period.

        P ∈ {90, 105, ..., 180} + shift;  input (1 channel) = P / 90, constant
        targets: cos(2π t / P), cos(2π t / P + π/4);  mask = 1 everywhere;  T = 500

    Source: Error Forcing reference code, task "Cos"; SPEC §4.
    """

    threshold = 0.01
    classification = False
    dataset_size = 5000

    shift: float = 0.0
    length: int = 500

    def __check_init__(self):
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if 90 + self.shift <= 0:
            raise ValueError(f"shift must keep periods positive, got {self.shift}")

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 2

    @property
    def n_steps(self) -> int:
        return self.length

    def sample(self, *, key: Key) -> Trials:
        T = self.length
        period = 90.0 + 15.0 * jax.random.randint(key, (), 0, 7) + self.shift
        t = jnp.arange(T, dtype=jnp.float32)
        phase = 2 * jnp.pi * t / period
        targets = jnp.stack([jnp.cos(phase), jnp.cos(phase + jnp.pi / 4)], -1)
        inputs = jnp.full((T, 1), period / 90.0)
        return Trials(inputs, targets, jnp.ones((T, 2)), {"period": period})
