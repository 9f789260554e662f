"""``pvtt query`` and the other read commands: any-case difficulties, and a folder that
holds a dataset (``pvtt demo``'s OUT) named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from records_factory import make_samples

from pvtt.builder.writer import DatasetWriter
from pvtt.tools.cli import main


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A folder laid out as `pvtt demo` leaves it: OUT/catalog and OUT/dataset."""
    out = tmp_path_factory.mktemp("demo-like")
    (out / "catalog").mkdir()
    with DatasetWriter(out / "dataset", formats=("lance",)) as writer:
        for sample in make_samples(shared_data, 24):
            writer.write(sample)
    return out


def _query(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict]:
    assert main(["query", *argv, "--all", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_difficulty_in_any_case(demo_like: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = str(demo_like / "dataset")
    lower = _query([ds, "--difficulty", "expert,hard"], capsys)
    assert lower and {r["difficulty"] for r in lower} <= {"expert", "hard"}
    assert _query([ds, "--difficulty", "Expert,HARD"], capsys) == lower


@pytest.mark.parametrize(
    "command",
    [["query"], ["stats"], ["verify"], ["report"], ["export-pairs", "{tmp}/x"],
     ["preview", "--n", "1", "-o", "{tmp}/x.png"]],
    ids=lambda argv: argv[0],
)
def test_the_dataset_inside_out_is_suggested(
    demo_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    name, *rest = (arg.format(tmp=tmp_path) for arg in command)
    assert main([name, str(demo_like), *rest]) == 1
    err = capsys.readouterr().err
    assert "no manifest" in err and f"did you mean {demo_like / 'dataset'}?" in err


def test_any_dataset_one_level_down_is_suggested(
    demo_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "b").symlink_to(demo_like / "dataset")
    (tmp_path / "runs" / "a").mkdir()  # not a dataset: not suggested
    assert main(["query", str(tmp_path / "runs")]) == 1
    assert f"(did you mean {tmp_path / 'runs' / 'b'}?)" in capsys.readouterr().err


def test_no_suggestion_without_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no manifest" in err and "did you mean" not in err
