"""Every command's ``--help`` is accurate: each console script prints its own usage and
description, every option and argument of every parser (``gg`` and all its
subcommands, ``gg-force``, ``gg-force-and-run``, ``gg-infer``) has help text, and
errors follow the one mapping of ir/cli_errors (one line, traceback only in debug)."""

from __future__ import annotations

import argparse
import subprocess
import tomllib
from pathlib import Path

import pytest

from executor import force_cli, gg_command
from model_sub import infer
from tests.forcing import VENV_BIN, gg_env

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
NO_DESCRIPTION_YET: set[str] = set()


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser a user can reach, by the command line that reaches it."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(f"{name} {sub}", child)

    walk("gg", gg_command.build_parser())
    walk("gg-force", force_cli.build_parser())
    walk("gg-force-and-run", force_cli.build_force_and_run_parser())
    walk("gg-infer", infer.build_parser())
    return found


PARSERS = _parsers()


def test_every_console_script_is_covered():
    assert set(SCRIPTS) <= {name for name in PARSERS if " " not in name}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_and_argument_has_help_and_every_command_a_description(name):
    parser = PARSERS[name]
    undocumented = [action.option_strings or [action.dest] for action in parser._actions
                    if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert not undocumented, f"{name}: no help for {undocumented}"
    if name not in NO_DESCRIPTION_YET:
        assert parser.description, f"{name} --help has no description"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_console_script_prints_its_own_usage(script):
    result = subprocess.run([str(VENV_BIN / script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script} "), result.stdout
    assert PARSERS[script].description.split()[0] in result.stdout


def test_gg_subcommands_show_the_standalone_descriptions():
    for sub, script in (("force", "gg-force"), ("infer", "gg-infer")):
        assert PARSERS[f"gg {sub}"].description == PARSERS[script].description


def test_one_error_rule_for_every_command(tmp_path):
    """The same kind of error is the same line and status everywhere; the traceback
    appears only with --debug or GG_DEBUG."""
    env = gg_env(tmp_path / ".gg")
    missing = str(tmp_path / "no-such-file")
    for argv in (["gg", "hash", missing], ["gg", "collect", missing]):
        result = subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
        assert (result.returncode, result.stderr) == (1, f"gg: error: No such file or directory: {missing}\n")
        for loud_argv in ([argv[0], "--debug", *argv[1:]], [*argv[:2], "--debug", *argv[2:]]):
            loud = subprocess.run([str(VENV_BIN / loud_argv[0]), *loud_argv[1:]], env=env, capture_output=True,
                                  text=True)
            assert loud.returncode == 1 and "Traceback" in loud.stderr, loud_argv
            assert loud.stderr.endswith(f"gg: error: No such file or directory: {missing}\n")
    for argv, prog in ((["gg-force", missing], "gg-force"), (["gg", "force", missing], "gg force")):
        result = subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
        assert result.returncode == 1 and result.stderr.startswith(f"{prog}: error: "), result.stderr
        debug = subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], env={**env, "GG_DEBUG": "1"},
                               capture_output=True, text=True)
        assert "Traceback" in debug.stderr and debug.stderr.splitlines()[-1] == result.stderr.strip()
    for argv, prog in ((["gg-infer"], "gg-infer"), (["gg", "infer"], "gg")):
        result = subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
        assert (result.returncode, result.stderr) == (2, f"{prog}: error: no command given (e.g. gg-infer make)\n")
