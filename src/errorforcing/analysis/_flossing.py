"""Gradient flossing: regularise Lyapunov exponents toward a target (SPEC §6).

Engelken (2024) pushes the k leading exponents of the network's tangent dynamics toward
λ* = 0 so that gradients neither explode nor vanish; Liu et al. use it as pre-training
("pre-flossing") before bio-plausible learning, with the recurrence detached so that the
update stays local.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._types import Array, Float, Key
from ..models import AbstractCell
from ._lyapunov import _spectrum

Inputs = Float[Array, "T n_in"] | Float[Array, "B T n_in"]


def flossing_loss(
    cell: AbstractCell,
    inputs: Inputs,
    k: int,
    *,
    key: Key,
    target: float = 0.0,
    local: bool = False,
    transient: int = 0,
    reortho_every: int = 1,
    h0: Float[Array, " N"] | Float[Array, "B N"] | None = None,
) -> Float[Array, ""]:
    """L_floss = mean_i (λ_i − λ*)² over the k leading exponents (and over trials if batched).

    The exponents are those of `lyapunov_spectrum` (per step). Liu et al. write the sum
    Σ_i λ_i²; the mean differs by the constant factor k.

    `local=False`: the exact gradient of L_floss. λ depends on θ through each one-step
    Jacobian J_t = ∂f(h_{t-1}, x_t; θ)/∂h both explicitly and through the state h_{t-1}(θ).

    `local=True` (Liu et al., Appendix B: `hidden.detach()` also during pre-flossing): every
    step sees the state as a constant, h_{t-1} → sg(h_{t-1}), so

        ∂L/∂θ = Σ_t (∂L/∂J_t) · ∂J_t/∂θ |_{h_{t-1} fixed}

    — only the explicit parameter dependence of each one-step Jacobian counts (for the leaky
    RNN, J_t = (1 − a) I + a W_rec diag φ'(h_{t-1}) gives a gradient in W_rec alone). The
    tangent basis Q and the QR factors are *not* detached: ∂L/∂J_t is the exact sensitivity
    of the exponents to that step's Jacobian, as in PyTorch with only the hidden state
    detached. The forward values (λ, L) are identical to `local=False`.
    """
    lam = _spectrum(cell, inputs, k, key=key, transient=transient, reortho_every=reortho_every,
                    h0=h0, detach_state=local)
    return jnp.mean((lam - target) ** 2)


def floss(
    cell: AbstractCell,
    inputs: Inputs | Callable[[Key], Inputs],
    *,
    steps: int,
    lr: float,
    k: int,
    key: Key,
    target: float = 0.0,
    local: bool = False,
    transient: int = 0,
    reortho_every: int = 1,
) -> tuple[AbstractCell, Float[Array, " steps"]]:
    """Pre-flossing: `steps` Adam iterations on `flossing_loss`; returns (cell, loss history).

    `inputs` is a fixed array or a pure function `key -> inputs` (e.g.
    `lambda k: sample_batch(task, 32, key=k).inputs`) drawn afresh at every iteration. Each
    iteration also draws a fresh initial basis. Only the fields in `cell.trainable` move
    (`cell.mask_grads`); `history[i]` is the loss before update i.

    With `local=True` the gradient cannot see that larger recurrent weights saturate the
    state (φ' → 0, which lowers the exponents), so long runs at a large lr can overshoot
    into saturation and the loss climbs back (seen on a 10-unit tanh net: lr 0.03 for 60
    steps; lr 0.01 for 40 steps is fine). Watch `history`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(params)
    draw = inputs if callable(inputs) else (lambda _: inputs)

    @eqx.filter_jit
    def run(params, opt_state, key):
        def step(carry, step_key):
            params, opt_state = carry
            k_data, k_basis = jax.random.split(step_key)

            def loss_fn(p):
                return flossing_loss(eqx.combine(p, static), draw(k_data), k, key=k_basis,
                                     target=target, local=local, transient=transient,
                                     reortho_every=reortho_every)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            grads = eqx.combine(params, static).mask_grads(eqx.combine(grads, static))
            grads = eqx.filter(grads, eqx.is_inexact_array)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), history = jax.lax.scan(step, (params, opt_state),
                                                    jax.random.split(key, steps))
        return params, history

    params, history = run(params, opt_state, key)
    return eqx.combine(params, static), history
