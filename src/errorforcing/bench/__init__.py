"""The benchmarks behind `errorforcing bench`, in one place.

`run_benchmarks` measures the reference training configuration (`_training`) and then every
section of `SECTIONS` in order, each under its name in the results' "extra"; `run_scaling` is
`bench --scaling`. A section that raises stops the run with `BenchSectionFailed` naming it: a
broken benchmark is an error, never a silently missing row.

A new benchmark is a function `quick -> dict` (JSON-serialisable) and one entry in `SECTIONS`.
"""

from __future__ import annotations

from typing import Any, Callable

from ._analysis import bench_fixed_points, bench_lyapunov
from ._rules import bench_local_rules, bench_rtrl, bench_rules, bench_zoo
from ._training import (REFERENCE, SCALING_AXES, device_info, epoch_program_memory, measure_training,
                        numpy_matmul_gflops, run_scaling, run_training, scaling_configs, show_benchmarks)

__all__ = ["SECTIONS", "BenchSectionFailed", "run_benchmarks", "run_sections", "run_training", "run_scaling",
           "scaling_configs", "REFERENCE", "SCALING_AXES", "device_info", "epoch_program_memory",
           "measure_training", "numpy_matmul_gflops", "bench_lyapunov", "bench_fixed_points", "bench_rules",
           "bench_rtrl", "bench_local_rules", "bench_zoo"]

# name -> the section's measurement, called with `quick`; run in this order
SECTIONS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "lyapunov": lambda quick: bench_lyapunov(),
    "fixed_points": lambda quick: bench_fixed_points(baseline_states=16 if quick else 64),
    "rules": lambda quick: bench_rules(quick=quick),
}


class BenchSectionFailed(RuntimeError):
    """A benchmark section raised; the message names the section and its error."""


def run_sections(quick: bool = False, sections: dict[str, Callable[[bool], dict[str, Any]]] | None = None) -> dict:
    """{name: result} of every section (`SECTIONS` by default), in order; the first that raises
    stops the run with `BenchSectionFailed` (its error chained)."""
    results = {}
    for name, section in (SECTIONS if sections is None else sections).items():
        try:
            results[name] = section(quick)
        except Exception as e:
            raise BenchSectionFailed(f"bench section {name!r} failed: {type(e).__name__}: {e}") from e
    return results


def run_benchmarks(quick: bool = False, *, show: bool = True) -> dict:
    """`errorforcing bench`: the training benchmarks, then every section under "extra"."""
    results = run_training(quick)
    results["extra"] = run_sections(quick)
    if show:
        show_benchmarks(results)
    return results
