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


def test_ranks_of_a_node_share_its_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """`--gpus all` on a node of 4 (fake) GPUs tells each rank it is one of 4, and a rank
    with no --workers takes a quarter of the CPUs for its pairs."""
    from pvtt.builder import launch
    from pvtt.tools.cli import main

    started: list[tuple[list[str], dict[str, str]]] = []

    class Child:
        def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
            started.append((cmd, env))

        def wait(self) -> int:
            return 0

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.setattr(launch.subprocess, "Popen", Child)
    main(["build", str(tmp_path), str(tmp_path / "o"), "--gpus", "all"])  # merge: no ranks ran
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["0", "1", "2", "3"]
    assert {env["LOCAL_WORLD_SIZE"] for _, env in started} == {"4"}
    assert all("--workers" not in cmd for cmd, _ in started)  # each rank sizes its own pool

    monkeypatch.setattr(launch, "node_cpus", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert launch.default_workers("threads") == launch.default_workers("processes") == 4
    monkeypatch.setattr(launch, "node_cpus", lambda: 128)
    assert launch.default_workers("threads") == launch.THREAD_WORKERS_MAX
    assert launch.default_workers("processes") == 32
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x3)")  # not a plain count: one rank
    assert launch.local_ranks() == 1
    monkeypatch.setattr(launch, "node_cpus", lambda: 3)
    assert launch.rank_workers("processes", 3, 8) == 1  # never none
