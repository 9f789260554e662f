"""The rembg matter and ``pvtt matte``: exactly rembg's output, trimmed as a build stores it.

The weights are rembg's real ``u2netp.onnx`` in ``.cache/u2net`` (``python -m
pvtt.tools.fetch_u2netp .cache/u2net`` puts it there); tests that need it skip without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pvtt.builder.backends.cpu_matter import BorderColourMatter
from pvtt.builder.backends.rembg_matter import RembgMatter, expected_model_file, model_paths
from pvtt.builder.registry import backend_weights, create_backend
from pvtt.builder.stages.cutout import trim_to_alpha
from pvtt.schemas.config import BackendConfig, ConfigError
from pvtt.tools import fetch_u2netp
from pvtt.tools.cli import main
from pvtt.tools.fetch_u2netp import MD5, SIZE

REPO = Path(__file__).resolve().parents[1]
U2NET_HOME = REPO / ".cache" / "u2net"


@pytest.fixture(scope="module")
def u2net_home() -> Path:
    if not (U2NET_HOME / "u2netp.onnx").is_file():
        pytest.skip(f"u2netp weights not in {U2NET_HOME} (python -m pvtt.tools.fetch_u2netp)")
    return U2NET_HOME


@pytest.fixture(scope="module")
def car(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rembg's README photo of two cars, at 320 x 180 to keep inference quick."""
    with Image.open(shared_data / "rembg" / "car-3.jpg") as img:
        img.thumbnail((320, 320))
        path = tmp_path_factory.mktemp("car") / "car-3-small.png"
        img.save(path)
    return path


@pytest.fixture(scope="module")
def reference(u2net_home: Path, car: Path) -> np.ndarray:
    """What rembg itself makes of the photo, called directly."""
    mp = pytest.MonkeyPatch()
    mp.setenv("U2NET_HOME", str(u2net_home))
    try:
        from rembg import new_session, remove

        with Image.open(car) as img:
            return np.asarray(remove(img, session=new_session("u2netp")))
    finally:
        mp.undo()


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "RGBA"
        return np.asarray(img)


def test_fetched_weights_are_rembgs(u2net_home: Path, monkeypatch) -> None:
    import hashlib
    import inspect

    from rembg.sessions.u2netp import U2netpSession

    path = u2net_home / "u2netp.onnx"
    assert path.stat().st_size == SIZE
    assert hashlib.md5(path.read_bytes()).hexdigest() == MD5
    assert f"md5:{MD5}" in inspect.getsource(U2netpSession.download_models)  # rembg's checksum

    def no_pip(*args, **kwargs):
        raise AssertionError("an intact file is not fetched again")

    monkeypatch.setattr(fetch_u2netp.subprocess, "run", no_pip)
    assert fetch_u2netp.fetch(u2net_home) == path


def test_cli_untrimmed_is_rembgs_output(
    u2net_home: Path, car: Path, reference: np.ndarray, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("U2NET_HOME", str(u2net_home))
    out = tmp_path / "cut.png"
    argv = [
        "matte",
        str(car),
        "-o",
        str(out),
        "--backend",
        "rembg",
        "--model",
        "u2netp",
        "--no-trim",
    ]
    assert main(argv) == 0
    cut = _read(out)
    assert cut.shape == (180, 320, 4)
    assert np.array_equal(cut, reference)


def test_cli_trims_like_the_build(
    u2net_home: Path, car: Path, reference: np.ndarray, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("U2NET_HOME", raising=False)
    out = tmp_path / "cut.png"
    assert (
        main(
            [
                "matte",
                str(car),
                "-o",
                str(out),
                "--backend",
                "rembg",
                "--model-dir",
                str(u2net_home),
            ]
        )
        == 0
    )
    cut = _read(out)
    assert np.array_equal(cut, trim_to_alpha(reference))
    assert cut.shape[0] < 180


def test_cut_out_matches_rembgs_published_result(
    shared_data: Path, car: Path, reference: np.ndarray
) -> None:
    """The README's own cut-out of the photo (made with the larger u2net) agrees."""
    with Image.open(shared_data / "rembg" / "car-3.out.png") as img:
        published = np.asarray(img.resize((320, 180), Image.Resampling.BILINEAR))[..., 3] > 127
    ours = reference[..., 3] > 127
    iou = (ours & published).sum() / (ours | published).sum()
    assert iou > 0.9, iou
    assert 0.15 < ours.mean() < 0.3


def test_backend_matches_rembg_and_shares_its_session(
    u2net_home: Path, car: Path, reference: np.ndarray
) -> None:
    config = BackendConfig(backend="rembg", params={"model_dir": str(u2net_home)})
    matter = create_backend("matter", config)
    assert isinstance(matter, RembgMatter)
    assert matter.info.model == "u2netp" and matter.info.params == {"alpha_matting": False}
    with Image.open(car) as img:
        assert np.array_equal(matter.matte(np.asarray(img)), reference)
    twin = create_backend(
        "matter", BackendConfig(backend="rembg", model=str(u2net_home / "u2netp.onnx"))
    )
    assert twin.session is matter.session  # one onnxruntime session per process and model
    assert matter.__getstate__()["_session"] is None  # a process it is sent to makes its own
    assert backend_weights("matter", config) == [str(u2net_home / "u2netp.onnx")]


def test_alpha_matting_changes_only_the_edge(
    u2net_home: Path, car: Path, reference: np.ndarray
) -> None:
    matter = RembgMatter(model_dir=u2net_home, alpha_matting=True)
    assert matter.info.params["alpha_matting_erode_size"] == 10
    with Image.open(car) as img:
        matted = matter.matte(np.asarray(img))
    solid, refined = reference[..., 3] > 127, matted[..., 3] > 127
    assert (solid & refined).sum() / (solid | refined).sum() > 0.85
    assert not np.array_equal(matted, reference)


def test_lookup_agrees_with_rembg(u2net_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("U2NET_HOME", str(u2net_home))
    from rembg.sessions import sessions

    found = sessions["u2netp"].resolve_existing("u2netp.onnx")
    assert Path(found) == expected_model_file("u2netp")


def test_cli_cpu_backend(shared_data: Path, car: Path, tmp_path: Path) -> None:
    """The weight-free matter through the same command; on a street photo it is rough."""
    out = tmp_path / "cpu.png"
    assert main(["matte", str(car), "-o", str(out), "--no-trim"]) == 0
    cut = _read(out)
    with Image.open(car) as img:
        assert np.array_equal(cut, BorderColourMatter().matte(np.asarray(img)))
    with Image.open(shared_data / "rembg" / "car-3.out.png") as img:
        published = np.asarray(img.resize((320, 180), Image.Resampling.BILINEAR))[..., 3] > 127
    ours = cut[..., 3] > 127
    assert (ours & published).sum() / (ours | published).sum() > 0.3  # measured 0.50
    assert main(["matte", str(car), "-o", str(out)]) == 0
    assert np.array_equal(_read(out), trim_to_alpha(cut))


def test_missing_weights_name_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        RembgMatter(model_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "u2netp.onnx") in message
    assert f"python -m pvtt.tools.fetch_u2netp {tmp_path}" in message
    with pytest.raises(ConfigError, match="isnet-general-use.onnx"):
        create_backend("matter", BackendConfig(backend="rembg", model="isnet-general-use"))
    with pytest.raises(ConfigError, match="not a rembg cut-out model"):
        RembgMatter(model="u2net_cloth_seg", model_dir=tmp_path)
    image = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(image)
    argv = [
        "matte",
        str(image),
        "-o",
        str(tmp_path / "o.png"),
        "--backend",
        "rembg",
        "--model-dir",
        str(tmp_path),
    ]
    assert main(argv) == 1
    assert str(tmp_path / "u2netp.onnx") in capsys.readouterr().err


def test_model_paths_follow_rembg_homes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rh"))
    assert model_paths("u2net")[0] == tmp_path / "rh" / "models" / "u2net" / "u2net.onnx"
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "uh"))
    assert model_paths("u2net") == [
        tmp_path / "uh" / "models" / "u2net" / "u2net.onnx",
        tmp_path / "uh" / "u2net.onnx",
    ]


def test_cli_rejects_a_bad_image(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["matte", str(bad), "-o", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "does not decode" in err
    assert not (tmp_path / "o.png").exists()
    assert main(["matte", str(tmp_path / "absent.jpg"), "-o", str(tmp_path / "o.png")]) == 1
    assert "absent.jpg" in capsys.readouterr().err
