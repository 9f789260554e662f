"""One process per GPU: which GPUs, and which device a torchrun rank uses."""

from __future__ import annotations

import pytest

from pvtt.builder.launch import local_device, visible_gpus


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5")
    assert visible_gpus("all") == ["2", "3", "5"]
    assert visible_gpus("2") == ["2", "3"]
    with pytest.raises(ValueError, match="3 GPU"):
        visible_gpus("4")
    with pytest.raises(ValueError, match="'all' or a number"):
        visible_gpus("many")


def test_torchrun_ranks_take_their_local_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == "cuda:3"
    assert local_device("cuda:1") == "cuda:1" and local_device("cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # a launcher already pinned one GPU
    assert local_device("cuda") == "cuda"


def test_build_gpus_flag_refuses_what_it_cannot_do(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path) -> None:
    from pvtt.tools.cli import main

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main(["build", str(tmp_path), str(tmp_path / "o"), "--gpus", "all", "--rank", "0"]) == 1
    assert "--gpus launches its own ranks" in capsys.readouterr().err
    assert main(["build", str(tmp_path), str(tmp_path / "o"), "--gpus", "all"]) == 1  # no GPU here
    assert "GPU(s) visible" in capsys.readouterr().err
