"""Error Forcing (Sağtekin, Hess, Durstewitz, Savin et al. 2025): Fig. 2 (BPTT, TF-BPTT, EF-BPTT
and GRU/LSTM + BPTT over delays on delayed XOR and cued evidence integration) and Fig. 3 (RFLO
vs EF-RFLO, EF through a fixed or a learned random matrix F). SPEC §5."""

from __future__ import annotations

from ..experiments import ALPHA_GRID
from ._claims import AllOf, Arm, CurveRises, FewerEpochs, FractionLearned
from ._spec import quick_note, spec

PAPER = "Sağtekin et al. (2025), Error Forcing, CCN"
PROTOCOL = {"epochs": 200, "batch": 128, "optim": {"name": "adam", "lr": [3e-4]}, "model": {"hidden": 50}}
# The authors' sweep (make_disbatch.py) runs delays up to 1000 steps (1 s at dt = 1 ms).
DELAYS = [50, 100, 200, 400, 1000]


def _methods(alphas: list[float], rule: str = "bptt", gated: bool = True,
             seeds: tuple[int, int] | None = None) -> dict[str, list]:
    """The Fig. 2 arms as one zip: RULE, TF-RULE and EF-RULE on the leaky RNN, and GRU/LSTM + RULE
    (`seeds` = (leaky arms, gated arms) instead of the spec's seeds, where given)."""
    kinds = ["leaky", "leaky", "leaky"] + (["gru", "lstm"] if gated else [])
    forcing = ["none", "tf", "ef"] + (["none", "none"] if gated else [])
    alpha = [[0.0], alphas, alphas] + ([[0.0], [0.0]] if gated else [])
    arms = {"model.kind": kinds, "forcing.kind": forcing, "forcing.alpha": alpha, "rule.kind": [rule] * len(kinds)}
    if gated and seeds is not None:
        arms["seeds"] = [seeds[0]] * 3 + [seeds[1]] * 2
    return arms


# Quick: one α fixed in advance, so no α is picked on the seeds it is tested on and every seed
# counts (the split test would leave 4 of 8). α = 0.1 was the best α of TF-BPTT and EF-BPTT in
# the main job (seeds 0–7 and 100–107); the quick run uses seeds 200–207, not used to choose it.
QUICK_ALPHA, QUICK_SEED0 = 0.1, 200


def fig2(quick: bool):
    """Fig. 2. Quick: delayed XOR at the main job's 400-step delay (where BPTT, TF and EF
    separate), 8 seeds (200–207), α = 0.1 fixed in advance, 100 epochs, GRU/LSTM with 4 seeds."""
    if quick:
        base = PROTOCOL | {"epochs": 100, "seed": QUICK_SEED0}
        note = quick_note("delayed XOR only, delay 400, seeds 200–207, α = 0.1, 100 epochs, GRU/LSTM 4 seeds")
        return [spec("ef-fig2", base=base, seeds=8, note=note, grid={"task.kind": ["delayed-xor"], "task.delay": [400]},
                     zips=[_methods([QUICK_ALPHA], seeds=(8, 4))])]
    return [spec("ef-fig2", base=PROTOCOL, seeds=20, grid={"task.kind": ["delayed-xor", "evidence-integration"],
                                                            "task.delay": DELAYS}, zips=[_methods(list(ALPHA_GRID))])]


def fig3(quick: bool):
    """Fig. 3: RFLO vs EF-RFLO on delayed XOR over delays; EF through a fixed vs a learned random
    feedback matrix F, with cos(F, W_outᵀ) recorded per epoch (analysis.diagnostics).
    Quick: delay 20, lr 3e-3, 60 epochs; RFLO and EF-RFLO (α = 0.2 fixed in advance) on 24
    seeds (200–223), the fixed-F and learned-F arms (α = 0.2) on 8."""
    if quick:
        # lr 3e-3, not the paper's 3e-4: at 3e-4 nothing learned in 60 epochs (delays 10 and 20),
        # and Adam's steps scale with lr, so ≈ 600 epochs would be needed: ≈ 10× this budget.
        # α = 0.2 was EF-RFLO's best (tied with 0.5: 4/8) on seeds 0–7 at this setting; the
        # quick run uses seeds 200–223, so it is not tested on the seeds that chose it.
        base = PROTOCOL | {"epochs": 60, "optim": {"name": "adam", "lr": [3e-3]}, "seed": QUICK_SEED0}
        seeds, alphas, delays, arm_seeds = 24, [0.2], [20], [24, 24, 8, 8]
        note = quick_note("delay 20, lr 3e-3, 60 epochs, α = 0.2; RFLO/EF-RFLO 24 seeds, F arms 8")
    else:
        base, seeds, alphas, delays, note = PROTOCOL, 20, [a for a in ALPHA_GRID if a > 0], DELAYS, ""
        arm_seeds = None
    # RFLO's own learning signal comes through fixed random feedback (Murray 2019)
    base = base | {"task": {"kind": "delayed-xor"}, "rule": {"kind": "rflo", "feedback": "random"}}
    arms = {"forcing.kind": ["none", "ef", "feedback", "feedback"],
            "forcing.alpha": [[0.0], alphas, alphas, alphas],
            "forcing.learn_feedback": [False, False, False, True],
            "analysis.diagnostics": [False, False, True, True]}
    if arm_seeds:
        arms["seeds"] = arm_seeds
    return [spec("ef-fig3", base=base, seeds=seeds, note=note, grid={"task.delay": delays}, zips=[arms])]


def _arm(label, forcing, rule="bptt", model="leaky", **extra):
    return Arm(label, {"forcing": forcing, "rule": rule, "config.model.kind": model} | extra)


BPTT, TF, EF = _arm("BPTT", "none"), _arm("TF-BPTT", "tf"), _arm("EF-BPTT", "ef")
GRU, LSTM = _arm("GRU+BPTT", "none", model="gru"), _arm("LSTM+BPTT", "none", model="lstm")
XOR = {"task": "delayed-xor"}
LONGEST = dict(where=XOR, at_field="config.task.delay", at="max")


def _fig2_claims():
    return (
        AllOf("at the longest delay, fraction learned EF-BPTT > TF-BPTT > BPTT (delayed XOR)",
              f"{PAPER}, Fig. 2a–b", (FractionLearned("EF-BPTT > TF-BPTT", "Fig. 2", EF, TF, **LONGEST),
                                      FractionLearned("TF-BPTT > BPTT", "Fig. 2", TF, BPTT, **LONGEST))),
        FractionLearned("at the longest delay EF-BPTT learns in a larger fraction than BPTT (delayed XOR)",
                        f"{PAPER}, Fig. 2a", EF, BPTT, **LONGEST),
        FewerEpochs("EF-BPTT converges in fewer epochs than TF-BPTT (median, longest delay, delayed XOR)",
                    f"{PAPER}, Fig. 2c", EF, TF, **LONGEST),
        AllOf("vanilla RNN + EF beats GRU and LSTM + BPTT (fraction learned, longest delay, delayed XOR)",
              f"{PAPER}, Fig. 2a (gated baselines)",
              (FractionLearned("EF-BPTT > GRU+BPTT", "Fig. 2", EF, GRU, **LONGEST),
               FractionLearned("EF-BPTT > LSTM+BPTT", "Fig. 2", EF, LSTM, **LONGEST))),
    )


RFLO = _arm("RFLO", "none", rule="rflo")
EF_RFLO = _arm("EF-RFLO", "ef", rule="rflo")
FIXED_F = Arm("EF(fixed F)-RFLO", {"forcing": "feedback", "rule": "rflo", "config.forcing.learn_feedback": False})
LEARNED_F = Arm("EF(learned F)-RFLO", {"forcing": "feedback", "rule": "rflo", "config.forcing.learn_feedback": True})


def _fig3_claims():
    return (
        FractionLearned("EF-RFLO learns in a larger fraction than RFLO (longest delay)", f"{PAPER}, Fig. 3a",
                        EF_RFLO, RFLO, **LONGEST),
        CurveRises("with a fixed random F the decoder aligns to F: cos(F, W_outᵀ) rises during training",
                   f"{PAPER}, Fig. 3b", FIXED_F, "cos_G_Wout"),
        CurveRises("with a learned F, F and the decoder align: cos(F, W_outᵀ) rises during training",
                   f"{PAPER}, Fig. 3c", LEARNED_F, "cos_G_Wout"),
    )


FIG2_CLAIMS = _fig2_claims()
FIG3_CLAIMS = _fig3_claims()
FIG2_DIFFERENCES = ("Delays 50–1000 (the paper's text gives no list; the authors' sweep script reaches 1000). "
                    "Divergent members are failures, never re-seeded (the reference code re-seeds). "
                    "Quick: delayed XOR only, delay 400, seeds 200–207, α = 0.1 fixed in advance (the main "
                    "job's best, chosen on other seeds), 100 epochs, GRU/LSTM on 4 seeds.")
FIG3_DIFFERENCES = ("RFLO with fixed random feedback B per member; F learns with the readout's delta rule. "
                    "Quick: delay 20 and lr 3e-3 (at lr 3e-4 nothing learned within 60 epochs; ≈ 600 "
                    "would be needed), α = 0.2 fixed in advance, 24 seeds for RFLO and EF-RFLO.")
