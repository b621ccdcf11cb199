"""One module per paper (its sweeps or workflow, its claims, what differs from it) and the
registry that runs them and evaluates their claims: `reproduce(NAME, DIR)`, `evaluate_claims(DIR)`."""

from . import ef, kaleb, liu, williams_zipser
from ._claims import (AllOf, Arm, Claim, CurveRises, Evidence, FewerEpochs, FractionLearned, LowerValue, SummaryClaim,
                      claims_table, headline)
from ._registry import NAMES, REPRODUCTIONS, SWEEPS, Reproduction
from ._run import CLAIMS_FILE, ReproductionResult, evaluate_claims, present, reproduce

__all__ = ["ef", "kaleb", "liu", "williams_zipser", "AllOf", "Arm", "Claim", "CurveRises", "Evidence", "FewerEpochs",
           "FractionLearned", "LowerValue", "SummaryClaim", "claims_table", "headline", "NAMES", "REPRODUCTIONS", "SWEEPS",
           "Reproduction", "CLAIMS_FILE", "ReproductionResult", "evaluate_claims", "present", "reproduce"]
