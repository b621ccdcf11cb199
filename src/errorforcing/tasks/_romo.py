"""Parametric working memory (Romo et al. 1999, Nature 399:470), in the version of Schuessler
et al. (2020, NeurIPS, task generator `romo`) used by Liu et al. (initial connectivity and
biologically plausible learning)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._types import Key
from ._base import AbstractTask, Trials, window


def _steps(duration: float, dt: float) -> int:
    """Whole steps of length dt in `duration` (floor; the tolerance absorbs float error, e.g. 3/0.1)."""
    return int(math.floor(duration / dt + 1e-9))


class Romo(AbstractTask):
    """Compare two vibration frequencies separated by a random delay. Time in units of τ (the
    neurons' time constant); one step lasts `dt` τ.

        fixation 3 | f1 pulse 1 | delay D ~ U[2, 8] | f2 pulse 1 | decision delay 5 | response 10
        input (1): f1 during the first pulse, f2 during the second, 0 elsewhere
        (f1, f2) uniform on {[0.5, 1.5]² : |f1 - f2| >= 0.2}
        targets (2): 0.5 on unit 0 if f1 > f2, on unit 1 if f2 > f1, during the response; 0 elsewhere
        mask: 1 from the start to the end of f2 (targets 0: hold still) and in the response;
              0 in the decision delay and after the response
        each period lasts floor(duration / dt) steps; D is drawn continuous and floored;
        n_steps = floor((3 + 1 + 8 + 1 + 5 + 10) / dt), so a trial with a shorter delay ends
        early and is padded with mask 0.

    (f1, f2) is drawn without rejection: the allowed set is two right triangles of leg
    (1.5 - 0.5 - 0.2) on either side of the diagonal band; pick one with probability 1/2 and a
    point uniformly in it by folding a uniform point of the square. This is the distribution
    of the reference's rejection loop (uniform on the allowed set).

    Default dt = 0.1 τ matches this library's default leaky network (dt / τ = 1 / 10);
    Schuessler et al. trained with dt = 0.5 τ.

    `info`: f1, f2, label (index of the unit of the larger stimulus), delay (τ),
    response_start (step). `threshold` (0.01) is this library's choice; the sources report
    loss curves only.
    """

    threshold = 0.01
    classification = False
    dataset_size = 512

    dt: float = 0.1
    fixation: float = 3.0
    stimulus: float = 1.0
    delay_min: float = 2.0
    delay_max: float = 8.0
    decision_delay: float = 5.0
    response: float = 10.0
    f_min: float = 0.5
    f_max: float = 1.5
    min_diff: float = 0.2
    target_amp: float = 0.5

    def __check_init__(self):
        if not 0.0 < self.dt <= self.stimulus:
            raise ValueError(f"dt must be in (0, stimulus = {self.stimulus}], got {self.dt}")
        if not 0.0 <= self.delay_min <= self.delay_max:
            raise ValueError(f"need 0 <= delay_min <= delay_max, got {self.delay_min}, {self.delay_max}")
        if not self.f_max - self.f_min > self.min_diff >= 0.0:
            raise ValueError(
                f"need f_max - f_min > min_diff >= 0, got f_min={self.f_min}, f_max={self.f_max}, "
                f"min_diff={self.min_diff}"
            )
        for name in ("fixation", "decision_delay", "response"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 2

    @property
    def n_steps(self) -> int:
        return _steps(
            self.fixation + 2 * self.stimulus + self.delay_max + self.decision_delay + self.response,
            self.dt,
        )

    def sample(self, *, key: Key) -> Trials:
        T, dt = self.n_steps, self.dt
        k_fold, k_side, k_delay = jax.random.split(key, 3)
        leg = self.f_max - self.f_min - self.min_diff
        u, v = leg * jax.random.uniform(k_fold, (2,))
        outside = u + v > leg
        u, v = jnp.where(outside, leg - u, u), jnp.where(outside, leg - v, v)
        low, high = self.f_min + u, self.f_max - v
        f2_larger = jax.random.bernoulli(k_side)
        f1, f2 = jnp.where(f2_larger, low, high), jnp.where(f2_larger, high, low)

        delay = jax.random.uniform(k_delay, minval=self.delay_min, maxval=self.delay_max)
        delay_steps = jnp.minimum(jnp.floor(delay / dt + 1e-9), _steps(self.delay_max, dt)).astype(jnp.int32)
        fix, stim = _steps(self.fixation, dt), _steps(self.stimulus, dt)
        f2_start = fix + stim + delay_steps
        response_start = f2_start + stim + _steps(self.decision_delay, dt)
        response = window(T, response_start, _steps(self.response, dt))

        inputs = (f1 * window(T, fix, stim) + f2 * window(T, f2_start, stim))[:, None]
        label = f2_larger.astype(jnp.int32)
        targets = self.target_amp * response[:, None] * jax.nn.one_hot(label, 2)
        hold = jnp.arange(T) < f2_start + stim
        mask = jnp.broadcast_to(jnp.maximum(hold, response)[:, None], (T, 2))
        info = {"f1": f1, "f2": f2, "label": label, "delay": delay, "response_start": response_start}
        f32 = jnp.float32
        return Trials(inputs.astype(f32), targets.astype(f32), mask.astype(f32), info)
