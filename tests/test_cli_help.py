"""The command line explains itself: a version, and help text on every option."""

import argparse
import subprocess
import sys

import pytest

from codesign.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_version_prints_name_and_version():
    from importlib.metadata import version

    result = subprocess.run(
        [sys.executable, "-m", "codesign", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"codesign {version('codesign')}"


def test_top_level_help_names_the_main_commands(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
    for command in ("demo", "run", "search"):
        assert f"codesign {command}" in text


@pytest.mark.parametrize("command", sorted(_subcommands(build_parser())))
def test_every_option_has_help(command):
    subparser = _subcommands(build_parser())[command]
    assert subparser.description, f"{command} has no description"
    for action in subparser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"codesign {command} {name} has no help"
        # Expanding the text catches a stray % that would break `--help`.
        subparser._get_formatter()._expand_help(action)


# An install whose bundled checkpoints cannot be found (a stale editable install, say): the
# parser must not look them up, so help and version still work there.
BROKEN_INSTALL = (
    "import sys, codesign.resources as r; r.CHECKPOINTS_PACKAGE = 'codesign.no_such_data'; "
    "from codesign.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["demo", "--help"]])
def test_help_and_version_never_look_up_bundled_files(args):
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_INSTALL, *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "codesign" in result.stdout
