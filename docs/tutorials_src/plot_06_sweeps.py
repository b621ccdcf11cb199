"""
# Sweeps: a spec, resume after a kill, the report

A sweep is a TOML file, a base config plus a grid of overrides. `errorforcing sweep` expands it
into ensemble jobs (members that differ only in seed, α or learning rate share one compiled
job), runs every job not already done in the results directory and records each finished job
in one SQLite transaction. Kill it at any moment and run it again: finished jobs are kept, the
rest run. The full description is in [Sweeps, reports and reproductions](../sweeps.md).

Settings here are tiny (two jobs of a few epochs) so that the page builds quickly.
"""

# %%
# ## The spec and its job table

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from errorforcing.cli import main

warnings.filterwarnings("ignore", category=DeprecationWarning)  # matplotlib's mathtext on a newer pyparsing

out = Path(tempfile.mkdtemp(prefix="errorforcing-sweep-"))
spec = out / "xor.toml"
spec.write_text("""
name = "xor-tiny"
seeds = 2

[base]
epochs = 4
batch = 32
train_trials = 64
val_trials = 16
test_trials = 16
task.kind = "delayed-xor"
model.hidden = 16
forcing.kind = "ef"

[grid]
"task.delay" = [5, 10]
"forcing.alpha" = [0.1, 0.5]
""")
runs = out / "runs"
main(["sweep", str(spec), "--out", str(runs), "--dry-run"])

# %%
# Four grid points, two jobs: the α values of a delay are members of the same job.
#
# ## Kill the sweep after its first job
#
# The sweep runs in a separate process (as in a terminal); we kill it with SIGKILL as soon as
# the store records one finished job.

driver = subprocess.Popen([sys.executable, "-c", "from errorforcing.cli import entry; entry()",
                           "sweep", str(spec), "--out", str(runs)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.time() + 600
while time.time() < deadline and driver.poll() is None:
    if (runs / "runs.sqlite").exists():
        from errorforcing.store import RunStore

        if RunStore(runs, create=False).runs(status="done"):
            break
    time.sleep(0.2)
if driver.poll() is None:
    os.kill(driver.pid, signal.SIGKILL)
driver.wait()
print("driver exit status", driver.returncode, "(-9: killed)")
main(["status", str(runs)])

# %%
# ## Resume
#
# The same command again: the finished job is recognised by its id (a hash of its config) and
# skipped, and the one that was killed runs from scratch.

main(["sweep", str(spec), "--out", str(runs)])
main(["status", str(runs)])

# %%
# ## Report and export
#
# `errorforcing report DIR` writes figures, tables and a static `report.html`;
# `errorforcing export DIR --csv` one row per member. (`--no-dynamics` leaves out the fixed-point
# analysis of each method's best network, which these untrained networks do not warrant.)

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pandas as pd

main(["report", str(runs), "--no-dynamics", "--json"])
main(["export", str(runs), "--csv"])
print(pd.read_csv(runs / "members.csv")[["task", "forcing", "alpha", "seed", "epochs_run", "final_val_loss"]])

figure = sorted((runs / "report" / "figures").glob("*.png"))[0]
print("first report figure:", figure.name)
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.imshow(mpimg.imread(figure))
ax.axis("off")
fig.tight_layout()

# %%
# ## On a Ray cluster
#
# The same spec runs as Ray tasks (install the `ray` extra); the driver alone writes the
# store, and a job whose worker dies is retried:
#
# ```bash
# errorforcing sweep xor.toml --out runs/xor --executor ray                    # a local Ray instance
# errorforcing sweep xor.toml --out runs/xor --executor ray --address HOST:PORT  # a running cluster
# errorforcing sweep xor.toml --out runs/xor --executor local --workers 2       # a process pool
# ```
