"""The `fedrec` command, the top layer: it drives shared/, client/ and server/, and nothing below
imports it. The parser and its sub-commands live in cli/commands.py; not in a cli/main.py, whose
import would replace this function on the package with that module."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """`fedrec ARGV`: its exit status. The sub-commands (and torch with them) load here, not when
    `cli` is imported, so `cli.app` and `cli.local` stay cheap for the tests and benchmarks."""
    from cli.commands import main as fedrec

    return fedrec(argv)
