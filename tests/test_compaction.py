"""Compaction (frozen members leave the epoch programs) changes cost, never numbers: an ensemble
whose members converge and diverge at different epochs gives, bit for bit, the same parameters,
curves, converged epochs and store rows with compaction as without, and compaction really ran.
The default ("exact": fewer shards of the same program) is bit-identical in float32 too."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import errorforcing as ef
from errorforcing.training import COMPACT_ENV
from errorforcing.training._shards import bucket_sizes, compact_layout, compact_mode, worth_compiling

# 8 members on 2 shards of 4; at threshold 0.8 (patience 1) and divergence 1.45 they freeze at
# epochs 1 (seed 2), 3 (seeds 3 diverged, 5), 4 (1), 6 (7 diverged), 7 (4, 6) and 8 (0), so the
# compacted run goes 2×4 → 2×2 (epoch 5) → 1×2 (epoch 8, one member plus a padding copy).
CONFIG = dict(task={"name": "delayed-xor", "delay": 4}, model={"hidden": 8}, forcing={"kind": "ef", "alpha": [0.5]},
              seeds=8, epochs=10, batch=16, train_trials=32, val_trials=16, test_trials=16, threshold=0.8,
              patience=1, divergence=1.45, optim={"lr": [3e-2]})


def _train(monkeypatch, compact: bool | str, **changes):
    # "always": layouts not timing-dependent
    monkeypatch.setenv(COMPACT_ENV, compact if isinstance(compact, str) else "always" if compact else "off")
    monkeypatch.setenv("ERRORFORCING_THREADS", "2")
    return ef.train(ef.TrainConfig(**(CONFIG | changes)), progress=False)


def _assert_identical(compact, plain, rtol=0.0):
    c, p = compact.ensemble, plain.ensemble
    if rtol:
        _assert_close(c, p, rtol)
        return
    np.testing.assert_array_equal(c.tracker.converged_epoch, p.tracker.converged_epoch)
    np.testing.assert_array_equal(c.tracker.diverged, p.tracker.diverged)
    np.testing.assert_array_equal(c.tracker.epochs_run, p.tracker.epochs_run)
    assert c.epochs_done == p.epochs_done
    for name in ("train_curves", "val_curves", "val_accuracy", "test_loss", "lyap_max_before", "lyap_max_after"):
        np.testing.assert_array_equal(getattr(c, name), getattr(p, name), err_msg=name)
    assert c.extra_curves.keys() == p.extra_curves.keys()
    for name in p.extra_curves:
        np.testing.assert_array_equal(c.extra_curves[name], p.extra_curves[name], err_msg=name)
    for tree in ("cells", "forcings", "rules"):
        for a, b in zip(jax.tree_util.tree_leaves(getattr(c, tree)), jax.tree_util.tree_leaves(getattr(p, tree))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=tree)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run_id"} for r in rows]  # noqa: E731
    assert strip(compact.rows) == strip(plain.rows)


def _assert_close(c, p, rtol):
    np.testing.assert_array_equal(c.tracker.converged_epoch, p.tracker.converged_epoch)
    np.testing.assert_array_equal(c.tracker.diverged, p.tracker.diverged)
    for name in ("train_curves", "val_curves", "val_accuracy", "test_loss"):
        np.testing.assert_allclose(getattr(c, name), getattr(p, name), rtol=rtol, atol=0, err_msg=name)
    for a, b in zip(jax.tree_util.tree_leaves(c.cells), jax.tree_util.tree_leaves(p.cells)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=1e-15)


def test_compacted_ensemble_equals_the_uncompacted_one_bit_for_bit(monkeypatch):
    plain, compact = _train(monkeypatch, False), _train(monkeypatch, True)
    p, c = plain.ensemble, compact.ensemble
    assert jax.tree_util.tree_leaves(p.cells)[0].dtype == np.float64
    # the setting really freezes members at different epochs (and stops when all froze)
    assert sorted(p.tracker.converged_epoch.tolist()) == [-1, -1, 1, 3, 4, 7, 7, 8]
    assert p.tracker.diverged.sum() == 2 and p.epochs_done == 8
    # compaction ran: smaller programs, a padded one among them; without it, one layout throughout
    assert p.layouts == [(1, 2, 4)]
    assert c.layouts == [(1, 2, 4), (5, 2, 2), (8, 1, 2)]
    _assert_identical(compact, plain)


@pytest.mark.parametrize("changes", [{}, dict(rule={"kind": "rflo"})], ids=["ef-bptt", "rflo"])
def test_exact_compaction_packs_fewer_shards_of_the_same_program_bit_for_bit(monkeypatch, changes):
    plain, exact = _train(monkeypatch, False, **changes), _train(monkeypatch, "exact", **changes)
    assert plain.ensemble.layouts == [(1, 2, 4)]
    # once 4 members froze (after epoch 4 for EF-BPTT, see above) the others go on in one shard of 4
    assert [layout[1:] for layout in exact.ensemble.layouts] == [(2, 4), (1, 4)]
    assert exact.ensemble.layouts[1][0] < plain.ensemble.epochs_done
    _assert_identical(exact, plain)  # RFLO too, which "always" changes in the last bit


# float32 (the default precision), XLA's optimisations on (as users run it), N = 50, batch 128:
# members freeze after epochs 2, 3 (four), 4 (two) and 6, so from epoch 4 the remaining three,
# then one, train in one shard of 4 in slots other than their own
_FLOAT32_RUN = textwrap.dedent("""
    import json, os, sys
    import jax, numpy as np
    import errorforcing as ef
    cfg = ef.TrainConfig(task={"name": "delayed-xor", "delay": 10}, model={"hidden": 50},
                         forcing={"kind": "ef", "alpha": [0.5]}, seeds=8, epochs=15, batch=128, train_trials=256,
                         val_trials=128, test_trials=128, threshold=0.3, patience=1, optim={"lr": [1e-2]})
    runs = {}
    for mode in ("off", "exact"):
        os.environ["ERRORFORCING_COMPACT"] = mode
        runs[mode] = ef.train(cfg, progress=False).ensemble
    a, b = runs["off"], runs["exact"]
    leaves = [(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree_util.tree_leaves(a.cells),
                                                              jax.tree_util.tree_leaves(b.cells))]
    json.dump(dict(layouts=[a.layouts, b.layouts], dtype=str(leaves[0][0].dtype),
                   converged=a.tracker.converged_epoch.tolist(),
                   cells_equal=all(np.array_equal(x, y) for x, y in leaves),
                   curves_equal=all(np.array_equal(getattr(a, n), getattr(b, n), equal_nan=True)
                                    for n in ("train_curves", "val_curves", "test_loss"))), sys.stdout)
""")


def test_exact_compaction_is_bit_identical_in_float32():
    env = os.environ | {"JAX_ENABLE_X64": "0", "JAX_DISABLE_MOST_OPTIMIZATIONS": "0", "ERRORFORCING_THREADS": "2"}
    out = json.loads(subprocess.run([sys.executable, "-c", _FLOAT32_RUN], env=env, check=True, capture_output=True,
                                    text=True).stdout)
    assert out["dtype"] == "float32"
    assert out["converged"] == [3, 6, 2, 4, 3, 4, 3, 3]
    assert out["layouts"] == [[[1, 2, 4]], [[1, 2, 4], [4, 1, 4]]]
    assert out["cells_equal"] and out["curves_equal"]


@pytest.mark.slow
@pytest.mark.parametrize("changes, rtol", [
    # flossing between epochs, Lyapunov exponents, per-epoch diagnostics and gradient alignment
    (dict(floss={"pre": 2, "every": 2, "steps": 2, "trials": 4}, analysis={"lyapunov": True, "lyapunov_trials": 4,
          "diagnostics": True}, rule={"kind": "bptt", "log_alignment": True}), 0.0),
    # adaptive α (a LAPACK eigensolver: shards run one after another) inside the epoch program
    (dict(forcing={"kind": "tf", "alpha": [0.5], "adaptive": True}), 0.0),
    # one fixed data set per member, regrouped into the smaller programs
    (dict(data="fixed", train_trials=None, val_trials=None, dataset_size=48), 0.0),
    # measured: RFLO's epoch program is not batch-size invariant in the last bit (float64
    # differences ~1e-16 between programs of 4 and 2 members), so only equal to rounding
    (dict(rule={"kind": "rflo"}), 1e-12),
], ids=["floss-lyapunov-diagnostics-alignment", "adaptive-alpha", "fixed-data", "rflo"])
def test_compaction_leaves_every_measurement_unchanged(monkeypatch, changes, rtol):
    plain, compact = _train(monkeypatch, False, **changes), _train(monkeypatch, True, **changes)
    assert plain.ensemble.layouts == [(1, 2, 4)]
    assert len(compact.ensemble.layouts) > 1 and compact.ensemble.layouts[-1][2] < 4
    _assert_identical(compact, plain, rtol)


def test_bucket_sizes_halve_down_to_two():
    assert bucket_sizes(12) == [12, 6, 3, 2]
    assert bucket_sizes(4) == [4, 2]
    assert bucket_sizes(1) == [1]


@pytest.mark.parametrize("active, count, full, layout", [
    (24, 2, 12, (2, 12)),  # nothing frozen: the full layout
    (12, 2, 12, (2, 6)),
    (7, 2, 12, (2, 6)),    # 7 of 12 slots: the next bucket (3) would need 3 shards
    (5, 2, 12, (2, 3)),    # one padding copy
    (2, 2, 12, (1, 2)),    # 2 slots on one core rather than 4 on two (same wall time)
    (1, 2, 12, (1, 2)),    # never a batch of 1: XLA compiles it to other kernels (last-bit changes)
    (1, 2, 1, (1, 1)),     # ... unless the ensemble ran in batches of 1 from the start
])
def test_compact_layout_picks_the_smallest_bucket_then_the_fewest_slots(active, count, full, layout):
    assert compact_layout(active, count, full) == layout


@pytest.mark.parametrize("active, count, layout", [(24, 2, (2, 12)), (13, 2, (2, 12)), (12, 2, (1, 12)),
                                                   (1, 2, (1, 12)), (51, 4, (3, 25))])
def test_exact_layout_keeps_the_shard_size(active, count, layout):
    assert compact_layout(active, count, layout[1], exact=True) == layout


def test_auto_compacts_into_a_new_size_only_when_the_saved_time_exceeds_a_compilation():
    # 1 s epochs, 12 → 6 saves 0.5 s an epoch: worth a 10 s compilation with 30 epochs left, not with 10
    assert worth_compiling(1.0, 10.0, 12, 6, remaining=30)
    assert not worth_compiling(1.0, 10.0, 12, 6, remaining=10)
    assert not worth_compiling(None, 10.0, 12, 6, remaining=100)  # nothing measured yet
    assert not worth_compiling(1.0, None, 12, 6, remaining=100)


def test_compaction_mode_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv(COMPACT_ENV, raising=False)
    assert compact_mode(None) == "exact" and compact_mode(True) == "auto" and compact_mode("always") == "always"
    for value, mode in [("0", "off"), ("1", "auto"), ("always", "always"), ("off", "off"), ("exact", "exact")]:
        monkeypatch.setenv(COMPACT_ENV, value)
        assert compact_mode(None) == mode
    monkeypatch.setenv(COMPACT_ENV, "sometimes")
    with pytest.raises(ValueError, match=COMPACT_ENV):
        compact_mode(None)
