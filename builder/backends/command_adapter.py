"""Research code that is not on PyPI, plugged in as a command run on files.

Video inpainters (ProPainter, VideoPainter) and video inserters (VideoAnyDoor,
InsertAnywhere) ship as checkouts with their own environments and scripts, not as
packages pvtt could import. This adapter writes a clip's inputs into a temporary work
folder, runs the user's command there, and reads the result back. The command is a
list of strings run without a shell (``subprocess`` with an argument list); each
string is formatted on its own with ``str.format``, so a path with spaces or quotes
stays one argument, and only these placeholders exist (format specs such as
``{fps:.0f}`` work; attribute and index lookups do not):

==================  ===============================================================
``{frames_dir}``    folder of RGB PNG frames ``00000.png``, ``00001.png``, ...
``{video}``         the same frames as an H.264 mp4 at ``{fps}``
``{masks_dir}``     folder of 8-bit PNG masks named like the frames, 255 = region
                    (inpainter: the product's masks; inserter: the target boxes)
``{boxes}``         JSON file: per frame ``[x0, y0, x1, y1]`` (pixels, x1/y1
                    exclusive) or ``null`` where the frame has none
``{reference}``     RGBA PNG of the product cut-out, trimmed to its alpha (inserter)
``{seed}``          the pair's seed, an int (inserter)
``{fps}``           frame rate (float); ``{num_frames}``, ``{width}``, ``{height}`` ints
``{output_dir}``    empty folder where the tool writes its frames (``output = "frames"``)
``{output_video}``  path where the tool writes an mp4 (``output = "video"``)
``{workdir}``       the temporary folder holding all of the above
==================  ===============================================================

Only the inputs a template names are written. The result must have the clip's frame
count and size; a tool that saves it elsewhere than ``{output_dir}`` /
``{output_video}`` is pointed at with ``result`` (a template too). Failures say what
went wrong and show the end of the tool's stderr: a non-zero exit, a timeout (the
tool's whole process group is killed), a missing or short result. With
``on_error = "reject"`` they reject the clip or pair instead of stopping the build.

Example ``build.toml`` sections. They were written from each project's public code or
README, not run here: check your checkout's flags.

ProPainter (github.com/sczhou/ProPainter; ``inference_propainter.py`` reads a frame
folder and a mask folder and writes ``{output}/<input folder name>/frames/0000.png``
with ``--save_frames``, scaled back to the input's size; ``--mask_dilation`` (default
4) grows the masks; it downloads its weights into ``weights/`` under ``cwd`` on first
use, so fetch them beforehand for an offline node)::

    [inpainter]
    backend = "command"
    model = "ProPainter@<commit>"          # a label for the backends column
    [inpainter.params]
    cwd = "/opt/ProPainter"
    command = ["/opt/ProPainter/.venv/bin/python", "inference_propainter.py",
               "--video", "{frames_dir}", "--mask", "{masks_dir}",
               "--output", "{output_dir}", "--save_frames", "--fp16"]
    result = "{output_dir}/frames/frames"  # <output>/<name of frames_dir>/frames

VideoPainter (github.com/TencentARC/VideoPainter): ``infer/inpaint.py`` reads a row of
its own dataset (a meta CSV, the video, ``all_masks.npz``) and asks the OpenAI API for
a caption, and it works on 49 frames at a reduced rate, so it has no plain
video-and-masks entry point. Write a small wrapper script in the checkout that builds
that input from ``{video}`` and ``{masks_dir}``, calls its ``generate_video``, and writes
every frame of the clip (long-video mode), e.g.::

    command = ["python", "pvtt_wrapper.py", "--video", "{video}", "--masks", "{masks_dir}",
               "--fps", "{fps}", "--output", "{output_video}"]
    output = "video"

VideoAnyDoor (github.com/yuanpengtu/VideoAnydoor) had no code released when this was
written; InsertAnywhere has no public command line we know of. For either, a wrapper
that reads the background video, the cut-out and the box track is the contract::

    [inserter]
    backend = "command"
    [inserter.params]
    cwd = "/opt/VideoAnydoor"
    command = ["python", "pvtt_wrapper.py", "--video", "{video}", "--reference",
               "{reference}", "--boxes", "{boxes}", "--seed", "{seed}",
               "--output", "{output_video}"]
    output = "video"
    timeout_s = 1800
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvtt.builder.boxes import box_to_mask, masks_to_boxes
from pvtt.builder.stages.cutout import trim_to_alpha
from pvtt.builder.stages.protocols import (
    BackendInfo,
    InsertionInput,
    StageRejected,
    check_frames_and_masks,
)
from pvtt.builder.video import VideoError, read_frames, write_mp4
from pvtt.schemas.config import BackendConfig, ConfigError

log = logging.getLogger(__name__)

COMMON = (
    "frames_dir",
    "video",
    "masks_dir",
    "boxes",
    "fps",
    "num_frames",
    "width",
    "height",
    "output_dir",
    "output_video",
    "workdir",
)
"""Placeholders every command may use; inserters also get ``reference`` and ``seed``."""
INSERTER_ONLY = ("reference", "seed")

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
_TAIL_LINES = 20


class CommandError(RuntimeError):
    """The external tool failed; the message says how, with the end of its stderr."""


def _fields(template: str, where: str) -> set[str]:
    """The placeholder names in one template string; a bad template is a ConfigError."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template {template!r}: {exc}") from None
    names = set()
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ConfigError(
                f"{where}: {{{name}}} in {template!r} is not a placeholder name "
                f"(positional, attribute and index fields are not allowed)"
            )
        names.add(name)
    return names


@dataclass(frozen=True)
class CommandSpec:
    """How to run a tool: the template and its surroundings (``[stage.params]`` keys).

    ``command`` is the template (see the module's placeholders), run in ``cwd`` with
    ``env`` added to the environment, for at most ``timeout_s`` seconds. ``output``
    says whether the tool writes frames or an mp4; ``result`` where, if not at
    ``{output_dir}`` / ``{output_video}``; ``resize_output`` scales a result of another
    size to the clip's. ``on_error = "reject"`` rejects the clip or pair on a failure
    instead of stopping the build; ``keep_workdir`` keeps the work folder (logged).
    """

    command: list[str]
    cwd: str | None = None
    timeout_s: float = 3600.0
    env: dict[str, Any] | None = None
    output: str = "frames"
    result: str | None = None
    resize_output: bool = False
    on_error: str = "raise"
    keep_workdir: bool = False


class _Command:
    """A validated :class:`CommandSpec` for one stage, and how to run it on a clip."""

    def __init__(self, kind: str, placeholders: tuple[str, ...], spec: CommandSpec) -> None:
        where = f"{kind}.params"
        command = spec.command
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(part, str) for part in command)
        ):
            raise ConfigError(
                f"{where}.command must be a non-empty list of strings, got {command!r}"
            )
        if spec.output not in ("frames", "video"):
            raise ConfigError(f"{where}.output must be frames or video, not {spec.output!r}")
        if spec.on_error not in ("raise", "reject"):
            raise ConfigError(f"{where}.on_error must be raise or reject, not {spec.on_error!r}")
        if not spec.timeout_s > 0:
            raise ConfigError(f"{where}.timeout_s must be > 0, got {spec.timeout_s}")
        cwd = spec.cwd
        if cwd is not None and not Path(cwd).expanduser().is_dir():
            raise ConfigError(f"{where}.cwd: {cwd} is not a folder (it should be your checkout)")
        used: set[str] = set()
        for part in [*command, *([spec.result] if spec.result else [])]:
            used |= _fields(part, f"{where}.command")
        unknown = used - set(placeholders)
        if unknown:
            raise ConfigError(
                f"{where}.command: unknown placeholders {sorted(unknown)} for the {kind}; "
                f"known: {list(placeholders)}"
            )
        self.kind = kind
        self.command = command
        self.cwd = str(Path(cwd).expanduser()) if cwd is not None else None
        self.timeout_s = spec.timeout_s
        self.env = {str(k): str(v) for k, v in (spec.env or {}).items()}
        self.output = spec.output
        self.result = spec.result
        self.resize_output = spec.resize_output
        self.on_error = spec.on_error
        self.keep_workdir = spec.keep_workdir
        self.used = used

    def identity(self) -> dict[str, Any]:
        """The settings that change the output (cache keys): not where or how long it runs."""
        return {
            "command": self.command,
            "output": self.output,
            "result": self.result,
            "resize_output": self.resize_output,
        }

    def run(
        self,
        frames: np.ndarray,
        masks: np.ndarray,
        boxes: np.ndarray,
        fps: float,
        extra: dict[str, Any],
        reference: np.ndarray | None = None,
    ) -> np.ndarray:
        """Write the inputs, run the tool, read its result (``T x H x W x 3`` uint8)."""
        workdir = Path(tempfile.mkdtemp(prefix=f"pvtt-{self.kind}-"))
        try:
            values = self._write_inputs(workdir, frames, masks, boxes, fps, reference)
            values.update(extra)
            argv = [part.format(**values) for part in self.command]
            self._execute(argv, workdir)
            result = self._result_path(values)
            return self._read_result(result, frames.shape, argv, workdir)
        except CommandError as exc:
            if self.on_error == "reject":
                raise StageRejected(str(exc)) from None
            raise
        finally:
            if self.keep_workdir:
                log.info("%s work folder kept: %s", self.kind, workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def _write_inputs(
        self,
        workdir: Path,
        frames: np.ndarray,
        masks: np.ndarray,
        boxes: np.ndarray,
        fps: float,
        reference: np.ndarray | None,
    ) -> dict[str, Any]:
        count, height, width = frames.shape[:3]
        values: dict[str, Any] = {
            "frames_dir": str(workdir / "frames"),
            "video": str(workdir / "input.mp4"),
            "masks_dir": str(workdir / "masks"),
            "boxes": str(workdir / "boxes.json"),
            "reference": str(workdir / "reference.png"),
            "fps": float(fps),
            "num_frames": count,
            "width": width,
            "height": height,
            "output_dir": str(workdir / "output"),
            "output_video": str(workdir / "output.mp4"),
            "workdir": str(workdir),
        }
        (workdir / "output").mkdir()
        png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        if "frames_dir" in self.used:
            (workdir / "frames").mkdir()
            for t, frame in enumerate(frames):
                cv2.imwrite(str(workdir / "frames" / f"{t:05d}.png"), frame[..., ::-1], png)
        if "video" in self.used:
            write_mp4(workdir / "input.mp4", frames, fps, crf=12)
        if "masks_dir" in self.used:
            (workdir / "masks").mkdir()
            for t, mask in enumerate(masks):
                cv2.imwrite(
                    str(workdir / "masks" / f"{t:05d}.png"), mask.astype(np.uint8) * 255, png
                )
        if "boxes" in self.used:
            rows = [
                [float(v) for v in box] if np.isfinite(box).all() else None
                for box in np.asarray(boxes, np.float64)
            ]
            (workdir / "boxes.json").write_text(json.dumps(rows))
        if "reference" in self.used and reference is not None:
            cv2.imwrite(
                str(workdir / "reference.png"), cv2.cvtColor(reference, cv2.COLOR_RGBA2BGRA)
            )
        return values

    def _execute(self, argv: list[str], workdir: Path) -> None:
        shown = shlex.join(argv)
        env = {**os.environ, **self.env}
        with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group, killed whole on timeout
                )
            except OSError as exc:
                raise CommandError(f"{self.kind}: cannot start {shown}: {exc}") from None
            try:
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise CommandError(
                    f"{self.kind}: {shown} timed out after {self.timeout_s:g} s "
                    f"(params.timeout_s){self._tail(workdir)}"
                ) from None
            finally:
                if proc.poll() is None:  # interrupted while waiting
                    _kill_group(proc)
        if code != 0:
            raise CommandError(
                f"{self.kind}: {shown} exited with status {code}{self._tail(workdir)}"
            )

    def _tail(self, workdir: Path) -> str:
        """The last lines the tool printed (stderr, else stdout), for the error message."""
        for name in ("stderr.log", "stdout.log"):
            text = (workdir / name).read_bytes().decode("utf-8", errors="replace")
            lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
            if lines:
                tail = "\n  ".join(lines[-_TAIL_LINES:])
                return f"; last lines of its {name.split('.')[0]}:\n  {tail}"
        return " (it printed nothing)"

    def _result_path(self, values: dict[str, Any]) -> Path:
        if self.result is not None:
            return Path(self.result.format(**values))
        return Path(values["output_dir"] if self.output == "frames" else values["output_video"])

    def _read_result(
        self, path: Path, shape: tuple[int, ...], argv: list[str], workdir: Path
    ) -> np.ndarray:
        count, height, width = shape[:3]
        shown = shlex.join(argv)
        if self.output == "video":
            if not path.is_file():
                raise CommandError(
                    f"{self.kind}: {shown} wrote no video at {path}{self._tail(workdir)}"
                )
            try:
                frames, _ = read_frames(path, max_size=None)
            except VideoError as exc:
                raise CommandError(
                    f"{self.kind}: the result {path} does not decode ({exc})"
                ) from None
            images = list(frames)
        else:
            files = (
                sorted(
                    (p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES),
                    key=_natural,
                )
                if path.is_dir()
                else []
            )
            if not files:
                raise CommandError(
                    f"{self.kind}: {shown} wrote no frames into {path}{self._tail(workdir)}"
                )
            images = [_read_rgb(p) for p in files]
        if len(images) != count:
            raise CommandError(
                f"{self.kind}: the result {path} has {len(images)} frames, the clip has {count}"
            )
        out = np.empty((count, height, width, 3), np.uint8)
        for t, image in enumerate(images):
            if image.shape[:2] != (height, width):
                if not self.resize_output:
                    raise CommandError(
                        f"{self.kind}: frame {t} of the result {path} is "
                        f"{image.shape[1]}x{image.shape[0]}, the clip is {width}x{height} "
                        f"(params.resize_output = true scales it)"
                    )
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
            out[t] = image
        return out


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _natural(path: Path) -> list[Any]:
    """Sort key that puts ``frame_2.png`` before ``frame_10.png``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CommandError(f"result frame {path} does not decode as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class CommandInpainter:
    """An inpainter that runs an external tool on the clip's frames and masks.

    ``fps`` is the rate the ``{video}`` input and ``{fps}`` claim (the inpainter
    protocol does not carry the clip's); ``model`` labels the tool in the identity.
    """

    def __init__(self, spec: CommandSpec, *, fps: float = 30.0, model: str | None = None) -> None:
        self.runner = _Command("inpainter", COMMON, spec)
        self.fps = fps
        self.info = BackendInfo(
            kind="inpainter",
            name="command",
            version="1",
            model=model,
            params={**self.runner.identity(), "fps": fps},
        )

    def inpaint(self, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
        check_frames_and_masks(frames, masks)
        return self.runner.run(frames, masks, masks_to_boxes(masks), self.fps, {})


class CommandInserter:
    """An inserter that runs an external tool on the background, cut-out and boxes.

    The clip's rate and the pair's seed come with each job; ``{masks_dir}`` holds the
    target boxes filled, ``{reference}`` the trimmed cut-out.
    """

    def __init__(self, spec: CommandSpec, *, model: str | None = None) -> None:
        self.runner = _Command("inserter", COMMON + INSERTER_ONLY, spec)
        self.info = BackendInfo(
            kind="inserter", name="command", version="1", model=model, params=self.runner.identity()
        )

    def insert(self, job: InsertionInput) -> np.ndarray:
        frames = job.background
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"background must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}"
            )
        boxes = np.asarray(job.boxes, np.float64)
        if boxes.shape != (len(frames), 4):
            raise ValueError(f"boxes must be T x 4 for T={len(frames)}, got {boxes.shape}")
        masks = box_to_mask(boxes, frames.shape[1], frames.shape[2])
        return self.runner.run(
            frames, masks, boxes, job.fps, {"seed": int(job.seed)}, trim_to_alpha(job.cutout)
        )


def _spec(kind: str, params: dict[str, Any]) -> CommandSpec:
    if "command" not in params:
        raise ConfigError(f"{kind}.params.command is required for the command backend")
    try:
        return CommandSpec(**params)
    except TypeError as exc:
        known = [f.name for f in fields(CommandSpec)]
        raise ConfigError(f"{kind}.params: {exc}; known: {known}") from None


def create_inpainter(config: BackendConfig, device: str) -> CommandInpainter:
    """The registry's factory for ``[inpainter] backend = "command"``.

    ``device`` is not used: the tool picks its own (``env = {CUDA_VISIBLE_DEVICES = "0"}``).
    """
    params = dict(config.params)
    fps = params.pop("fps", 30.0)
    return CommandInpainter(_spec("inpainter", params), fps=fps, model=config.model)


def create_inserter(config: BackendConfig, device: str) -> CommandInserter:
    """The registry's factory for ``[inserter] backend = "command"``."""
    return CommandInserter(_spec("inserter", dict(config.params)), model=config.model)


def weights(config: BackendConfig) -> list[str]:
    """The checkout a build would run in (its weights are the tool's own business)."""
    cwd = config.params.get("cwd")
    return [str(cwd)] if cwd else []
