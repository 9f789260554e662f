"""GPU window decoding: the plumbing on CPU (torchcodec stood in for), NVDEC where a GPU is."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from pvtt.builder.video import encode_mp4
from pvtt.loaders.decode import MediaDecodeError
from pvtt.loaders.frames import decode_frames, frame_count
from pvtt.loaders.gpu_decode import (
    decode_frames_on_device,
    decode_on_device,
    decode_sample_on_device,
)


@pytest.fixture(scope="module")
def clip() -> bytes:
    rng = np.random.default_rng(0)
    frames = np.zeros((24, 64, 96, 3), np.uint8)
    for t in range(len(frames)):  # a bright square moving right over noise: frames differ
        frames[t] = rng.integers(0, 60, (64, 96, 3), dtype=np.uint8)
        frames[t, 20:44, 2 + 3 * t : 26 + 3 * t] = 220
    return encode_mp4(frames, 24)


class _FakeDecoder:
    """torchcodec's VideoDecoder, decoding with PyAV on the CPU; records its arguments."""

    calls: list[dict[str, Any]] = []
    backends: list[str] = []

    def __init__(self, source: Any, *, device: torch.device, dimension_order: str):
        self.data = source if isinstance(source, bytes) else source.numpy().tobytes()
        self.calls.append(
            {"device": device, "order": dimension_order, "backend": self.backends[-1]}
        )
        self.metadata = types.SimpleNamespace(num_frames=24)

    def get_frames_at(self, indices: list[int]) -> types.SimpleNamespace:
        return types.SimpleNamespace(data=decode_frames(self.data, np.asarray(indices)))


@pytest.fixture()
def fake_torchcodec(monkeypatch: pytest.MonkeyPatch) -> type[_FakeDecoder]:
    @contextlib.contextmanager
    def set_cuda_backend(name: str) -> Iterator[None]:
        _FakeDecoder.backends.append(name)
        yield
        _FakeDecoder.backends.append("none")

    _FakeDecoder.calls, _FakeDecoder.backends = [], ["none"]
    decoders = types.ModuleType("torchcodec.decoders")
    decoders.VideoDecoder = _FakeDecoder  # type: ignore[attr-defined]
    decoders.set_cuda_backend = set_cuda_backend  # type: ignore[attr-defined]
    package = types.ModuleType("torchcodec")
    package.decoders = decoders  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchcodec", package)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    return _FakeDecoder


def test_missing_torchcodec_says_what_to_do(monkeypatch: pytest.MonkeyPatch, clip: bytes) -> None:
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    with pytest.raises(ImportError, match="torchcodec.*decode on the CPU"):
        decode_frames_on_device(clip, [0, 1], device="cpu", decoder="torchcodec")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)
    with pytest.raises(ImportError, match="PyNvVideoCodec.*decode on the CPU"):
        decode_frames_on_device(clip, [0, 1], device="cuda")


def test_bad_indices_are_refused_before_decoding(clip: bytes) -> None:
    with pytest.raises(ValueError, match="negative frame index -1"):
        decode_frames_on_device(clip, [-1, 0], device="cpu", what="synth_video")
    with pytest.raises(ValueError, match="no frame indices"):
        decode_frames_on_device(clip, [], device="cpu")


def test_frames_past_the_end_name_the_field(fake_torchcodec: type, clip: bytes) -> None:
    with pytest.raises(MediaDecodeError, match="synth_video: frame 30 asked for, the video has 24"):
        decode_frames_on_device(
            clip, [29, 30], device="cpu", decoder="torchcodec", what="synth_video"
        )


def test_cuda_backend_is_chosen_only_for_cuda(fake_torchcodec: type, clip: bytes) -> None:
    decode_frames_on_device(clip, [0], device="cpu", decoder="torchcodec", cuda_backend="ffmpeg")
    assert fake_torchcodec.calls[-1]["backend"] == "none"
    decode_frames_on_device(clip, [0], device="cuda", decoder="torchcodec", cuda_backend="ffmpeg")
    assert fake_torchcodec.calls[-1]["backend"] == "ffmpeg"
    assert fake_torchcodec.backends[-1] == "none"  # the choice ends with the decoder's creation
    assert fake_torchcodec.calls[-1]["order"] == "NCHW"


def test_sample_videos_decode_at_its_indices_and_resize(fake_torchcodec: type, clip: bytes) -> None:
    indices = torch.tensor([3, 4, 5, 5])
    sample = {
        "synth_video": torch.frombuffer(bytearray(clip), dtype=torch.uint8),
        "source_video": clip,
        "masks": b"left alone",
        "frame_indices": indices,
        "meta": {"pair_id": "p"},
    }
    out = decode_sample_on_device(sample, device="cpu", size=(32, 48), decoder="torchcodec")
    assert out["masks"] == b"left alone" and out["meta"] == {"pair_id": "p"}
    full = decode_frames(clip, indices.numpy())
    expected = torch.nn.functional.interpolate(
        full.float(), size=(32, 48), mode="bilinear", align_corners=False, antialias=True
    )
    for name in ("synth_video", "source_video"):
        assert out[name].shape == (4, 3, 32, 48) and out[name].dtype == torch.uint8
        assert (out[name].float() - expected).abs().max() <= 0.5
    assert torch.equal(out["synth_video"][2], out["synth_video"][3])  # a repeated index


class _FakeNvc:
    """PyNvVideoCodec's SimpleDecoder, decoding the file it is pointed at with PyAV."""

    class OutputColorType:
        RGBP = "RGBP"

    class PyNvVCException(Exception):  # noqa: N818 (PyNvVideoCodec's name)
        pass

    opened: list[str] = []
    repointed: list[str] = []

    class SimpleDecoder:
        def __init__(
            self, path: str, *, gpu_id: int, use_device_memory: bool, output_color_type: str
        ):
            assert use_device_memory and output_color_type == "RGBP"
            _FakeNvc.opened.append(path)
            self.path = path

        def reconfigure_decoder(self, path: str) -> None:
            _FakeNvc.repointed.append(path)
            with open(path, "rb") as file:
                if file.read(8)[4:] != b"ftyp":
                    raise _FakeNvc.PyNvVCException("CreateFormatContext: invalid data")
            self.path = path

        def __len__(self) -> int:
            with open(self.path, "rb") as file:
                return frame_count(file.read())

        def get_batch_frames_by_index(self, indices: list[int]) -> list[torch.Tensor]:
            with open(self.path, "rb") as file:
                data = file.read()
            return list(decode_frames(data, np.asarray(indices)))


def test_nvdec_sessions_are_kept_per_thread_and_repointed(
    monkeypatch: pytest.MonkeyPatch, clip: bytes
) -> None:
    import threading

    _FakeNvc.opened, _FakeNvc.repointed = [], []
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", _FakeNvc)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    first = decode_frames_on_device(clip, [0, 1], device="cuda:0", what="synth_video")
    second = decode_frames_on_device(clip[:], [2, 3], device="cuda:0", what="synth_video")
    assert len(_FakeNvc.opened) == 1 and _FakeNvc.repointed == _FakeNvc.opened
    assert torch.equal(first, decode_frames(clip, np.array([0, 1])))
    assert torch.equal(second, decode_frames(clip, np.array([2, 3])))
    elsewhere = threading.Thread(
        target=decode_frames_on_device, args=(clip, [0]), kwargs={"device": "cuda:0"}
    )
    elsewhere.start()
    elsewhere.join()
    assert len(_FakeNvc.opened) == 2 and _FakeNvc.opened[0] != _FakeNvc.opened[1]
    with pytest.raises(
        MediaDecodeError, match="source_video: frame 24 asked for, the video has 24"
    ):
        decode_frames_on_device(clip, [24], device="cuda:0", what="source_video")
    with pytest.raises(MediaDecodeError, match="background_video: PyNvVideoCodec cannot decode"):
        decode_frames_on_device(b"junk" + clip, [0], device="cuda:0", what="background_video")


def test_threads_decode_in_the_samples_order(fake_torchcodec: type, clip: bytes) -> None:
    samples = [
        {"synth_video": clip, "frame_indices": torch.arange(i, i + 4), "meta": {"n": i}}
        for i in range(12)
    ]
    out = list(decode_on_device(iter(samples), device="cpu", threads=3, decoder="torchcodec"))
    assert [s["meta"]["n"] for s in out] == list(range(12))
    for i, sample in enumerate(out):
        assert torch.equal(sample["synth_video"], decode_frames(clip, np.arange(i, i + 4)))
    samples[7]["frame_indices"] = torch.tensor([30])
    decoded = decode_on_device(samples, device="cpu", threads=3, decoder="torchcodec")
    with pytest.raises(MediaDecodeError, match="synth_video: frame 30"):
        for _ in decoded:
            pass


def test_a_sample_without_indices_is_refused() -> None:
    with pytest.raises(KeyError, match="decode=False"):
        decode_sample_on_device({"synth_video": b""}, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("decoder", "backend", "module"),
    [
        ("pynvvideocodec", "beta", "PyNvVideoCodec"),
        ("torchcodec", "beta", "torchcodec.decoders"),
        ("torchcodec", "ffmpeg", "torchcodec.decoders"),
    ],
)
def test_nvdec_matches_the_cpu_decoder(
    clip: bytes, decoder: str, backend: str, module: str
) -> None:
    pytest.importorskip(module, reason=f"needs {module} built for CUDA")
    indices = np.arange(5, 21)
    frames = decode_frames_on_device(
        clip, indices, device="cuda", decoder=decoder, cuda_backend=backend
    )
    assert frames.device.type == "cuda" and frames.shape == (16, 3, 64, 96)
    assert frames.dtype == torch.uint8
    reference = decode_frames(clip, indices)
    assert (frames.cpu().float() - reference.float()).abs().mean() < 3.0


def test_the_benchmark_says_where_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from pvtt.tools.bench import gpu_decode

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="torch sees no GPU here; run it on a CUDA node"):
        gpu_decode.main(["--quick"])
