"""`errorforcing bench`: the device it reports, the scaling grid (one axis at a time), XLA's
memory plan of the epoch program, the scaling figure, refused options, and its sections (every
one runs; one that raises fails the command, naming it)."""

import subprocess
import sys

import jax
import pytest

from errorforcing import bench as _bench
from errorforcing.bench import _training


def test_device_info_names_the_backend_jax_runs_on():
    info = _bench.device_info()
    assert info["platform"] == jax.default_backend()
    assert info["device_kind"] == jax.devices()[0].device_kind
    assert info["device_count"] == jax.device_count() >= 1
    line = _training._device_line(info)
    assert info["platform"] in line and ("host CPU" in line) == (info["platform"] != "cpu")


@pytest.mark.parametrize("quick", [False, True])
def test_scaling_grid_varies_one_axis_at_a_time(quick):
    configs = _bench.scaling_configs(quick)
    base = configs[0]
    assert base == dict(hidden=50, members=20, T=145 if quick else 1045)
    assert len(configs) == len({tuple(sorted(c.items())) for c in configs})  # no repeats
    for axis, values in _bench.SCALING_AXES.items():
        fixed = base if axis != "T" else dict(hidden=50, members=20)
        seen = sorted(c[axis] for c in configs if all(c[k] == v for k, v in fixed.items() if k != axis))
        assert seen == sorted(values), axis
    for c in configs:  # every configuration differs from the base in one axis at most
        assert sum(c[k] != base[k] for k in c) <= 1


def test_epoch_program_memory_grows_with_members_and_counts_every_shard():
    small = _bench.epoch_program_memory(2, hidden=8, delay=20)
    large = _bench.epoch_program_memory(8, hidden=8, delay=20)
    assert small["T"] == 65
    for m in (small, large):
        assert m["temp_gib"] > 0
        assert m["program_gib"] == pytest.approx(m["shards"] * m["per_shard_gib"])
        assert m["shards"] * m["shard_size"] >= m["members"]
    # more members per shard: a larger plan per shard (the per-member arrays are stacked)
    assert large["per_shard_gib"] > small["per_shard_gib"]


def test_scaling_figure_is_written(tmp_path):
    from errorforcing.plotting import plot_scaling

    rows = [c | dict(seconds_per_member_epoch=1e-3 * c["hidden"] * c["T"] / 145, peak_rss_gib=0.5 + c["members"] / 100)
            for c in _bench.scaling_configs(True)]
    path = tmp_path / "scaling.png"
    plot_scaling(dict(rows=rows, device=_bench.device_info()), str(path))
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("args, field", [(["--plot", "x.png"], "--plot: only with --scaling"),
                                         (["--scaling", "--plot", "x.txt"], "--plot: the figure must be")])
def test_bench_refuses_plot_options_that_do_not_apply(tmp_path, args, field):
    out = subprocess.run([sys.executable, "-m", "errorforcing.cli", "bench", *args], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 2
    assert field in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_sections_are_the_rules_and_analysis_benchmarks_in_order():
    assert list(_bench.SECTIONS) == ["lyapunov", "fixed_points", "rules"]


def test_sections_run_in_order_and_a_raising_one_is_an_error_naming_it():
    calls = []

    def ok(quick):
        calls.append(("ok", quick))
        return {"quick": quick}

    def broken(quick):
        import errorforcing_no_such_module  # noqa: F401  (the ImportError the old bench swallowed)

    assert _bench.run_sections(True, {"a": ok, "b": ok}) == {"a": {"quick": True}, "b": {"quick": True}}
    calls.clear()
    with pytest.raises(_bench.BenchSectionFailed, match="bench section 'b' failed: ModuleNotFoundError: "
                                                        "No module named 'errorforcing_no_such_module'") as info:
        _bench.run_sections(False, {"a": ok, "b": broken, "c": ok})
    assert calls == [("ok", False)]  # stopped at the broken section
    assert isinstance(info.value.__cause__, ImportError)


_BROKEN_SECTION = """
import sys
import errorforcing.bench as bench
from errorforcing.cli import entry

bench.run_training = lambda quick: {"training": [], "quick": quick}  # the slow part, not under test here
def boom(quick):
    import errorforcing_no_such_bench  # the ImportError the old bench swallowed
bench.SECTIONS["lyapunov"] = boom
sys.argv = ["errorforcing", "bench", "--quick", "--json"]
entry()
"""


def test_bench_exits_non_zero_naming_the_section_that_raised(tmp_path):
    out = subprocess.run([sys.executable, "-c", _BROKEN_SECTION], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert ("BenchSectionFailed: bench section 'lyapunov' failed: ModuleNotFoundError: No module named "
            "'errorforcing_no_such_bench'" in out.stderr.strip().splitlines()[-1])
    assert out.stdout == ""  # no partial results printed


def test_one_section_alone_refuses_an_unknown_name():
    out = subprocess.run([sys.executable, "-m", "errorforcing.bench", "no-such-section"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "invalid choice: 'no-such-section'" in out.stderr
    assert "lyapunov" in out.stderr and "zoo" in out.stderr and out.stdout == ""
