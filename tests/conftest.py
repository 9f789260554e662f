"""Shared fixtures: where the real test media lives, and tiny helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


TEST_MEDIA = REPO / "tests" / "data"


def shared_data_dir() -> Path:
    """The real media shipped in ``tests/data`` (see its PROVENANCE.md), or ``$PVTT_TEST_MEDIA``.

    The media travel with the repository so that a fresh clone anywhere tests as much as
    the development checkout; a missing folder is an error, never a reason to skip.
    """
    env = os.environ.get("PVTT_TEST_MEDIA")
    return Path(env) if env else TEST_MEDIA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "PROVENANCE.md").is_file():
        raise FileNotFoundError(f"{path}: the test media folder (tests/data) is missing or incomplete")
    return path


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on loopback, for the whole session."""
    import logging

    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run that skipped more tests than ``$PVTT_MAX_SKIPS`` (``.ci/run`` sets it).

    Skips are for GPU-only tests and deliberately optional tools; a new skip elsewhere
    (missing media, a package the setup forgot) would silently shrink what CI tests, so
    the ceiling turns it into a failure. ``-rs`` lists every skip with its reason.
    """
    ceiling = os.environ.get("PVTT_MAX_SKIPS")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if ceiling is None or reporter is None or exitstatus not in (0, 1):
        return
    skipped = len(reporter.stats.get("skipped", []))
    if skipped > int(ceiling):
        reporter.write_line(
            f"{skipped} tests skipped, more than the ceiling PVTT_MAX_SKIPS={ceiling}: "
            "see the skip reasons above (-rs)", red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
