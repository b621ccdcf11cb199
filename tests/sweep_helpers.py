"""The tiny sweep the sweep and Ray tests run."""

# Jobs differ only in host-side fields (threshold), so they share one compiled program; with
# JAX's persistent compilation cache every job after the first costs a fraction of a second.
TINY = """
name = "tiny"
seeds = 2
[base]
epochs = 25
batch = 16
train_trials = 32
val_trials = 8
patience = 3
task.name = "delayed-xor"
task.delay = 4
model.hidden = 6
forcing.kind = "ef"
forcing.alpha = [0.2, 1.0]
[grid]
threshold = [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
"""
N_JOBS = 6
