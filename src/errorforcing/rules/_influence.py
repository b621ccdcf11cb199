"""The forward-mode time loop shared by the rules that carry an approximation of the influence
matrix M_t = ∂s_t/∂θ (SnAp, UORO, KF-RTRL), in RTRL's notation (`RTRL`): s_t the forced state
h̃_t plus the parts of the forcing's carry that change over time, θ the trainable leaves of the
cell flattened, and the loss of step t a function ℓ_t(θ, s_{t-1}), so that

    ∂L/∂θ = Σ_t [ (∂ℓ_t/∂s_{t-1}) M_{t-1} + ∂̄ℓ_t/∂θ ].

A rule supplies the estimate it carries per trial and its update; the loop supplies one forced
step linearised in s (J_t v and (∂ℓ_t/∂s) v for any tangent v) and its pullback to θ (the rows
of the direct terms ∂̄s_t/∂θ, ∂̄ℓ_t/∂θ), both by autodiff of `forced_step`, so every forcing is
handled as exactly as the rule's approximation allows."""

from __future__ import annotations

import abc
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._types import Array, Float, Key, Scalar
from ..forcing import process_noise
from ..models import AbstractCell
from ._base import AbstractLearningRule
from ._loss import Objective
from ._rtrl import _CarryLayout, _like
from ._step import StepLoss, forced_step, full_grads, time_major, trainable_spec


class InfluenceStep(NamedTuple):
    """One trial's forced step at (θ, s_{t-1}), as the rules' update sees it."""

    theta: Float[Array, " P"]
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
    """What a rule may need about the problem, fixed over the call."""

    cell: AbstractCell
    theta: Float[Array, " P"]  # the trainable values of `cell`, flattened
    n_in: int
    build: Callable  # θ [P] -> the cell with those trainable values
    flatten: Callable  # cell-shaped gradient -> [P] (the trainable positions)
    n_state: int  # S
    n_params: int  # P


class AbstractInfluenceRule(AbstractLearningRule):
    """A rule that carries, per trial, an estimate of M_t and returns Σ_t of its gradient
    estimates. Stochastic rules draw from the `key` of `value_and_grad` (one independent key per
    trial and step); the process noise uses that key as every other rule does."""

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
        loss, g = influence_run(self, cell, forcing, trials, key, objective)
        return loss, g, {}


def influence_run(rule: AbstractInfluenceRule, cell: AbstractCell, forcing, trials, key: Key,
                  objective: Objective) -> tuple[Scalar, AbstractCell]:
    """(loss, Σ_t Σ_b g_b,t) with the weights fixed over the trial, grads shaped like `cell`."""
    noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
    losses = StepLoss(objective, trials, cell.n_rec)
    B, T = trials.inputs.shape[:2]
    spec = trainable_spec(cell)
    params, rest = eqx.partition(cell, spec)
    theta0, unravel = ravel_pytree(params)
    build = lambda th: eqx.combine(unravel(th), rest)
    flatten = lambda g: ravel_pytree(_like(params, g))[0]
    layout = _CarryLayout(cell, forcing, trials)

    def initial_state(theta):
        c = build(theta)
        diff, _ = layout.split(forcing.init(c))
        return ravel_pytree((c.init_state(), diff))[0]

    diff0, other0 = layout.split(forcing.init(cell))
    s0, unravel_s = ravel_pytree((cell.init_state(), diff0))
    M0 = jax.jacrev(initial_state)(theta0)
    ctx = TrialContext(cell, theta0, trials.inputs.shape[-1], build, flatten, s0.shape[0], theta0.shape[0])
    prepared = rule.prepare(ctx)

    def step_fn(c, s, other, x, target, m, xi, rate_scale):
        h_prev, diff = unravel_s(s)
        fcarry = layout.assemble(forcing.init(c) if layout.has_const else None, diff, other)
        h, y, h_forced, fcarry = forced_step(c, forcing, h_prev, fcarry, x, target, m, xi)
        loss = losses.term(y, h_forced, target, m, rate_scale) + losses.penalty(c) / losses.n_terms
        loss = loss.astype(h_forced.dtype)  # one dtype for every tangent and cotangent of the step
        diff, other = layout.split(fcarry)
        return (h, ravel_pytree((h_forced, diff))[0], loss), other

    def trial_step(s, est, other, x, target, m, xi, rate_scale, k):
        # ξ enters as h_t = cell(h̃_{t-1}, x_t) + ... + ξ_t, so ∂/∂ξ_t is the derivative in h_t
        xi = jnp.zeros((cell.n_rec,), s.dtype) if xi is None else xi
        full = lambda c, s_, xi_: step_fn(c, s_, other, x, target, m, xi_, rate_scale)[0]
        f_cell = lambda c, s_: (lambda out, aux: (out[1:], aux))(*step_fn(c, s_, other, x, target, m, xi, rate_scale))
        f = lambda th, s_: f_cell(build(th), s_)
        (s_new, loss), tangent, other_new = jax.linearize(lambda s_: f(theta0, s_), s, has_aux=True)
        _, vjp, _ = jax.vjp(lambda th: f(th, s), theta0, has_aux=True)
        pullback = lambda u, w: vjp((u, w))[0]
        step = InfluenceStep(theta0, s, x, xi, s_new, loss, tangent, pullback, lambda th, s_: f(th, s_)[0],
                             lambda c, s_: f_cell(c, s_)[0], lambda th, s_, xi_: full(build(th), s_, xi_))
        est, g = rule.update(ctx, prepared, step, est, k)
        return s_new, est, other_new, loss, g

    batched = jax.vmap(trial_step, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, 0))

    def scan_step(state, xs):
        s, est, other, g_sum, loss_sum = state
        *data, k = xs
        s, est, other, loss, g = batched(s, est, other, *data, losses.rate_scale, k)
        return (s, est, other, g_sum + jnp.sum(g, axis=0), loss_sum + jnp.sum(loss)), None

    k_init, k_steps = jax.random.split(jax.random.fold_in(key, 0x1F1), 2)
    step_keys = jax.random.split(k_steps, T * B).reshape(T, B)
    est0 = jax.vmap(lambda k: rule.init_estimate(ctx, prepared, M0, k))(jax.random.split(k_init, B))
    bcast = lambda a: jnp.broadcast_to(a, (B,) + jnp.shape(a))
    x, target, m, xi = time_major(trials, noise)
    init = (bcast(s0), est0, jax.tree.map(bcast, other0), jnp.zeros_like(theta0), jnp.zeros((), s0.dtype))
    (_, _, _, g_sum, loss), _ = jax.lax.scan(scan_step, init, (x, target, m, xi, step_keys))
    return loss, full_grads(cell, spec, unravel(g_sum))
