"""The studio page (GET /) in a real browser: Debian's chromium, headless, driven by Playwright, against
the real server process on tiny models.

Playwright downloads no browser here: it drives /usr/bin/chromium (test/browser/ensure-chromium.sh
installs it; `make test` runs that). Without it these tests skip and say how to install it.

Waits: Playwright's auto-waiting for what the page shows at once (a click's answer), and for anything
that waits on the service (a generation, a download, a mix) test/waiting.py's rule: wait while the
page or the server keeps moving, fail only when both stand still for the stall limit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess
from waiting import QUICK_HANG_GUARD_S, STALL_S, running_signature, wait_for_progress

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1440, "height": 1000}
# What the page shows of its work in progress: a change in any of these is progress.
PAGE_SIGNATURE_JS = """() => ['job-status', 'mix-status', 'download-text', 'history-list', 'player-meta', 'melody-note',
    'ft-list'].map((id) => document.getElementById(id)?.textContent || '').join('|')"""

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@pytest.fixture(scope="session", autouse=True)
def _expect_waits_as_long_as_a_stall():
    """Playwright's expect: what a click shows comes at once, but a loaded machine may be slow to
    render it; only a page that stands still for the stall limit fails (never a tight deadline)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=STALL_S * 1000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "test/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.browser)


# Per module, not per session: Playwright's sync API runs an asyncio loop in the main thread while it
# is open, and every later test that calls asyncio.run() (the unit tier) would fail beside it.
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed: run `bash test/browser/ensure-chromium.sh` (apt-get chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--autoplay-policy=no-user-gesture-required",
                # a fake microphone (a beep) that needs no permission prompt: the melody recorder
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests leave their screenshots: AUDIOCRAFT_STUDIO_SCREENSHOTS, or a temporary dir."""
    where = os.environ.get("AUDIOCRAFT_STUDIO_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("studio-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def studio_server(tiny_hub: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the tiny models for the tests that need nothing special of it."""
    server = ServerProcess(tiny_hub, tmp_path_factory.mktemp("studio-data"), dtype="float32").start()
    yield server
    server.kill()


def has_route(server: ServerProcess, path: str) -> bool:
    """Whether the server's OpenAPI document has `path` (streaming and mixing are built apart)."""
    document = httpx.get(f"{server.base}/openapi.json", timeout=QUICK_HANG_GUARD_S).json()
    shape = re.compile(r"\{[^}]+\}")  # /api/jobs/{job_id}/stream and /api/jobs/{id}/stream are one route
    return shape.sub("{}", path) in {shape.sub("{}", p) for p in document["paths"]}


class Studio:
    """A fresh browser context on the server's page, its console errors collected."""

    def __init__(self, browser, server: ServerProcess, screenshots: Path, name: str, api_key: str | None = None):  # noqa: ANN001
        self.server = server
        self.shots = screenshots
        self.name = name
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.allowed: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.http = server.client(timeout_s=QUICK_HANG_GUARD_S)
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    def open(self) -> Studio:
        self.page.goto(self.server.base + "/")
        self.page.wait_for_selector("body[data-ready='true']")
        return self

    def allow(self, pattern: str) -> None:
        """A console error this test causes on purpose (the browser logs every 401 it gets)."""
        self.allowed.append(pattern)

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(re.search(p, e) for p in self.allowed)]

    def shot(self, label: str, full_page: bool = True) -> Path:
        path = self.shots / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def wait(self, predicate_js: str, what: str, arg: object = None) -> object:
        """Until `predicate_js` (a JS function of `arg`) is truthy in the page; progress is what the page
        shows of its jobs and what the server is running."""

        def probe() -> tuple[object, tuple]:
            done = self.page.evaluate(predicate_js, arg)
            return done, (self.page.evaluate(PAGE_SIGNATURE_JS), running_signature(self.http))

        return wait_for_progress(probe, what, stall_s=STALL_S, poll_s=0.1)

    def close(self) -> None:
        self.http.close()
        self.context.close()


@pytest.fixture
def studio(browser, studio_server: ServerProcess, screenshots: Path, request: pytest.FixtureRequest) -> Iterator:
    s = Studio(browser, studio_server, screenshots, request.node.name)
    yield s
    try:
        assert s.unexpected_errors() == [], "the page logged errors"
    finally:
        s.close()
