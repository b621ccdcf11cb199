"""Recurrent cells: one unbatched step `h = cell(h, x)` and a readout `y = cell.readout(h)`."""

from ._base import ACTIVATIONS, AbstractCell, frozen_grads
from ._leaky import LeakyRNN

__all__ = ["ACTIVATIONS", "AbstractCell", "frozen_grads", "LeakyRNN"]
