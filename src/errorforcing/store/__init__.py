"""The results store (SQLite + equinox-serialised parameters)."""

from ._sqlite import MEMBER_COLUMNS, RunStore, StoreError, owner_alive, process_id
from ._export import export, member_table

__all__ = ["MEMBER_COLUMNS", "RunStore", "StoreError", "export", "member_table", "owner_alive", "process_id"]
