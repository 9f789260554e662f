"""``pvtt matte IMAGE -o OUT.png``: one product cut-out, as a build would make it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pvtt.builder.products import encode_png, load_rgb
from pvtt.builder.registry import create_backend
from pvtt.builder.stages.cutout import trim_to_alpha
from pvtt.builder.stages.protocols import StageRejected
from pvtt.schemas.config import BackendConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "matte",
        description=(
            "Cut the product out of a photo with a matter backend and write an RGBA PNG, "
            "trimmed to the product's alpha box as a build stores it (unless --no-trim)."
        ),
    )
    parser.add_argument("image", type=Path, metavar="IMAGE")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.png")
    parser.add_argument(
        "--backend", default="cpu", help="matter backend: cpu (default), rembg, or a plug-in's name"
    )
    parser.add_argument(
        "--model", help="model name or path (rembg: u2netp, isnet-general-use, ...)"
    )
    parser.add_argument("--model-dir", type=Path, help="folder holding the model's file (rembg)")
    parser.add_argument("--alpha-matting", action="store_true", help="refine edges (rembg)")
    parser.add_argument("--no-trim", action="store_true", help="keep the photo's full size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> BackendConfig:
    params: dict[str, object] = {}
    if args.model_dir is not None:
        params["model_dir"] = str(args.model_dir)
    if args.alpha_matting:
        params["alpha_matting"] = True
    if args.backend == "cpu" and (args.model or params):
        raise ValueError(
            "--model, --model-dir and --alpha-matting need a model backend (--backend rembg)"
        )
    return BackendConfig(backend=args.backend, model=args.model, params=params)


def run(args: argparse.Namespace) -> int:
    try:
        matter = create_backend("matter", _config(args), args.device)
        rgba = matter.matte(load_rgb(args.image.read_bytes(), str(args.image)))
        if not args.no_trim:
            try:
                rgba = trim_to_alpha(rgba)
            except StageRejected as exc:
                raise StageRejected(f"{args.image}: {exc.reason}") from None
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_bytes(encode_png(rgba))
    except StageRejected as exc:  # the image does not decode, or nothing was cut out
        print(f"pvtt matte: {exc.reason}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError; OSError names its file
        print(f"pvtt matte: {exc}", file=sys.stderr)
        return 1
    height, width = rgba.shape[:2]
    model = f" {matter.info.model}" if matter.info.model else ""
    print(f"{args.output}: {width}x{height} RGBA cut-out ({matter.info.name}{model})")
    return 0
