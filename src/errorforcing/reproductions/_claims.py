"""Claims: checkable statements of a paper over stored results, each evaluated to a verdict
(`reproduced`, `not reproduced`, `inconclusive`) by a stated one-sided test at α = 0.05, with
the numbers and intervals behind it. A claim that cannot be evaluated on the data at hand
(no members match, too few converged) is `inconclusive` and says why.

Evidence is the member table of the reproduction's sweeps (`store.member_table` rows: one per
member, with `config.*` columns) and, for workflows that are not sweeps, their summary JSON.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any, Callable, Mapping

import numpy as np

from ..experiments import (INCONCLUSIVE, LEVEL, NOT_REPRODUCED, REPRODUCED, Outcomes, compare_fractions,
                           directional_verdict, mann_whitney_less, wilcoxon_less, wilson_interval)

MIN_SAMPLES = 3  # fewer values on a side: the rank tests cannot reject at 0.05, say so instead


@dataclasses.dataclass(frozen=True)
class Evidence:
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    summary: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Arm:
    """A method in the member table: every row whose fields equal `where` (e.g. forcing "ef",
    rule "bptt", `config.model.kind` "leaky"; a callable value is a predicate on the field)."""

    label: str
    where: Mapping[str, Any]

    def select(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if all(_equal(r.get(k), v) for k, v in self.where.items())]


def _equal(value, wanted) -> bool:
    if callable(wanted):
        return bool(wanted(value))
    if wanted is None:
        return value is None
    if isinstance(wanted, float) or isinstance(value, float):
        return value is not None and abs(float(value) - float(wanted)) < 1e-12
    return value == wanted


def result(claim: "Claim", verdict: str, test: str, numbers: dict[str, Any], why: str | None = None) -> dict[str, Any]:
    out = {"claim": claim.claim, "source": claim.source, "verdict": verdict, "test": test, "numbers": numbers}
    if why:
        out["why"] = why
    return out


class Claim(abc.ABC):
    claim: str
    source: str

    @abc.abstractmethod
    def evaluate(self, evidence: Evidence) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class _ArmsClaim(Claim):
    """Shared by the claims that compare two arms within a subset `where` of the rows, at one
    value of a field `at_field` (`at = "max"`: its largest value among those rows)."""

    claim: str
    source: str
    better: Arm
    worse: Arm
    where: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    at_field: str | None = None
    at: Any = None

    def _subset(self, rows) -> tuple[list[dict], dict[str, Any]]:
        rows = Arm("", self.where).select(rows)
        context: dict[str, Any] = dict(self.where)
        if self.at_field is not None and rows:
            values = [r.get(self.at_field) for r in rows if r.get(self.at_field) is not None]
            at = max(values) if self.at == "max" and values else self.at
            rows = [r for r in rows if _equal(r.get(self.at_field), at)]
            context[self.at_field] = at
        return rows, context

    def _arms(self, evidence):
        rows, context = self._subset(evidence.rows)
        return self.better.select(rows), self.worse.select(rows), context

    def _missing(self, a, b, context) -> dict[str, Any] | None:
        empty = [arm.label for arm, rows in ((self.better, a), (self.worse, b)) if not rows]
        if empty:
            return result(self, INCONCLUSIVE, self.test_name, {"where": context},
                          why=f"no members of {', '.join(empty)} in this store")
        return None


def _setting(r) -> tuple:
    return (r.get("alpha"), r.get("lr"))


@dataclasses.dataclass(frozen=True)
class FractionLearned(_ArmsClaim):
    """`better` learns (converges within the budget) in a larger fraction of networks than
    `worse`: one-sided Fisher exact test, each arm's α/lr chosen on half the seeds and the
    fractions compared on the other half (`selection`)."""

    selection: str = "split"
    test_name = "one-sided Fisher exact on fraction learned (α = 0.05), best α/lr chosen on half the seeds"

    def evaluate(self, evidence):
        a, b, context = self._arms(evidence)
        if (missing := self._missing(a, b, context)) is not None:
            return missing
        stats = compare_fractions(Outcomes.from_rows(self.better.label, a), Outcomes.from_rows(self.worse.label, b),
                                  selection=self.selection)
        test = ("one-sided Fisher exact on fraction learned (α = 0.05); " + stats.get("selection_described", ""))
        return result(self, stats["verdict"], test, {"where": context} | stats, stats.get("why"))


def _best_rows(rows) -> list[dict]:
    """The members of the setting (α, lr) that learned most often (ties: fewer median epochs).

    A seed stored twice in a setting (a job re-run under a newer configuration's id) counts once,
    by its latest row, as in the fraction-learned test."""
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        groups.setdefault(_setting(r), {})[int(r["seed"])] = r

    def rank(item):
        members = list(item[1].values())
        epochs = [m["converged_epoch"] for m in members if m["converged"]]
        return (-np.mean([m["converged"] for m in members]), np.median(epochs) if epochs else np.inf, repr(item[0]))

    return list(min(groups.items(), key=rank)[1].values())


@dataclasses.dataclass(frozen=True)
class FewerEpochs(_ArmsClaim):
    """`better` converges in fewer epochs than `worse`: one-sided Mann–Whitney on the epochs to
    converge of the members that converged, each arm at its best α/lr (by fraction learned)."""

    test_name = "one-sided Mann–Whitney U on epochs to converge of converged members (α = 0.05), best α/lr per arm"

    def evaluate(self, evidence):
        a, b, context = self._arms(evidence)
        if (missing := self._missing(a, b, context)) is not None:
            return missing
        a, b = _best_rows(a), _best_rows(b)
        ea = [r["converged_epoch"] for r in a if r["converged"]]
        eb = [r["converged_epoch"] for r in b if r["converged"]]
        numbers = {"where": context, self.better.label: _epochs(ea, a), self.worse.label: _epochs(eb, b)}
        if len(ea) < MIN_SAMPLES or len(eb) < MIN_SAMPLES:
            return result(self, INCONCLUSIVE, self.test_name, numbers,
                          why=f"fewer than {MIN_SAMPLES} converged members on a side ({len(ea)} vs {len(eb)})")
        p, p_opp = mann_whitney_less(ea, eb), mann_whitney_less(eb, ea)
        return result(self, directional_verdict(p, p_opp), self.test_name, numbers | {"p": p, "p_opposite": p_opp})


def _epochs(epochs, members) -> dict[str, Any]:
    return {"converged": len(epochs), "n": len(members), "setting": list(_setting(members[0])),
            "median_epochs": float(np.median(epochs)) if epochs else None,
            "iqr": [float(np.percentile(epochs, 25)), float(np.percentile(epochs, 75))] if epochs else None}


@dataclasses.dataclass(frozen=True)
class LowerValue(_ArmsClaim):
    """A per-member number (`column`, e.g. final_val_loss, or |lyap_max_before| with
    `absolute=True`) is lower for `better` than for `worse`: one-sided Mann–Whitney over all
    the members of each arm (every α/lr; no selection)."""

    column: str = "final_val_loss"
    absolute: bool = False

    @property
    def test_name(self):
        what = f"|{self.column}|" if self.absolute else self.column
        return f"one-sided Mann–Whitney U on {what} per member (α = 0.05)"

    def evaluate(self, evidence):
        a, b, context = self._arms(evidence)
        if (missing := self._missing(a, b, context)) is not None:
            return missing
        va, vb = self._values(a), self._values(b)
        numbers = {"where": context, self.better.label: _quantiles(va), self.worse.label: _quantiles(vb)}
        if len(va) < MIN_SAMPLES or len(vb) < MIN_SAMPLES:
            return result(self, INCONCLUSIVE, self.test_name, numbers,
                          why=f"fewer than {MIN_SAMPLES} members with a finite {self.column} on a side "
                              f"({len(va)} vs {len(vb)})")
        p, p_opp = mann_whitney_less(va, vb), mann_whitney_less(vb, va)
        return result(self, directional_verdict(p, p_opp), self.test_name, numbers | {"p": p, "p_opposite": p_opp})

    def _values(self, rows):
        out = [r.get(self.column) for r in rows]
        out = [float(v) for v in out if v is not None and np.isfinite(float(v))]
        return [abs(v) for v in out] if self.absolute else out


def _quantiles(values) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": float(np.median(values)),
            "iqr": [float(np.percentile(values, 25)), float(np.percentile(values, 75))]}


@dataclasses.dataclass(frozen=True)
class CurveRises(Claim):
    """A per-epoch curve (`key` in each member's curves) is higher at the last epoch than at the
    first, over the members of `arm`: one-sided Wilcoxon signed-rank, paired by member."""

    claim: str
    source: str
    arm: Arm
    key: str

    @property
    def test_name(self):
        return f"one-sided Wilcoxon signed-rank on {self.key}, last vs first epoch, paired by member (α = 0.05)"

    def evaluate(self, evidence):
        rows = self.arm.select(evidence.rows)
        pairs = []
        for r in rows:
            curve = r.get("curves", {}).get(self.key) if isinstance(r.get("curves"), dict) else None
            curve = [c for c in (curve or []) if c is not None and np.isfinite(c)]
            if len(curve) >= 2:
                pairs.append((curve[0], curve[-1]))
        numbers = {"where": dict(self.arm.where), "members": len(pairs)}
        if len(pairs) < MIN_SAMPLES + 2:
            why = (f"no member recorded {self.key!r} (run with analysis.diagnostics = true)" if not pairs else
                   f"only {len(pairs)} members recorded {self.key!r}")
            return result(self, INCONCLUSIVE, self.test_name, numbers, why=why)
        first, last = np.array(pairs).T
        p, p_opp = wilcoxon_less(first, last), wilcoxon_less(last, first)
        numbers |= {"first": _quantiles(list(first)), "last": _quantiles(list(last)), "p": p, "p_opposite": p_opp}
        return result(self, directional_verdict(p, p_opp), self.test_name, numbers)


@dataclasses.dataclass(frozen=True)
class AllOf(Claim):
    """Every part holds: reproduced if all are, not reproduced if any is not, else inconclusive."""

    claim: str
    source: str
    parts: tuple[Claim, ...]

    def evaluate(self, evidence):
        parts = [p.evaluate(evidence) for p in self.parts]
        verdicts = [p["verdict"] for p in parts]
        verdict = (NOT_REPRODUCED if NOT_REPRODUCED in verdicts else
                   REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE)
        return result(self, verdict, "all of: " + "; ".join(dict.fromkeys(p["test"] for p in parts)),
                      {"parts": [{k: p[k] for k in ("claim", "verdict", "numbers") } | ({"why": p["why"]} if "why" in p else {})
                                 for p in parts]})


@dataclasses.dataclass(frozen=True)
class SummaryClaim(Claim):
    """A claim over a workflow's summary JSON: `check(summary)` returns (verdict, test, numbers)
    or raises KeyError when the summary lacks what it needs."""

    claim: str
    source: str
    check: Callable[[Mapping[str, Any]], tuple[str, str, dict[str, Any]]]

    def evaluate(self, evidence):
        if evidence.summary is None:
            return result(self, INCONCLUSIVE, "—", {}, why="no summary of this workflow in the directory")
        try:
            verdict, test, numbers = self.check(evidence.summary)
        except KeyError as e:
            return result(self, INCONCLUSIVE, "—", {}, why=f"the summary has no {e.args[0]!r}")
        return result(self, verdict, test, numbers, numbers.pop("why", None) if isinstance(numbers, dict) else None)


@dataclasses.dataclass(frozen=True)
class SummaryMembers(Claim):
    """`inner` (any member-table claim: LowerValue, FractionLearned, …) evaluated on the member
    rows a workflow's summary lists under "members" (one dict per member, member-table fields)."""

    inner: Claim

    @property
    def claim(self):
        return self.inner.claim

    @property
    def source(self):
        return self.inner.source

    def evaluate(self, evidence):
        if evidence.summary is None or "members" not in evidence.summary:
            return result(self, INCONCLUSIVE, "—", {}, why="no member rows in this workflow's summary")
        return self.inner.evaluate(Evidence(list(evidence.summary["members"]), evidence.summary))


# ----- presentation -----
def claims_table(results: list[dict[str, Any]]) -> str:
    """The verdicts as a plain-text table (what `reproduce` and `claims` print)."""
    lines = []
    for r in results:
        lines.append(f"[{r['verdict'].upper():>14}] {r['claim']}  ({r['source']})")
        lines.append(f"                 {headline(r)}")
    return "\n".join(lines)


def headline(r: dict[str, Any]) -> str:
    """One line of numbers: fractions with intervals, medians, p-values, or why not."""
    n = r.get("numbers", {})
    bits = []
    if "parts" in n:
        bits.append(", ".join(f"{p['verdict']}" for p in n["parts"]) + " (parts)")
    for label, v in n.items():
        if isinstance(v, dict) and "fraction" in v:
            lo, hi = v["ci95"]
            bits.append(f"{label} {v['learned']}/{v['n']} [{lo:.2f}, {hi:.2f}]")
        elif isinstance(v, dict) and "median_epochs" in v:
            bits.append(f"{label} median {v['median_epochs']} epochs ({v['converged']}/{v['n']} converged)")
        elif isinstance(v, dict) and "median" in v and label not in ("first", "last"):
            bits.append(f"{label} median {v['median']:.4g} (n = {v['n']})" if v["median"] is not None else
                        f"{label}: none finite")
        elif isinstance(v, dict) and any(isinstance(w, dict) and "median" in w for w in v.values()):
            medians = " vs ".join(f"{k} {w['median']:.3g}" for k, w in v.items()
                                  if isinstance(w, dict) and w.get("median") is not None)
            tail = f", p = {v['p']:.3g}" if "p" in v else f" — {v['why']}" if "why" in v else ""
            bits.append(f"{label}: median {medians}{tail}")
    if "first" in n and "median" in n.get("first", {}):
        bits.append(f"median {n['first']['median']:.3g} → {n['last']['median']:.3g} (n = {n['first']['n']})")
    if "p" in n:
        bits.append(f"p = {n['p']:.3g} (opposite {n['p_opposite']:.3g})")
    if r.get("why"):
        bits.append(f"— {r['why']}")
    return "; ".join(bits) or json.dumps(n)[:160]


__all__ = ["Evidence", "Arm", "Claim", "FractionLearned", "FewerEpochs", "LowerValue", "CurveRises", "AllOf",
           "SummaryClaim", "SummaryMembers", "claims_table", "headline", "result", "LEVEL", "REPRODUCED", "NOT_REPRODUCED",
           "INCONCLUSIVE", "wilson_interval"]
