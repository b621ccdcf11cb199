"""Sine and cosine generation at a cued frequency, with a frequency shift as the perturbation
(the `Sinewave` data set of Kaleb et al. 2024's code, klarakaleb/feedback-control,
`modules/data_set.py`, perturbation "freqshift" in `adaptation_learning.py`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._types import Key
from ._base import AbstractTask, Trials


class SineFrequencyShift(AbstractTask):
    """Produce A sin(f' τ_t) and A cos(f' τ_t) after a warm-up, the frequency cued by a constant input:

        steps t = 0 … n_steps - 1;  τ_t = 2π (t - warmup) / n_steps  (the reference's
            linspace(0, 2π, n_steps, endpoint=False), started at the warm-up's end)
        f ~ U(freq_low, freq_high) per trial;  f' = f + shift
        input (1):   f for t >= warmup, 0 before          (the cue is the unshifted f)
        targets (2): ch0 = A sin(f' τ_t),  ch1 = A cos(f' τ_t)  for t >= warmup, 0 before;
                     ch1 is also 0 before warmup + ⌊0.99 + n_steps / (4 f')⌋ (the reference's
                     onset of the cosine channel)
        mask = 1 everywhere

    The reference's defaults: n_steps = 125, warmup = 20, A = 1, f ~ U(1, 4); pre-training uses
    shift = 0, adaptation shift = 1 (`freqshift`). The network must then map the same cue to a
    faster oscillation. `info`: frequency (the cue f), shifted (f').
    `threshold` (0.01) is this library's choice; the source reports loss curves only.
    """

    threshold = 0.01
    classification = False
    dataset_size = 1000  # the reference's data set (10 % of it its test set)

    shift: float = 0.0
    n_steps: int = 125
    warmup: int = 20
    amplitude: float = 1.0
    freq_low: float = 1.0
    freq_high: float = 4.0

    def __check_init__(self):
        if not 0 <= self.warmup < self.n_steps:
            raise ValueError(f"warmup must be in [0, n_steps), got warmup={self.warmup}, n_steps={self.n_steps}")
        if not 0 < self.freq_low <= self.freq_high:
            raise ValueError(f"need 0 < freq_low <= freq_high, got {self.freq_low}, {self.freq_high}")
        if self.freq_low + self.shift <= 0:
            raise ValueError(f"the shifted frequency must stay > 0: freq_low + shift = {self.freq_low + self.shift}")

    @property
    def n_in(self) -> int:
        return 1

    @property
    def n_out(self) -> int:
        return 2

    def trial(self, frequency) -> Trials:
        """The trial of cue `frequency` (deterministic)."""
        T = self.n_steps
        t = jnp.arange(T)
        on = t >= self.warmup
        shifted = frequency + self.shift
        tau = 2 * jnp.pi * (t - self.warmup) / T
        cosine_on = t >= self.warmup + jnp.floor(0.99 + T / (4 * shifted))
        sine = jnp.where(on, self.amplitude * jnp.sin(shifted * tau), 0.0)
        cosine = jnp.where(on & cosine_on, self.amplitude * jnp.cos(shifted * tau), 0.0)
        f32 = jnp.float32
        inputs = jnp.where(on, frequency, 0.0)[:, None]
        targets = jnp.stack([sine, cosine], axis=-1)
        info = {"frequency": jnp.asarray(frequency, f32), "shifted": jnp.asarray(shifted, f32)}
        return Trials(inputs.astype(f32), targets.astype(f32), jnp.ones((T, 2), f32), info)

    def sample(self, *, key: Key) -> Trials:
        return self.trial(jax.random.uniform(key, (), minval=self.freq_low, maxval=self.freq_high))
