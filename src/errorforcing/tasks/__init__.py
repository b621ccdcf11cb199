"""Tasks: keyed, pure trial samplers (`AbstractTask.sample(key=...) -> Trials`)."""

from ._base import AbstractTask, Trials, sample_batch
from ._error_forcing import DelayedXOR, EvidenceIntegration, SineGeneration
from ._neurogym import NEUROGYM_TASKS, NeurogymTask, from_neurogym
from ._reach import CenterOutReach, integrate_velocity, reference_position, reference_velocity, rotate
from ._romo import Romo
from ._sine_shift import SineFrequencyShift
from ._williams_zipser import (
    AbstractContinualTask,
    BalancedParentheses,
    DelayedNonmatch,
    Oscillation,
    PipelinedXOR,
    SequenceRecognition,
    stream,
)

__all__ = [
    "AbstractTask", "Trials", "sample_batch",
    "DelayedXOR", "EvidenceIntegration", "SineGeneration",
    "AbstractContinualTask", "stream",
    "PipelinedXOR", "SequenceRecognition", "DelayedNonmatch", "BalancedParentheses", "Oscillation",
    "Romo",
    "SineFrequencyShift",
    "CenterOutReach", "reference_position", "reference_velocity", "integrate_velocity", "rotate",
    "NeurogymTask", "from_neurogym", "NEUROGYM_TASKS",
]
