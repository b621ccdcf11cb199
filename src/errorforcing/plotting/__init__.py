"""Figures (matplotlib, Agg backend) and the HTML report."""

from ._figures import compare_figure, learning_curves, trial_figure
from ._lyapunov import spectrum_figure
from ._report import Report, write_report

__all__ = ["compare_figure", "learning_curves", "trial_figure", "spectrum_figure", "Report", "write_report"]
