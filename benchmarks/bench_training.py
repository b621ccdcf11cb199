"""Training benchmark of the reference configuration (issue 2): EF-BPTT on delayed XOR, N = 50,
batch 128, delay 1000 (T = 1045), 4 batches per epoch, Adam; 1 and 20 members; seconds per
member-epoch (target ≤ 0.15 s with 20 members), peak memory (≤ 3 GiB), GFLOP/s against numpy
matmul floors of the same shapes measured in the same run. Same as `errorforcing bench`.

    python benchmarks/bench_training.py [--quick]
"""

import json
import sys

from errorforcing.bench import run_benchmarks

if __name__ == "__main__":
    results = run_benchmarks(quick="--quick" in sys.argv)
    print(json.dumps({k: v for k, v in results.items() if k != "extra"}, indent=2))
