"""
# Quickstart: EF vs TF vs BPTT, and the store in pandas

Train three ensembles on the delayed-XOR task: plain BPTT, teacher-forced BPTT and error-forced
BPTT, each with a few seeds, then read what was recorded in `runs.sqlite` with pandas.

The settings are tiny (a 10-step delay, 24 units, 80 epochs, learning rate 3e-3) so that the page builds in
seconds; the README's main job (`errorforcing compare`) runs the reference protocol.
"""

# %%
# ## One forced rollout and one gradient
#
# A task samples trials from a key; a cell is one unbatched step; a forcing acts on the state
# after every step; a learning rule owns the time loop and returns a gradient with the cell's
# pytree structure.

import tempfile

import jax
import pandas as pd

import errorforcing as ef

key = jax.random.key(0)
task = ef.tasks.DelayedXOR(delay=10)
cell = ef.models.LeakyRNN(n_in=task.n_in, n_rec=24, n_out=task.n_out, key=key)
force = ef.forcing.ErrorForcing(alpha=0.5)
trials = ef.tasks.sample_batch(task, 16, key=key)
states, outputs = ef.simulate(cell, trials, force)
loss, grads, aux = ef.rules.BPTT().value_and_grad(cell, force, trials, key=key)
print("states", states.shape, "outputs", outputs.shape, "loss", float(loss))
print("gradient of W_rec:", grads.W_rec.shape)

# %%
# ## Three ensembles
#
# `ef.train` trains all members of a config (seeds × α × lr) in one compiled program and
# records them in `OUT/runs.sqlite`. Here: 4 seeds per method, two α values for the forced
# methods.

out = tempfile.mkdtemp(prefix="errorforcing-quickstart-")
common = dict(task={"kind": "delayed-xor", "delay": 10}, model={"hidden": 24}, seeds=4, epochs=80, optim={"lr": [3e-3]},
              train_trials=128, val_trials=32, test_trials=32, out=out)
methods = {
    "BPTT": {"kind": "none"},
    "TF-BPTT": {"kind": "tf", "alpha": [0.1, 0.5]},
    "EF-BPTT": {"kind": "ef", "alpha": [0.1, 0.5]},
}
results = {name: ef.train(ef.TrainConfig(forcing=forcing, **common)) for name, forcing in methods.items()}
for name, result in results.items():
    print(f"{name:8s} fraction learned {result.fraction_learned:.2f}  run {result.run_id}")

# %%
# ## The store, in pandas
#
# `RunStore.members()` returns one dict per member with its curves parsed; a DataFrame makes
# the summary one line.

store = ef.store.RunStore(out)
df = pd.DataFrame(store.members())
print(df.columns.tolist())
summary = (df.groupby(["forcing", "alpha"])
             .agg(n=("seed", "size"), learned=("converged", "sum"),
                  median_val_loss=("final_val_loss", "median"), median_test_loss=("test_loss", "median")))
print(summary)

# %%
# ## Learning curves
#
# Every member's per-epoch validation loss (unforced) is in its `curves`.

import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.5))
colors = {"none": "C0", "tf": "C1", "ef": "C2"}
for _, row in df.iterrows():
    ax.semilogy(row["curves"]["val_loss"], color=colors[row["forcing"]], alpha=0.6)
for kind, c in colors.items():
    ax.plot([], [], color=c, label={"none": "BPTT", "tf": "TF-BPTT", "ef": "EF-BPTT"}[kind])
ax.axhline(type(task).threshold, color="k", ls=":", lw=1, label="threshold")
ax.set(xlabel="epoch", ylabel="validation loss (unforced)", title="delayed XOR, delay 10")
ax.legend()
fig.tight_layout()

# %%
# At a 10-step delay plain BPTT learns too: the gradient does not have to cross a long delay.
# The advantage of error forcing the paper reports is at long delays with sparse feedback
# (the README's main job uses a 400-step delay); this page only shows the workflow, and a few
# seeds at one short delay support no comparison of the methods.
