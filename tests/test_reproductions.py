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
