"""The ``codesign`` command line: argparse subcommands, no logic of their own.

``parser`` defines every option; ``model_commands`` (eval, ptq, qat, prune, train),
``export_commands`` (export), ``hardware_commands`` (simulate) and ``study_commands`` (run, search, demo) each build a
variant or a study from the flags and call the pipeline. Every command takes ``--out DIR`` and
writes ``DIR/result.json`` atomically, after all work is done, so a failed run leaves nothing
half-written. Any user error ends with exit status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from codesign.cli.export_commands import cmd_export
from codesign.cli.hardware_commands import cmd_simulate
from codesign.cli.model_commands import cmd_eval, cmd_prune, cmd_ptq, cmd_qat, cmd_train
from codesign.cli.parser import build_parser
from codesign.cli.study_commands import cmd_demo, cmd_run, cmd_search, demo_checkpoint
from codesign.errors import CodesignError

__all__ = ["COMMANDS", "build_parser", "demo_checkpoint", "main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "eval": cmd_eval,
    "ptq": cmd_ptq,
    "qat": cmd_qat,
    "train": cmd_train,
    "prune": cmd_prune,
    "export": cmd_export,
    "simulate": cmd_simulate,
    "demo": cmd_demo,
    "run": cmd_run,
    "search": cmd_search,
}


def main(argv: list[str] | None = None) -> int:
    """Run one ``codesign`` command; the exit status: 0, 2 on a user error, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None) is not None:
            from codesign.study import check_out_dir

            check_out_dir(args.out)  # before any work: a bad --out never costs a run
        COMMANDS[args.command](args)
    except CodesignError as exc:
        sys.stderr.write(f"codesign: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("codesign: interrupted\n")
        return 130
    return 0
