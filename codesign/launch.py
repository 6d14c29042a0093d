"""The ``codesign`` command's entry point: imports the command line, then runs it.

Importing torch and the package takes seconds; a Ctrl-C in that time would otherwise end in a
traceback, before :func:`codesign.cli.main` (which answers interrupts with one line) exists.
This module imports nothing heavy itself (``codesign/__init__`` imports lazily).
"""

from __future__ import annotations

import sys

INTERRUPTED_EXIT = 130  # 128 + SIGINT, what shells report for a Ctrl-C


def run(argv: list[str] | None = None) -> int:
    """Import :mod:`codesign.cli` and run ``main(argv)``; its exit status (130 when
    interrupted while importing)."""
    try:
        from codesign.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("codesign: interrupted\n")
        return INTERRUPTED_EXIT
    return main(argv)


def console() -> None:
    """The console script: ``sys.exit(run())``."""
    sys.exit(run())
