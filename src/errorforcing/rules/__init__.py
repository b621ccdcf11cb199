"""Learning rules: how weights learn. Each owns the time loop (`value_and_grad`)."""

from ._base import AbstractLearningRule, AbstractStepwiseRule
from ._online import AbstractOnlineRule
from ._bptt import BPTT
from ._alignment import feedback_alignment, gradient_alignment
from ._eprop import AbstractTraceRule, EProp
from ._rflo import RFLO
from ._rtrl import RTRL
from ._truncated import TruncatedBPTT
from ._online_bptt import OnlineBPTT
from ._influence import AbstractInfluenceRule
from ._snap import SnAp
from ._uoro import UORO
from ._kfrtrl import KFRTRL
from ._loss import Objective, masked_mse, sign_correct, trial_weights
from ._step import StepLoss, trainable_spec

__all__ = ["AbstractLearningRule", "AbstractStepwiseRule", "AbstractOnlineRule", "BPTT", "Objective", "masked_mse", "sign_correct",
           "trial_weights", "TruncatedBPTT", "OnlineBPTT", "RTRL", "AbstractTraceRule", "EProp", "RFLO", "gradient_alignment",
           "feedback_alignment", "StepLoss", "trainable_spec", "AbstractInfluenceRule", "SnAp", "UORO", "KFRTRL"]
