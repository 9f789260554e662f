"""The HTTP side of ``pvtt review``: the page, its JSON API and the media, on loopback.

Standard library only (:mod:`http.server`): one page and one script from this folder,
a small JSON API over :class:`~pvtt.tools.review_session.ReviewSession`, and each
pair's media with HTTP byte ranges, which browsers need to play and seek an mp4. The
server binds 127.0.0.1 and answers only requests addressed to it by that name or
``localhost`` (a page elsewhere cannot reach it through DNS rebinding), and takes
changes only as JSON POSTs, which a cross-site form cannot send.

    GET  /                      the page            GET /review.js   its script
    GET  /api/queue             pairs, threshold, reasons, reviewer, save state
    GET  /media/KIND/PAIR_ID    KIND: source, masks, background, synth, target
    POST /api/label             {"pair_id", "label": "accept"|"reject", "reason"}
    POST /api/undo              takes back the latest unsaved verdict
    POST /api/save              appends the unsaved verdicts as a new labels version
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from pvtt.loaders.decode import MediaDecodeError
from pvtt.tools.review_media import KINDS
from pvtt.tools.review_session import ReviewSession

log = logging.getLogger(__name__)

STATIC = {
    "/": ("review_page.html", "text/html; charset=utf-8"),
    "/review.js": ("review_page.js", "text/javascript; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; media-src 'self'; "
    "img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)
"""The page loads its script, media and data from this server only: nothing else."""
MAX_BODY = 64 << 10
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte (inclusive) of a ``Range: bytes=a-b`` header over ``size``
    bytes; None for the whole body (no header, or one this server does not split, such
    as several ranges). Raises ValueError when the range lies outside the body (416)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the final N bytes
        count = int(last)
        if count == 0:
            raise ValueError(f"empty suffix range {header!r}")
        return max(0, size - count), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        raise ValueError(f"range {header!r} outside {size} bytes")
    return start, end


def make_server(session: ReviewSession, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``session`` on 127.0.0.1:``port`` (0: any free port), not yet serving."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    # Ctrl+C saves and exits at once: closing waits for no request thread (a browser's
    # kept-alive connection would hold it open), and those threads end with the process
    server.daemon_threads = True
    server.block_on_close = False
    server.session = session  # type: ignore[attr-defined]
    return server


class _Handler(BaseHTTPRequestHandler):
    server_version = "pvtt-review"
    protocol_version = "HTTP/1.1"

    @property
    def session(self) -> ReviewSession:
        return self.server.session  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _host_ok(self) -> bool:
        port = self.server.server_address[1]
        allowed = {f"127.0.0.1:{port}", f"localhost:{port}"}
        if self.headers.get("Host") in allowed:
            return True
        self._send_text(HTTPStatus.FORBIDDEN, "pvtt review answers 127.0.0.1 and localhost only")
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        if path in STATIC:
            name, mime = STATIC[path]
            body = resources.files("pvtt.tools").joinpath(name).read_bytes()
            self._send(HTTPStatus.OK, body, mime)
        elif path == "/api/queue":
            self._send_json(HTTPStatus.OK, self.session.queue())
        elif path.startswith("/media/"):
            self._media(path)
        else:
            self._send_text(HTTPStatus.NOT_FOUND, f"no such page {path}")

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        try:
            body = self._json_body()
            if path == "/api/label":
                answer = self.session.label(
                    str(body.get("pair_id")), str(body.get("label")), body.get("reason")
                )
            elif path == "/api/undo":
                answer = self.session.undo()
            elif path == "/api/save":
                answer = self.session.save()
            else:
                self._send_text(HTTPStatus.NOT_FOUND, f"no such action {path}")
                return
        except ValueError as exc:  # a malformed request, or a verdict the table refuses
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except KeyError as exc:  # a pair outside the queue
            self._send_json(HTTPStatus.NOT_FOUND, {"error": str(exc).strip("'\"")})
            return
        except LookupError as exc:  # nothing left to undo
            self._send_json(HTTPStatus.CONFLICT, {"error": str(exc)})
            return
        self._send_json(HTTPStatus.OK, answer)

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True  # the unread body would be the next request
            raise ValueError(f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        kind = self.headers.get("Content-Type", "").split(";")[0].strip()
        if kind != "application/json":
            raise ValueError("send changes as application/json")
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body

    def _media(self, path: str) -> None:
        parts = path.split("/", 3)  # '', 'media', KIND, PAIR_ID
        if len(parts) != 4 or parts[2] not in KINDS:
            self._send_text(HTTPStatus.NOT_FOUND, f"no such media {path}")
            return
        kind, pair_id = parts[2], unquote(parts[3])
        try:
            data = self.session.media.get(self.session.row(pair_id), kind)
        except KeyError as exc:
            self._send_text(HTTPStatus.NOT_FOUND, str(exc).strip("'\""))
            return
        except (MediaDecodeError, ValueError, OSError) as exc:
            log.warning("%s of %s: %s", kind, pair_id, exc)
            self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, f"{kind} of {pair_id}: {exc}")
            return
        if not data:
            self._send_text(HTTPStatus.NOT_FOUND, f"the dataset holds no {kind} for {pair_id}")
            return
        try:
            span = byte_range(self.headers.get("Range"), len(data))
        except ValueError as exc:
            self._send(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                str(exc).encode(),
                "text/plain",
                {"Content-Range": f"bytes */{len(data)}"},
            )
            return
        if span is None:
            self._send(HTTPStatus.OK, data, KINDS[kind], {"Accept-Ranges": "bytes"})
            return
        first, last = span
        self._send(
            HTTPStatus.PARTIAL_CONTENT,
            data[first : last + 1],
            KINDS[kind],
            {"Accept-Ranges": "bytes", "Content-Range": f"bytes {first}-{last}/{len(data)}"},
        )

    def _send_json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, json.dumps(payload, default=str).encode(), "application/json")

    def _send_text(self, status: HTTPStatus, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send(
        self, status: HTTPStatus, body: bytes, mime: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # a browser drops video ranges it
            self.close_connection = True  # no longer needs: nothing to answer
