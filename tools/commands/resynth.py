"""``pvtt resynth``: make a selection of pairs again, with other backends or settings.

Selects pairs with ``--where`` (SQL over the scalar columns, as ``pvtt query``) and
makes each again with the config's inserter, scorer, seed and gate, from the clip
artefacts and cut-outs the dataset stores: no catalog, no detection, segmentation,
inpainting or matting. The new rows replace the old ones in a new version of the Lance
pairs table (the old rows stay in Lance's history) and new tar shards; the old
shards get index versions without the replaced samples. The manifest, written last,
names all of it, so every reader sees exactly one row per pair id.

Resumable like a build: the new pairs are staged under OUT/resynth/ as they are made,
and a killed run, started again with the same selection and config, makes only the
pairs still missing. Pair ids do not change (they name the clip and product image).
"""

from __future__ import annotations

import argparse

from pvtt.schemas.config import ConfigError
from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import fail


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resynth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  pvtt resynth OUT --where \"reject_reason LIKE 'removal%'\" --config other.toml\n"
            '  pvtt resynth OUT --where "passed = false" --seed 7   # same backends, new seed'
        ),
    )
    p.add_argument("out", metavar="OUT", help="a built dataset folder (local)")
    p.add_argument(
        "--where", required=True, metavar="SQL", help="which pairs to make again (any verdict)"
    )
    p.add_argument(
        "--config",
        metavar="TOML",
        help="build config whose [inserter], [scorer], [pairs] seed and [quality] to use "
        "(default: the dataset's own)",
    )
    p.add_argument("--seed", type=int, metavar="N", help="pairs.seed for the new pairs")
    p.add_argument("--device", choices=("cpu", "cuda"), help="device of the model backends")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pvtt.loaders.store import open_dataset  # noqa: PLC0415 - Lance: not for --help
    from pvtt.schemas.config import load_config  # noqa: PLC0415
    from pvtt.tools.rescore import dataset_config  # noqa: PLC0415
    from pvtt.tools.resynth import resynth  # noqa: PLC0415

    try:
        if args.config is not None:
            config = load_config(args.config)
        else:
            config = dataset_config(open_dataset(args.out).manifest)
        if args.seed is not None:
            config.pairs.seed = args.seed
        if args.device is not None:
            config.device = args.device
        result = resynth(args.out, args.where, config, progress=not args.no_progress)
    except (ValueError, OSError, ManifestError, ConfigError) as exc:
        return fail(str(exc))
    print(result.summary())
    return 0
