"""The results store (SQLite + equinox-serialised parameters)."""

from ._sqlite import MEMBER_COLUMNS, RunStore
from ._export import export, member_table

__all__ = ["MEMBER_COLUMNS", "RunStore", "export", "member_table"]
