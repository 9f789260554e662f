"""Every code block of README.md runs, so the README cannot drift from the code.

- ``python`` blocks run as scripts, in a folder where ``demo-out/dataset`` is a built demo
  dataset (as after ``make demo``), with ``pvtt`` on the PATH;
- ``bash`` blocks run line by line there too;
- ``toml`` blocks load as build configs, ``csv`` blocks as catalogs' ``products.csv``;
- blocks without a language are diagrams and synopses, and every ``pvtt <command>`` a
  synopsis names must be a command of the CLI.

A block that must not run here says why on the line before its fence:
``<!-- not run: the reason -->`` (the test checks that a reason is given).
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvtt.schemas.config import load_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->\s*$")
DEMO_PAIRS = 48
"""Enough for the README's filters (hard/expert, score >= 0.7) to select several pairs."""


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int
    not_run: str | None

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language or 'text'}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` with their language and an optional not-run reason."""
    lines = text.splitlines()
    blocks: list[Block] = []
    start, language, body = None, "", []
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if start is None and match:
            start, language, body = number, match.group(1), []
        elif start is not None and line.strip() == "```":
            before = lines[start - 2] if start >= 2 else ""
            reason = NOT_RUN.match(before)
            blocks.append(Block(language, "\n".join(body) + "\n", start, reason and reason.group(1)))
            start = None
        elif start is not None:
            body.append(line)
    assert start is None, f"README.md:{start}: a code fence is never closed"
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def _ids(block: Block) -> str:
    return block.name


def test_readme_has_the_blocks_this_test_expects() -> None:
    languages = {b.language for b in BLOCKS}
    assert {"python", "bash", "toml", ""} <= languages, languages
    unknown = languages - {"python", "bash", "toml", "csv", ""}
    assert not unknown, f"no runner for README blocks in {sorted(unknown)}"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``demo-out/`` as ``make demo`` leaves it (fewer pairs, same layout)."""
    home = tmp_path_factory.mktemp("readme")
    subprocess.run(
        [sys.executable, "-m", "pvtt.tools.cli", "demo", "demo-out", "--limit-pairs", str(DEMO_PAIRS)],
        cwd=home, check=True, capture_output=True, timeout=600,
    )
    return home


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO / "tests")
    return env


def _run(argv: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "python"], ids=_ids)
def test_python_block_runs(block: Block, demo_home: Path) -> None:
    script = demo_home / f"readme_{block.line}.py"
    script.write_text(block.text, encoding="utf-8")
    _run([sys.executable, script.name], demo_home, block.name)


def test_blocks_that_do_not_run_say_why() -> None:
    for block in BLOCKS:
        if block.not_run is not None:
            assert len(block.not_run.split()) >= 3, f"{block.name}: say why the block does not run"
            assert block.language == "bash", f"{block.name}: only shell blocks may stay unrun"


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.language == "bash" and not b.not_run], ids=_ids
)
def test_bash_block_runs(block: Block, demo_home: Path) -> None:
    _run(["bash", "-euo", "pipefail", "-c", block.text], demo_home, block.name)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "toml"], ids=_ids)
def test_toml_block_is_a_valid_build_config(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "build.toml"
    path.write_text(block.text, encoding="utf-8")
    load_config(path)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "csv"], ids=_ids)
def test_csv_block_is_a_catalog_table(block: Block) -> None:
    rows = list(csv.DictReader(io.StringIO(block.text)))
    assert rows, block.name
    assert {"id", "category", "subcategory", "video", "images"} <= set(rows[0]), block.name


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == ""], ids=_ids)
def test_synopsis_names_only_real_commands(block: Block) -> None:
    named = sorted(set(re.findall(r"^\s*pvtt ([a-z][a-z-]+)", block.text, flags=re.M)))
    for command in named:
        done = subprocess.run(
            [sys.executable, "-m", "pvtt.tools.cli", command, "--help"],
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, f"{block.name}: `pvtt {command}` is not a command:\n{done.stderr}"
