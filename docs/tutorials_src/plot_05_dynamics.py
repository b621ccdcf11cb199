"""
# Dynamics: Lyapunov spectrum, fixed points and PCA

The analysis functions take any cell and plain arrays, and do not depend on the trainer:

- `ef.analysis.lyapunov_spectrum(cell, inputs, k, key=...)`: the k leading Lyapunov exponents
  (per step) along the trajectory the inputs drive;
- `ef.analysis.find_fixed_points(cell, x, initial_states)`: the fixed points of h ↦ cell(h, x)
  under a constant input x, with their linearisation;
- `ef.analysis.pca(states, k)`: principal axes and participation ratio.

Here: the spectrum of random networks across the gain g, then a small network trained on
delayed XOR with EF-BPTT, its fixed points under the delay-period input and its trajectories
in PC space.
"""

# %%
# ## Lyapunov spectrum vs gain
#
# A random leaky RNN becomes chaotic (λ_max > 0) as its gain g grows past ≈ 1.

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import errorforcing as ef

key = jax.random.key(0)
task = ef.tasks.DelayedXOR(delay=10)
N = 32
inputs = jnp.zeros((4, 1000, task.n_in))
spectrum = eqx.filter_jit(lambda cell, key, h0: ef.analysis.lyapunov_spectrum(cell, inputs, 8, key=key,
                                                                             transient=300, h0=h0))
gains = [0.5, 1.0, 1.5, 2.0, 3.0]
spectra = []
for g in gains:
    cell = ef.models.LeakyRNN(task.n_in, N, task.n_out, key=key, gain=g)
    h0 = jax.random.normal(jax.random.key(1), (4, N))
    spectra.append(np.asarray(spectrum(cell, jax.random.key(2), h0)).mean(0))
    print(f"g = {g}: λ_max = {spectra[-1][0]:+.4f} per step")

fig, ax = plt.subplots(figsize=(5, 3.5))
for g, lam in zip(gains, spectra):
    ax.plot(range(1, 9), lam, "o-", ms=3, label=f"g = {g}")
ax.axhline(0, color="k", lw=0.8)
ax.set(xlabel="index i", ylabel="λ_i (per step, dt/τ = 0.1)", title="leading Lyapunov exponents, random networks")
ax.legend(fontsize=7)
fig.tight_layout()

# %%
# ## A trained network
#
# EF-BPTT with Adam on fresh delayed-XOR batches, a few hundred steps (the trainer,
# `ef.train`, does the same with ensembles, validation and the store; `ef.load_run` gives the
# stored networks back for exactly this kind of analysis).

cell = ef.models.LeakyRNN(task.n_in, N, task.n_out, key=key)
force, rule, optimizer = ef.forcing.ErrorForcing(alpha=0.5), ef.rules.BPTT(), optax.adam(1e-2)


@eqx.filter_jit
def train_step(cell, opt_state, key):
    trials = ef.tasks.sample_batch(task, 64, key=key)
    loss, grads, _ = rule.value_and_grad(cell, force, trials, key=key)
    params = eqx.filter(cell, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(eqx.filter(grads, eqx.is_inexact_array), opt_state, params)
    return eqx.apply_updates(cell, updates), opt_state, loss


opt_state = optimizer.init(eqx.filter(cell, eqx.is_inexact_array))
for step in range(400):
    cell, opt_state, loss = train_step(cell, opt_state, jax.random.fold_in(key, step))

test = ef.tasks.sample_batch(task, 64, key=jax.random.key(99))
_, outputs = ef.simulate(cell, test)                       # unforced
print("unforced test loss", float(ef.rules.masked_mse(outputs, test.targets, test.mask)))
print("fraction of trials with no sign error", float(ef.rules.sign_correct(outputs, test.targets, test.mask).mean()))

# %%
# ## Fixed points under the delay input
#
# Initial states come from the network's own unforced trajectories, plus a little noise.

delay_input = jnp.array([0.0, 0.0, 1.0])
h0 = ef.analysis.sample_states(cell, test, 256, key=jax.random.key(1), noise=0.01)
fps = ef.analysis.find_fixed_points(cell, delay_input, h0)
print(f"{len(fps)} fixed points from {fps.n_initial} initial states ({fps.n_converged} converged)")
for s, stable, n_unstable, lam in zip(fps.speeds, fps.stable, fps.n_unstable, fps.eigenvalues):
    print(f"  q = {s:.1e}  {'stable' if stable else f'{n_unstable} unstable direction(s)'}  |λ|max = {abs(lam[0]):.3f}")

# %%
# ## Trajectories in PC space
#
# Condition-averaged unforced trajectories of the four (s1, s2) conditions, projected on the
# first two principal axes of all states, with the fixed points (filled: stable).

states = ef.analysis.unforced_states(cell, test.inputs)
pc = ef.analysis.pca(states, 3)
labels, names = ef.analysis.condition_labels(test.info)
averages = ef.analysis.condition_average(np.asarray(states), labels)
print("participation ratio", round(float(pc.participation_ratio), 2))

fig, (ax, ax_eig) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.4, 1]})
for c, name in enumerate(names):
    z = pc.project(averages[c])
    ax.plot(z[:, 0], z[:, 1], label=name)
    ax.plot(z[-1, 0], z[-1, 1], "k.", ms=4)
z = pc.project(fps.states)
ax.scatter(z[fps.stable, 0], z[fps.stable, 1], c="k", s=40, zorder=5, label="stable fixed point")
ax.scatter(z[~fps.stable, 0], z[~fps.stable, 1], facecolors="white", edgecolors="k", s=40, zorder=5,
           label="unstable fixed point")
ax.set(xlabel="PC 1", ylabel="PC 2", title="delayed XOR, EF-BPTT (delay input)")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
ax_eig.plot(circle.real, circle.imag, "k", lw=0.8)
for i, lam in enumerate(fps.eigenvalues):
    ax_eig.plot(lam.real, lam.imag, ".", ms=5, label=f"fixed point {i}")
ax_eig.legend(fontsize=7)
ax_eig.set(xlabel="Re λ", ylabel="Im λ", title="eigenvalues of each fixed point's Jacobian", aspect="equal")
fig.tight_layout()
