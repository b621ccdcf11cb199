"""Learning rules: how weights learn. Each owns the time loop (`value_and_grad`)."""

from ._base import AbstractLearningRule
from ._bptt import BPTT
from ._loss import Objective, masked_mse, sign_correct, trial_weights

__all__ = ["AbstractLearningRule", "BPTT", "Objective", "masked_mse", "sign_correct", "trial_weights"]
