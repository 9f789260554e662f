"""``pvtt models check`` and :func:`check_weights`: what a build would load, and whether it is here."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from pvtt.builder import registry
from pvtt.builder.backends.cpu_scorer import StatisticsScorer
from pvtt.builder.models import check_device, check_weights
from pvtt.schemas.config import BackendConfig, BuildConfig, ConfigError, load_config
from pvtt.tools.cli import main

STAGES = ("detector", "segmenter", "inpainter", "matter", "inserter", "scorer")


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "build.toml"
    path.write_text(text)
    return str(path)


def test_cpu_config_needs_no_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("device: cpu (ok); CUDA: ")
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == list(STAGES)
    assert all(r[1] == "cpu" and r[3] == "ok" and "no weights needed" in " ".join(r) for r in rows)


def test_a_missing_local_path_fails_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no such" / "sd-inpaint"
    config = _toml(tmp_path, f'[inpainter]\nbackend = "diffusers"\nmodel = "{missing}"\n')
    assert main(["models", "check", "--config", config]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("inpainter"))
    assert "diffusers" in row and str(missing) in row and "MISSING" in row
    assert f"missing: inpainter: {missing} does not exist" in out
    assert 'set [inpainter] model = "/path/to/weights" in build.toml' in out


def test_a_hub_id_is_present_only_when_cached(
    tmp_path: Path, empty_hub_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _toml(tmp_path, '[inserter]\nbackend = "diffusers-refine"\nmodel = "acme/refiner"\n')
    assert main(["models", "check", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "missing: inserter: acme/refiner is not in the Hugging Face cache" in out
    assert str(empty_hub_cache) in out and "hf download acme/refiner" in out
    snapshot = empty_hub_cache / "models--acme--refiner" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    assert main(["models", "check", "--config", config]) == 1  # an empty snapshot: incomplete
    capsys.readouterr()
    (snapshot / "model_index.json").write_text("{}")
    assert main(["models", "check", "--config", config]) == 0
    assert f"cached in {snapshot}" in capsys.readouterr().out


def test_device_line_and_unavailable_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    status = check_device("cuda:7")
    assert status.requested == "cuda:7"
    assert status.ok == (torch.cuda.device_count() > 7)
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the failing case needs a machine without it")
    assert main(["models", "check", "--device", "cuda"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("device: cuda (NOT AVAILABLE); CUDA: not available")
    assert "missing: device cuda: not available here" in out


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _toml(tmp_path, '[scorer]\nbackend = "cpu"\n[detector]\nbackend = "cpu"\n')
    assert main(["models", "check", "--config", config, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["device"]["requested"] == "cpu"
    assert [s["stage"] for s in report["stages"]] == list(STAGES)
    assert all(s["source"] == "none" and not s["missing"] for s in report["stages"])


def test_command_backend_checks_its_checkout(tmp_path: Path) -> None:
    config = BuildConfig()
    config.inpainter = BackendConfig(
        backend="command", params={"command": ["run"], "cwd": str(tmp_path / "ProPainter")}
    )
    (status,) = [s for s in check_weights(config) if s.stage == "inpainter"]
    assert status.missing and "set [inpainter.params] cwd to where it is" in status.detail
    (tmp_path / "ProPainter").mkdir()
    (status,) = [s for s in check_weights(config) if s.stage == "inpainter"]
    assert status.present and status.source == "path"


def test_backends_that_cannot_say(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("pvtt_test_broken_backend")

    def weights(config: BackendConfig) -> list[str]:
        raise ConfigError("segmenter.model is required")

    broken.weights = weights
    silent = types.ModuleType("pvtt_test_silent_backend")
    silent.create = lambda config, device: None
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    monkeypatch.setitem(sys.modules, silent.__name__, silent)
    builtin = {
        **registry.BUILTIN,
        ("segmenter", "broken"): f"{broken.__name__}:create",
        ("detector", "silent"): f"{silent.__name__}:create",
        ("scorer", "gone"): "pvtt_test_no_such_module:create",
    }
    monkeypatch.setattr("pvtt.builder.models.BUILTIN", builtin)
    config = BuildConfig()
    config.segmenter = BackendConfig(backend="broken")
    config.detector = BackendConfig(backend="silent")
    config.scorer = BackendConfig(backend="gone")
    config.matter = BackendConfig(backend="no-such-backend")
    by_stage = {s.stage: s for s in check_weights(config)}
    assert (
        by_stage["segmenter"].missing
        and "segmenter.model is required" in by_stage["segmenter"].detail
    )
    assert by_stage["detector"].present is None and by_stage["detector"].source == "unknown"
    assert by_stage["scorer"].present is None and "cannot import" in by_stage["scorer"].detail
    assert (
        by_stage["matter"].missing
        and "no matter backend 'no-such-backend'" in by_stage["matter"].detail
    )
    assert by_stage["inpainter"].source == "none" and by_stage["inpainter"].present


def test_bad_config_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _toml(tmp_path, "[inpainter]\nbackend = 3\nmodle = 'x'\n")
    assert main(["models", "check", "--config", config]) == 1
    assert "unknown keys ['modle']" in capsys.readouterr().err


# -- RAFT: weights, or no RAFT --------------------------------------------------------------
RAFT = '[scorer]\nbackend = "cpu"\nparams = { flow = "raft"%s }\n'
RAFT_MEMBER = (
    '[scorer]\nbackend = "composite"\n'
    'params = { members = [ { backend = "cpu", params = { flow = "raft"%s } } ] }\n'
)


@pytest.mark.parametrize("template", [RAFT, RAFT_MEMBER], ids=["cpu", "composite member"])
def test_raft_without_weights_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str
) -> None:
    """torchvision builds raft_small untrained without weights: never score with that."""
    config = _toml(tmp_path, template % "")
    assert main(["models", "check", "--config", config]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("scorer"))
    assert "MISSING" in row
    assert "missing: scorer: " in out and "flow = 'raft' needs flow_weights" in out
    assert main(["build", str(tmp_path / "catalog"), str(tmp_path / "out"), "--config", config]) == 1
    err = capsys.readouterr().err
    assert "flow = 'raft' needs flow_weights" in err and "see `pvtt models check`" in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("template", "key"),
    [(RAFT, "flow_weights"), (RAFT_MEMBER, "members[0].params.flow_weights")],
    ids=["cpu", "composite member"],
)
def test_raft_weights_are_looked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str, key: str
) -> None:
    checkpoint = tmp_path / "raft_small.pth"
    config = _toml(tmp_path, template % f', flow_weights = "{checkpoint}"')
    assert main(["models", "check", "--config", config]) == 1
    assert f"set [scorer.params] {key} to where it is" in capsys.readouterr().out
    checkpoint.write_bytes(b"a state dict")
    assert main(["models", "check", "--config", config]) == 0
    (status,) = [s for s in check_weights(load_config(config)) if s.stage == "scorer"]
    assert status.present and status.weight == str(checkpoint)


def test_the_scorer_itself_refuses_raft_without_weights() -> None:
    with pytest.raises(ValueError, match="flow = 'raft' needs flow_weights"):
        StatisticsScorer(flow="raft")
