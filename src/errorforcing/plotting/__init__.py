"""Figures (matplotlib, Agg backend) and the HTML report."""

from ._figures import compare_figure, learning_curves, trial_figure
from ._dynamics import dynamics_comparison_figure, fixed_points_figure, pca_figure
from ._lyapunov import spectrum_figure
from ._report import Report, write_report
from ._compare import compare_figures
from ._bench import plot_scaling
from ._marschall import marschall_figures
from ._kaleb import kaleb_figures

__all__ = ["compare_figure", "learning_curves", "trial_figure", "spectrum_figure", "fixed_points_figure", "pca_figure",
           "dynamics_comparison_figure", "Report", "write_report", "compare_figures", "plot_scaling",
           "marschall_figures", "kaleb_figures"]
