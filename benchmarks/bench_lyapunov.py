"""Lyapunov spectrum benchmark: k = 50, N = 50, T = 1000, batch 32 (target ≤ 5 s).

    python benchmarks/bench_lyapunov.py
"""

import json

from errorforcing.bench import bench_lyapunov

if __name__ == "__main__":
    result = bench_lyapunov()
    print(json.dumps(result, indent=2))
    print(f"lyapunov_spectrum: {result['seconds']:.3f} s")
