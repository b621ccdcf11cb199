"""Tasks: keyed, pure trial samplers (`AbstractTask.sample(key=...) -> Trials`)."""

from ._base import AbstractTask, Trials, sample_batch
from ._error_forcing import DelayedXOR, EvidenceIntegration, SineGeneration

__all__ = ["AbstractTask", "Trials", "sample_batch", "DelayedXOR", "EvidenceIntegration", "SineGeneration"]
