"""The ``pvtt`` command line imports only the invoked command's module.

Every command module pulls in torch, Lance or pandas (seconds of start-up); ``pvtt
--help`` must still list every command with its one-line help.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from pvtt.tools.cli import COMMANDS, build_parser, invoked_command

HEAVY = ("torch", "lance", "pandas", "pyarrow")


def _imports_after(args: list[str]) -> dict[str, object]:
    """Run ``pvtt ARGS`` in a fresh interpreter: its output and the modules it imported."""
    code = (
        "import json, sys, contextlib, io\n"
        "from pvtt.tools.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        main({args!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps({'out': out.getvalue(), 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_help_lists_every_command_without_importing_any() -> None:
    result = _imports_after(["--help"])
    listing = " ".join(result["out"].split())  # argparse wraps long help lines
    for name, (_module, help_text) in COMMANDS.items():
        assert f"{name} {help_text}" in listing, name
    commands = [m for m in result["modules"] if m.startswith("pvtt.tools.commands.")]
    assert commands == []
    assert not [m for m in HEAVY if m in result["modules"]]


def test_a_command_imports_only_its_own_module() -> None:
    result = _imports_after(["query", "--help"])
    assert "--difficulty" in result["out"] and "--where" in result["out"]
    commands = {m for m in result["modules"] if m.startswith("pvtt.tools.commands.")}
    assert commands == {"pvtt.tools.commands.query", "pvtt.tools.commands._common"}
    assert not [m for m in HEAVY if m in result["modules"]]  # its parser needs no Lance


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_listed_command_registers_its_parser(name: str) -> None:
    module_name, _help = COMMANDS[name]
    module = importlib.import_module(f"pvtt.tools.commands.{module_name}")
    sub = argparse.ArgumentParser().add_subparsers()
    module.register(sub)
    assert list(sub.choices) == [name]
    parsers = build_parser(name)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    arguments = {n: len(parsers[n]._actions) for n in COMMANDS}  # a listing entry has only -h
    assert arguments[name] > 1 and all(arguments[n] == 1 for n in COMMANDS if n != name)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["query", "OUT"], "query"),
        (["-v", "-v", "build", "cat", "out"], "build"),
        (["-vv", "stats", "OUT"], "stats"),
        (["--help", "query"], None),  # pvtt's own help first: the listing
        (["-h"], None),
        ([], None),
    ],
)
def test_the_invoked_command_is_found(argv: list[str], command: str | None) -> None:
    assert invoked_command(argv) == command
