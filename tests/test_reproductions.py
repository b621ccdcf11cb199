"""The reproductions: their sweeps match the papers' setups, their claims evaluate to the
verdicts that synthetic stores with known answers call for, and each runs end to end."""

import pytest

from errorforcing.reproductions import SWEEPS as REPRODUCTIONS
from errorforcing.experiments._sweep import expand


def _jobs(name, quick=True):
    return [job for s in REPRODUCTIONS[name](quick) for job in expand(s, skip_unregistered=True).jobs]


@pytest.mark.parametrize("quick", [True, False])
def test_wz_oscillators_trains_one_unit_as_the_paper(quick):
    """Williams & Zipser §3.5: a single unit for 0101…, one unit of a 2-unit net for 00110011…
    and the sinusoid; the 6-unit, all-outputs variant stays available as wz-oscillators-wide."""
    setups = {(j.config.task.options["pattern"], j.config.model.hidden, j.config.task.options.get("train_partner"))
              for j in _jobs("wz-oscillators", quick)}
    assert setups == {("01", 1, None), ("0011", 2, False), ("sine", 2, False)}
    wide = {(j.config.task.options["pattern"], j.config.model.hidden, j.config.task.options.get("train_partner"))
            for j in _jobs("wz-oscillators-wide", quick)}
    assert wide == {("01", 6, None), ("0011", 6, None), ("sine", 6, None)}
    for name in ("wz-oscillators", "wz-oscillators-wide"):
        assert {(j.config.forcing.kind, j.config.rule.kind) for j in _jobs(name, quick)} == {("none", "rtrl"),
                                                                                             ("wz-tf", "rtrl")}


def test_ef_fig2_quick_fixes_alpha_on_other_seeds_and_full_is_the_authors_sweep():
    """Quick: delay 400, one α fixed in advance (chosen on the main job's seeds 0–7 / 100–107, run
    on 200–207, so nothing is picked on the seeds it is tested on), GRU/LSTM on 4 seeds. Full:
    both tasks, delays to 1000, SPEC's 10-value α grid, 20 seeds, 200 epochs, GRU/LSTM."""
    from errorforcing.experiments._config import ALPHA_GRID

    quick = {(j.config.model.kind, j.config.forcing.kind): j.config for j in _jobs("ef-fig2")}
    assert set(quick) == {("leaky", "none"), ("leaky", "tf"), ("leaky", "ef"), ("gru", "none"), ("lstm", "none")}
    for (kind, forcing), c in quick.items():
        assert (c.task.kind, c.task.delay, c.epochs, c.seed) == ("delayed-xor", 400, 100, 200)
        assert c.seeds == (8 if kind == "leaky" else 4)
        assert c.forcing.alpha == ([0.1] if forcing != "none" else [0.0])
    full = _jobs("ef-fig2", quick=False)
    assert {(j.config.task.kind, j.config.task.delay) for j in full} == {
        (t, d) for t in ("delayed-xor", "evidence-integration") for d in (50, 100, 200, 400, 1000)}
    assert {j.config.model.kind for j in full} == {"leaky", "gru", "lstm"}
    assert all(j.config.epochs == 200 and j.config.seeds == 20 and j.config.seed == 0 for j in full)
    ef = [j.config for j in full if j.config.forcing.kind == "ef"]
    assert all(sorted(c.forcing.alpha) == sorted(ALPHA_GRID) and len(ALPHA_GRID) == 10 for c in ef)
    assert sum(j.config.n_members for j in full) == 4600


# ----- statistics -----
import numpy as np
import scipy.stats

from errorforcing.experiments._stats import Outcomes, compare_fractions, fisher_greater
from errorforcing.reproductions import (AllOf, Arm, Evidence, FewerEpochs, FractionLearned, claims_table,
                                        evaluate_claims, reproduce)


@pytest.mark.parametrize("counts", [(7, 8, 1, 8), (4, 8, 7, 8), (3, 4, 0, 4), (10, 20, 3, 20), (0, 5, 0, 5),
                                    (5, 5, 5, 5), (12, 17, 2, 9)])
def test_fisher_matches_scipy(counts):
    k1, n1, k2, n2 = counts
    want = scipy.stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater").pvalue
    assert fisher_greater(k1, n1, k2, n2) == pytest.approx(want, rel=1e-10)


def test_split_half_selection_chooses_on_one_half_and_tests_on_the_other():
    # A: setting 0.1 learns on the even-position seeds only, 0.5 on the odd ones: chosen on the
    # even half, 0.1 is then tested on the odd half, where it never learns
    a = Outcomes("A", {(0.1, None): {s: s % 2 == 0 for s in range(8)}, (0.5, None): {s: s % 2 == 1 for s in range(8)}})
    b = Outcomes("B", {(0.0, None): {s: False for s in range(8)}})
    out = compare_fractions(a, b)
    assert out["selection"] == "split" and out["A"]["setting"] == [0.1, None] and out["A"]["learned"] == 0
    naive = compare_fractions(a, b, selection="bonferroni")
    assert naive["A"]["learned"] == 4 and naive["p"] == pytest.approx(2 * fisher_greater(4, 8, 0, 8))


# ----- claims on synthetic stores with known answers -----
def _rows(method, learned, n, epochs=30, delay=400, alpha=0.5):
    return [{"task": "delayed-xor", "forcing": method, "rule": "bptt", "config.model.kind": "leaky",
             "config.task.delay": delay, "alpha": alpha, "lr": 3e-4, "seed": s, "converged": int(s < learned),
             "converged_epoch": epochs + s if s < learned else None} for s in range(n)]


EF_ARM, BPTT_ARM = (Arm("EF", {"forcing": "ef"}), Arm("BPTT", {"forcing": "none"}))
LONGEST = dict(where={"task": "delayed-xor"}, at_field="config.task.delay", at="max")


@pytest.mark.parametrize("ef, bptt, n, verdict", [(20, 2, 20, "reproduced"), (1, 19, 20, "not reproduced"),
                                                   (3, 1, 4, "inconclusive")])
def test_fraction_claim_verdicts(ef, bptt, n, verdict):
    # the shorter delay would say the opposite: only the longest counts
    rows = _rows("ef", ef, n) + _rows("none", bptt, n) + _rows("ef", 0, n, delay=50) + _rows("none", n, n, delay=50)
    out = FractionLearned("EF > BPTT", "test", EF_ARM, BPTT_ARM, **LONGEST).evaluate(Evidence(rows))
    assert out["verdict"] == verdict, out
    assert out["numbers"]["where"]["config.task.delay"] == 400
    assert {"claim", "source", "verdict", "test", "numbers"} <= set(out)


def test_epochs_claim_counts_a_seed_stored_twice_once():
    # 3 EF seeds, each stored twice (a re-run job), vs 3 BPTT seeds: 3 against 3 converged is
    # p = 0.05 one-sided at best, never significant; counted twice (6 vs 3) it would be
    rows = 2 * _rows("ef", 3, 3, epochs=10) + _rows("none", 3, 3, epochs=60)
    out = FewerEpochs("EF faster", "t", EF_ARM, BPTT_ARM).evaluate(Evidence(rows))
    assert out["numbers"]["EF"]["n"] == 3 and out["numbers"]["EF"]["converged"] == 3
    assert out["verdict"] == "inconclusive"


def test_epochs_claim_and_missing_arms():
    rows = _rows("ef", 10, 10, epochs=10) + _rows("none", 10, 10, epochs=60)
    assert FewerEpochs("EF faster", "t", EF_ARM, BPTT_ARM).evaluate(Evidence(rows))["verdict"] == "reproduced"
    assert FewerEpochs("BPTT faster", "t", BPTT_ARM, EF_ARM).evaluate(Evidence(rows))["verdict"] == "not reproduced"
    few = FewerEpochs("EF faster", "t", EF_ARM, BPTT_ARM).evaluate(Evidence(_rows("ef", 2, 10) + _rows("none", 2, 10)))
    assert few["verdict"] == "inconclusive" and "fewer than" in few["why"]
    gone = FractionLearned("EF > GRU", "t", EF_ARM, Arm("GRU", {"forcing": "gru"})).evaluate(Evidence(rows))
    assert gone["verdict"] == "inconclusive" and "GRU" in gone["why"]
    both = AllOf("all", "t", (FewerEpochs("a", "t", EF_ARM, BPTT_ARM), FewerEpochs("b", "t", BPTT_ARM, EF_ARM)))
    assert both.evaluate(Evidence(rows))["verdict"] == "not reproduced"
    assert "REPRODUCED" in claims_table([FewerEpochs("a", "t", EF_ARM, BPTT_ARM).evaluate(Evidence(rows))])


def test_wilson_interval_matches_the_formula():
    from errorforcing.experiments._stats import wilson_interval

    k, n, z = 7, 8, scipy.stats.norm.ppf(0.975)
    p = k / n
    centre, half = (p + z**2 / (2 * n)) / (1 + z**2 / n), z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-3)


@pytest.mark.parametrize("shift, verdict", [(-0.5, "reproduced"), (0.5, "not reproduced"), (0.0, "inconclusive")])
def test_lower_value_claim_verdicts_and_mann_whitney_matches_scipy(shift, verdict):
    from errorforcing.reproductions import LowerValue

    def rows(gain, losses):
        return [{"rule": "eprop", "config.model.gain": gain, "seed": s, "final_val_loss": v} for s, v in enumerate(losses)]

    worse = [1.0 + 0.01 * s for s in range(8)]
    better = [v + shift + 0.001 for v in worse]
    claim = LowerValue("g=1 lower", "t", Arm("g=1", {"config.model.gain": 1.0}), Arm("g=0.2", {"config.model.gain": 0.2}))
    out = claim.evaluate(Evidence(rows(1.0, better) + rows(0.2, worse)))
    assert out["verdict"] == verdict, out
    assert out["numbers"]["p"] == pytest.approx(scipy.stats.mannwhitneyu(better, worse, alternative="less").pvalue)
    # too few members on a side: says so instead of testing
    few = claim.evaluate(Evidence(rows(1.0, better[:2]) + rows(0.2, worse)))
    assert few["verdict"] == "inconclusive" and "fewer than" in few["why"]


@pytest.mark.parametrize("rise, verdict", [(0.3, "reproduced"), (-0.3, "not reproduced")])
def test_curve_rises_claim_pairs_first_and_last_epoch_by_member(rise, verdict):
    from errorforcing.reproductions import CurveRises

    rows = [{"forcing": "feedback", "seed": s, "curves": {"cos": [0.01 * s, 0.2, 0.01 * s + rise + 0.001 * s]}}
            for s in range(8)]
    out = CurveRises("cos rises", "t", Arm("F", {"forcing": "feedback"}), "cos").evaluate(Evidence(rows))
    assert out["verdict"] == verdict and out["numbers"]["members"] == 8
    missing = CurveRises("cos rises", "t", Arm("F", {"forcing": "feedback"}), "other").evaluate(Evidence(rows))
    assert missing["verdict"] == "inconclusive" and "diagnostics" in missing["why"]


# ----- end to end on tiny settings -----
def _tiny(specs):
    from errorforcing.reproductions._spec import spec

    out = []
    for s in specs:
        tiny = {"steps": 40, "val_every": 20} if s.base.get("continual") else {
            "epochs": 2, "train_trials": 8, "val_trials": 4, "batch": 4}
        base = dict(s.base) | tiny
        if "task" in base and base["task"].get("delay"):
            base["task"] = base["task"] | {"delay": 5}
        grid = {k: (v[:1] if k == "task.delay" else v) for k, v in s.grid.items()}
        if "task.delay" in grid:
            grid["task.delay"] = [5]
        zips = [z | ({"seeds": [2] * len(z["seeds"])} if "seeds" in z else {}) for z in s.zips]
        out.append(spec(s.name, base=base, grid=grid, zips=zips, seeds=2, note=s.note))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ef-fig2", "ef-fig3", "liu-gain", "wz-oscillators"])
def test_reproduce_quick_end_to_end_writes_claims_and_report(tmp_path, name):
    from errorforcing.reproductions import REPRODUCTIONS

    result = reproduce(name, tmp_path, quick=True, progress=False, echo=lambda line: None,
                       specs=_tiny(REPRODUCTIONS[name].sweeps(True)))
    written = __import__("json").loads((tmp_path / "claims.json").read_text())
    assert len(written) == len(REPRODUCTIONS[name].claims) == len(result.claims)
    assert all(c["verdict"] in ("reproduced", "not reproduced", "inconclusive") for c in written)
    from errorforcing.plotting import write_report

    assert result.has_results and result.report is None  # reproduce returns data; the report is drawn apart
    html = write_report(tmp_path).html.read_text()
    assert html.index('id="claims"') < html.index("<h2>Figures")
    assert [c["verdict"] for c in evaluate_claims(tmp_path)] == [c["verdict"] for c in written]


def test_claims_command_on_a_directory_without_results_exits_2(tmp_path, capsys):
    from errorforcing.cli import main

    assert main(["claims", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no results" in err[0]
    assert not (tmp_path / "claims.json").exists()


def test_claims_command_evaluates_a_kaleb_summary(tmp_path, capsys):
    import json

    from errorforcing.cli import main
    from errorforcing.reproductions.kaleb import METHODS

    per_target = {"RFLO": [0.5] * 8, "RFLO+c": [0.1] * 8, "BPTT": [0.2] * 8, "BPTT+c": [0.3] * 8}
    summary = {"methods": {m: {"best_learning_rate": 1e-3, "test_after_per_target_position_mse":
                               [v + 0.01 * i for i, v in enumerate(per_target[m])]} for m in METHODS}}
    (tmp_path / "kaleb-adaptation.json").write_text(json.dumps(summary))
    assert main(["claims", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "claims.json").read_text())
    # the claims this summary has numbers for; any later claim (e.g. the second-order analysis)
    # has none here and must say so rather than guess
    assert [c["verdict"] for c in written][:3] == ["reproduced", "not reproduced", "inconclusive"]
    assert "update_efficiency" in json.dumps(written[2])  # it names the measure it lacks
    assert all(c["verdict"] == "inconclusive" and '"why"' in json.dumps(c) for c in written[3:])
    assert "REPRODUCED" in capsys.readouterr().out


@pytest.mark.parametrize("shift, verdict", [(0.2, "reproduced"), (-0.2, "not reproduced"), (0.0, "inconclusive")])
def test_kaleb_control_raises_alignment_and_efficiency_claim(shift, verdict):
    """RFLO+c vs RFLO, paired by diagnostic trial: both measures higher → reproduced; lower → not;
    one higher and one equal → inconclusive (both must hold)."""
    from errorforcing.reproductions.kaleb import CLAIMS

    base = [0.3 + 0.01 * i for i in range(16)]
    methods = {"RFLO": {"update_efficiency": base, "local_alignment": base},
               "RFLO+c": {"update_efficiency": [v + shift + 0.001 * i for i, v in enumerate(base)],
                          "local_alignment": [v + 0.2 + 0.001 * i if shift else v for i, v in enumerate(base)]}}
    claim = next(c for c in CLAIMS if "alignment" in c.claim)
    out = claim.evaluate(Evidence([], {"methods": methods}))
    assert out["verdict"] == verdict, out
    want = scipy.stats.wilcoxon(np.array(methods["RFLO"]["update_efficiency"]) - methods["RFLO+c"]["update_efficiency"],
                                alternative="less").pvalue
    assert out["numbers"]["update_efficiency"]["p"] == pytest.approx(want)


def test_liu_floss_claim_finds_the_unflossed_job_stored_under_the_gain_sweep():
    """liu-floss's pre = 0 job is the same config as liu-gain's e-prop job at g = 0.2, so it is stored
    once, under liu-gain: the claim selects by configuration, not by sweep."""
    from errorforcing.reproductions.liu import CLAIMS, FLOSS_GAIN

    def rows(sweep, pre, loss):
        return [{"sweep": sweep, "rule": "eprop", "config.model.gain": FLOSS_GAIN, "config.floss.pre": pre, "seed": s,
                 "final_val_loss": loss + 0.01 * s} for s in range(8)]

    claim = next(c for c in CLAIMS if "flossing" in c.claim)
    out = claim.evaluate(Evidence(rows("liu-gain", 0, 0.5) + rows("liu-floss", 50, 0.1)))
    assert out["verdict"] == "reproduced", out
    assert out["numbers"]["e-prop"]["n"] == 8
