"""
# Local rules vs exact gradients

e-prop and RFLO replace BPTT's backward pass with forward eligibility traces and a learning
signal sent back through a feedback matrix B (W_outᵀ, "symmetric", or a fixed random matrix).
How close is their update to the exact gradient, and does training make it closer?

`ef.rules.gradient_alignment(a, b)` is the cosine between two gradients, per parameter group
and over all of them. Here we train one error-forced network with exact BPTT and, at every
few steps, measure the cosine between each local rule's gradient and BPTT's on the same batch
and forced trajectory. (During training, `--log-alignment` records the same cosine per epoch
in the store, against the rule that is actually training.)
"""

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import optax

import errorforcing as ef

key = jax.random.key(0)
task = ef.tasks.DelayedXOR(delay=10)
cell = ef.models.LeakyRNN(task.n_in, 32, task.n_out, key=key)
force = ef.forcing.ErrorForcing(alpha=0.5)
feedback_key = jax.random.key(1)
local_rules = {
    "e-prop, B = W_outᵀ": ef.rules.EProp(),
    "e-prop, random B": ef.rules.EProp(feedback="random", key=feedback_key),
    "RFLO, B = W_outᵀ": ef.rules.RFLO(),
    "RFLO, random B": ef.rules.RFLO(feedback="random", key=feedback_key),
}
exact = ef.rules.BPTT()
optimizer = optax.adam(3e-3)


@eqx.filter_jit
def train_step(cell, opt_state, key):
    trials = ef.tasks.sample_batch(task, 32, key=key)
    loss, grads, _ = exact.value_and_grad(cell, force, trials, key=key)
    params = eqx.filter(cell, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(eqx.filter(grads, eqx.is_inexact_array), opt_state, params)
    return eqx.apply_updates(cell, updates), opt_state, loss


@eqx.filter_jit
def alignments(cell, key):
    trials = ef.tasks.sample_batch(task, 32, key=key)
    _, g_exact, _ = exact.value_and_grad(cell, force, trials, key=key)
    out = {}
    for name, rule in local_rules.items():
        _, g, _ = rule.value_and_grad(cell, force, trials, key=key)
        cos = ef.rules.gradient_alignment(g, g_exact)
        out[name] = (cos["all"], cos["W_rec"])
    return out


# %%
# ## Train with BPTT, measure every 10 steps

opt_state = optimizer.init(eqx.filter(cell, eqx.is_inexact_array))
steps, losses, curves = [], [], {name: ([], []) for name in local_rules}
for step in range(151):
    k_train, k_measure = jax.random.split(jax.random.fold_in(key, step))
    if step % 10 == 0:
        for name, (c_all, c_rec) in alignments(cell, k_measure).items():
            curves[name][0].append(float(c_all))
            curves[name][1].append(float(c_rec))
        steps.append(step)
    cell, opt_state, loss = train_step(cell, opt_state, k_train)
    losses.append(float(loss))

for name, (c_all, c_rec) in curves.items():
    print(f"{name:20s} cos(all) first {c_all[0]:+.3f}  last {c_all[-1]:+.3f}   cos(W_rec) last {c_rec[-1]:+.3f}")

# %%
# ## Alignment curves

fig, (ax_loss, ax_all, ax_rec) = plt.subplots(1, 3, figsize=(12, 3.5))
ax_loss.semilogy(losses)
ax_loss.set(xlabel="BPTT step", ylabel="training loss (forced)", title="EF-BPTT, delayed XOR (delay 10)")
for name, (c_all, c_rec) in curves.items():
    style = "-" if "W_out" in name else "--"
    ax_all.plot(steps, c_all, style, marker="o", ms=3, label=name)
    ax_rec.plot(steps, c_rec, style, marker="o", ms=3, label=name)
ax_all.set(xlabel="BPTT step", ylabel="cos(rule, BPTT)", title="all parameters", ylim=(-0.2, 1.05))
ax_rec.set(xlabel="BPTT step", ylabel="cos(rule, BPTT)", title="W_rec only", ylim=(-0.2, 1.05))
ax_rec.legend(fontsize=7)
fig.tight_layout()

# %%
# The readout's gradient is exact for both rules (its update needs no trace), so "all
# parameters" is dominated by it when W_out's gradient is large; the W_rec panel is the
# approximation that distinguishes the rules. Random B learns through feedback alignment:
# its W_rec cosine starts near zero.
