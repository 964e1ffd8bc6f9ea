"""The studio page against servers set up apart: one with an API key, one that must download its model."""

from __future__ import annotations

import httpx
import pytest
from conftest import Studio
from hub_server import FakeHub, repo_from_cache
from playwright.sync_api import expect
from server_process import ServerProcess
from test_studio_page import AUDIO_READY_JS, generate
from waiting import QUICK_HANG_GUARD_S

KEY = "studio-test-key"
NAME, REPO = "musicgen-small", "facebook/musicgen-small"


@pytest.fixture(scope="module")
def keyed_server(tiny_hub, tmp_path_factory):
    server = ServerProcess(tiny_hub, tmp_path_factory.mktemp("keyed"), dtype="float32", api_key=KEY).start()
    yield server
    server.kill()


@pytest.fixture
def keyed(browser, keyed_server, screenshots, request):
    s = Studio(browser, keyed_server, screenshots, request.node.name, api_key=KEY)
    yield s
    try:
        assert s.unexpected_errors() == [], "the page logged errors"
    finally:
        s.close()


def test_the_key_prompt_when_a_key_is_set(keyed):
    base = keyed.server.base
    # The page is open (it holds nothing private); the API behind it is not.
    assert httpx.get(f"{base}/", timeout=QUICK_HANG_GUARD_S).status_code == 200
    assert httpx.get(f"{base}/api/models", timeout=QUICK_HANG_GUARD_S).status_code == 401

    page = keyed.open().page
    dialog = page.locator("#key-dialog")
    # The OpenAPI document says a key is needed: the page asks before any call is refused.
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("needs an API key")
    keyed.shot("key-prompt", full_page=False)
    assert keyed.errors == []

    keyed.allow(r"status of 401")  # the browser logs the refused answer to the wrong key
    page.locator("#key-input").fill("wrong")
    page.locator("#key-save").click()
    expect(page.locator("#key-error")).to_contain_text("needs an API key")
    expect(dialog).to_be_visible()

    page.locator("#key-input").fill(KEY)
    page.locator("#key-save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#model")).to_have_value("musicgen-small")
    assert page.evaluate("sessionStorage.getItem('audiocraft.apiKey')") == KEY

    # Everything the page does sends the key: the submission, the events, the audio.
    generate(keyed, "a key-protected tune", 1.0)
    keyed.wait(AUDIO_READY_JS, "the audio, fetched with the key")
    with page.expect_download() as info:
        page.locator("#player-downloads [data-format='mp3']").click()
    assert info.value.suggested_filename.endswith(".mp3")

    # The key lasts as long as the tab: a reload does not ask again.
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#history-list li[data-job]").first).to_contain_text("a key-protected tune")
    expect(dialog).to_be_hidden()


def test_a_page_on_another_origin_cannot_drive_the_service(studio):
    """The same CSRF rule as the API: the studio's own origin passes the guard (every test here), another
    origin's page does not. A form post needs no preflight and the route takes forms, so only the guard
    (server/http/guard.py) stops it; the server has no key, so nothing else would."""
    page = studio.open().page
    other = studio.server.base.replace("127.0.0.1", "localhost")  # another origin, the same server
    studio.allow(r"Failed to load resource|net::ERR_FAILED")
    page.goto(other + "/health")  # a page of another origin (without the studio's CSP)
    kind = page.evaluate(
        """async (url) => {
            const form = new FormData();
            form.append('prompt', 'cross-site request');
            form.append('duration', '0.5');
            return (await fetch(url, {method: 'POST', mode: 'no-cors', body: form})).type;
        }""",
        studio.server.base + "/api/generate/music",
    )
    assert kind == "opaque"  # the browser hides the answer; the server's own record says what happened
    jobs = studio.http.get("/api/jobs", params={"limit": 1000}).json()["jobs"]
    assert all(j["request"].get("prompt") != "cross-site request" for j in jobs)


@pytest.fixture
def hub(tiny_hub):
    with FakeHub(repos={REPO: repo_from_cache(tiny_hub, REPO)}) as h:
        yield h


def test_download_a_model_and_see_its_progress(browser, hub, tmp_path, screenshots, request):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None}
    server = ServerProcess(tmp_path / "models", tmp_path / "data", env=env, dtype="float32").start()
    studio = Studio(browser, server, screenshots, request.node.name)
    try:
        page = studio.open().page
        expect(page.locator("#model")).to_have_value(NAME)
        expect(page.locator("#model-note")).to_contain_text("not installed")
        hub.hold("tokenizer.json")  # after the weights, in name order: the download stops part way
        page.locator("#download-model").click()
        expect(page.locator("#download-model")).to_have_text("Downloading…")
        studio.wait(
            "() => /[1-9][0-9.]* [kMG]B of /.test(document.getElementById('download-text').textContent)",
            "the page to show the bytes downloaded",
        )
        studio.shot("downloading", full_page=False)
        hub.release()
        studio.wait(
            "(name) => document.getElementById('download-text').textContent === `${name} is installed.`",
            "the download to finish",
            NAME,
        )
        expect(page.locator("#model-note")).to_contain_text("installed")
        expect(page.locator("#download-model")).to_be_hidden()
        assert httpx.get(f"{server.base}/api/models/{NAME}", timeout=QUICK_HANG_GUARD_S).json()["installed"]
        assert studio.unexpected_errors() == []
    finally:
        studio.close()
        server.kill()
