"""The results store (SQLite + equinox-serialised parameters)."""

from ._sqlite import MEMBER_COLUMNS, RunStore

__all__ = ["MEMBER_COLUMNS", "RunStore"]
