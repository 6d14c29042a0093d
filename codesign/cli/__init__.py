"""The ``codesign`` command line: argparse subcommands, no logic of their own.

``parser`` defines every option; ``model_commands`` (eval, ptq, qat, prune, train),
``export_commands`` (export), ``hardware_commands`` (simulate) and ``study_commands`` (run, report, search, demo) each build
a variant or a study from the flags and call the pipeline. Every command takes ``--out DIR``
(``report`` reads and writes ``DIR``) and writes its files atomically, after all work is done,
so a failed run leaves nothing half-written. Any user error ends with exit status 2 and one
line on stderr.

The single-step commands (and ``search``) hold ``OUT/.codesign.lock`` while they run, so a
second process on the same ``--out`` stops at once with one line naming the holder; ``run``
and ``demo`` instead lock each variant (:mod:`codesign.study.fanout`), so many processes can
share one study directory.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from codesign.cli.export_commands import cmd_export
from codesign.cli.hardware_commands import cmd_simulate
from codesign.cli.model_commands import cmd_eval, cmd_prune, cmd_ptq, cmd_qat, cmd_train
from codesign.cli.parser import build_parser
from codesign.cli.study_commands import (
    cmd_demo,
    cmd_report,
    cmd_run,
    cmd_search,
    demo_checkpoint,
)
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
    "report": cmd_report,
    "search": cmd_search,
}
# Commands that hold their --out directory's lock for their whole run (see codesign.locks).
DIRECTORY_LOCKED = frozenset(
    {"eval", "ptq", "qat", "train", "prune", "simulate", "export", "search"}
)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler's time limit, `kill`) as SystemExit: ``finally`` blocks run and
    release the locks this process holds."""
    raise SystemExit(128 + signum)


def _first_rank() -> bool:
    """False in the ranks of a torchrun other than 0: rank 0 holds the directory lock for the
    whole group (the others write nothing), so the group does not lock itself out."""
    from codesign import distributed

    return distributed.process_info(os.environ).rank == 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``codesign`` command; the exit status: 0, 2 on a user error or a file system
    error (a full or read-only disk), 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        if getattr(args, "out", None) is not None:
            from codesign.study import check_out_dir

            check_out_dir(args.out)  # before any work: a bad --out never costs a run
        if args.command in DIRECTORY_LOCKED and _first_rank():
            from codesign.locks import hold_directory

            with hold_directory(args.out, args.command):
                COMMANDS[args.command](args)
        else:
            COMMANDS[args.command](args)
    except CodesignError as exc:
        sys.stderr.write(f"codesign: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("codesign: interrupted\n")
        return 130
    except OSError as exc:  # the disk filled up, or a file or folder became unwritable
        sys.stderr.write(f"codesign: error: {os_error_line(exc)}\n")
        return 2
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
        from codesign import distributed

        distributed.shutdown()  # under torchrun: leave the process group the command joined
    return 0


# What to do about the errors a file system raises while a command runs.
_OS_ADVICE = {
    errno.ENOSPC: "free space on that disk, or give an --out on another one, and run again",
    errno.EDQUOT: "free space within the quota, or give an --out elsewhere, and run again",
    errno.EROFS: "the file system is read-only: give an --out you can write to",
    errno.EACCES: "check its permissions, or give an --out you can write to",
    errno.EPERM: "check its permissions, or give an --out you can write to",
}


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError``: what failed on which file, and what to do. The file being
    written stays as it was: every write goes to a temporary file renamed on success."""
    where = f" ({exc.filename})" if exc.filename else ""
    advice = _OS_ADVICE.get(exc.errno or 0, "fix the file or folder named, and run again")
    return f"{exc.strerror or exc}{where}: {advice}"
