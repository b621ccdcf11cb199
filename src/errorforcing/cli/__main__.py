"""`python -m errorforcing.cli`: the same program as the `errorforcing` command."""

from . import entry

entry()
