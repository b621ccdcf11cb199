"""Fixed-point finder benchmark: N = 50, 1,024 initial states, float32 (target ≤ 10 s), next to
a plain scipy.optimize.minimize loop over the same states, measured in the same run.

    python benchmarks/bench_fixed_points.py
"""

import json

from errorforcing.bench import bench_fixed_points

if __name__ == "__main__":
    r = bench_fixed_points()
    print(json.dumps(r, indent=2))
    print(f"find_fixed_points: {r['seconds']:.2f} s for {r['n_initial']} states "
          f"({r['n_converged']} converged, {r['n_fixed_points']} distinct); scipy BFGS loop: "
          f"{r['scipy_seconds']:.1f} s for {r['scipy_states']} of them → {r['scipy_seconds_all_states']:.0f} s "
          f"for all; {r['speedup_vs_scipy']:.0f}× faster")
