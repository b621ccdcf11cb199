"""Forcing: how feedback moves the network state during training (SPEC §2)."""

from ._base import (AbstractAdditiveForcing, AbstractForcing, AbstractSelectiveForcing, AbstractTeacherForcing,
                    NoForcing, forcing_strength, readout_pinv)
from ._forcings import ErrorForcing, KalmanErrorForcing, TeacherForcing
from ._feedback import (FeedbackForcing, alignment, decoder_alignment, feedback_update,
                        forcing_alignment)
from ._williams_zipser import WilliamsZipserTeacherForcing
from ._control import ClosedLoop, ControlledCell, FeedbackControl
from ._simulate import forced_step, process_noise, rollout, simulate

__all__ = ["AbstractForcing", "AbstractSelectiveForcing", "AbstractAdditiveForcing", "AbstractTeacherForcing", "NoForcing", "TeacherForcing", "ErrorForcing", "KalmanErrorForcing",
           "forcing_strength", "readout_pinv", "rollout", "simulate", "forced_step", "process_noise",
           "FeedbackForcing", "feedback_update", "alignment", "forcing_alignment", "decoder_alignment",
           "WilliamsZipserTeacherForcing", "FeedbackControl", "ControlledCell", "ClosedLoop"]
