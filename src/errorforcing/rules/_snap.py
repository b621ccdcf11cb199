"""SnAp (Menick et al. 2021): RTRL with the influence matrix kept on an n-step sparsity pattern."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._eprop import EProp
from ._influence import AbstractInfluenceRule
from ._leaky_rtrl import supports_fast_rtrl
from ._rtrl import RTRL
from ._loss import Objective


class SnAp(AbstractInfluenceRule):
    """Sparse n-step approximation (Menick, Elsen, Evci, Osindero, Simonyan & Graves, ICLR 2021):
    the RTRL recursion (`RTRL`) with the influence matrix projected onto a fixed pattern,

        M^h_t = Π_n ⊙ (∂h_t/∂s_{t-1} M_{t-1} + ∂̄h_t/∂θ),     M_t = (∂s_t/∂h_t) M^h_t + ∂̄s_t/∂θ
    ∂L/∂θ ≈ Σ_t (∂ℓ_t/∂h_t) M^h_t + ∂̄ℓ_t/∂θ

    with h_t = cell(h̃_{t-1}, x_t) the unforced state (the projection acts on the recurrence) and
    s_t the forced state (plus the forcing's changing carry), the rest of the step exact.

    Π_n keeps entry (k, p) iff parameter p reaches unit k within n steps of the cell's
    recurrence: Π_1 = nz(∂̄h_t/∂θ) (the units a parameter enters directly), Π_{n+1} = Π_n ∪
    nz(nz(J^cell) Π_n), J^cell = ∂cell(h, x)/∂h. Both Jacobians are the cell's own (before
    forcing), evaluated at a probe point (h > 0, x = 1) with the cell's weights, so the zeros of
    the pattern are the absent connections of a sparse W_rec (`LeakyRNN(density=p)`) and the
    parameters that do not enter the dynamics (W_out, b_out: their columns are dropped and they
    learn from their direct gradient only; a forcing whose correction depends on W_out with
    its gradient flowing, e.g. teacher forcing's W⁺, keeps only that step's direct effect). The
    forcing's part of each step is exact (autodiff of `forced_step`, h_t entering it as the
    process noise ξ_t does), so every forcing works.

    For the leaky RNN: SnAp-1 keeps M[i, (i, j)], i.e. the recursion
    P_ij,t = κ_i,t [(1 - a) + a W_ii φ'(h̃_i,t-1)] P_ij,t-1 + κ_i,t a φ(h̃_j,t-1), e-prop's trace with the
    exact learning signal (`EProp(feedback="symmetric")`); SnAp-2 adds the units each unit
    projects to, so on a dense network (Π_2 full) it is exact RTRL. Cost as implemented: M is
    stored densely and masked (RTRL's O(N · P) memory per trial); the pattern fixes which
    entries are nonzero, not the storage. Except where that equality is exact and cheap: SnAp-1
    (offline) on the leaky RNN without forcing or with a stopped additive correction (where
    `RTRL` takes its fast path too) is computed as `EProp(feedback="symmetric")`, whose trace is
    the same recursion at O(N²) per step and trial (its backward-filtered form); `fast=False`
    forces the generic path (tests compare the two in float64). Likewise SnAp-2 (offline) on a
    dense leaky RNN (no `rec_mask`) under no forcing or a stopped additive correction is
    computed by `RTRL`'s closed form (`_leaky_rtrl`, O(N⁴) per step and trial but without the
    generic path's per-column autodiff): there Π_2 is full, so SnAp-2 is exact RTRL. "Dense" is
    the structure: a W_rec without a mask trains every entry, so an entry that happens to be
    exactly 0 still counts as a connection (the generic path, reading nz(W_rec) at the probe,
    would drop it).

    `online=True` is real-time SnAp: θ is changed after every step by the per-step optimizer
    (`AbstractInfluenceRule`), the pattern Π_n fixed (the absent connections stay absent: the
    updates are masked by `cell.mask_grads`).
    """

    order: int = eqx.field(default=1, static=True)
    online: bool = eqx.field(default=False, static=True)
    fast: bool = eqx.field(default=True, static=True)
    lr: float | jax.Array | None = None
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.order not in (1, 2):
            raise ValueError(f"SnAp.order must be 1 or 2, got {self.order}")

    def uses_trace(self, cell, forcing) -> bool:
        """Whether `value_and_grad` computes this SnAp-1 as e-prop's trace (see the class docstring)."""
        return self.fast and self.order == 1 and not self.online and supports_fast_rtrl(cell, forcing)

    def uses_rtrl(self, cell, forcing) -> bool:
        """Whether `value_and_grad` computes this SnAp-2 as RTRL's closed form (see the class docstring)."""
        return (self.fast and self.order == 2 and not self.online and supports_fast_rtrl(cell, forcing)
                and cell.rec_mask is None)

    def value_and_grad(self, cell, forcing, trials, *, key, objective=Objective()):
        if self.uses_trace(cell, forcing):
            return EProp(feedback="symmetric").value_and_grad(cell, forcing, trials, key=key, objective=objective)
        if self.uses_rtrl(cell, forcing):
            return RTRL().value_and_grad(cell, forcing, trials, key=key, objective=objective)
        return super().value_and_grad(cell, forcing, trials, key=key, objective=objective)

    def prepare(self, ctx):
        """Π_n as an [N, P] array of 0/1 in the state's dtype."""
        cell = ctx.cell
        h0 = cell.init_state()
        N = h0.shape[0]
        probe_h = h0 + 0.5 + jnp.arange(N, dtype=h0.dtype) / (4 * N)
        probe_x = jnp.ones((ctx.n_in,), h0.dtype)
        direct = jax.jacrev(lambda th: ctx.build(th)(probe_h, probe_x))(ctx.theta)  # [N, P]
        linked = (jax.jacfwd(lambda h: cell(h, probe_x))(probe_h) != 0).astype(h0.dtype)  # [N, N]
        reach = (direct != 0).astype(h0.dtype)
        for _ in range(self.order - 1):
            reach = jnp.maximum(reach, (linked @ reach > 0).astype(h0.dtype))
        return reach

    def init_estimate(self, ctx, pattern, M0, key):
        return M0

    def update(self, ctx, pattern, step, M, key):
        S = ctx.n_state
        columns = lambda fn: jax.vmap(fn, in_axes=1, out_axes=1)
        # the exact RTRL step from M_{t-1}
        JM, dloss_M = jax.vmap(step.tangent, in_axes=1, out_axes=(1, 0))(M)
        eye = jnp.eye(S + 1, dtype=M.dtype)
        direct = jax.vmap(step.pullback)(eye[:, :S], eye[:, S])  # rows ∂̄(s_t, ℓ_t)/∂θ
        # U = ∂h_t/∂θ from M_{t-1}: the influence of the unforced state, before the projection
        unforced = lambda th, s_: step.step_full(th, s_, step.xi)[0]
        _, h_tangent = jax.linearize(lambda s_: unforced(step.theta, s_), step.s)
        _, h_vjp = jax.vjp(lambda th: unforced(th, step.s), step.theta)
        N = pattern.shape[0]
        U = columns(h_tangent)(M) + jax.vmap(lambda u: h_vjp(u)[0])(jnp.eye(N, dtype=M.dtype))
        # what the projection drops from h_t, carried through the rest of the step (h_t enters
        # it as ξ_t does) and taken off the exact step
        _, xi_tangent = jax.linearize(lambda xi: step.step_full(step.theta, step.s, xi)[1:], step.xi)
        d_s, d_loss = jax.vmap(xi_tangent, in_axes=1, out_axes=(1, 0))(((1 - pattern) * U).astype(step.xi.dtype))
        return (JM + direct[:S] - d_s).astype(M.dtype), dloss_M + direct[S] - d_loss
