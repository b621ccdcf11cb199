"""Figures (matplotlib, Agg backend)."""

from ._figures import compare_figure, learning_curves

__all__ = ["compare_figure", "learning_curves"]
