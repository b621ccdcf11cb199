"""e-prop (Bellec et al. 2020): RTRL truncated to synapse-local eligibility traces."""

from __future__ import annotations

import abc
from typing import Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._types import Array, Float, Key, State
from ..forcing import AbstractAdditiveForcing, AbstractForcing, process_noise
from ..models import AbstractCell, frozen_grads
from ._base import AbstractLearningRule, AbstractStepwiseRule
from ._leaky_bptt import leaky_bptt, supports_fast_path
from ._loss import Objective
from ._online import AbstractOnlineRule, online_step
from ._step import StepLoss, forced_step, time_major, trainable_spec

_LEAKY_FIELDS = ("W_rec", "W_in", "b", "W_out", "b_out", "leak", "readout_mode")


class AbstractTraceRule(AbstractOnlineRule, AbstractStepwiseRule):
    """Forward eligibility traces for the leaky RNN (SPEC §1.1, §3), shared by e-prop and RFLO.

    For every trainable weight a trace P approximates ∂h_t/∂w keeping only the unit's own
    (diagonal) dependence on its past:

        P^rec_ij,t = D_i,t P^rec_ij,t-1 + a φ(h̃_j,t-1)        (W_rec)
        P^in_ij,t  = D_i,t P^in_ij,t-1  + a x_j,t              (W_in)
        P^b_i,t    = D_i,t P^b_i,t-1    + a                    (b)
        ΔW_ij ∝ -Σ_t L_i,t P_ij,t,   L_t = B ∂ℓ_t/∂y_t [⊙ φ'(h_t) for readout "rate"] + κ_t ⊙ ∂ℓ_t/∂h̃_t

    with D_t from the subclass, B = W_outᵀ ("symmetric") or a fixed random N × n_out matrix
    ("random", feedback alignment). The second term of L_t is the local part of the rate
    regulariser (κ_t ⊙ 2 rate_scale h̃_t). W_out and b_out get their exact local gradient
    Σ_t ∂ℓ_t/∂y_t r_tᵀ (r_t = h_t or φ(h_t)), plus the readout penalty's gradient.

    Forcing: traces run on the forced trajectory h̃. After the forcing they are scaled by
    κ_t = diag(∂h̃_t/∂h_t): 1 for additive stopped corrections (error, Kalman, feedback forcing,
    causal or not) and (1 - c_t) for teacher forcing, whose correction's dependence on W⁺ (a
    non-local path to W_out) is not followed. Corrections whose gradient flows keep only the
    diagonal of their Jacobian, like the recurrence.

    `online=True` applies that step's update (summed over the batch, masked by
    `cell.mask_grads`) at every step, traces carried across the changing weights: plain SGD
    with rate `lr` unless `optimizer` names another optax alias (`AbstractOnlineRule`;
    `online_run` is the real-time learner). The fields not in `cell.trainable` get zero
    gradients and are never changed.

    Random feedback: B = feedback_scale · N(0, 1) of shape N × n_out drawn from `key` at every
    call (the same key gives the same B, so it is fixed); feedback_scale defaults to 1/N, the
    scale of the leaky RNN's initial W_out. In an ensemble every member gets its own B, drawn
    from its own seed (`for_member`); the key given here is then replaced.

    Offline on the leaky RNN under no forcing, teacher forcing or a stopped additive correction
    (where `BPTT` takes its fast path) the gradient is the hand-written BPTT's reverse pass with
    the credit truncated as `recurrent_credit` says (`leaky_bptt(recurrent=..., feedback=B)`):
    Σ_t L_t P_t = a Σ_s ē_s φ(h̃_{s-1})ᵀ with ē_s = L_s + κ_s D_{s+1} ē_{s+1} is BPTT's δ
    recursion with W_recᵀ replaced by D's recurrent part and W_outᵀ by B. `fast=False` forces
    the generic path (`_run_offline`), which tests compare it with in float64.
    """

    feedback: eqx.AbstractVar[str]
    key: eqx.AbstractVar[Key | None]
    feedback_scale: eqx.AbstractVar[float | None]
    fast: eqx.AbstractVar[bool]
    # what of ∂h_t/∂h̃_{t-1} the trace keeps, as `leaky_bptt`'s `recurrent`: "diagonal" when D_t
    # holds a (W_rec)_ii φ'(h̃_i,t-1), "none" when D_t is the leak 1 - a alone
    recurrent_credit: ClassVar[str]

    def __check_init__(self):
        name = type(self).__name__
        if self.feedback not in ("symmetric", "random"):
            raise ValueError(f"{name}.feedback must be 'symmetric' or 'random', got {self.feedback!r}")
        if self.feedback == "random" and self.key is None:
            raise ValueError(f"{name}(feedback='random') needs an explicit key for the feedback matrix")

    @property
    def ignores_padding(self) -> bool:
        return True

    def for_member(self, key: Key) -> "AbstractTraceRule":
        """Random feedback: this member's own B, drawn from `key` (the member's seed)."""
        if self.feedback != "random":
            return self
        return eqx.tree_at(lambda r: r.key, self, key)

    @abc.abstractmethod
    def trace_decay(self, cell: AbstractCell, h_prev: State) -> Float[Array, " N"]:
        """D_t: how much of each unit's trace survives one step."""

    def feedback_matrix(self, cell: AbstractCell) -> Float[Array, "N n_out"]:
        """B, which carries the output error back to the units."""
        if self.feedback == "symmetric":
            return cell.W_out.T
        n_out, N = cell.W_out.shape
        scale = 1.0 / N if self.feedback_scale is None else self.feedback_scale
        return scale * jax.random.normal(self.key, (N, n_out), cell.W_out.dtype)

    def uses_fast_path(self, cell: AbstractCell, forcing: AbstractForcing) -> bool:
        """Whether `value_and_grad` runs the hand-written reverse pass (see the class docstring)."""
        return self.fast and not self.online and supports_fast_path(cell, forcing)

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        if self.online:
            loss, g_sum, *_ = self._run(cell, forcing, trials, key, objective, per_step=False,
                                        opt_state=self.online_init(cell))
        elif self.uses_fast_path(cell, forcing):
            noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
            loss, g = leaky_bptt(cell, forcing, trials, objective, noise, recurrent=self.recurrent_credit,
                                 feedback=self.feedback_matrix(cell))
            g_sum = _as_cell_grads(cell, {f: getattr(g, f) for f in ("W_rec", "W_in", "b", "W_out", "b_out")})
        else:
            loss, g_sum = self._run_offline(cell, forcing, trials, key, objective)
        return loss, frozen_grads(g_sum, cell), {}

    def step_updates(self, cell: AbstractCell, forcing: AbstractForcing, trials, *, key: Key,
                     objective: Objective = Objective()) -> AbstractCell:
        """The rule's update at every step, u_t = Σ_b L_b,t P_b,t (+ the readout's local terms),
        summed over the batch: cell-shaped, every leaf with a leading time axis T, frozen fields
        zero. Σ_t u_t is `value_and_grad`'s grads (online: the per-step updates as applied)."""
        opt_state = self.online_init(cell) if self.online else None
        _, _, per_step, *_ = self._run(cell, forcing, trials, key, objective, per_step=True, opt_state=opt_state)
        return jax.vmap(lambda g: frozen_grads(g, cell))(per_step)

    def _online_run(self, cell, opt_state, forcing, trials, key, objective, carry, per_step_loss):
        loss, _, _, cell, opt_state, carry = self._run(cell, forcing, trials, key, objective, per_step=False,
                                                       opt_state=opt_state, carry=carry, per_step_loss=per_step_loss)
        return loss, cell, opt_state, carry

    def _local_step(self, c, forcing, losses, feedback, h_prev, fcarry, x, target, m, xi, rate_scale):
        """One trial's forced step and the rule's local quantities: the trace decay D_t, the
        forcing gain κ_t, the learning signal L_t, ∂ℓ_t/∂y_t, the readout's input r_t, ℓ_t."""
        D = self.trace_decay(c, h_prev)
        h, y, h_forced, fcarry_new = forced_step(c, forcing, h_prev, fcarry, x, target, m, xi)
        kappa = forcing.state_jacobian_diagonal(h, target, m, c, fcarry)
        dy = losses.output_grad(y, target, m)
        signal = feedback @ dy
        if c.readout_mode == "rate":
            signal = signal * _dphi(c, h)
            r = c.phi(h)
        else:
            r = h
        signal = signal + kappa * 2.0 * rate_scale * h_forced
        loss = losses.term(y, h_forced, target, m, rate_scale)
        return h_forced, fcarry_new, (D, kappa, signal, dy, r, loss)

    def _init_state(self, cell, forcing, B):
        bcast = lambda a: jnp.broadcast_to(a, (B,) + jnp.shape(a))
        return bcast(cell.init_state()), jax.tree.map(bcast, forcing.init(cell))

    def _run(self, cell, forcing, trials, key, objective, *, per_step: bool, opt_state=None, carry=None,
             per_step_loss: bool = False):
        """The traces carried forward in time (what an online learner does): (loss, Σ_t g_t,
        [g_t]_t or None, the cell, the online optimizer's state and the running state
        (h̃, forcing carry, traces) at the end). `carry=None` starts at rest."""
        _require_leaky(cell, self)
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
        losses = StepLoss(objective, trials, cell.n_rec, per_step=per_step_loss)
        B = trials.inputs.shape[0]
        penalty_share = B / losses.n_terms  # the readout penalty's part in one step's terms
        spec, step_optimizer = (trainable_spec(cell), self.step_optimizer()) if self.online else (None, None)
        N, n_in = cell.W_in.shape
        dtype = cell.W_rec.dtype

        def trial_step(c, feedback, state, x, target, m, xi, rate_scale):
            h_prev, fcarry, P_rec, P_in, P_b = state
            h_forced, fcarry_new, (D, kappa, signal, dy, r, loss) = self._local_step(
                c, forcing, losses, feedback, h_prev, fcarry, x, target, m, xi, rate_scale)
            a = c.leak
            P_rec = D[:, None] * P_rec + a * c.phi(h_prev)[None, :]
            P_in = D[:, None] * P_in + a * x[None, :]
            P_b = D * P_b + a
            g = {"W_rec": signal[:, None] * P_rec, "W_in": signal[:, None] * P_in, "b": signal * P_b,
                 "W_out": jnp.outer(dy, r), "b_out": dy}
            state = (h_forced, fcarry_new, kappa[:, None] * P_rec, kappa[:, None] * P_in, kappa * P_b)
            return state, loss, g

        batched = jax.vmap(trial_step, in_axes=(None, None, 0, 0, 0, 0, 0, 0))

        refresh_gain = self.online and isinstance(forcing, AbstractAdditiveForcing)

        def scan_step(carry, xs):
            c, opt_state, state, g_sum, loss_sum = carry
            x, target, m, xi = xs
            if refresh_gain:  # online: the forcing's gain (W⁺) follows the changing W_out, as in RTRL
                state = (state[0], forcing.with_current_gain(c, state[1])) + tuple(state[2:])
            state, loss, g = batched(c, self.feedback_matrix(c), state, x, target, m, xi, losses.rate_scale)
            penalty, penalty_grad = jax.value_and_grad(
                lambda W: losses.penalty(eqx.tree_at(lambda cc: cc.W_out, c, W)))(c.W_out)
            g = {k: jnp.sum(v, axis=0) for k, v in g.items()}
            g["W_rec"] = c.recurrent_weights_grad(g["W_rec"])  # the trace of the stored parameter (Dale's law)
            g["W_out"] = g["W_out"] + penalty_grad * penalty_share
            grads = _as_cell_grads(c, g)
            if self.online:
                grads = cell.mask_grads(grads)
                c, opt_state = online_step(step_optimizer, spec, c, grads, opt_state)
            g_sum = jax.tree.map(jnp.add, g_sum, grads)
            loss_sum = loss_sum + jnp.sum(loss) + penalty * penalty_share
            return (c, opt_state, state, g_sum, loss_sum), (grads if per_step else None)

        if carry is None:
            carry = self._init_state(cell, forcing, B) + (
                jnp.zeros((B, N, N), dtype), jnp.zeros((B, N, n_in), dtype), jnp.zeros((B, N), dtype))
        init = (cell, opt_state, carry, _as_cell_grads(cell, {}), jnp.zeros((), dtype))
        (c, opt_state, carry, g_sum, loss), steps = jax.lax.scan(scan_step, init, time_major(trials, noise))
        return loss, g_sum, steps, c, opt_state, carry

    def _run_offline(self, cell, forcing, trials, key, objective):
        """The same sum Σ_t L_t ⊙ P_t with the weights fixed over the trial, without carrying
        the [B,N,N] traces. Unrolling the trace, P̂_t = Σ_{s≤t} (Π_{u=s+1..t} D_u κ_{u-1}) a φ(h̃_{s-1}),
        so Σ_t L_t P̂_t = Σ_s a ē_s φ(h̃_{s-1})ᵀ with the filtered signal ē_s = L_s + κ_s D_{s+1} ē_{s+1}:
        a diagonal recursion backwards in time, then one large matmul per weight."""
        _require_leaky(cell, self)
        noise = process_noise(trials, cell.n_rec, objective.noise_std, key)
        losses = StepLoss(objective, trials, cell.n_rec)
        B = trials.inputs.shape[0]
        feedback = self.feedback_matrix(cell)

        def trial_step(state, x, target, m, xi, rate_scale):
            h_prev, fcarry = state
            h_forced, fcarry_new, local = self._local_step(
                cell, forcing, losses, feedback, h_prev, fcarry, x, target, m, xi, rate_scale)
            return (h_forced, fcarry_new), (cell.phi(h_prev),) + local

        batched = jax.vmap(trial_step)

        def forward(state, xs):
            x, target, m, xi = xs
            return batched(state, x, target, m, xi, losses.rate_scale)

        xs = time_major(trials, noise)
        _, (R_prev, D, K, L, dY, R, loss) = jax.lax.scan(forward, self._init_state(cell, forcing, B), xs)
        carry_decay = K * jnp.concatenate([D[1:], jnp.zeros_like(D[:1])])  # κ_s D_{s+1} [T,B,N]

        def backward(e_next, xs):
            signal, decay = xs
            e = signal + decay * e_next
            return e, e

        _, E = jax.lax.scan(backward, jnp.zeros_like(L[0]), (L, carry_decay), reverse=True)
        a = cell.leak
        flat = lambda Z: Z.reshape(-1, Z.shape[-1])
        penalty, penalty_grad = jax.value_and_grad(
            lambda W: losses.penalty(eqx.tree_at(lambda cc: cc.W_out, cell, W)))(cell.W_out)
        g = {"W_rec": cell.recurrent_weights_grad(a * flat(E).T @ flat(R_prev)), "W_in": a * flat(E).T @ flat(xs[0]), "b": a * jnp.sum(E, (0, 1)),
             "W_out": flat(dY).T @ flat(R) + penalty_grad, "b_out": jnp.sum(dY, (0, 1))}
        return jnp.sum(loss) + penalty, _as_cell_grads(cell, g)


class EProp(AbstractTraceRule):
    """e-prop (Bellec et al. 2020) for the leaky RNN (SPEC §3): the eligibility trace keeps
    each unit's own leak and self-connection,

        P_ij,t = [(1 - a) + a W_rec,ii φ'(h̃_i,t-1)] P_ij,t-1 + a φ(h̃_j,t-1)

    (likewise for W_in with x_j,t and for b with 1). With B = W_outᵀ the gradient equals
    autodiff BPTT through a network whose off-diagonal recurrent inputs are detached
    (h_t = (1-a) h̃ + a (diag(W) φ(h̃) + (W - diag(W)) sg(φ(h̃)) + W_in x_t + b)).
    See `AbstractTraceRule` for the learning signal, forcing, online mode and random B.
    """

    feedback: str = eqx.field(default="symmetric", static=True)
    key: Key | None = None
    feedback_scale: float | None = None
    online: bool = eqx.field(default=False, static=True)
    lr: float | jax.Array | None = None
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)
    fast: bool = eqx.field(default=True, static=True)
    recurrent_credit: ClassVar[str] = "diagonal"

    def trace_decay(self, cell, h_prev):
        a = cell.leak
        return (1 - a) + a * jnp.diagonal(cell.recurrent_weights()) * _dphi(cell, h_prev)


def _dphi(cell, h):
    """φ'(h) (φ acts elementwise)."""
    return jax.jvp(cell.phi, (h,), (jnp.ones_like(h),))[1]


def _as_cell_grads(cell: AbstractCell, g: dict) -> AbstractCell:
    """A gradient pytree shaped like BPTT's, with `g`'s arrays on the named fields, zeros elsewhere."""
    zeros = jax.tree.map(lambda leaf: jnp.zeros_like(leaf) if eqx.is_inexact_array(leaf) else None, cell)
    if not g:
        return zeros
    names = list(g)
    return eqx.tree_at(lambda t: [getattr(t, n) for n in names], zeros, [g[n] for n in names])


def _require_leaky(cell: AbstractCell, rule: AbstractLearningRule) -> None:
    missing = [f for f in _LEAKY_FIELDS if not hasattr(cell, f)]
    if missing or not callable(getattr(cell, "phi", None)):
        raise TypeError(f"{type(rule).__name__} is written for the leaky RNN (SPEC §1.1); "
                        f"{type(cell).__name__} lacks {missing or ['phi']}")
