"""The reproductions by name: each is a paper's sweeps (or a workflow of its own), its claims,
and what differs from the paper."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..experiments import SweepSpec
from . import ef, kaleb, liu, marschall, williams_zipser
from ._claims import Claim


@dataclasses.dataclass(frozen=True)
class Reproduction:
    name: str
    paper: str
    claims: tuple[Claim, ...]
    differences: str
    sweeps: Callable[[bool], list[SweepSpec]] | None = None  # quick -> specs
    workflow: Callable[..., dict[str, Any]] | None = None  # (quick, out, progress) -> summary JSON
    summary_file: str | None = None  # the workflow's summary, beside the results

    @property
    def sweep_names(self) -> set[str]:
        return {s.name for s in self.sweeps(False)} | {s.name for s in self.sweeps(True)} if self.sweeps else set()


def _kaleb(*, quick: bool, out, progress: bool) -> dict[str, Any]:
    return kaleb.reproduce_kaleb_adaptation(quick=quick, out=out, progress=progress)


REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (
    Reproduction("ef-fig2", ef.PAPER, ef.FIG2_CLAIMS, ef.FIG2_DIFFERENCES, sweeps=ef.fig2),
    Reproduction("ef-fig3", ef.PAPER, ef.FIG3_CLAIMS, ef.FIG3_DIFFERENCES, sweeps=ef.fig3),
    Reproduction("liu-gain", liu.PAPER, liu.CLAIMS, liu.DIFFERENCES, sweeps=liu.gain),
    Reproduction("wz-oscillators", williams_zipser.PAPER, williams_zipser.CLAIMS, williams_zipser.DIFFERENCES,
                 sweeps=williams_zipser.oscillators),
    Reproduction("wz-oscillators-wide", williams_zipser.PAPER, williams_zipser.CLAIMS,
                 williams_zipser.DIFFERENCES + " This variant: 6 units, every output supervised.",
                 sweeps=lambda quick: williams_zipser.oscillators(quick, wide=True)),
    Reproduction(kaleb.NAME, kaleb.PAPER, kaleb.CLAIMS, kaleb.DIFFERENCES, workflow=_kaleb,
                 summary_file=kaleb.SUMMARY_FILE),
    Reproduction(kaleb.SINE_NAME, kaleb.PAPER, kaleb.SINE_CLAIMS, kaleb.SINE_DIFFERENCES,
                 workflow=kaleb.reproduce_kaleb_sine_shift, summary_file=kaleb.SINE_SUMMARY_FILE),
    Reproduction(marschall.NAME, marschall.PAPER, marschall.CLAIMS, marschall.DIFFERENCES,
                 workflow=marschall.reproduce_marschall_alignment, summary_file=marschall.SUMMARY_FILE),
)}
NAMES = sorted(REPRODUCTIONS)
# name -> quick -> sweep specs, for the reproductions that are sweeps
SWEEPS: dict[str, Callable[[bool], list[SweepSpec]]] = {n: r.sweeps for n, r in REPRODUCTIONS.items() if r.sweeps}
