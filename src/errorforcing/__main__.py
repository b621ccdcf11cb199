"""`python -m errorforcing`: the same program as the `errorforcing` command."""

from .cli import entry

entry()
