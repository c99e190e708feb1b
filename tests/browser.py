"""Debian's Chromium driven by Playwright, one browser per test module.

Never `playwright install` (it downloads a browser): the tests launch the `chromium`
package's binary, which `make test` and `.ci/run` install when missing. This machine's
network is closed: without the flags below Chromium waits on lookups it will never get.
A missing browser fails the tests with the way to install it; only
BACKBEAT_SKIP_BROWSER=1, set on purpose, skips them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("BACKBEAT_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOW_TO_INSTALL = (
    f"no Chromium at {CHROMIUM}: the browser tests drive Debian's `chromium` package "
    "(`sudo apt-get install chromium`, or `bash .ci/chromium` as root; `make test` does it); "
    "set BACKBEAT_SKIP_BROWSER=1 to skip them instead"
)


def skipped() -> bool:
    return os.environ.get("BACKBEAT_SKIP_BROWSER") == "1"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A Chromium for the module's tests (a launch costs about a second).

    Not for the session: while Playwright's sync API is open, its event loop counts as
    running in the main thread, and every later test calling `asyncio.run` (or run by
    anyio) would fail with "cannot be called from a running event loop".
    """
    if skipped():
        pytest.skip("BACKBEAT_SKIP_BROWSER=1")
    if not Path(CHROMIUM).exists():
        pytest.fail(HOW_TO_INSTALL, pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "no playwright: pip install -e '.[dev]' (it is in the dev extra)", pytrace=False
        )

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()
