"""UORO (Tallec & Ollivier 2018): an unbiased rank-1 estimate of the influence matrix."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._influence import AbstractInfluenceRule


class UORO(AbstractInfluenceRule):
    """Unbiased online recurrent optimisation (Tallec & Ollivier, ICLR 2018). The influence
    matrix M_t = ∂s_t/∂θ (`RTRL`) is carried as a rank-1 product M_t ≈ s̃_t θ̃_tᵀ:

        ν ~ uniform{±1}^S (fresh each step and trial, from `value_and_grad`'s key)
        s̃_t = ρ_0 J_t s̃_{t-1} + ρ_1 ν,        θ̃_t = θ̃_{t-1} / ρ_0 + (νᵀ ∂̄s_t/∂θ) / ρ_1
        ρ_0 = √((‖θ̃_{t-1}‖ + ε) / (‖J_t s̃_{t-1}‖ + ε)),   ρ_1 = √((‖νᵀ ∂̄s_t/∂θ‖ + ε) / (‖ν‖ + ε))

    (the variance-minimising scalings of their Prop. 1), and the gradient estimate of step t is
    ((∂ℓ_t/∂s_{t-1}) s̃_{t-1}) θ̃_{t-1} + ∂̄ℓ_t/∂θ. E[ννᵀ] = I and ρ_1(ν) = ρ_1(-ν) make
    E[s̃_t θ̃_tᵀ] = J_t s̃_{t-1} θ̃_{t-1}ᵀ + ∂̄s_t/∂θ, so every gradient is unbiased. M_0 is
    estimated as ν (νᵀ M_0). Cost per step and trial: one jvp and two vjps of the forced step,
    O(N² + P), i.e. O(N²). The forced step's Jacobians are exact (autodiff of `forced_step`),
    so it works under every forcing.

    `online=True` is real-time UORO (their Algorithm 1): θ is changed after every step by the
    per-step optimizer (`AbstractInfluenceRule`), s̃ and θ̃ carried on across the changes.
    """

    eps: float = 1e-7
    online: bool = eqx.field(default=False, static=True)
    lr: float | jax.Array | None = None
    optimizer: Callable[..., optax.GradientTransformation] | None = eqx.field(default=None, static=True)

    def init_estimate(self, ctx, prepared, M0, key):
        nu = jax.random.rademacher(key, (ctx.n_state,), M0.dtype)
        return nu, nu @ M0

    def update(self, ctx, prepared, step, estimate, key):
        s_tilde, theta_tilde = estimate
        J_s, dloss_s = step.tangent(s_tilde)
        nu = jax.random.rademacher(key, (ctx.n_state,), s_tilde.dtype)
        zero_s, zero = jnp.zeros_like(s_tilde), jnp.zeros((), s_tilde.dtype)
        nu_direct, dloss_direct = jax.vmap(step.pullback)(jnp.stack([nu, zero_s]), jnp.stack([zero, zero + 1]))
        g = dloss_s * theta_tilde + dloss_direct
        rho0 = jnp.sqrt((jnp.linalg.norm(theta_tilde) + self.eps) / (jnp.linalg.norm(J_s) + self.eps))
        rho1 = jnp.sqrt((jnp.linalg.norm(nu_direct) + self.eps) / (jnp.linalg.norm(nu) + self.eps))
        return (rho0 * J_s + rho1 * nu, theta_tilde / rho0 + nu_direct / rho1), g
