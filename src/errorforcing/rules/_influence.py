"""The forward-mode time loop shared by the rules that carry an approximation of the influence
matrix M_t = ∂s_t/∂θ (SnAp, UORO, KF-RTRL), in RTRL's notation (`RTRL`): s_t the forced state
h̃_t plus the parts of the forcing's carry that change over time, θ the trainable leaves of the
cell flattened, and the loss of step t a function ℓ_t(θ, s_{t-1}), so that

    ∂L/∂θ = Σ_t [ (∂ℓ_t/∂s_{t-1}) M_{t-1} + ∂̄ℓ_t/∂θ ].

A rule supplies the estimate it carries per trial and its update; the loop supplies one forced
step linearised in s (J_t v and (∂ℓ_t/∂s) v for any tangent v) and its pullback to θ (the rows
of the direct terms ∂̄s_t/∂θ, ∂̄ℓ_t/∂θ), both by autodiff of `forced_step`, so every forcing is
handled as exactly as the rule's approximation allows. With `online=True` (`AbstractOnlineRule`)
θ changes at every step and the estimate keeps accumulating across the changing weights, as in
real-time RTRL."""

from __future__ import annotations

import abc
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Key as KeyArray  # an array of keys with a shape (`Key` is one key)

from .._types import Array, Float, Key, Scalar
from ..forcing import process_noise
from ..models import AbstractCell
from ._loss import Objective
from ._online import AbstractOnlineRule
from ._rtrl import FlatProblem
from ._step import StepLoss, time_major


class InfluenceStep(NamedTuple):
    """One trial's forced step at (θ, s_{t-1}), as the rules' update sees it."""

    theta: Float[Array, " P"]  # the trainable values of this step (they change when learning online)
    cell: AbstractCell  # the cell with those values
    s: Float[Array, " S"]
    x: Float[Array, " n_in"]
    xi: Float[Array, " N"]  # the process noise of the step (zeros without noise)
    s_new: Float[Array, " S"]
    loss: Scalar
    tangent: Callable  # v [S] -> (J_t v [S], (∂ℓ_t/∂s_{t-1}) v [])
    pullback: Callable  # (u [S], w []) -> uᵀ ∂̄s_t/∂θ + w ∂̄ℓ_t/∂θ   [P]
    step: Callable  # (θ, s) -> (s_t, ℓ_t): the step itself, for rules that differentiate it otherwise
    step_cell: Callable  # (cell, s) -> (s_t, ℓ_t): the same with any cell (e.g. to differentiate a frozen field)
    step_full: Callable  # (θ, s, ξ) -> (h_t, s_t, ℓ_t): with the unforced state h_t and the noise ξ_t exposed


class TrialContext(NamedTuple):
    """What a rule may need about the problem, fixed over the call (the cell as the call
    starts: its structure, e.g. a sparsity pattern; the values of a step are `InfluenceStep`'s)."""

    cell: AbstractCell
    theta: Float[Array, " P"]  # the trainable values of `cell`, flattened
    n_in: int
    build: Callable  # θ [P] -> the cell with those trainable values
    flatten: Callable  # cell-shaped gradient -> [P] (the trainable positions)
    n_state: int  # S
    n_params: int  # P


class AbstractInfluenceRule(AbstractOnlineRule):
    """A rule that carries, per trial, an estimate of M_t and returns Σ_t of its gradient
    estimates. Stochastic rules draw from the `key` of `value_and_grad` (one independent key per
    trial and step, `influence_keys`); the process noise uses that key as every other rule does.

    `online=True` is the rule's real-time form (`AbstractOnlineRule`): after every step the
    per-step optimizer applies that step's estimate g_t (summed over the batch, masked by
    `cell.mask_grads`), and the next step, its Jacobians and the estimate's update run on the
    changed θ (the estimate itself is carried on, as real-time RTRL carries M)."""

    def prepare(self, ctx: TrialContext) -> Any:
        """Anything computed once per call from the cell (e.g. a sparsity pattern), passed to the
        other methods; None by default."""
        return None

    @abc.abstractmethod
    def init_estimate(self, ctx: TrialContext, prepared: Any, M0: Float[Array, "S P"], key: Key) -> Any:
        """The estimate of M_0 = ∂s_0/∂θ for one trial."""

    @abc.abstractmethod
    def update(self, ctx: TrialContext, prepared: Any, step: InfluenceStep, estimate: Any,
               key: Key) -> tuple[Any, Float[Array, " P"]]:
        """(estimate of M_t, estimate of (∂ℓ_t/∂s_{t-1}) M_{t-1} + ∂̄ℓ_t/∂θ) for one trial."""

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        opt_state = self.online_init(cell) if self.online else None
        loss, g, _ = influence_run(self, cell, forcing, trials, key, objective, opt_state=opt_state)
        return loss, g, {}

    def _online_run(self, cell, opt_state, forcing, trials, key, objective, carry, per_step_loss):
        loss, _, (end, opt_state, carry) = influence_run(self, cell, forcing, trials, key, objective,
                                                         opt_state=opt_state, carry=carry,
                                                         per_step_loss=per_step_loss)
        return loss, end, opt_state, carry


def influence_keys(key: Key, B: int, T: int) -> tuple[KeyArray[Array, " B"], KeyArray[Array, "T B"]]:
    """The keys of a call's estimates: one per trial for M_0 [B], one per step and trial [T, B]."""
    k_init, k_steps = jax.random.split(jax.random.fold_in(key, 0x1F1), 2)
    return jax.random.split(k_init, B), jax.random.split(k_steps, T * B).reshape(T, B)


def influence_run(rule: AbstractInfluenceRule, cell: AbstractCell, forcing, trials, key: Key,
                  objective: Objective, *, opt_state=None, carry: Any = None,
                  per_step_loss: bool = False) -> tuple[Scalar, AbstractCell, tuple]:
    """(loss, Σ_t Σ_b g_b,t shaped like `cell`, (the cell, the online optimizer's state, the
    running state (s, estimate, carry) at the end)). θ is fixed over the trial unless
    `rule.online` (then `opt_state` is the per-step optimizer's state); `carry=None` starts at
    rest."""
    noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
    losses = StepLoss(objective, trials, cell.n_rec, per_step=per_step_loss)
    B, T = trials.inputs.shape[:2]
    problem = FlatProblem(cell, forcing, trials, losses)
    theta0, build, s0 = problem.theta0, problem.build, problem.s0
    ctx = TrialContext(cell, theta0, trials.inputs.shape[-1], build, problem.flatten, s0.shape[0], theta0.shape[0])
    prepared = rule.prepare(ctx)
    step_optimizer = rule.step_optimizer() if rule.online else None

    def trial_step(theta, s, est, other, x, target, m, xi, rate_scale, k):
        # ξ enters as h_t = cell(h̃_{t-1}, x_t) + ... + ξ_t, so ∂/∂ξ_t is the derivative in h_t
        xi = jnp.zeros((cell.n_rec,), s.dtype) if xi is None else xi

        def step_fn(c, s_, xi_):  # one dtype for every tangent and cotangent of the step
            (h, s_new, loss), other_new = problem.step(c, s_, other, x, target, m, xi_, rate_scale)
            return (h, s_new, loss.astype(s_new.dtype)), other_new

        full = lambda c, s_, xi_: step_fn(c, s_, xi_)[0]
        f_cell = lambda c, s_: (lambda out, aux: (out[1:], aux))(*step_fn(c, s_, xi))
        f = lambda th, s_: f_cell(build(th), s_)
        (s_new, loss), tangent, other_new = jax.linearize(lambda s_: f(theta, s_), s, has_aux=True)
        _, vjp, _ = jax.vjp(lambda th: f(th, s), theta, has_aux=True)
        pullback = lambda u, w: vjp((u, w))[0]
        step = InfluenceStep(theta, build(theta), s, x, xi, s_new, loss, tangent, pullback,
                             lambda th, s_: f(th, s_)[0], lambda c, s_: f_cell(c, s_)[0],
                             lambda th, s_, xi_: full(build(th), s_, xi_))
        est, g = rule.update(ctx, prepared, step, est, k)
        return s_new, est, other_new, loss, g

    batched = jax.vmap(trial_step, in_axes=(None, 0, 0, 0, 0, 0, 0, 0, 0, 0))

    def scan_step(state, xs):
        theta, opt_state, s, est, other, g_sum, loss_sum = state
        *data, k = xs
        s, est, other, loss, g = batched(theta, s, est, other, *data, losses.rate_scale, k)
        g = jnp.sum(g, axis=0)
        if rule.online:
            g = problem.masked(g)
            theta, opt_state = problem.online_update(step_optimizer, g, theta, opt_state)
        return (theta, opt_state, s, est, other, g_sum + g, loss_sum + jnp.sum(loss)), None

    init_keys, step_keys = influence_keys(key, B, T)
    if carry is None:
        bcast = lambda a: jnp.broadcast_to(a, (B,) + jnp.shape(a))
        est0 = jax.vmap(lambda k: rule.init_estimate(ctx, prepared, problem.M0, k))(init_keys)
        carry = (bcast(s0), est0, jax.tree.map(bcast, problem.other0))
    x, target, m, xi = time_major(trials, noise)
    init = (theta0, opt_state) + tuple(carry) + (jnp.zeros_like(theta0), jnp.zeros((), s0.dtype))
    (theta, opt_state, s, est, other, g_sum, loss), _ = jax.lax.scan(scan_step, init, (x, target, m, xi, step_keys))
    return loss, problem.to_grads(g_sum), (build(theta), opt_state, (s, est, other))
