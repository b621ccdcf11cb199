"""`reproduce marschall-alignment` end to end on a tiny setting: the sweep, the timing, the
summary's table (BPTT's and RTRL's alignment with BPTT are 1), the claims and the report."""

import json

import pytest

from errorforcing.plotting import marschall_figures
from errorforcing.reproductions import marschall
from errorforcing.reproductions._run import CLAIMS_FILE, evaluate_claims

TINY = marschall.Setting(seeds=3, epochs=2, hidden=4, pulse=2, delay=1, batch=4, train_trials=8, val_trials=4,
                         rules=("bptt", "rtrl", "uoro", "kf-rtrl"), truncation=2, repeats=1, note="tiny test")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("marschall")
    summary = marschall.reproduce_marschall_alignment(quick=True, out=out, progress=False, setting=TINY)
    assert not (out / f"{marschall.NAME}.png").exists()  # the workflow returns data; plotting draws
    marschall_figures(out)
    return out, summary


def test_sweep_has_every_rule_with_and_without_ef():
    (s,) = marschall.sweeps(marschall.QUICK)
    from errorforcing.experiments._sweep import expand

    plan = expand(s)
    kinds = {(j.config.rule.kind, j.config.forcing.kind) for j in plan.jobs}
    assert kinds == {(r, f) for r in marschall.RULES for f in ("none", "ef")}
    tbptt = [j.config.rule for j in plan.jobs if j.config.rule.kind == "tbptt"]
    assert all(r.truncation == marschall.QUICK.truncation for r in tbptt)
    assert all(j.config.rule.log_alignment and j.config.model.hidden == 32 for j in plan.jobs)


@pytest.mark.slow  # 8 tiny jobs, 8 timed compiles and the report: minutes on 2 loaded cores
def test_tiny_reproduction_writes_table_claims_and_report(tiny_run):
    out, summary = tiny_run
    table = {(t["rule"], t["forcing"]): t for t in summary["table"]}
    assert set(table) == {(r, f) for r in TINY.rules for f in ("none", "ef")}
    for t in table.values():
        assert t["n"] == TINY.seeds and t["us_per_step"] > 0 and 0 <= t["fraction"] <= 1
        assert -1 <= t["alignment_median"] <= 1
    # the exact rules: cos(g, g_BPTT) = 1 at every epoch, under EF too
    for rule in ("bptt", "rtrl"):
        for forcing in ("none", "ef"):
            assert table[rule, forcing]["alignment_median"] == pytest.approx(1.0, abs=1e-5), (rule, forcing)
    # the stochastic estimates are not the exact gradient
    assert table["uoro", "none"]["alignment_median"] < 0.999
    assert len(summary["members"]) == 2 * len(TINY.rules) * TINY.seeds
    on_disk = json.loads((out / marschall.SUMMARY_FILE).read_text())
    assert on_disk["table"] == summary["table"]
    assert (out / f"{marschall.NAME}.png").stat().st_size > 0
    assert (out / "report" / "report.html").stat().st_size > 0

    claims = evaluate_claims(out, names=[marschall.NAME])
    assert [c["claim"] for c in claims] == [c.claim for c in marschall.CLAIMS]
    assert all(c["verdict"] in ("reproduced", "not reproduced", "inconclusive") for c in claims)
    lower = claims[0]["numbers"]
    assert lower["UORO"]["n"] == TINY.seeds and lower["KF-RTRL"]["n"] == TINY.seeds
    assert json.loads((out / CLAIMS_FILE).read_text())[0]["reproduction"] == marschall.NAME


@pytest.mark.slow
def test_table_text_lists_every_arm(tiny_run):
    _, summary = tiny_run
    text = marschall.table_text(summary)
    assert text.count("\n") == 1 + len(summary["table"])
    assert "| UORO | EF α=0.2 |" in text
