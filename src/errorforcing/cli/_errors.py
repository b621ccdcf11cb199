"""Bad input: one line on stderr naming the field, exit code 2, nothing written."""

from __future__ import annotations

from typing import NoReturn


class BadInput(Exception):
    """Invalid user input: reported as one line on stderr, exit code 2, nothing written."""


def fail(message: str) -> NoReturn:
    raise BadInput(message)
