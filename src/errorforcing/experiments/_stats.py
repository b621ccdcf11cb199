"""The statistics behind the verdicts (a leaf module): Wilson intervals, a one-sided Fisher exact
test on two fractions, a one-sided Mann–Whitney test on two samples, a one-sided Wilcoxon
signed-rank test on paired samples, and a comparison of two methods' fractions learned that
accounts for each method's best α having been picked from a grid.

A verdict at level α = 0.05 for a directional claim "A beats B":
    reproduced       the one-sided test of "A better than B" rejects at α,
    not reproduced   the one-sided test of the opposite direction rejects at α,
    inconclusive     neither (too few seeds, or no real difference).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ._summary import wilson_interval

LEVEL = 0.05
# one assignment each: the API reference (griffe) does not see names bound by tuple unpacking
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
SELECTIONS = ("split", "bonferroni")
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

__all__ = ["LEVEL", "VERDICTS", "SELECTIONS", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "wilson_interval",
           "fisher_greater", "mann_whitney_less", "wilcoxon_less", "directional_verdict", "Outcomes",
           "compare_fractions"]


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact p-value for "p1 > p2" from k1/n1 vs k2/n2 successes: the
    probability, given the margins, of at least k1 successes in group 1 under the hypergeometric
    law (scipy.stats.fisher_exact(..., alternative="greater"))."""
    for name, k, n in (("k1/n1", k1, n1), ("k2/n2", k2, n2)):
        if not 0 <= k <= n:
            raise ValueError(f"{name} must satisfy 0 <= k <= n, got {k}/{n}")
    total, successes = n1 + n2, k1 + k2
    denom = math.comb(total, n1)
    upper = min(n1, successes)
    tail = sum(math.comb(successes, i) * math.comb(total - successes, n1 - i) for i in range(k1, upper + 1))
    return min(1.0, tail / denom)


def mann_whitney_less(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided Mann–Whitney U p-value for "x tends to be smaller than y" (exact when small)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(np.asarray(x, float), np.asarray(y, float), alternative="less").pvalue)


def wilcoxon_less(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value for "x smaller than y", paired."""
    from scipy.stats import wilcoxon

    d = np.asarray(x, float) - np.asarray(y, float)
    if np.all(d == 0):
        return 1.0
    return float(wilcoxon(d, alternative="less").pvalue)


def directional_verdict(p_claim: float, p_opposite: float, level: float = LEVEL) -> str:
    """reproduced if the claim's one-sided test rejects, not reproduced if the opposite one does."""
    if p_claim < level:
        return REPRODUCED
    if p_opposite < level:
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """One method's members: learned (0/1) per seed for each hyperparameter setting (α, lr)."""

    label: str
    by_setting: Mapping[Any, Mapping[int, bool]]  # setting -> {seed: learned}

    @classmethod
    def from_rows(cls, label: str, rows) -> "Outcomes":
        """From member rows (`seed`, `alpha`, `lr`, `converged`): a setting is (α, lr); a
        diverged member counts as not learned."""
        by: dict[tuple, dict[int, bool]] = {}
        for r in rows:
            by.setdefault((r.get("alpha"), r.get("lr")), {})[int(r["seed"])] = bool(r["converged"])
        return cls(label, by)

    def seeds(self) -> list[int]:
        return sorted({s for per_seed in self.by_setting.values() for s in per_seed})

    def count(self, setting, seeds: Sequence[int]) -> tuple[int, int]:
        per_seed = self.by_setting[setting]
        chosen = [s for s in seeds if s in per_seed]
        return sum(bool(per_seed[s]) for s in chosen), len(chosen)

    def best(self, seeds: Sequence[int]):
        """The setting that learned most often on `seeds` (ties: the first in sorted order)."""
        return max(sorted(self.by_setting, key=repr), key=lambda h: self.count(h, seeds)[0] / max(1, self.count(h, seeds)[1]))


def compare_fractions(a: Outcomes, b: Outcomes, *, selection: str = "split", level: float = LEVEL) -> dict[str, Any]:
    """Does A learn in a larger fraction of networks than B? Each method's best setting (α, lr)
    is chosen from its grid, which inflates the chosen fraction; `selection` says how that is
    accounted for:

    - "split": choose each method's setting on half the seeds (every other seed, sorted) and
      compare the fractions on the other half (unbiased, at the price of half the seeds);
    - "bonferroni": choose on all seeds and multiply each one-sided p by the number of
      setting pairs compared (conservative).
    A method with a single setting needs no selection and is counted on all its seeds; with
    both single, selection is "none". Returns the verdict, the one-sided Fisher p-values of
    both directions, the counts, Wilson 95 % intervals and the chosen settings.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    grid = len(a.by_setting) * len(b.by_setting)
    if grid == 1:
        selection = "none"

    def halves(method: Outcomes) -> tuple[list[int], list[int]]:
        seeds = method.seeds()
        if selection == "split" and len(method.by_setting) > 1:
            return seeds[0::2], seeds[1::2]
        return seeds, seeds

    (pick_a, test_a), (pick_b, test_b) = halves(a), halves(b)
    best_a, best_b = a.best(pick_a), b.best(pick_b)
    ka, na = a.count(best_a, test_a)
    kb, nb = b.count(best_b, test_b)
    if na == 0 or nb == 0:
        return {"verdict": INCONCLUSIVE, "why": "no held-out seeds to compare on", "selection": selection}
    factor = grid if selection == "bonferroni" else 1
    p_claim = min(1.0, factor * fisher_greater(ka, na, kb, nb))
    p_opposite = min(1.0, factor * fisher_greater(kb, nb, ka, na))
    described = {"split": "best setting chosen on half the seeds (every other seed), compared on the other "
                          "half; a method with one setting on all its seeds",
                 "bonferroni": f"best setting on all seeds, p × {grid} setting pairs (Bonferroni)",
                 "none": "one setting per method, all seeds"}[selection]
    return {"verdict": directional_verdict(p_claim, p_opposite, level), "selection": selection,
            "selection_described": described, "p": p_claim, "p_opposite": p_opposite, "level": level,
            a.label: _fraction(ka, na) | {"setting": _plain(best_a)},
            b.label: _fraction(kb, nb) | {"setting": _plain(best_b)}}


def _fraction(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"learned": k, "n": n, "fraction": k / n, "ci95": [lo, hi]}


def _plain(setting):
    return list(setting) if isinstance(setting, tuple) else setting
