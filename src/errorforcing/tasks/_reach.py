"""Center-out reaching with a velocity readout (Kaleb et al. 2024, "Feedback control guides
credit assignment in recurrent neural networks", NeurIPS; task of Feulner et al. 2022,
"Feedback-based motor control can guide plasticity and drive rapid learning")."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from .._types import Array, Float, Key
from ._base import AbstractTask, Trials


def reference_position(
    start: Float[Array, "2"],
    end: Float[Array, "2"],
    *,
    n_steps: int = 125,
    go: int = 70,
    ramp: int = 50,
    slope: float = 10.0,
) -> Float[Array, "T 2"]:
    """p_t = start + s_t (end - start), with s_t = 0 before go - ramp,
    σ(slope (t - go) / ramp) on [go - ramp, go + ramp), and 1 from go + ramp on."""
    t = jnp.arange(n_steps)
    s = jax.nn.sigmoid(slope * (t - go) / ramp)
    s = jnp.where(t < go - ramp, 0.0, jnp.where(t >= go + ramp, 1.0, s))
    return start + s[:, None] * (end - start)


def reference_velocity(
    start: Float[Array, "2"],
    end: Float[Array, "2"],
    *,
    dt: float = 0.01,
    n_steps: int = 125,
    go: int = 70,
    ramp: int = 50,
    slope: float = 10.0,
) -> Float[Array, "T 2"]:
    """Backward differences of `reference_position`: v_t = (p_t - p_{t-1}) / dt, p_{-1} = start.

    The reference code takes central differences (numpy.gradient); backward differences make
    `integrate_velocity(v, dt, start)` reproduce the reference position exactly, so the
    integrated velocity error equals the position error. Both end exactly at the target.
    """
    p = reference_position(start, end, n_steps=n_steps, go=go, ramp=ramp, slope=slope)
    previous = jnp.concatenate([start[None], p[:-1]], axis=0)
    return (p - previous) / dt


def integrate_velocity(
    v: Float[Array, "*B T 2"], dt: float, start: Float[Array, "*B 2"] | float = 0.0
) -> Float[Array, "*B T 2"]:
    """Positions p_t = start + dt Σ_{s<=t} v_s (time on axis -2)."""
    start = jnp.asarray(start)
    offset = start[..., None, :] if start.ndim else start
    return offset + dt * jnp.cumsum(v, axis=-2)


def rotate(v: Float[Array, "*B 2"], degrees) -> Float[Array, "*B 2"]:
    """R(θ) v: rotate 2-D vectors (last axis) counter-clockwise by `degrees`."""
    theta = jnp.deg2rad(degrees)
    c, s = jnp.cos(theta), jnp.sin(theta)
    return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


class CenterOutReach(AbstractTask):
    """Reach from a start to a target with a bell-shaped velocity; outputs are 2-D velocities.

        steps of dt = 0.01 s; n_steps = 125; go = 70; ramp = 50
        inputs (3): ch0, ch1 = target displacement (end - start) from step target_on = 20;
                    ch2 = hold signal, `hold_amplitude` before go - ramp, 0 from then on
        reference position: `reference_position` (sigmoid of slope 10 over [go - 50, go + 50))
        targets (2): R(-rotation) · v*_t, v* = `reference_velocity`; mask = 1 everywhere

    Modes: "random" (pre-training) draws start and end uniformly in [-workspace, workspace]²
    (workspace 6), as the reference's random-reach data set; "test" starts at the origin and
    picks one of `n_targets` = 8 targets at `radius` 5, angles 2πk/8. `test_trials()` returns
    all eight as a batch.

    Visuomotor rotation (degrees, counter-clockwise): the cursor moves with R(θ) y, y the
    network's output, and should follow v*. Since ‖R(θ) y - v*‖ = ‖y - R(-θ) v*‖, the targets
    are R(-θ) v* and the loss is unchanged. A controller that feeds back the *cursor's* error
    (Kaleb et al.) must rotate back: cursor error = rotate(targets - outputs, rotation) =
    v* - R(θ) y, integrated: `info["position"]` (cursor space) minus the cursor position
    `integrate_velocity(rotate(y, θ), dt, start)`.

    Hold amplitude: the reference sets the hold channel to the data set's range (6 for random
    reaches, 5 for center-out); `hold_amplitude=None` does the same.

    `info`: start, end, target_id (-1 in random mode), rotation, position (reference, T × 2).
    `threshold` (0.5, velocities in units/s: about 1.5 % of the mean squared target velocity of
    the test reaches, 1 % of random ones) is this library's choice; the sources report loss
    curves only.
    """

    threshold = 0.5
    classification = False
    dataset_size = 2000

    mode: Literal["random", "test"] = "random"
    rotation: float = 0.0
    n_steps: int = 125
    dt: float = 0.01
    target_on: int = 20
    go: int = 70
    ramp: int = 50
    slope: float = 10.0
    workspace: float = 6.0
    radius: float = 5.0
    n_targets: int = 8
    hold_amplitude: float | None = None

    def __check_init__(self):
        if self.mode not in ("random", "test"):
            raise ValueError(f"mode must be 'random' or 'test', got {self.mode!r}")
        if not (0 <= self.go - self.ramp and self.go + self.ramp <= self.n_steps):
            raise ValueError(
                f"need 0 <= go - ramp and go + ramp <= n_steps, got go={self.go}, ramp={self.ramp}, "
                f"n_steps={self.n_steps}"
            )
        if not 0 <= self.target_on < self.n_steps:
            raise ValueError(f"target_on must be in [0, n_steps), got {self.target_on}")
        if self.dt <= 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        if self.n_targets < 1:
            raise ValueError(f"n_targets must be >= 1, got {self.n_targets}")

    @property
    def n_in(self) -> int:
        return 3

    @property
    def n_out(self) -> int:
        return 2

    def _trial(self, start, end, target_id, hold_amplitude: float) -> Trials:
        T = self.n_steps
        t = jnp.arange(T)
        position = reference_position(start, end, n_steps=T, go=self.go, ramp=self.ramp, slope=self.slope)
        velocity = reference_velocity(
            start, end, dt=self.dt, n_steps=T, go=self.go, ramp=self.ramp, slope=self.slope
        )
        shown = (t >= self.target_on)[:, None] * (end - start)
        hold = hold_amplitude * (t < self.go - self.ramp)
        inputs = jnp.concatenate([shown, hold[:, None]], axis=-1)
        targets = rotate(velocity, -self.rotation)
        info = {"start": start, "end": end, "target_id": target_id,
                "rotation": jnp.asarray(self.rotation), "position": position}
        f32 = jnp.float32
        return Trials(inputs.astype(f32), targets.astype(f32), jnp.ones((T, 2), f32), info)

    def _hold(self, mode: str) -> float:
        if self.hold_amplitude is not None:
            return self.hold_amplitude
        return self.workspace if mode == "random" else self.radius

    def _center_out(self, target_id) -> Trials:
        angle = 2 * jnp.pi * target_id / self.n_targets
        end = self.radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        return self._trial(jnp.zeros(2), end, target_id, self._hold("test"))

    def sample(self, *, key: Key) -> Trials:
        if self.mode == "test":
            return self._center_out(jax.random.randint(key, (), 0, self.n_targets))
        start, end = jax.random.uniform(key, (2, 2), minval=-self.workspace, maxval=self.workspace)
        return self._trial(start, end, jnp.int32(-1), self._hold("random"))

    def test_trials(self) -> Trials:
        """The `n_targets` center-out reaches, one per target, as a batch (leading axis)."""
        return jax.vmap(self._center_out)(jnp.arange(self.n_targets))
