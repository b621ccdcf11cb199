"""`errorforcing bench`: the device it reports, the scaling grid (one axis at a time), XLA's
memory plan of the epoch program, the scaling figure, and refused options."""

import subprocess
import sys

import jax
import pytest

from errorforcing.experiments import _bench


def test_device_info_names_the_backend_jax_runs_on():
    info = _bench.device_info()
    assert info["platform"] == jax.default_backend()
    assert info["device_kind"] == jax.devices()[0].device_kind
    assert info["device_count"] == jax.device_count() >= 1
    line = _bench._device_line(info)
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
