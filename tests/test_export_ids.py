"""A tampered dataset cannot make ``pvtt export-pairs`` write outside DIR.

Export names files after ``pair_id``, ``clip_id``, ``source_id`` and ``target_id`` as
read from the dataset; a row rewritten through Lance to ``../../evil`` must be refused
before anything is written, and ``pvtt verify`` must report it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lance
import pytest
from records_factory import make_samples

from pvtt.builder.writer import DatasetWriter
from pvtt.schemas.keys import InvalidKeyError, check_pair_row_ids
from pvtt.tools.cli import main

HOSTILE = "../../evil"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("export-ids") / "out"
    with DatasetWriter(out, formats=("lance",)) as writer:
        for sample in make_samples(shared_data, 4):
            writer.write(sample)
    return out


def _tamper(clean: Path, dest: Path, values: dict[str, str]) -> str:
    """A copy of ``clean`` whose first pairs row has ``values``, committed as the
    manifest's version (as a hostile publisher would); returns the row's pair id."""
    out = Path(shutil.copytree(clean, dest))
    manifest = json.loads((out / "manifest.json").read_text())
    info = manifest["tables"]["pairs"]
    table = lance.dataset(out / info["path"], version=info["version"])
    pid = table.to_table(columns=["pair_id"], limit=1).column(0)[0].as_py()
    literals = {k: "'" + v.replace("'", "''") + "'" for k, v in values.items()}
    table.update(literals, where=f"pair_id = '{pid}'")
    info["version"] = lance.dataset(out / info["path"]).version
    (out / "manifest.json").write_text(json.dumps(manifest))
    return values.get("pair_id", pid)


@pytest.mark.parametrize(
    "values",
    [
        {"target_id": HOSTILE},
        {"clip_id": HOSTILE},
        {"source_id": HOSTILE},
        {"pair_id": f"{HOSTILE}__P001__img0"},
        {"pair_id": "P000_s000__P001__x/../../../evil"},
    ],
    ids=["target_id", "clip_id", "source_id", "pair_id", "image token"],
)
def test_export_refuses_ids_that_are_not_keys(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], values: dict[str, str]
) -> None:
    out = tmp_path / "data" / "ds"
    pid = _tamper(clean, out, values)
    dest = tmp_path / "data" / "export"
    assert main(["export-pairs", str(out), str(dest), "--all"]) == 1
    err = capsys.readouterr().err
    assert f"pairs row {pid!r}" in err and "nothing exported" in err
    field = next(iter(values))
    assert field.split("_")[0] in err  # the id at fault is named
    assert not dest.exists()  # nothing written, inside DIR or out of it
    assert not list(tmp_path.rglob("evil*"))

    assert main(["verify", str(out), "--no-media"]) == 1
    printed = capsys.readouterr().out
    assert f"problem: lance/pairs row {pid!r}:" in printed and "FAILED" in printed


def test_a_clean_dataset_exports_and_verifies(
    clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(clean), "--no-media"]) == 0
    assert main(["export-pairs", str(clean), str(tmp_path / "export"), "--all"]) == 0
    assert "exported 4 pairs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"clip_id": "c_s000", "source_id": "c", "target_id": "t"}, "pair_id None is not a string"),
        (
            {"pair_id": "c_s001__t__i", "clip_id": "c_s000", "source_id": "c", "target_id": "t"},
            "does not start with clip_id 'c_s000'",
        ),
        (
            {"pair_id": "c_s000__t__i", "clip_id": "c_s000", "source_id": 7, "target_id": "t"},
            "source_id 7 is not a string",
        ),
        (
            {"pair_id": "c_s000__t__i", "clip_id": "c_s000", "source_id": "c.", "target_id": "t"},
            "source_id 'c.' may hold only",
        ),
    ],
)
def test_row_id_check_says_what_is_wrong(row: dict, message: str) -> None:
    with pytest.raises(InvalidKeyError, match=message.replace("(", r"\(")):
        check_pair_row_ids(row)
    check_pair_row_ids(
        {"pair_id": "c_s000__t__i", "clip_id": "c_s000", "source_id": "c", "target_id": "t"}
    )


def test_verify_reports_a_tampered_tar_sample(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sample JSON of a tar-only dataset, rewritten in place (same length, so the
    shard and its index stay well-formed) to name a target outside any folder."""
    out = tmp_path / "tar-only"
    with DatasetWriter(out, formats=("tar",)) as writer:
        for sample in make_samples(shared_data, 4):
            writer.write(sample)
    (shard,) = (out / "tar").glob("*.tar")
    data = shard.read_bytes()
    assert b'"target_id": "P001"' in data
    shard.write_bytes(data.replace(b'"target_id": "P001"', b'"target_id": "../x"', 1))
    assert main(["verify", str(out), "--no-media"]) == 1
    printed = capsys.readouterr().out
    assert "json: target_id '../x' may hold only letters" in printed
    assert main(["export-pairs", str(out), str(tmp_path / "export"), "--all"]) == 1
    assert "nothing exported" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()
