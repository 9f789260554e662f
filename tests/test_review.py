"""``pvtt review``: the session, its HTTP API, and the page driven in a real headless chromium."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av
import lance
import pyarrow as pa
import pytest
from records_factory import FRAMES, make_samples

from pvtt.builder.writer import DatasetWriter
from pvtt.loaders.labels import has_labels, latest_labels, read_labels
from pvtt.loaders.query import PairFilter, select_pairs
from pvtt.loaders.store import open_dataset, read_blobs_by_key
from pvtt.schemas.labels import LABELS_PATH, LABELS_SCHEMA, REASONS
from pvtt.schemas.manifest import read_manifest
from pvtt.tools.cli import main
from pvtt.tools.commands import review as review_command
from pvtt.tools.review_server import byte_range, make_server
from pvtt.tools.review_session import ORDERS, ReviewSession, order_rows

ALL = PairFilter.make(passed=None)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("review") / "out"
    with DatasetWriter(out, max_samples=4, include_masks=True) as writer:
        for sample in make_samples(shared_data, 8):
            writer.write(sample)
    return out


@pytest.fixture
def built(template: Path, tmp_path: Path) -> Path:
    """A fresh copy per test: sessions write labels into it."""
    out = tmp_path / "out"
    shutil.copytree(template, out)
    return out


class Served:
    """A session behind a running server, with small HTTP helpers."""

    def __init__(self, session: ReviewSession) -> None:
        self.session = session
        self.server = make_server(session)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def post(self, path: str, body: Any, kind: str = "application/json") -> tuple[int, dict]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": kind}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(built: Path) -> Iterator[Served]:
    s = Served(ReviewSession(built, ALL, order="pair_id", reviewer="tester"))
    yield s
    s.close()


def _media_files(out: Path) -> dict[str, int]:
    """Every file of the pairs, clips and products tables and the tar shards, with its size."""
    found = {}
    for part in ("lance/pairs.lance", "lance/clips.lance", "lance/products.lance", "tar"):
        for path in (out / part).rglob("*"):
            if path.is_file():
                found[str(path.relative_to(out))] = path.stat().st_size
    return found


# -- pure parts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole body
        ("items=0-1", None),
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0"])
def test_byte_range_outside_the_body_is_refused(header: str) -> None:
    with pytest.raises(ValueError):
        byte_range(header, 1000)


def test_uncertain_order_puts_scores_nearest_the_threshold_first() -> None:
    rows = [
        {"pair_id": k, "quality_score": q}
        for k, q in [
            ("a", 0.95),
            ("b", 0.69),
            ("c", None),
            ("d", 0.40),
            ("e", 0.74),
            ("f", float("nan")),
        ]
    ]
    assert [r["pair_id"] for r in order_rows(rows, "uncertain", 0.7)] == [
        "b",
        "e",
        "a",
        "d",
        "c",
        "f",
    ]
    assert [r["pair_id"] for r in order_rows(rows, "score", 0.7)] == ["d", "b", "e", "a", "c", "f"]
    assert [r["pair_id"] for r in order_rows(rows, "score-desc", 0.7)] == [
        "a",
        "e",
        "b",
        "d",
        "c",
        "f",
    ]
    with pytest.raises(ValueError, match="unknown order"):
        order_rows(rows, "random", 0.7)


def test_the_command_offers_the_session_orders() -> None:
    assert review_command.ORDERS == ORDERS


# -- session and API ----------------------------------------------------------------


def test_a_dataset_never_reviewed_has_no_labels(built: Path) -> None:
    dataset = open_dataset(built)
    assert not has_labels(dataset)
    assert read_labels(dataset).schema == LABELS_SCHEMA
    assert read_labels(dataset).num_rows == 0


def test_queue_holds_the_filtered_pairs_with_scores_and_threshold(
    served: Served, built: Path
) -> None:
    status, _, body = served.get("/api/queue")
    assert status == 200
    queue = json.loads(body)
    expected = select_pairs(open_dataset(built), ALL, columns=["pair_id", "quality_score"])
    assert [p["pair_id"] for p in queue["pairs"]] == sorted(expected.column("pair_id").to_pylist())
    assert queue["threshold"] == 0.7 and queue["reasons"] == list(REASONS)
    first = queue["pairs"][0]
    assert {"score_identity", "quality_score", "passed", "reject_reason"} <= set(first)
    assert queue["reviewer"] == "tester" and queue["pending"] == 0 and queue["version"] is None


def test_filters_select_the_queue(built: Path) -> None:
    session = ReviewSession(built, PairFilter.make(passed=False), reviewer="t")
    assert session.rows and all(not r["passed"] for r in session.rows)


def test_a_tar_only_dataset_is_reviewed_from_its_samples(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "tar-only"
    with DatasetWriter(out, formats=("tar",), max_samples=4) as writer:
        for sample in make_samples(shared_data, 4):
            writer.write(sample)
    served = Served(ReviewSession(out, ALL, order="pair_id", reviewer="t"))
    try:
        pid = served.session.rows[0]["pair_id"]
        status, _, body = served.get(f"/media/synth/{pid}")
        assert status == 200 and body[4:8] == b"ftyp"
        assert served.get(f"/media/masks/{pid}")[0] == 404  # the build kept no masks in tar
        served.post("/api/label", {"pair_id": pid, "label": "reject", "reason": "insertion"})
        assert served.post("/api/save", {})[1]["version"] is not None
    finally:
        served.close()
    assert latest_labels(open_dataset(out))[pid]["reason"] == "insertion"


def test_media_are_the_stored_bytes_served_by_range(served: Served, built: Path) -> None:
    pid = served.session.rows[0]["pair_id"]
    stored = read_blobs_by_key(open_dataset(built).pairs, "synth_video", "pair_id", [pid])[pid]
    status, headers, body = served.get(f"/media/synth/{pid}", {"Range": "bytes=100-199"})
    assert status == 206 and body == stored[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(stored)}"
    assert headers["Content-Type"] == "video/mp4"
    status, headers, body = served.get(f"/media/synth/{pid}")
    assert status == 200 and body == stored and headers["Accept-Ranges"] == "bytes"
    status, headers, _ = served.get(f"/media/synth/{pid}", {"Range": f"bytes={len(stored)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(stored)}"
    status, headers, body = served.get(f"/media/target/{pid}")
    assert status == 200 and headers["Content-Type"] == "image/png" and body[:4] == b"\x89PNG"


def test_masks_come_as_an_overlay_video_of_every_source_frame(
    served: Served, tmp_path: Path
) -> None:
    pid = served.session.rows[0]["pair_id"]
    status, _, body = served.get(f"/media/masks/{pid}")
    assert status == 200
    clip = tmp_path / "masks.mp4"
    clip.write_bytes(body)
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == FRAMES
    inside = frames[0][12:28, 22:48].astype(int)  # the factory's mask: rows 10-30, cols 20-50
    outside = frames[0][35:50, 60:90].astype(int)
    red_in = (inside[..., 0] - inside[..., 1:].mean(axis=-1)).mean()
    red_out = (outside[..., 0] - outside[..., 1:].mean(axis=-1)).mean()
    assert red_in > red_out + 40  # tinted where the mask is set only


def test_unknown_pair_or_media_is_404(served: Served) -> None:
    assert served.get("/media/synth/nope")[0] == 404
    pid = served.session.rows[0]["pair_id"]
    assert served.get(f"/media/thumbnail/{pid}")[0] == 404
    assert served.post("/api/label", {"pair_id": "nope", "label": "accept"})[0] == 404


def test_requests_for_another_host_are_refused(served: Served) -> None:
    assert served.get("/api/queue", {"Host": "evil.example:80"})[0] == 403
    assert served.get("/api/queue", {"Host": f"localhost:{served.port}"})[0] == 200


def test_changes_need_json(served: Served) -> None:
    pid = served.session.rows[0]["pair_id"]
    status, answer = served.post(
        "/api/label", {"pair_id": pid, "label": "accept"}, kind="text/plain"
    )
    assert status == 400 and "application/json" in answer["error"]


def test_bad_verdicts_are_refused(served: Served) -> None:
    pid = served.session.rows[0]["pair_id"]
    assert served.post("/api/label", {"pair_id": pid, "label": "maybe"})[0] == 400
    assert served.post("/api/label", {"pair_id": pid, "label": "reject"})[0] == 400
    assert (
        served.post("/api/label", {"pair_id": pid, "label": "reject", "reason": "ugly"})[0] == 400
    )
    assert (
        served.post("/api/label", {"pair_id": pid, "label": "accept", "reason": "mask"})[0] == 400
    )
    assert served.session.pending == []


def test_label_undo_save_write_one_new_version(served: Served, built: Path) -> None:
    before = _media_files(built)
    ids = [r["pair_id"] for r in served.session.rows]
    assert served.post("/api/undo", {})[0] == 409  # nothing yet
    assert served.post("/api/label", {"pair_id": ids[0], "label": "accept"})[0] == 200
    assert (
        served.post("/api/label", {"pair_id": ids[1], "label": "reject", "reason": "mask"})[0]
        == 200
    )
    status, answer = served.post("/api/undo", {})
    assert status == 200 and answer["undone"] == ids[1] and answer["pending"] == 1
    served.post("/api/label", {"pair_id": ids[1], "label": "reject", "reason": "residue"})
    status, answer = served.post("/api/save", {})
    assert status == 200 and answer["pending"] == 0
    manifest = read_manifest(built)
    info = manifest.tables["labels"]
    assert info.path == LABELS_PATH and info.rows == 2 and answer["version"] == info.version
    labels = latest_labels(open_dataset(built))
    assert {k: (v["label"], v["reason"]) for k, v in labels.items()} == {
        ids[0]: ("accept", None),
        ids[1]: ("reject", "residue"),
    }
    row = labels[ids[0]]
    assert row["reviewer"] == "tester"
    assert row["build_id"] == served.session.by_id[ids[0]]["build_id"] == "test"  # the pair's build
    assert served.post("/api/undo", {})[0] == 409  # saved verdicts stay
    assert served.post("/api/save", {})[1]["version"] == info.version  # nothing new: no version
    assert _media_files(built) == before  # the pairs, clips, products and shards: untouched


def test_each_session_appends_a_version_and_skips_labelled_pairs(built: Path) -> None:
    first = ReviewSession(built, ALL, order="pair_id", reviewer="a")
    ids = [r["pair_id"] for r in first.rows]
    first.label(ids[0], "reject", "identity")
    v1 = first.save()["version"]
    second = ReviewSession(built, ALL, order="pair_id", reviewer="b")
    assert ids[0] not in second.by_id and len(second.rows) == len(ids) - 1
    again = ReviewSession(built, ALL, order="pair_id", reviewer="b", relabel=True)
    assert again.queue()["pairs"][0]["previous"] == {"label": "reject", "reason": "identity"}
    again.label(ids[0], "accept")
    again.label(ids[1], "accept")
    v2 = again.save()["version"]
    assert v2 > v1
    dataset = open_dataset(built)
    assert read_labels(dataset).num_rows == 3  # a log: the older verdict stays
    assert latest_labels(dataset)[ids[0]]["label"] == "accept"
    old = lance.dataset(str(built / LABELS_PATH), version=v1)
    assert old.count_rows() == 1


def test_verdicts_the_manifest_does_not_name_yet_are_kept_by_the_next_save(built: Path) -> None:
    session = ReviewSession(built, ALL, order="pair_id", reviewer="a")
    ids = [r["pair_id"] for r in session.rows]
    session.label(ids[0], "accept")
    session.save()
    # a session committed to Lance, then died before naming that version in the manifest
    lost = {
        "pair_id": ids[1],
        "label": "reject",
        "reason": "other",
        "reviewer": "killed",
        "time": datetime.now(timezone.utc),
        "build_id": "test",
    }
    lance.write_dataset(
        pa.Table.from_pylist([lost], schema=LABELS_SCHEMA), str(built / LABELS_PATH), mode="append"
    )
    assert set(latest_labels(open_dataset(built))) == {ids[0]}  # readers trust the manifest
    nxt = ReviewSession(built, ALL, order="pair_id", reviewer="b")
    nxt.label(ids[2], "accept")
    nxt.save()
    table = read_labels(open_dataset(built))  # human verdicts are never thrown away
    assert sorted(table.column("pair_id").to_pylist()) == sorted(ids[:3])
    assert sorted(table.column("reviewer").to_pylist()) == ["a", "b", "killed"]


def _sigint_default() -> None:
    """Ctrl-C's default in the child: a test run in the background (nohup, ``cmd &`` in a
    script, as CI may) ignores SIGINT, and a child inherits that, so the signal the test
    sends would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_command_serves_until_interrupted_and_then_saves(built: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pvtt.tools.cli",
        "review",
        str(built),
        "--port",
        "0",
        "--reviewer",
        "cli",
        "--rejected",
        "--order",
        "score",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,
    )
    try:
        first = process.stdout.readline()
        match = re.search(r"reviewing (\d+) pairs .* at (http://127\.0\.0\.1:\d+)/", first)
        assert match, first + process.stderr.read()
        url = match.group(2)
        with urllib.request.urlopen(url + "/api/queue", timeout=60) as response:
            pairs = json.loads(response.read())["pairs"]
        assert len(pairs) == int(match.group(1)) and not any(p["passed"] for p in pairs)
        scores = [p["quality_score"] for p in pairs]
        assert scores == sorted(scores)
        body = json.dumps({"pair_id": pairs[0]["pair_id"], "label": "accept"}).encode()
        request = urllib.request.Request(
            url + "/api/label", data=body, headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=60).close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "labels saved: version" in out
    labels = latest_labels(open_dataset(built))
    assert {k: (v["label"], v["reviewer"]) for k, v in labels.items()} == {
        pairs[0]["pair_id"]: ("accept", "cli")
    }


def test_a_port_in_use_is_a_clear_error(built: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["review", str(built), "--port", str(port)]) == 1
    assert f"127.0.0.1:{port}: " in capsys.readouterr().err


# -- the page in a real browser ---------------------------------------------------------


class Chromium:
    """Headless chromium driven over the DevTools protocol on a pipe (fds 3 and 4):
    standard library only, no port, no client package."""

    def __init__(self, profile: Path) -> None:
        to_child, self._to_browser = _high_pipe()
        self._from_browser, from_child = _high_pipe()

        # bash (dash takes one-digit fds only) moves the pipe ends to the protocol's fixed fds 3 and 4, so no Python
        # code runs between fork and exec (Lance, loaded here, warns about that)
        redirect = f'exec "$0" "$@" 3<&{to_child} 4>&{from_child}'
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                redirect,
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--autoplay-policy=no-user-gesture-required",
                "about:blank",
            ],
            pass_fds=(to_child, from_child),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reply = self._read()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)
        raise TimeoutError(method)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(line)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends sit above fd 9, so that moving them to 3 and 4 clobbers neither
    before the child moves them there."""
    read, write = os.pipe()
    high = (
        fcntl.fcntl(read, fcntl.F_DUPFD_CLOEXEC, 10),
        fcntl.fcntl(write, fcntl.F_DUPFD_CLOEXEC, 10),
    )
    os.close(read)
    os.close(write)
    return high


class Page:
    def __init__(self, browser: Chromium, url: str) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.send("Network.enable")
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed false; status: {self.js('status.textContent')}")

    def press(self, key: str) -> None:
        code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"
        common = {"key": key, "code": code, "windowsVirtualKeyCode": ord(key.upper())}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": key, **common})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **common})

    def requested(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.browser.events
            if e.get("method") == "Network.requestWillBeSent"
        ]


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (as root: make system-deps)",
)
def test_chromium_plays_the_pair_and_labels_it_with_the_keyboard(
    served: Served, built: Path, tmp_path: Path
) -> None:
    before = _media_files(built)
    ids = [r["pair_id"] for r in served.session.rows]
    browser = Chromium(tmp_path / "profile")
    try:
        page = Page(browser, served.url + "/")
        page.wait_for("document.body.dataset.ready === '1'")
        assert page.js("document.body.dataset.pair") == ids[0]
        # every panel shows decoded media: four playing videos and the cut-out
        page.wait_for(
            "['source','masks','background','synth'].every(k => "
            "document.getElementById(k).readyState >= 2 && document.getElementById(k).videoWidth > 0)"
        )
        assert page.js("document.getElementById('target').naturalWidth") > 0
        page.wait_for("!document.getElementById('synth').paused")
        page.wait_for("document.getElementById('synth').currentTime > 0")
        assert page.js("document.querySelectorAll('figure.missing').length") == 0

        for key in ["a", "2", "s", "u", "u", "5", "a", "w"]:
            page.press(key)
        page.wait_for("document.body.dataset.busy === '0' && document.body.dataset.version !== ''")
        assert page.js("document.body.dataset.index") == "3"
        assert page.js("document.body.dataset.pending") == "0"

        fetched = [u for u in page.requested() if not u.startswith("data:")]  # the player's icons
        assert fetched and all(u.startswith(served.url + "/") for u in fetched), fetched
        assert served.url + "/review.js" in fetched
        assert served.url + f"/media/masks/{ids[0]}" in fetched
    finally:
        browser.close()

    dataset = open_dataset(built)
    table = read_labels(dataset)
    assert table.num_rows == 3  # the undone verdict never reached the table
    got = {r["pair_id"]: (r["label"], r["reason"], r["reviewer"]) for r in table.to_pylist()}
    assert got == {
        ids[0]: ("accept", None, "tester"),
        ids[1]: ("reject", "lighting", "tester"),  # 2 (residue) was undone, then 5
        ids[2]: ("accept", None, "tester"),  # skipped, the skip undone, then accepted
    }
    assert dataset.manifest.tables["labels"].rows == 3
    assert _media_files(built) == before
