"""The README's Python API tour, runnable: `python examples/quickstart.py` (about a minute)."""

import jax

import errorforcing as ef

key = jax.random.key(0)
task = ef.tasks.DelayedXOR(delay=50)
cell = ef.models.LeakyRNN(n_in=task.n_in, n_rec=50, n_out=task.n_out, key=key)
force = ef.forcing.ErrorForcing(alpha=0.5)
rule = ef.rules.BPTT()
trials = ef.tasks.sample_batch(task, 128, key=key)
states, outputs = ef.simulate(cell, trials, force)
loss, grads, aux = rule.value_and_grad(cell, force, trials, key=key)
print(f"states {states.shape}, outputs {outputs.shape}, loss {float(loss):.4f}")

# the ensemble trainer: 4 seeds × 2 values of α in one compiled program
result = ef.train(ef.TrainConfig(task={"kind": "delayed-xor", "delay": 50},
                                 forcing={"kind": "ef", "alpha": [0.1, 0.5]}, seeds=4, epochs=40,
                                 out="errorforcing-runs/quickstart"))
for row in result.rows:
    print(row["seed"], row["alpha"], "learned" if row["converged"] else "not yet",
          row["converged_epoch"], round(row["final_val_loss"], 4))
print("fraction learned:", result.fraction_learned)
