"""``pvtt review``: judge pairs in a local web page; verdicts go to the ``labels`` table.

The page plays each pair's source, masks, background and synthesized clip in step
beside the target cut-out, with the scores and the gate's verdict. Keys: A accept,
1-7 reject with a reason, S skip, U undo, W save, Space play/pause. Verdicts are
saved (W, closing the page, or stopping the server with Ctrl+C) as one new version of
OUT/lance/labels.lance; the pairs and their media are never written. The server
listens on 127.0.0.1 only and fetches nothing from the network. Unlike pvtt query,
review shows passed and rejected pairs alike unless --passed or --rejected is given.
"""

from __future__ import annotations

import argparse
import sys

from pvtt.schemas.manifest import ManifestError
from pvtt.tools.commands._common import add_filter_arguments, fail, filter_from_args

ORDERS = ("uncertain", "score", "score-desc", "pair_id")  # pvtt.tools.review_session.ORDERS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: pvtt review OUT --difficulty hard,expert --order uncertain",
    )
    p.add_argument("out", metavar="OUT", help="a built dataset folder")
    add_filter_arguments(p)
    p.set_defaults(passed=None)  # review both sides of the gate unless --passed/--rejected
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="uncertain",
        help="uncertain: quality score nearest the threshold first (default)",
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="review at most N pairs")
    p.add_argument("--relabel", action="store_true", help="also show pairs already labelled")
    p.add_argument("--reviewer", default=None, help="name the labels carry (default: login)")
    p.add_argument("--port", type=int, default=8765, metavar="P", help="default 8765; 0: any")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pvtt.tools.review_server import make_server  # Lance and PyAV: not for --help
    from pvtt.tools.review_session import ReviewSession

    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        session = ReviewSession(
            args.out,
            filter_from_args(args),
            order=args.order,
            reviewer=args.reviewer,
            relabel=args.relabel,
            limit=args.limit,
        )
    except (ValueError, OSError, ManifestError) as exc:
        return fail(str(exc))
    try:
        server = make_server(session, args.port)
    except OSError as exc:
        return fail(f"127.0.0.1:{args.port}: {exc.strerror}; pick another --port (0: any free)")
    port = server.server_address[1]
    print(f"reviewing {len(session.rows)} pairs of {args.out} at http://127.0.0.1:{port}/")
    print("A accept, 1-7 reject with a reason, S skip, U undo, W save; Ctrl+C saves and stops")
    sys.stdout.flush()  # the address, before serving: a pipe reader waits for it
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state = session.save()
    version = state["version"]
    print("no labels saved" if version is None else f"labels saved: version {version}")
    return 0
