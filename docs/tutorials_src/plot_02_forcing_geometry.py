r"""
# The forcing family, geometrically

The Error Forcing paper's Figure 1 explains the difference between no forcing, teacher forcing
and error forcing with a network of **two units and one output**. Every state on the line

$$\{h : W_{out} h + b_{out} = y^*\}$$

(the *decoder manifold*) reads out the target. After each step,

- **no forcing** leaves the state where the dynamics put it: $\tilde h_t = h_t$;
- **teacher forcing** (α = 1) replaces it with the *minimum-norm* state on that line,
  $\tilde h_t = W^+ (y^* - b_{out})$, the same point at every step;
- **error forcing** (α = 1) moves it *orthogonally* onto the line,
  $\tilde h_t = h_t + W^+ e_t$ with $e_t = y^*_t - y_t$, so the component along the line (the
  network's own exploration of state space) is kept.

Every trajectory below is computed by `ef.simulate` with the library's forcing classes; nothing
is drawn by hand except the line and the teacher state.
"""

# %%
# ## A two-unit network and a constant target
#
# A leaky RNN with N = 2 whose recurrent weights rotate and expand the state, one output,
# and a trial whose target is the constant y* = 0.5 on every step (mask 1 everywhere).

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import warnings

import errorforcing as ef

jax.config.update("jax_enable_x64", True)
warnings.filterwarnings("ignore", category=DeprecationWarning)  # matplotlib's mathtext on a newer pyparsing

cell = ef.models.LeakyRNN(n_in=1, n_rec=2, n_out=1, key=jax.random.key(0), tau=2.0, dtype=jnp.float64)
theta, gain = 0.6, 2.0
W_rec = gain * jnp.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
cell = eqx.tree_at(lambda c: (c.W_rec, c.W_in, c.b, c.W_out, c.b_out), cell,
                   (W_rec, jnp.array([[0.3], [-0.2]]), jnp.zeros(2), jnp.array([[1.0, 0.6]]), jnp.zeros(1)))

T, y_star = 12, 0.5
trials = ef.tasks.Trials(inputs=jnp.ones((1, T, 1)), targets=jnp.full((1, T, 1), y_star),
                         mask=jnp.ones((1, T, 1)), info={})

forcings = {
    "(a) no forcing": ef.forcing.NoForcing(),
    "(b) teacher forcing, α = 1": ef.forcing.TeacherForcing(alpha=1.0),
    "(c) error forcing, α = 1": ef.forcing.ErrorForcing(alpha=1.0),
}

# %%
# ## Where each step lands
#
# `ef.simulate` returns the *forced* states `h̃_t`; the state a step produces before forcing is
# `h_t = cell(h̃_{t-1}, x_t)`, which we recompute to draw the forcing as an arrow `h_t → h̃_t`.

W_out = np.asarray(cell.W_out)
teacher = np.asarray(ef.forcing.readout_pinv(cell.W_out, 0.0) @ jnp.array([y_star]))  # W⁺ y*

fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharex=True, sharey=True)
line_x = np.linspace(-1.5, 1.5, 2)
for ax, (title, forcing) in zip(axes, forcings.items()):
    forced, outputs = ef.simulate(cell, trials, forcing)
    forced = np.asarray(forced[0])
    previous = np.vstack([np.zeros(2), forced[:-1]])
    raw = np.asarray(jax.vmap(cell)(jnp.asarray(previous), trials.inputs[0]))
    ax.plot(line_x, (y_star - W_out[0, 0] * line_x) / W_out[0, 1], color="c", lw=2, label="decoder manifold W_out h = y*")
    for t in range(T):
        ax.annotate("", raw[t], previous[t], arrowprops=dict(arrowstyle="->", color="0.4", lw=1))
        if not np.allclose(raw[t], forced[t]):
            ax.annotate("", forced[t], raw[t], arrowprops=dict(arrowstyle="->", color="C3", lw=1.2))
    ax.plot(*raw.T, "o", color="0.4", ms=3)
    ax.plot(*forced.T, "o", color="C3", ms=4)
    ax.plot(*teacher, "o", mfc="white", mec="k", ms=9, zorder=5, label="teacher state W⁺ y*")
    ax.set(title=title, xlabel="$h_1$", xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal")
axes[0].set_ylabel("$h_2$")
axes[0].legend(loc="lower left", fontsize=7)
fig.tight_layout()

# %%
# Grey arrows are the network's own steps, red arrows the forcing. Under teacher forcing every
# red arrow ends at the white circle: the network restarts from the same state at every step.
# Under error forcing each arrow is orthogonal to the cyan line, and the forced states spread
# along it.
#
# ## Checking the geometry numerically
#
# The EF correction W⁺ e_t is orthogonal to the manifold (parallel to W_outᵀ), and after an
# α = 1 forcing the readout is on target for every forcing; the TF states are all the same point.

for title, forcing in list(forcings.items())[1:]:
    forced = np.asarray(ef.simulate(cell, trials, forcing)[0][0])
    print(title, "| readout after forcing:", np.round(forced @ W_out.T + np.asarray(cell.b_out), 6).ravel()[:4],
          "| spread of forced states:", np.round(forced.std(axis=0), 4))

forced = np.asarray(ef.simulate(cell, trials, forcings["(c) error forcing, α = 1"])[0][0])
previous = np.vstack([np.zeros(2), forced[:-1]])
raw = np.asarray(jax.vmap(cell)(jnp.asarray(previous), trials.inputs[0]))
corrections = forced - raw
direction = W_out[0] / np.linalg.norm(W_out[0])
cosines = np.abs(corrections @ direction) / np.linalg.norm(corrections, axis=1)
print("|cos(EF correction, W_outᵀ)| per step:", np.round(cosines, 6))

# %%
# ## Partial forcing and the Kalman variant
#
# With α < 1 the correction is a fraction of the way to the manifold. Kalman (stochastic)
# error forcing replaces W⁺ with W_outᵀ (W_out W_outᵀ + σ_o²/σ² I)⁻¹: for equal noise the step
# is shorter than EF's.

fig, ax = plt.subplots(figsize=(5, 4))
ax.plot(line_x, (y_star - W_out[0, 0] * line_x) / W_out[0, 1], color="c", lw=2)
for alpha, color in [(0.25, "C0"), (0.5, "C1"), (1.0, "C3")]:
    forced = np.asarray(ef.simulate(cell, trials, ef.forcing.ErrorForcing(alpha=alpha))[0][0])
    ax.plot(*np.vstack([np.zeros(2), forced]).T, "o-", ms=3, color=color, label=f"EF α = {alpha}")
kalman = ef.forcing.KalmanErrorForcing(alpha=1.0, process_noise=1.0, obs_noise=1.0)
forced = np.asarray(ef.simulate(cell, trials, kalman)[0][0])
ax.plot(*np.vstack([np.zeros(2), forced]).T, "s--", ms=3, color="C4", label="Kalman EF, σ_o = σ")
ax.set(xlabel="$h_1$", ylabel="$h_2$", aspect="equal", xlim=(-1.5, 1.5), ylim=(-1.5, 1.5),
       title="forced trajectories from h = 0")
ax.legend(fontsize=7)
fig.tight_layout()
