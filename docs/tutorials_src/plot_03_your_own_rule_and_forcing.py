r"""
# Your own learning rule and your own forcing

A learning rule is an `AbstractLearningRule` with one method, `value_and_grad`; a forcing is an
`AbstractForcing` with one method, `__call__`. Register each under a name in the experiment
registry (`errorforcing.experiments.RULES`, `errorforcing.experiments.FORCINGS`) and every
config, sweep and CLI command accepts the name, with the same validation, ensembles and store
as the built-in ones.

This page writes

- **weight perturbation** (a forward-only rule: the loss difference of a randomly perturbed
  network, times the perturbation), and
- **clipped error forcing** (error forcing whose correction is never longer than `max_norm`),

registers both, and runs them through the `errorforcing` command line.
"""

# %%
# ## A learning rule in ~30 lines
#
# `value_and_grad(cell, forcing, trials, *, key, objective)` returns the loss, a gradient with
# the cell's pytree structure (it goes straight to optax) and a dict of diagnostics. The key is
# derived by the trainer from the member's own seed and the batch, so the rule's noise is
# reproducible and independent across members.

import equinox as eqx
import jax
import jax.numpy as jnp

import errorforcing as ef


class WeightPerturbation(ef.rules.AbstractLearningRule):
    """Weight perturbation (e.g. Jabri & Flower 1992; Werfel et al. 2005):

        g = (1/D) Σ_d [L(θ + σ ξ_d) - L(θ)] ξ_d / σ,    ξ_d ~ N(0, I)

    an unbiased (as σ → 0) estimate of ∇L from D + 1 forced rollouts and no backward pass.
    """

    sigma: float = 1e-3
    directions: int = 8

    def value_and_grad(self, cell, forcing, trials, *, key, objective=ef.rules.Objective()):
        params, static = eqx.partition(cell, eqx.is_inexact_array)

        def loss(p):
            c = eqx.combine(p, static)
            states, outputs = ef.simulate(c, trials, forcing)
            return objective(c, states, outputs, trials)

        base = loss(params)
        leaves, treedef = jax.tree.flatten(params)

        def one(k):
            xi = jax.tree.unflatten(treedef, [jax.random.normal(k_, x.shape, x.dtype)
                                              for k_, x in zip(jax.random.split(k, len(leaves)), leaves)])
            delta = loss(jax.tree.map(lambda p, x: p + self.sigma * x, params, xi)) - base
            return jax.tree.map(lambda x: delta / self.sigma * x, xi)

        grads = jax.tree.map(lambda g: g.mean(0), jax.vmap(one)(jax.random.split(key, self.directions)))
        return base, ef.models.frozen_grads(eqx.combine(grads, static), cell), {}


# %%
# ## A forcing in ~30 lines
#
# `__call__(h, y, target, mask, cell, carry)` runs after every step of a training rollout and
# returns the forced state h̃_t and the carry (`init(cell)` makes the first carry; here none).
# The mask gates the correction, as in the built-in forcings: `forcing_strength` is
# c_t = α max_k m_tk.


class ClippedErrorForcing(ef.forcing.AbstractForcing):
    """Error forcing with a bounded correction:

        h̃_t = h_t + c_t sg(min(1, r / ‖W⁺ e_t‖) W⁺ e_t),   e_t = (y*_t - y_t) ⊙ m_t

    with r = `max_norm`; r → ∞ is error forcing (eq. 4 of the EF paper).
    """

    alpha: float | jax.Array = 0.5
    max_norm: float = 1.0

    def __call__(self, h, y, target, mask, cell, carry):
        correction = ef.forcing.readout_pinv(cell.W_out, 1e-7) @ ((target - y) * mask)
        norm = jnp.linalg.norm(correction)
        correction = correction * jnp.minimum(1.0, self.max_norm / jnp.maximum(norm, 1e-12))
        c = ef.forcing.forcing_strength(self.alpha, mask)
        return h + c * jax.lax.stop_gradient(correction), carry


# %%
# ## Check them before registering
#
# The rule's estimate should point the way BPTT's exact gradient does (cosine > 0), and the
# forcing's correction should never exceed `max_norm`.

key = jax.random.key(0)
task = ef.tasks.DelayedXOR(delay=5)
cell = ef.models.LeakyRNN(task.n_in, 16, task.n_out, key=key)
trials = ef.tasks.sample_batch(task, 32, key=key)
force = ClippedErrorForcing(alpha=1.0, max_norm=0.05)

_, g_wp, _ = WeightPerturbation(directions=64).value_and_grad(cell, force, trials, key=key)
_, g_bptt, _ = ef.rules.BPTT().value_and_grad(cell, force, trials, key=key)
print({k: round(float(v), 3) for k, v in ef.rules.gradient_alignment(g_wp, g_bptt).items()})

states, outputs = ef.simulate(cell, trials)                 # unforced states h_t, all trials and steps
corrected, _ = jax.vmap(jax.vmap(lambda h, y, target, mask: force(h, y, target, mask, cell, None)))(
    states, outputs, trials.targets, trials.mask)
norms = jnp.linalg.norm(corrected - states, axis=-1)
print(f"corrections: largest {float(norms.max()):.4f} (max_norm {force.max_norm}), "
      f"{int((norms > 0).sum())} of {norms.size} steps forced (the supervised ones)")

# %%
# ## Register
#
# A registry entry builds the object from its config section. A rule's builder gets
# `(rule_config, key)`; a forcing's gets `(forcing_config, alpha, cell, key)`, where α is one
# ensemble member's value. Settings a built-in config field does not cover go in the section's
# free `options` table (`rule.options`, `forcing.options`).
#
# The entry type is `errorforcing.experiments._registry.Entry`: the registries are public but
# the entry class is not exported, so this import reaches into a private module.

from errorforcing.experiments._registry import Entry

ef.experiments.RULES["weight-perturbation"] = Entry(
    lambda c, key: WeightPerturbation(**c.options), "weight perturbation (forward-only)")
ef.experiments.FORCINGS["clipped-ef"] = Entry(
    lambda c, alpha, cell, key: ClippedErrorForcing(alpha=alpha, **c.options), "error forcing, clipped correction")

# %%
# ## Run from the command line
#
# The `errorforcing` console script imports only the package, so a registration made in your
# own module has to happen in the process that runs the command. `errorforcing.cli.main` takes
# the command line as a list; a three-line launcher makes your names available in the shell:
#
# ```python
# # my_errorforcing.py
# import sys
# import my_rules                      # the classes and registry entries above
# from errorforcing.cli import main
# sys.exit(main())
# ```
#
# and then `python my_errorforcing.py train --rule weight-perturbation --forcing clipped-ef ...`.
# Here the same `main` runs in this process. A sweep with `--workers N` starts worker
# processes that import only errorforcing, so run sweeps of your own names with the default
# single-process executor.

import tempfile
import warnings

from errorforcing.cli import main

warnings.filterwarnings("ignore", category=DeprecationWarning)  # matplotlib's mathtext on a newer pyparsing

out = tempfile.mkdtemp(prefix="errorforcing-own-")
config = f"""
[rule]
kind = "weight-perturbation"
options = {{ sigma = 0.001, directions = 8 }}

[forcing]
kind = "clipped-ef"
options = {{ max_norm = 0.5 }}
"""
with open(f"{out}/own.toml", "w") as f:
    f.write(config)
code = main(["train", "--config", f"{out}/own.toml", "--task", "delayed-xor", "--delay", "5", "--hidden", "16",
             "--seeds", "2", "--alpha", "0.2,1.0", "--epochs", "3", "--batch", "32", "--out", out, "--json"])
print("exit code", code)

# %%
# The run is in the store like any other, under the registered names:

rows = ef.store.RunStore(out).members()
for r in rows:
    print(r["rule"], r["forcing"], r["alpha"], r["seed"], "val loss per epoch", [round(v, 3) for v in r["curves"]["val_loss"]])

# %%
# An unknown name, or an option the class does not take, is refused with one line and exit
# code 2, as for the built-in names:

print("exit code", main(["train", "--rule", "no-such-rule", "--out", out]))
