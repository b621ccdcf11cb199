"""Recurrent cells: one unbatched step `h = cell(h, x)` and a readout `y = cell.readout(h)`."""

from ._base import ACTIVATIONS, AbstractCell, AbstractLinearReadoutCell, frozen_grads
from ._gated import GRU, LSTM
from ._leaky import LeakyRNN
from ._williams_zipser import WilliamsZipserNet

__all__ = ["ACTIVATIONS", "AbstractCell", "AbstractLinearReadoutCell", "frozen_grads", "LeakyRNN", "GRU", "LSTM", "WilliamsZipserNet"]
