"""``pvtt demo`` ends with commands to try: they must run as printed, in a shell whose
PATH does not hold the virtual environment (``make demo`` never activates it)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pvtt.tools.commands.demo import next_steps

SCRIPT = Path(sys.executable).parent / "pvtt"
BARE_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
pytestmark = pytest.mark.skipif(
    not SCRIPT.is_file(), reason="needs the pvtt console script beside this Python (pip install -e .)"
)


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("  ")]


def _run_in_bash(line: str, path: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_commands_run_as_printed_without_an_active_venv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(SCRIPT.parents[2])  # where `make demo` runs: the venv is ./.venv
    monkeypatch.setenv("PATH", BARE_PATH)
    monkeypatch.setattr(sys, "argv", [os.path.relpath(SCRIPT)])
    text = next_steps(Path("demo-out"))
    commands = _commands(text)
    assert len(commands) >= 8
    for line in commands:  # each line is valid shell, comments included
        check = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True)
        assert check.returncode == 0, (line, check.stderr)
    programs = {shlex.split(line)[0] for line in commands}
    assert len(programs) == 2  # pvtt and the Python that has lance
    for program in programs:
        probe = "--version" if program.endswith("pvtt") else "-c 'import lance'"
        done = _run_in_bash(f"{program} {probe}", BARE_PATH, Path.cwd())
        assert done.returncode == 0, (program, done.stderr)
    assert "source " in text and "activate" in text


def test_plain_pvtt_when_the_venv_is_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join([str(SCRIPT.parent), BARE_PATH]))
    monkeypatch.setattr(sys, "argv", [str(SCRIPT)])
    text = next_steps(Path("demo-out"))
    assert all(line.split()[0] in ("pvtt", "python") for line in _commands(text))
    assert "activate" not in text


def test_paths_with_spaces_are_quoted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", BARE_PATH)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT)])
    line = next(c for c in _commands(next_steps(Path("my demo"))) if " stats " in c)
    words = shlex.split(line)
    assert Path(words[0]) == SCRIPT and words[2] == "my demo/dataset"


def test_without_a_console_script_python_runs_the_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", BARE_PATH)
    monkeypatch.setattr(sys, "argv", ["-m"])  # what `python -m pvtt.tools.cli` shows
    monkeypatch.setattr(sys, "executable", str(tmp_path / "env" / "bin" / "python"))
    line = next(c for c in _commands(next_steps(Path("demo"))) if " stats " in c)
    assert line.startswith("env/bin/python -m pvtt.tools.cli stats ")  # relative: below cwd
