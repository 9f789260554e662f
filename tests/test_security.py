"""Security properties no other test checks.

* The package runs no shell, evaluates no text, unpickles nothing, loads YAML only safely
  and checkpoints only with ``weights_only=True``: an AST scan, so calls split over lines
  and names imported from a module are seen too.
* The command adapter hands shell metacharacters to the tool as literal arguments.
* Tar members whose names are paths (``../``, absolute, another sample's), links and
  folders are refused when reading, by the local, ranged and json readers alike.
* A manifest can only name files inside its dataset folder.
* ``--where`` only reaches Lance's filter parser: SQL that would act anywhere else is
  refused there and the dataset is left as it was.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from records_factory import make_samples

from pvtt.builder.backends.command_adapter import CommandInpainter, CommandSpec
from pvtt.builder.writer import DatasetWriter
from pvtt.loaders import PairDataset
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset
from pvtt.loaders.tar_reader import ShardFormatError, read_sample, read_sample_json
from pvtt.schemas.manifest import ManifestError

PACKAGES = ("builder", "loaders", "schemas", "tools", "pvtt")
SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output"}
SHELLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"}
DESERIALISERS = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
PICKLE_NAMES_ALLOWED = {"UnpicklingError", "PicklingError", "PickleError"}  # exception types


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_text(node: ast.AST) -> bool:
    """A command given as one string (a shell would be needed to split it)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _is_text(node.left) or _is_text(node.right)
    return isinstance(node, ast.Call) and _dotted(node.func).endswith(".format")


def _problems(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    safe_loaders = {"SafeLoader", "CSafeLoader"} | {  # and the module's own subclasses of them
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(_dotted(b).endswith(("SafeLoader", "CSafeLoader")) for b in node.bases)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                root = (module or alias.name).split(".")[0]
                if root in DESERIALISERS and root != "pickle":
                    found.append((node.lineno, f"imports {root}"))
                if module == "pickle" and alias.name not in PICKLE_NAMES_ALLOWED:
                    found.append((node.lineno, f"imports pickle.{alias.name}"))
        elif isinstance(node, ast.Attribute) and _dotted(node.value) == "pickle":
            if node.attr not in PICKLE_NAMES_ALLOWED:
                found.append((node.lineno, f"uses pickle.{node.attr}"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if (
                name in ("eval", "exec")
                or name in SHELLS
                or name.startswith(("os.exec", "os.spawn"))
            ):
                found.append((node.lineno, f"calls {name}"))
            if name.split(".")[-1] in SUBPROCESS and name.startswith("subprocess."):
                shell = keywords.get("shell")
                if shell is not None and not (
                    isinstance(shell, ast.Constant) and shell.value is False
                ):
                    found.append((node.lineno, f"{name} with shell="))
                if node.args and _is_text(node.args[0]):
                    found.append((node.lineno, f"{name} with a command string"))
            if name in ("torch.load", "torch.jit.load"):
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append((node.lineno, f"{name} without weights_only=True"))
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                found.append((node.lineno, f"calls {name}"))
            loader = _dotted(keywords["Loader"]) if "Loader" in keywords else ""
            if name == "yaml.load" and loader.split(".")[-1] not in safe_loaders:
                found.append((node.lineno, "yaml.load without a safe Loader"))
            pickles = keywords.get("allow_pickle")
            if name.endswith(("numpy.load", "np.load")) and pickles is not None:
                if not (isinstance(pickles, ast.Constant) and pickles.value is False):
                    found.append((node.lineno, f"{name} with allow_pickle"))
    return found


def test_no_shell_eval_or_unpickling_anywhere() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            found += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in _problems(tree)]
    assert not found, "unsafe calls:\n" + "\n".join(found)


def test_the_scan_sees_what_it_looks_for() -> None:
    source = """
import subprocess, os, marshal
from pickle import loads
import pickle
subprocess.run("ls " + path, shell=True)
subprocess.Popen(f"rm {x}")
os.system("x")
eval(text)
pickle.load(fh)
torch.load(
    path,
    map_location="cpu",
)
np.load(p, allow_pickle=True)
subprocess.run(["ls", path])
torch.load(path, weights_only=True)
pickle.UnpicklingError
yaml.load(text, Loader=yaml.FullLoader)
yaml.unsafe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
yaml.safe_load(text)
class Strict(yaml.SafeLoader): pass
yaml.load(text, Loader=Strict)
"""
    found = [what for _, what in _problems(ast.parse(source))]
    assert found.count("subprocess.run with shell=") == 1
    assert "subprocess.run with a command string" in found
    assert "subprocess.Popen with a command string" in found
    assert {"imports marshal", "imports pickle.loads", "calls os.system", "calls eval"} <= set(
        found
    )
    assert "uses pickle.load" in found and "torch.load without weights_only=True" in found
    assert "np.load with allow_pickle" in found
    assert "yaml.load without a safe Loader" in found and "calls yaml.unsafe_load" in found
    assert len(found) == 12, found


# -- command adapter ------------------------------------------------------------------------

COPY_TOOL = """
import json, shutil, sys
from pathlib import Path
*literal, frames, out, record = sys.argv[1:]
Path(record).write_text(json.dumps(literal))
for frame in Path(frames).iterdir():
    shutil.copy(frame, Path(out) / frame.name)
"""


def test_command_arguments_are_never_seen_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = [
        f"$(touch {marker}1)", f"`touch {marker}2`", f"; touch {marker}3", f"| touch {marker}4",
        f"&& touch {marker}5", "*", "~", "a b", "'quoted' \"twice\"", "$HOME", "\\n",
    ]  # fmt: skip
    record = tmp_path / "argv.json"
    spec = CommandSpec(
        command=[sys.executable, "-c", COPY_TOOL, *hostile, "{frames_dir}", "{output_dir}",
                 str(record)],
        cwd=str(tmp_path),
    )  # fmt: skip
    frames = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    out = CommandInpainter(spec).inpaint(frames, np.zeros((2, 8, 8), bool))
    assert np.array_equal(out, frames)
    assert json.loads(record.read_text()) == hostile  # each one argument, byte for byte
    assert not list(tmp_path.glob("pwned*"))


# -- tar member names ------------------------------------------------------------------------


def _shard(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> tuple[bytes, dict]:
    """A one-sample shard (key ``k``) and its index entry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
        end = buffer.tell()
    return buffer.getvalue(), {"key": "k", "offset": 0, "end": end}


def _link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


JSON = ("k.json", b'{"pair_id": "k"}')
HOSTILE_MEMBERS = {
    "parent": [JSON, ("../k.cls", b"x")],
    "absolute": [JSON, ("/etc/k.cls", b"x")],
    "inside-then-up": [JSON, ("k/../../x.cls", b"x")],
    "backslash": [JSON, ("k.cls\\..\\..\\x", b"x")],
    "other-sample": [JSON, ("other.cls", b"x")],
    "bad-field": [JSON, ("k.CLS", b"x")],
    "dot-dot-field": [JSON, ("k..cls", b"x")],
    "symlink": [JSON, _link("k.cls", tarfile.SYMTYPE, "/etc/passwd")],
    "hardlink": [JSON, _link("k.cls", tarfile.LNKTYPE, "k.json")],
    "folder": [JSON, _link("k.cls", tarfile.DIRTYPE)],
    "json-is-a-link": [_link("k.json", tarfile.SYMTYPE, "/etc/passwd")],
    "json-climbs": [("../k.json", b"{}")],
}


class _Ranged:
    """An object store that serves byte ranges of one shard."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def cat_file(self, path: str, start: int, end: int) -> bytes:
        return self.data[start:end]


@pytest.mark.parametrize("case", sorted(HOSTILE_MEMBERS))
def test_tar_members_that_are_paths_or_links_are_refused(tmp_path: Path, case: str) -> None:
    data, entry = _shard(HOSTILE_MEMBERS[case])
    path = tmp_path / "hostile.tar"
    path.write_bytes(data)
    with pytest.raises(ShardFormatError, match=str(path)):
        read_sample(path, entry)
    with pytest.raises(ShardFormatError, match=str(path)):
        read_sample(path, entry, {"json"}, fs=_Ranged(data))
    if case.startswith("json"):
        with pytest.raises(ShardFormatError, match=str(path)):
            read_sample_json(path, entry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.tar"]  # nothing written


def test_a_well_formed_sample_reads(tmp_path: Path) -> None:
    data, entry = _shard([JSON, ("k.cls", b"1"), ("k.synth.mp4", b"v")])
    path = tmp_path / "ok.tar"
    path.write_bytes(data)
    assert read_sample(path, entry) == {"json": JSON[1], "cls": b"1", "synth.mp4": b"v"}
    assert read_sample_json(path, entry) == {"pair_id": "k"}


# -- manifest paths --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("security") / "out"
    with DatasetWriter(out, max_samples=6) as writer:
        for sample in make_samples(shared_data, 12):
            writer.write(sample)
    return out


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("shards.0.path", "../secret.tar"),
        ("shards.0.index", "/etc/passwd"),
        ("shards.1.path", "tar/../../secret.tar"),
        ("tables.pairs.path", "../../elsewhere/pairs.lance"),
        ("tables.clips.path", "s3://another-bucket/clips.lance"),
    ],
)
def test_manifest_names_only_files_inside_the_dataset(
    built: Path, tmp_path: Path, where: str, value: str
) -> None:
    out = Path(shutil.copytree(built, tmp_path / "out"))
    manifest = json.loads((out / "manifest.json").read_text())
    node = manifest
    *parents, leaf = where.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[leaf] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    shown = re.escape(where.replace(".0.", "[0].").replace(".1.", "[1]."))
    with pytest.raises(ManifestError, match=rf"manifest.json: {shown} must be a relative path"):
        open_dataset(out)
    with pytest.raises(ManifestError, match="inside the dataset folder"):
        PairDataset(out)


# -- --where ---------------------------------------------------------------------------------


def _fingerprint(out: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(out)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("fmt", ["lance", "tar"])
def test_where_only_reaches_lances_parser(built: Path, tmp_path: Path, fmt: str) -> None:
    out = Path(shutil.copytree(built, tmp_path / "out"))
    if fmt == "tar":  # a tar-only dataset: the where goes through a temporary Lance table
        manifest = json.loads((out / "manifest.json").read_text())
        manifest.update(formats=["tar"], tables={})
        (out / "manifest.json").write_text(json.dumps(manifest))
    dataset = open_dataset(out)
    before = _fingerprint(out)
    marker = tmp_path / "pwned"
    refused = [
        "1=1; DROP TABLE pairs",
        "pair_id = '' UNION SELECT * FROM clips",
        "pair_id IN (SELECT pair_id FROM pairs)",
        f"__import__('os').system('touch {marker}') = 0",
        f"read_file('{marker}') IS NULL",
        "' OR 1=1 --",
    ]
    for where in refused:
        with pytest.raises(
            ValueError, match="(?i)invalid|pars|supported|function|expression|quote|parenthes"
        ):
            select_pairs(dataset, PairFilter.make(where=where), columns=["pair_id"])
        try:
            list(PairDataset(out, format=fmt, fields=("meta",), where=where))
        except ValueError:
            pass
        else:
            assert fmt == "tar" and ";" in where, f"{where!r} was accepted"
    quoted = "pair_id = 'x'' OR ''1''=''1'"  # the quote is part of the literal
    assert select_pairs(dataset, PairFilter.make(where=quoted), columns=["pair_id"]).num_rows == 0
    everything = select_pairs(dataset, PairFilter.make(passed=None), columns=["pair_id"]).num_rows
    one_shot = select_pairs(dataset, PairFilter.make(where="shot_index = 1", passed=None))
    assert 0 < one_shot.num_rows < everything
    assert not marker.exists() and _fingerprint(out) == before


def test_where_cannot_undo_the_other_filters(built: Path) -> None:
    """Refused or harmless: never a rejected pair when ``passed=True`` is asked for."""
    try:
        flt = PairFilter.make(passed=True, where="true) OR (true")
        rows = select_pairs(open_dataset(built), flt, columns=["passed"])
    except ValueError:
        return
    assert all(rows.column("passed").to_pylist())


def test_where_that_crashes_lance_is_a_value_error(built: Path) -> None:
    with pytest.raises(ValueError):
        select_pairs(open_dataset(built), PairFilter.make(where=":0"), columns=["pair_id"])


def test_where_with_a_second_statement_is_refused_on_tar(built: Path) -> None:
    with pytest.raises(ValueError):
        list(PairDataset(built, format="tar", fields=("meta",), where="1=1; DROP TABLE pairs"))
