"""compare's own verdicts, "EF beats TF" and "EF beats BPTT" on fraction learned: known answers on
synthetic members, the selection-aware counts, and the command's output and --json."""

import json
import sqlite3

import pytest
import scipy.stats

from errorforcing.experiments import compare_verdicts


def _members(learned_by_alpha: dict[float, set[int]], seeds: int) -> list[dict]:
    return [{"seed": s, "alpha": a, "lr": 3e-4, "converged": int(s in learned)}
            for a, learned in learned_by_alpha.items() for s in range(seeds)]


def _scipy_p(k1, n1, k2, n2):
    return scipy.stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater").pvalue


def _by_claim(verdicts):
    return {v["claim"]: v for v in verdicts}


def test_clear_win_clear_loss_and_too_few_seeds():
    n = 20
    every, none_ = set(range(n)), set()
    win = _by_claim(compare_verdicts({
        "BPTT": _members({0.0: none_}, n),
        "TF-BPTT": _members({0.5: {0, 1}, 1.0: none_}, n),
        "EF-BPTT": _members({0.5: every, 1.0: none_}, n)}, winner="EF-BPTT"))
    assert set(win) == {"EF-BPTT beats BPTT", "EF-BPTT beats TF-BPTT"}
    assert all(v["verdict"] == "reproduced" and v["selection"] == "split" for v in win.values())
    tf = win["EF-BPTT beats TF-BPTT"]
    # α chosen on the even seeds (TF's 0.5 learned on seed 0), counted on the odd ones
    assert tf["EF-BPTT"]["setting"] == [0.5, 3e-4] and tf["EF-BPTT"]["learned"] == 10 and tf["EF-BPTT"]["n"] == 10
    assert tf["TF-BPTT"]["setting"] == [0.5, 3e-4] and (tf["TF-BPTT"]["learned"], tf["TF-BPTT"]["n"]) == (1, 10)
    assert tf["p"] == pytest.approx(_scipy_p(10, 10, 1, 10)) and tf["p_opposite"] == pytest.approx(_scipy_p(1, 10, 10, 10))
    # BPTT has one setting: nothing to choose, so it is counted on all 20 seeds
    bptt = win["EF-BPTT beats BPTT"]
    assert (bptt["BPTT"]["learned"], bptt["BPTT"]["n"]) == (0, 20)
    assert bptt["p"] == pytest.approx(_scipy_p(10, 10, 0, 20))
    assert "half the seeds" in bptt["test"] and "Fisher" in bptt["test"]

    loss = _by_claim(compare_verdicts({"BPTT": _members({0.0: every}, n), "EF-BPTT": _members({0.5: none_, 1.0: none_}, n)},
                                      winner="EF-BPTT"))
    assert loss["EF-BPTT beats BPTT"]["verdict"] == "not reproduced"

    # the main job's 8 seeds (EF 7/8, TF 4/8 at their best α): inconclusive under the split
    few = _by_claim(compare_verdicts({"TF-BPTT": _members({0.1: {0, 1, 2, 3}, 1.0: {0}}, 8),
                                      "EF-BPTT": _members({0.1: set(range(7)), 1.0: {1, 3}}, 8)}, winner="EF-BPTT"))
    assert few["EF-BPTT beats TF-BPTT"]["verdict"] == "inconclusive"


def test_bonferroni_multiplies_by_the_grid_and_counts_all_seeds():
    n = 12
    rows = {"BPTT": _members({0.0: {0}}, n), "EF-BPTT": _members({0.1: set(range(9)), 0.5: {1}, 1.0: set()}, n)}
    v, = compare_verdicts(rows, winner="EF-BPTT", selection="bonferroni")
    assert (v["EF-BPTT"]["learned"], v["EF-BPTT"]["n"], v["BPTT"]["learned"], v["BPTT"]["n"]) == (9, 12, 1, 12)
    assert v["p"] == pytest.approx(min(1.0, 3 * _scipy_p(9, 12, 1, 12)))
    assert "Bonferroni" in v["test"]
    with pytest.raises(ValueError, match="selection"):
        compare_verdicts(rows, winner="EF-BPTT", selection="best")


TINY = ["--task", "delayed-xor", "--delay", "4", "--seeds", "4", "--epochs", "2", "--hidden", "8", "--batch", "32",
        "--alphas", "0.5,1.0"]


def test_compare_prints_its_verdicts_and_json_matches_the_store(tmp_path, capsys):
    from errorforcing.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--out", str(out), "--json"]) == 0
    verdicts = _by_claim(json.loads(capsys.readouterr().out)["verdicts"])
    assert set(verdicts) == {"EF-BPTT beats BPTT", "EF-BPTT beats TF-BPTT"}
    db = sqlite3.connect(out / "runs.sqlite")
    rows = {}
    for forcing, label in (("none", "BPTT"), ("tf", "TF-BPTT"), ("ef", "EF-BPTT")):
        rows[label] = [dict(zip(("seed", "alpha", "lr", "converged"), r)) for r in db.execute(
            "SELECT seed, alpha, lr, converged FROM members WHERE forcing = ?", (forcing,))]
    want = _by_claim(compare_verdicts(rows, winner="EF-BPTT"))
    for claim, v in verdicts.items():
        assert {k: v[k] for k in ("verdict", "p", "p_opposite", "selection")} == {
            k: want[claim][k] for k in ("verdict", "p", "p_opposite", "selection")}
        assert v["EF-BPTT"]["n"] == 2  # α chosen on seeds 0 and 2, counted on 1 and 3

    # what compare prints without --json, after its table
    from errorforcing.cli._training import print_verdicts

    print_verdicts(compare_verdicts(rows, winner="EF-BPTT", selection="bonferroni"))
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("verdicts (one-sided Fisher") and "Bonferroni" in text[0] and len(text) == 3
    assert text[1].startswith("  EF-BPTT beats BPTT: ") and "p = " in text[1] and "/4 [" in text[1]


def test_compare_refuses_an_unknown_selection(tmp_path, capsys):
    from errorforcing.cli import main

    assert main(["compare", "--selection", "best", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--selection" in err[0]
    assert list(tmp_path.iterdir()) == []
