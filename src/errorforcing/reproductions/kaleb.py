"""Kaleb et al. (2024), "Feedback control guides credit assignment in recurrent neural networks":
pre-train a reaching network with feedback control on, then adapt it to a visuomotor rotation
with RFLO or BPTT, with the control on during learning ("+c") or off (SPEC §2, §4).

Phase 1 (pre-training). A leaky ReLU RNN (N = 400, τ = 0.05 s, dt = 0.01 s, rate readout,
125 steps) reaches to random targets in [-6, 6]² while a `FeedbackControl` feeds back the
cursor's integrated velocity error (its position error) through W_fb. As in the reference
code, a quarter of the reaches are pushed (`push_trials`) and the loss is the squared position
error, so the controller has errors to correct; without pushes W_fb barely learns. BPTT
(autodiff through the closed loop, the reference code's default) trains W_rec, W_in, b, W_out,
b_out and W_fb together (`ControlledCell`), Adam with gradient clipping. W_fb is then fixed.

Phase 2 (adaptation). The cursor is rotated by θ (45° by default); trials are center-out
reaches to one of 8 targets at radius 5, batch 1, and W_rec alone changes after every step:

- RFLO: `RFLO(online=True, lr=η)` (symmetric feedback B = W_outᵀ), control off while learning;
- RFLO+c: the same with the controller on (its signal stopped: an external input);
- BPTT: online BPTT (`online_bptt_trial`) — after each step t, W_rec ← W_rec - η ∂ℓ_t/∂W_rec,
  that step's loss back-propagated through the whole trajectory so far (the states as they
  were produced, the current W_rec), as the reference code's per-step `autograd.grad` does;
- BPTT+c: the same with the controller on.

The rules learn this library's velocity loss ℓ_t = Σ_k (y_tk - y*_tk)² / Σ m. (The reference
code's rules use the position error instead, and its RFLO sends it through W_fb rather than
W_outᵀ.) Each method runs a small learning-rate grid at once (`vmap`), and the best rate by
final test position error is reported, every rate's result kept. Test errors: velocity MSE
and cursor position MSE on the 8 center-out reaches under the rotation, control OFF
(`NoForcing()`), before and after adaptation.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._types import Array, Float
from ..forcing import (AbstractForcing, ClosedLoop, ControlledCell, FeedbackControl, NoForcing, forced_step, rollout,
                       simulate)
from ..models import LeakyRNN
from ..rules import RFLO, Objective, masked_mse
from ..tasks import CenterOutReach, Trials, integrate_velocity, rotate, sample_batch

METHODS = ("RFLO", "RFLO+c", "BPTT", "BPTT+c")
# Learning during adaptation sees only the velocity error (no rate or readout penalties).
ADAPT_OBJECTIVE = Objective(rate_reg=0.0, readout_reg=0.0)


@dataclasses.dataclass(frozen=True)
class KalebConfig:
    """Settings of the two phases. Defaults: Kaleb et al.'s network and task (SPEC §4); the
    numbers of iterations and trials are this library's choice for a CPU-sized run."""

    n_rec: int = 400
    tau: float = 0.05
    dt: float = 0.01
    n_steps: int = 125
    delay: int = 0  # d: control u_{t-d}
    seed: int = 0
    # pre-training (reference: Adam 1e-3, batch 256, 5000 iterations, gradient clipping)
    pretrain_iterations: int = 3000
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    pretrain_clip: float = 1.0
    push_probability: float = 0.25
    rate_reg: float = 1e-5
    # adaptation
    rotation: float = 45.0
    adapt_trials: int = 300
    # per method, the learning-rate grid (run together); the best final test error is reported.
    # Chosen around the best rates of wider sweeps at N = 100 and N = 400 (3e-5 … 1e-2).
    lr_grid: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=lambda: {
        "RFLO": (1e-4, 3e-4, 1e-3, 3e-3), "RFLO+c": (1e-3, 3e-3, 1e-2, 3e-2),
        "BPTT": (3e-5, 1e-4, 3e-4, 1e-3), "BPTT+c": (3e-5, 1e-4, 3e-4, 1e-3)})

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_grid"] = {k: list(v) for k, v in self.lr_grid.items()}
        return d


FULL = KalebConfig()
QUICK = KalebConfig(n_rec=100, pretrain_iterations=1000, adapt_trials=200, lr_grid={
    "RFLO": (3e-4, 1e-3, 3e-3), "RFLO+c": (1e-3, 3e-3, 1e-2),
    "BPTT": (3e-5, 1e-4, 3e-4), "BPTT+c": (1e-4, 3e-4, 1e-3)})


# ----- the network -----
def make_network(config: KalebConfig, *, key) -> tuple[LeakyRNN, FeedbackControl]:
    """The reaching RNN and its controller, initialised as the reference (PyTorch `nn.RNN` /
    `nn.Linear` defaults): W_rec, W_in, W_out ~ U(±1/√N), b = b_out = 0, W_fb ~ U(±1/√2)."""
    k_cell, k_rec, k_in, k_out, k_fb = jax.random.split(key, 5)
    N = config.n_rec
    cell = LeakyRNN(3, N, 2, key=k_cell, tau=config.tau, dt=config.dt, activation="relu", readout="rate",
                    trainable=("W_rec", "W_in", "b", "W_out", "b_out"))
    s = 1.0 / N**0.5
    uniform = lambda k, shape: jax.random.uniform(k, shape, cell.W_rec.dtype, -s, s)
    cell = eqx.tree_at(lambda c: (c.W_rec, c.W_in, c.W_out), cell,
                       (uniform(k_rec, (N, N)), uniform(k_in, (N, 3)), uniform(k_out, (2, N))))
    control = FeedbackControl.random(cell, 2, key=k_fb, delay=config.delay, dt=config.dt, stop_gradient=False)
    return cell, control


def only_recurrent_learns(cell: LeakyRNN) -> LeakyRNN:
    """The same network with `trainable = ("W_rec",)` (adaptation changes W_rec alone)."""
    # trainable is static, so it is set by building a cell of the same shape and moving the arrays over
    shell = LeakyRNN(cell.W_in.shape[1], cell.n_rec, cell.W_out.shape[0], key=jax.random.key(0), tau=1.0,
                     dt=cell.leak, activation=cell.activation, readout=cell.readout_mode,
                     trainable=("W_rec",), dtype=cell.W_rec.dtype)
    return eqx.tree_at(lambda c: (c.W_rec, c.W_in, c.b, c.W_out, c.b_out), shell,
                       (cell.W_rec, cell.W_in, cell.b, cell.W_out, cell.b_out))


# ----- phase 1 -----
def push_trials(trials: Trials, *, key, probability: float = 0.25, amplitude: float = 10.0,
                length: int = 10) -> Trials:
    """Random pushes of the cursor (the reference's "random_pushed" reaches): on a fraction
    `probability` of trials, a velocity bump amplitude · sin(π (t - t0 + ½) / length) in a
    random direction over [t0, t0 + length), t0 ~ U{20, …, T - length - 1}. The cursor moves
    with y + push, so the trial's targets become v* - push (the error y* - y the controller
    sees, and whose integral is the position error, is then the cursor's)."""
    B, T, _ = trials.targets.shape
    k_on, k_t0, k_angle = jax.random.split(key, 3)
    on = jax.random.bernoulli(k_on, probability, (B,))
    t0 = jax.random.randint(k_t0, (B, 1), 20, T - length)
    angle = jax.random.uniform(k_angle, (B,), maxval=2 * jnp.pi)
    t = jnp.arange(T)[None]
    bump = jnp.where((t >= t0) & (t < t0 + length), jnp.sin(jnp.pi * (t - t0 + 0.5) / length), 0.0)
    direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    push = amplitude * (on[:, None] * bump)[..., None] * direction[:, None, :]
    return trials._replace(targets=trials.targets - push.astype(trials.targets.dtype))


def position_error(outputs: Float[Array, "*B T 2"], trials: Trials, rotation: float, dt: float) -> Float[Array, "*B T 2"]:
    """The cursor's position error p*_t - p_t = dt Σ_{s<=t} R(θ)(y*_s - y_s) (what the integrating
    controller feeds back, and the reference code's loss)."""
    return integrate_velocity(rotate((trials.targets - outputs) * trials.mask, rotation), dt)


def pretrain(cell: LeakyRNN, control: FeedbackControl, config: KalebConfig, *, key,
             on_chunk=None, chunk: int = 100) -> tuple[LeakyRNN, FeedbackControl, np.ndarray]:
    """BPTT through the closed loop (autodiff of the controlled rollout) on pushed random
    reaches, W_fb learning with the cell (`ControlledCell`); loss: the reference's squared
    position error, mean_{b,t,k} (p*_btk - p_btk)², plus rate_reg · mean(h̃²). Adam with
    gradient clipping. Returns (cell, control, losses)."""
    task = CenterOutReach(mode="random", n_steps=config.n_steps, dt=config.dt)
    optimizer = optax.chain(optax.clip_by_global_norm(config.pretrain_clip), optax.adam(config.pretrain_lr))
    # only the arrays travel through the scan (Python-float fields such as α would become
    # traced arrays there, and differentiable)
    params, static = eqx.partition(ControlledCell(cell, control), eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    def loss_fn(params, trials):
        model = eqx.combine(params, static)
        states, outputs = jax.vmap(lambda x, y, m: rollout(model, ClosedLoop(), x, y, m))(
            trials.inputs, trials.targets, trials.mask)
        position = position_error(outputs, trials, 0.0, config.dt)
        return jnp.mean(position**2) + config.rate_reg * jnp.mean(states**2)

    @eqx.filter_jit
    def run_chunk(params, opt_state, keys):
        def one(carry, k):
            params, opt_state = carry
            k_data, k_push = jax.random.split(k)
            trials = push_trials(sample_batch(task, config.pretrain_batch, key=k_data), key=k_push,
                                 probability=config.push_probability)
            loss, grads = jax.value_and_grad(loss_fn)(params, trials)
            model = eqx.combine(params, static)
            grads = eqx.filter(model.mask_grads(eqx.combine(grads, static)), eqx.is_inexact_array)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (eqx.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(one, (params, opt_state), keys)
        return params, opt_state, losses

    keys = jax.random.split(key, config.pretrain_iterations)
    losses = []
    for start in range(0, config.pretrain_iterations, chunk):
        params, opt_state, chunk_losses = run_chunk(params, opt_state, keys[start:start + chunk])
        losses.append(np.asarray(chunk_losses))
        if on_chunk is not None:
            on_chunk(start + len(chunk_losses), float(np.mean(losses[-1])))
    model = eqx.combine(params, static)
    return model.cell, model.control, np.concatenate(losses)


# ----- phase 2: per-step learning rules on one trial -----
def rflo_trial(cell: LeakyRNN, forcing: AbstractForcing, trial: Trials, lr, *, key) -> tuple[LeakyRNN, jax.Array]:
    """One trial of real-time RFLO: W changes after every step (`RFLO(online=True)`)."""
    batch = jax.tree.map(lambda a: a[None], trial)
    loss, grads, _ = RFLO(online=True, lr=lr).value_and_grad(cell, forcing, batch, key=key, objective=ADAPT_OBJECTIVE)
    # the rule returns the total update it applied within the trial: θ_end = θ_0 - lr · grads
    return eqx.apply_updates(cell, jax.tree.map(lambda g: -lr * g, grads)), loss


def online_bptt_trial(cell: LeakyRNN, forcing: AbstractForcing, trial: Trials, lr) -> tuple[LeakyRNN, jax.Array]:
    """One trial of online BPTT on W_rec: after step t,

        W_rec ← W_rec - η Σ_{s<=t} (∂ℓ_t/∂h_s) ∂̄h_s/∂W_rec,
        ∂ℓ_t/∂h_{s-1} = (∂ℓ_t/∂h_s) ∂h_s/∂h̃_{s-1}     (h̃ = h: the controller is an input)

    back through every step of the trial so far, along the states the network actually went
    through and with the current W_rec. O(t N²) per step, O(T² N²) per trial (RTRL would be
    O(T N⁴)). The forcing must not pass gradient (`NoForcing()` or a stopped controller).
    Returns the new cell and Σ_t ℓ_t.
    """
    if isinstance(forcing, FeedbackControl) and not forcing.stop_gradient:
        raise ValueError("online BPTT treats the controller as an input: use FeedbackControl(stop_gradient=True)")
    T, N = trial.inputs.shape[0], cell.n_rec
    dtype = cell.W_rec.dtype
    X = trial.inputs.astype(dtype)
    mse_scale = 1.0 / jnp.maximum(jnp.sum(trial.mask), 1.0)
    with_W = lambda W: eqx.tree_at(lambda c: c.W_rec, cell, W)

    def step(carry, xs):
        W, h_prev, fcarry, H = carry  # H[s] = h̃_{s-1} (H[0] = h_{-1}), the input state of step s
        t, x, target, m = xs
        c = with_W(W)
        H = H.at[t].set(h_prev)
        h, y, h_forced, fcarry = forced_step(c, forcing, h_prev, fcarry, x, target, m, None)
        err = y - target.astype(dtype)
        loss = mse_scale * jnp.sum(m * err**2)
        (delta,) = jax.vjp(c.readout, h)[1](2.0 * mse_scale * m * err)

        def back(i, state):
            delta, D = state
            s = t - i
            D = D.at[s].set(delta)
            (delta,) = jax.vjp(lambda hh: c(hh, X[s]), H[s])[1](delta)
            return delta, D

        _, D = jax.lax.fori_loop(0, t + 1, back, (delta, jnp.zeros((T, N), dtype)))
        # D is zero after t, so one batched pullback over all steps gives Σ_{s<=t}
        (gW,) = jax.vjp(lambda WW: jax.vmap(with_W(WW))(H, X), W)[1](D)
        return (W - lr * gW, h_forced, fcarry, H), loss

    init = (cell.W_rec, cell.init_state(), forcing.init(cell), jnp.zeros((T, N), dtype))
    (W, _, _, _), losses = jax.lax.scan(step, init, (jnp.arange(T), X, trial.targets, trial.mask))
    return with_W(W), jnp.sum(losses)


def reach_errors(cell: LeakyRNN, test: Trials, rotation: float, dt: float,
                forcing: AbstractForcing | None = None) -> Float[Array, "2"]:
    """(velocity MSE, position MSE) over the test reaches, control off unless a forcing is
    given: mean (y - y*)² (this library's loss) and mean (p* - p)² of the cursor (the
    reference code's loss)."""
    _, outputs = simulate(cell, test, forcing or NoForcing())
    targets = test.targets.astype(outputs.dtype)
    velocity = masked_mse(outputs, targets, test.mask)
    position = jnp.mean(position_error(outputs, test._replace(targets=targets), rotation, dt) ** 2)
    return jnp.stack([velocity, position])


def adapt(cell: LeakyRNN, control: FeedbackControl, method: str, lrs, config: KalebConfig, *, key):
    """All of a method's learning rates at once (vmap). Returns (cells [L], training loss per
    trial [L, n], test errors [L, n + 1, 2]: before, then after each trial, control off;
    (velocity, position) MSE)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    learner = only_recurrent_learns(cell)
    forcing = _stopped(control) if method.endswith("+c") else NoForcing()
    task = CenterOutReach(mode="test", rotation=config.rotation, n_steps=config.n_steps, dt=config.dt)
    test = task.test_trials()
    trial_keys = jax.random.split(key, config.adapt_trials)
    evaluate = lambda c: reach_errors(c, test, config.rotation, config.dt)

    def one_lr(lr):
        def one_trial(c, k):
            trial = task.sample(key=k)
            if method.startswith("RFLO"):
                c, loss = rflo_trial(c, forcing, trial, lr, key=k)
            else:
                c, loss = online_bptt_trial(c, forcing, trial, lr)
            return c, (loss, evaluate(c))

        c, (losses, errors) = jax.lax.scan(one_trial, learner, trial_keys)
        return c, losses, jnp.concatenate([evaluate(learner)[None], errors])

    return eqx.filter_jit(eqx.filter_vmap(one_lr))(jnp.asarray(lrs, cell.W_rec.dtype))


def _stopped(control: FeedbackControl) -> FeedbackControl:
    return FeedbackControl(control.W_fb, control.alpha, signal=control.signal, delay=control.delay,
                           rotation=control.rotation, dt=control.dt, stop_gradient=True)


def cursor_paths(cell: LeakyRNN, test: Trials, rotation: float, dt: float,
                 forcing: AbstractForcing | None = None) -> np.ndarray:
    """Cursor positions [8, T, 2] from the start: ∫ R(θ) y dt."""
    _, outputs = simulate(cell, test, forcing or NoForcing())
    return np.asarray(integrate_velocity(rotate(outputs, rotation), dt, test.info["start"]))


# ----- the whole workflow -----
def reproduce_kaleb_adaptation(*, quick: bool, out: Path, progress: bool = True,
                               config: KalebConfig | None = None) -> dict[str, Any]:
    """Pre-train with feedback control, adapt to a visuomotor rotation with RFLO, RFLO+c, BPTT and
    BPTT+c, and write `out/kaleb-adaptation.json` and `out/kaleb-adaptation.png`. Returns the
    summary: test errors (velocity and position MSE) on the 8 rotated center-out reaches with
    the control off, before and after adaptation, per method (at its best learning rate by
    final position MSE, the reference's measure; every rate's result is kept)."""
    from ..plotting._kaleb import kaleb_figure

    config = config or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = _reporter(progress)
    t0 = time.perf_counter()
    key = jax.random.key(config.seed)
    k_init, k_pre, k_adapt = jax.random.split(key, 3)

    cell, control = make_network(config, key=k_init)
    say(f"kaleb-adaptation{' (quick)' if quick else ''}: pre-training N={config.n_rec} with feedback control "
        f"({config.pretrain_iterations} iterations of {config.pretrain_batch} pushed random reaches)")
    cell, control, pre_losses = pretrain(
        cell, control, config, key=k_pre,
        on_chunk=lambda i, loss: say(f"  iteration {i}: position loss {loss:.4f}"))
    control = _stopped(eqx.tree_at(lambda c: c.rotation, control, config.rotation))
    rotated = CenterOutReach(mode="test", rotation=config.rotation, n_steps=config.n_steps, dt=config.dt)
    plain = CenterOutReach(mode="test", n_steps=config.n_steps, dt=config.dt)
    test, test_plain = rotated.test_trials(), plain.test_trials()
    unrotated_control = eqx.tree_at(lambda c: c.rotation, control, 0.0)
    pair = lambda e: {"velocity_mse": _finite(e[0]), "position_mse": _finite(e[1])}
    before = {
        "unrotated_control_off": pair(reach_errors(cell, test_plain, 0.0, config.dt)),
        "unrotated_control_on": pair(reach_errors(cell, test_plain, 0.0, config.dt, unrotated_control)),
        "rotated_control_off": pair(reach_errors(cell, test, config.rotation, config.dt)),
        "rotated_control_on": pair(reach_errors(cell, test, config.rotation, config.dt, control)),
    }
    say(f"pre-trained in {time.perf_counter() - t0:.0f} s; test errors before adaptation: {json.dumps(before)}")

    results: dict[str, Any] = {}
    paths = {"before": cursor_paths(cell, test, config.rotation, config.dt),
             "before, control on": cursor_paths(cell, test, config.rotation, config.dt, control)}
    curves = {}
    for method in METHODS:
        t1 = time.perf_counter()
        lrs = tuple(config.lr_grid[method])
        cells, losses, errors = adapt(cell, control, method, lrs, config, key=k_adapt)
        errors = np.asarray(errors, np.float64)  # [L, n + 1, 2]
        final = errors[:, -1, 1]
        best = int(np.argmin(np.where(np.isfinite(final), final, np.inf)))
        best_cell = jax.tree.map(lambda a: a[best] if eqx.is_array(a) else a, cells)
        results[method] = {
            "learning_rates": list(lrs), "best_learning_rate": lrs[best],
            "test_before": before["rotated_control_off"],
            "test_after": pair(errors[best, -1]),
            "test_after_per_learning_rate": [pair(e) for e in errors[:, -1]],
            "mean_train_loss_last_10_trials": _finite(np.mean(np.asarray(losses)[best, -10:])),
            "seconds": time.perf_counter() - t1,
        }
        curves[method] = errors[best, :, 1]
        paths[method] = cursor_paths(best_cell, test, config.rotation, config.dt)
        after = results[method]["test_after"]
        say(f"{method}: test position MSE (control off) {before['rotated_control_off']['position_mse']:.4f} → "
            f"{'diverged' if after['position_mse'] is None else format(after['position_mse'], '.4f')}, velocity MSE "
            f"{before['rotated_control_off']['velocity_mse']:.3f} → "
            f"{'diverged' if after['velocity_mse'] is None else format(after['velocity_mse'], '.3f')} "
            f"(lr {lrs[best]:g}; {results[method]['seconds']:.0f} s)")

    summary = {
        "name": "kaleb-adaptation", "quick": quick, "config": config.as_dict(),
        "source": "Kaleb, Feulner, Gallego & Clopath (2024), NeurIPS; SPEC §2, §4",
        "pretrain_final_position_loss": _finite(np.mean(pre_losses[-max(1, len(pre_losses) // 20):])),
        "before": before, "methods": results,
        "adaptation_curves_position_mse": {m: [_finite(v) for v in c] for m, c in curves.items()},
        "seconds": time.perf_counter() - t0,
    }
    figure = kaleb_figure(paths, curves, np.asarray(test.info["end"]), out / "kaleb-adaptation.png", quick=quick,
                          rotation=config.rotation, before=before["rotated_control_off"]["position_mse"],
                          after={m: results[m]["test_after"]["position_mse"] for m in METHODS})
    summary["figure"] = str(figure)
    (out / "kaleb-adaptation.json").write_text(json.dumps(summary, indent=2))
    say(f"wrote {out / 'kaleb-adaptation.json'} and {figure} ({summary['seconds']:.0f} s)")
    return summary


def _finite(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def _reporter(progress: bool):
    if not progress:
        return lambda line: None
    import sys

    return lambda line: print(line, file=sys.stderr, flush=True)
