"""Real-time recurrent learning (Williams & Zipser 1989), exact forward-mode gradients."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from ..forcing import AbstractForcing, process_noise
from ..models import AbstractCell
from ._leaky_rtrl import leaky_rtrl, supports_fast_rtrl
from ._loss import Objective
from ._base import AbstractStepwiseRule
from ._online import AbstractOnlineRule
from ._step import StepLoss, forced_step, full_grads, time_major, trainable_spec


class RTRL(AbstractOnlineRule, AbstractStepwiseRule):
    """Real-time recurrent learning: the influence matrix M_t = ∂s_t/∂θ is carried forward,

        M_t = (∂s_t/∂s_{t-1}) M_{t-1} + ∂̄s_t/∂θ,          M_0 = ∂s_0/∂θ
        ∂L/∂θ = Σ_t [ (∂ℓ_t/∂s_{t-1}) M_{t-1} + ∂̄ℓ_t/∂θ ]   (Williams & Zipser eqs. 2.9-2.12)

    where s_t is the forced state h̃_t (plus any part of the forcing's carry that changes over
    time, e.g. a causal variant's previous correction), θ the trainable leaves of the cell
    flattened, ℓ_t the objective's step-t terms (`StepLoss`) and ∂̄ the direct derivative.
    Both Jacobians are taken by autodiff of one forced step (a `jvp` per column of M, a `vjp`
    per row of ∂̄s_t/∂θ), so every forcing is handled exactly: a stopped additive correction
    keeps M (M̃ = M), teacher forcing gives M̃ = (1 - c_t) M + c_t ∂(W⁺(y* - b_out))/∂θ when its
    gradient flows, Williams-Zipser teacher forcing zeroes the forced units' rows (eq. 2.19).
    The result equals BPTT's gradient of the same `Objective`. Cost per step and trial:
    O(N² · P) time, O(N · P) memory (P ≈ N² parameters), i.e. O(N⁴) and O(N³).

    Only the fields in `cell.trainable` are tracked; the others get zero gradients. Parts of
    the forcing's carry that pass through a step unchanged (W⁺, a fixed F) are recomputed
    from θ at each step instead of being carried in M.

    `online=True` is real-time RTRL (Williams & Zipser §2 "Real-Time Recurrent Learning"): θ is
    changed at every step while the network runs by the per-step optimizer (plain SGD,
    θ ← θ - lr · g_t, unless `optimizer` names another optax alias; g_t = that step's
    gradient, summed over the batch, masked by `cell.mask_grads`), and M keeps accumulating
    across the changing weights (`AbstractOnlineRule`; `online_run` is the real-time learner).
    `value_and_grad` then returns Σ_t g_t (with SGD: θ_end = θ_0 - lr · grads) and the loss
    Σ_t ℓ_t as it was incurred.

    For the leaky RNN under no forcing or stopped additive forcing a hand-written recursion
    (`_leaky_rtrl`) computes the same gradient about 5x faster; `fast=False` forces the
    generic path, the oracle it is tested against.
    """

    online: bool = eqx.field(default=False, static=True)
    lr: float | jax.Array | None = None
    fast: bool = eqx.field(default=True, static=True)
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)

    @property
    def ignores_padding(self) -> bool:
        return True

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        opt_state = self.online_init(cell) if self.online else None
        loss, g_sum, _, to_grads, _ = self._run(cell, forcing, trials, key, objective, per_step=False,
                                                opt_state=opt_state)
        return loss, to_grads(g_sum), {}

    def _online_run(self, cell, opt_state, forcing, trials, key, objective, carry, per_step_loss):
        loss, _, _, _, end = self._run(cell, forcing, trials, key, objective, per_step=False, opt_state=opt_state,
                                       carry=carry, per_step_loss=per_step_loss)
        return (loss,) + end

    def step_updates(self, cell: AbstractCell, forcing: AbstractForcing, trials, *, key,
                     objective: Objective = Objective()) -> AbstractCell:
        """g_t = Σ_b ∂ℓ_b,t/∂θ (the exact online gradient of step t's loss terms, θ fixed
        within the trial unless `online`), cell-shaped with a leading time axis T; Σ_t g_t is
        `value_and_grad`'s grads."""
        opt_state = self.online_init(cell) if self.online else None
        _, _, per_step, to_grads, _ = self._run(cell, forcing, trials, key, objective, per_step=True,
                                                opt_state=opt_state)
        return jax.vmap(to_grads)(per_step)

    def _run(self, cell, forcing, trials, key, objective, *, per_step: bool, opt_state=None, carry=None,
             per_step_loss: bool = False):
        """(loss, Σ_t g_t flat, [g_t]_t flat or None, flat → cell-shaped grads, (the cell, the
        online optimizer's state, the running state) at the end). `carry=None` starts at rest."""
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
        losses = StepLoss(objective, trials, cell.n_rec, per_step=per_step_loss)
        B = trials.inputs.shape[0]
        problem = FlatProblem(cell, forcing, trials, losses)
        theta0, build, to_grads = problem.theta0, problem.build, problem.to_grads
        step_optimizer = self.step_optimizer() if self.online else None
        if self.fast and supports_fast_rtrl(cell, forcing):
            loss, g_sum, steps, end = leaky_rtrl(cell, forcing, trials, objective, noise, optimizer=step_optimizer,
                                                 opt_state=opt_state, carry=carry, per_step=per_step,
                                                 per_step_loss=per_step_loss)
            flat = problem.flatten
            return loss, flat(g_sum), (jax.vmap(flat)(steps) if per_step else None), to_grads, end
        s0, M0, other0 = problem.s0, problem.M0, problem.other0
        S = s0.shape[0]

        def step_fn(theta, s, other, x, target, m, xi, rate_scale):
            (_, s_new, loss), other = problem.step(build(theta), s, other, x, target, m, xi, rate_scale)
            return (s_new, loss), other

        def trial_step(theta, s, M, other, x, target, m, xi, rate_scale):
            f = lambda th, s_: step_fn(th, s_, other, x, target, m, xi, rate_scale)
            (s_new, loss), tangent, other_new = jax.linearize(lambda s_: f(theta, s_), s, has_aux=True)
            JM, dloss_M = jax.vmap(tangent, in_axes=1, out_axes=(1, 0))(M)
            _, pullback, _ = jax.vjp(lambda th: f(th, s), theta, has_aux=True)
            eye = jnp.eye(S + 1, dtype=s.dtype)
            (direct,) = jax.vmap(pullback)((eye[:, :S], eye[:, S]))  # rows ∂̄(s_t, ℓ_t)/∂θ
            return s_new, JM + direct[:S], other_new, loss, dloss_M + direct[S]

        batched = jax.vmap(trial_step, in_axes=(None, 0, 0, 0, 0, 0, 0, 0, 0))

        def scan_step(state, xs):
            theta, opt_state, s, M, other, g_sum, loss_sum = state
            x, target, m, xi = xs
            s, M, other, loss, g = batched(theta, s, M, other, x, target, m, xi, losses.rate_scale)
            g = jnp.sum(g, axis=0)
            if self.online:
                g = problem.masked(g)
                theta, opt_state = problem.online_update(step_optimizer, g, theta, opt_state)
            return (theta, opt_state, s, M, other, g_sum + g, loss_sum + jnp.sum(loss)), (g if per_step else None)

        if carry is None:
            bcast = lambda a: jnp.broadcast_to(a, (B,) + jnp.shape(a))
            carry = (bcast(s0), bcast(M0), jax.tree.map(bcast, other0))
        init = (theta0, opt_state) + tuple(carry) + (jnp.zeros_like(theta0), jnp.zeros((), s0.dtype))
        (theta, opt_state, s, M, other, g_sum, loss), steps = jax.lax.scan(scan_step, init,
                                                                          time_major(trials, noise))
        return loss, g_sum, steps, to_grads, (build(theta), opt_state, (s, M, other))


def _like(params, full):
    """The leaves of `full` (a full gradient tree) at the positions `params` holds."""
    return jax.tree.map(lambda p, g: None if p is None else g, params, full, is_leaf=lambda x: x is None)


class FlatProblem:
    """The flat coordinates of the forward-mode rules (RTRL, SnAp, UORO, KF-RTRL): θ the
    trainable leaves of `cell` flattened, s = (h̃, the forcing's changing carry) flattened, the
    initial influence M_0 = ∂s_0/∂θ, and one forced step in those coordinates."""

    def __init__(self, cell: AbstractCell, forcing: AbstractForcing, trials, losses: StepLoss):
        self.cell, self.forcing, self.losses = cell, forcing, losses
        self.spec = trainable_spec(cell)
        self.params, self._rest = eqx.partition(cell, self.spec)
        self.theta0, self.unravel = ravel_pytree(self.params)
        self.layout = _CarryLayout(cell, forcing, trials)
        diff0, self.other0 = self.layout.split(forcing.init(cell))
        self.s0, self.unravel_s = ravel_pytree((cell.init_state(), diff0))
        self.M0 = jax.jacrev(self._initial_state)(self.theta0)

    def build(self, theta):
        """The cell with trainable values θ [P]."""
        return eqx.combine(self.unravel(theta), self._rest)

    def to_grads(self, g):
        """Flat [P] → the cell-shaped gradient (`full_grads`)."""
        return full_grads(self.cell, self.spec, self.unravel(g))

    def flatten(self, grads):
        """A cell-shaped (full) gradient → flat [P]."""
        return ravel_pytree(_like(self.params, grads))[0]

    def masked(self, g):
        """Flat g with `cell.mask_grads` applied (what an online step may change)."""
        return self.flatten(self.cell.mask_grads(self.to_grads(g)))

    def online_update(self, optimizer, g, theta, opt_state):
        """θ after one per-step optimizer update with flat gradient g, and the optimizer's state."""
        updates, opt_state = optimizer.update(self.unravel(g), opt_state, self.unravel(theta))
        return ravel_pytree(eqx.apply_updates(self.unravel(theta), updates))[0], opt_state

    def _initial_state(self, theta):
        c = self.build(theta)
        diff, _ = self.layout.split(self.forcing.init(c))
        return ravel_pytree((c.init_state(), diff))[0]

    def step(self, c, s, other, x, target, m, xi, rate_scale):
        """One forced step of cell `c` from flat state s: ((h_t unforced, s_t, ℓ_t), the carry's
        non-differentiable part)."""
        layout = self.layout
        h_prev, diff = self.unravel_s(s)
        fcarry = layout.assemble(self.forcing.init(c) if layout.has_const else None, diff, other)
        h, y, h_forced, fcarry = forced_step(c, self.forcing, h_prev, fcarry, x, target, m, xi)
        loss = self.losses.term(y, h_forced, target, m, rate_scale) + self.losses.penalty(c) / self.losses.n_terms
        diff, other = layout.split(fcarry)
        return (h, ravel_pytree((h_forced, diff))[0], loss), other


class _CarryLayout:
    """Sorts the leaves of a forcing's carry by how they evolve during a rollout, found by
    tracing one forced step (shapes only):

    - "const": returned unchanged (the same object), hence a function of θ alone (W⁺, F);
      recomputed with `forcing.init` at each step, so its θ-dependence is a direct term;
    - "diff": floating-point and updated each step; part of the RTRL state s (has rows in M);
    - "other": non-differentiable and updated; carried as a plain value.
    """

    def __init__(self, cell: AbstractCell, forcing: AbstractForcing, trials):
        carry0 = forcing.init(cell)
        leaves, self.treedef = jax.tree.flatten(carry0)
        kinds: list[str] = []

        def probe(c, h, fcarry, x, target, m):
            old = jax.tree.leaves(fcarry)
            _, _, _, new = forced_step(c, forcing, h, fcarry, x, target, m, None)
            new = jax.tree.leaves(new)
            kinds.extend("const" if n is o else "diff" if eqx.is_inexact_array(n) else "other"
                         for n, o in zip(new, old))

        eqx.filter_eval_shape(probe, cell, cell.init_state(), carry0, trials.inputs[0, 0], trials.targets[0, 0],
                              trials.mask[0, 0])
        if len(kinds) != len(leaves):
            raise RuntimeError(f"could not trace one step of {type(forcing).__name__} to sort its carry")
        self.diff_idx = [i for i, k in enumerate(kinds) if k == "diff"]
        self.other_idx = [i for i, k in enumerate(kinds) if k == "other"]
        self.has_const = "const" in kinds
        self.n_leaves = len(leaves)

    def split(self, fcarry: Any) -> tuple[list, list]:
        leaves = jax.tree.leaves(fcarry)
        return [leaves[i] for i in self.diff_idx], [leaves[i] for i in self.other_idx]

    def assemble(self, fresh: Any, diff: list, other: list) -> Any:
        leaves = jax.tree.leaves(fresh) if fresh is not None else [None] * self.n_leaves
        for i, v in zip(self.diff_idx, diff):
            leaves[i] = v
        for i, v in zip(self.other_idx, other):
            leaves[i] = v
        return jax.tree.unflatten(self.treedef, leaves)
