"""Streaming playback and the timeline's mix, in the page. Streaming (`"stream": true`, GET
/api/jobs/{id}/stream) and POST /api/mix are built apart from the page: the tests of each skip, saying
so, on a server whose OpenAPI document lacks the route. The page itself must degrade with a message
on such a server (or on a 404 from the route), which the last tests check on any server by changing
what the browser is told."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import has_route
from playwright.sync_api import expect
from test_studio_page import AUDIO_READY_JS, generate, history_ids
from waiting import HANG_GUARD_S, QUICK_HANG_GUARD_S

STREAM_ROUTE = "/api/jobs/{job_id}/stream"
MIX_ROUTE = "/api/mix"


def needs(server, path: str) -> None:  # noqa: ANN001
    if not has_route(server, path):
        pytest.skip(f"this server has no {path} (its OpenAPI document lacks it): that part is built apart")


def make_clip(studio, prompt: str, duration_s: float) -> str:  # noqa: ANN001
    r = studio.http.post(
        "/api/generate/music", json={"prompt": prompt, "duration": duration_s, "seed": 1}, timeout=HANG_GUARD_S
    )
    assert r.status_code == 200, r.text
    return r.headers["x-job-id"]


def test_stream_plays_while_it_generates(studio):
    needs(studio.server, STREAM_ROUTE)
    page = studio.open().page
    streamed = []
    page.on("request", lambda r: "/stream?format=mp3" in r.url and streamed.append(r.url))
    expect(page.locator("#stream")).to_be_enabled()
    page.locator("#stream").check()
    generate(studio, "streaming synthwave", 4.0)
    # The media element plays what has arrived (MediaSource, through fetch).
    studio.wait("() => document.getElementById('audio').currentTime > 0", "the stream to play")
    studio.wait(
        "() => document.getElementById('job-state').textContent === 'Done'"
        " && Number(document.getElementById('waveform').dataset.drawn || 0) > 0",
        "the streamed job to finish and its waveform",
    )
    assert streamed and streamed[0].endswith(f"/api/jobs/{history_ids(studio)[0]}/stream?format=mp3")
    studio.wait(
        "() => { const a = document.getElementById('audio'); return Number.isFinite(a.duration) && a.duration > 3.5; }",
        "the stream to end with the whole audio",
    )
    studio.shot("streamed", full_page=False)


def test_mix_two_clips_from_the_timeline(studio):
    needs(studio.server, MIX_ROUTE)
    first = make_clip(studio, "mix bass line", 2.0)
    second = make_clip(studio, "mix hi-hats", 1.0)
    page = studio.open().page
    expect(page.locator("#mix-notice")).to_be_hidden()
    lanes = page.locator(".lane")
    page.locator(f"#history-list li[data-job='{first}']").drag_to(lanes.nth(0), target_position={"x": 5, "y": 20})
    page.locator(f"#history-list li[data-job='{second}']").drag_to(lanes.nth(1), target_position={"x": 5, "y": 20})
    expect(page.locator(".clip")).to_have_count(2)
    # The second clip is selected (the last dropped): start it at 1.5 s, 6 dB down, with a short fade.
    page.locator("#clip-offset").fill("1.5")
    page.locator("#clip-gain").fill("-6")
    page.locator("#clip-fade-out").fill("0.2")
    expect(page.locator("#mix")).to_have_text("Mix 2 clips")
    studio.shot("timeline", full_page=False)
    page.locator("#mix").click()
    studio.wait("() => document.getElementById('mix-state').textContent === 'Done'", "the mix to finish")
    duration = studio.wait(AUDIO_READY_JS, "the mix to be playable")
    assert duration == pytest.approx(2.5, abs=0.1)  # the hi-hats end at 1.5 + 1 s
    mix = studio.http.get(f"/api/jobs/{history_ids(studio)[0]}").json()
    assert mix["kind"] == "mix"
    tracks = mix["request"]["tracks"]
    assert [t["job"] for t in tracks] == [first, second]
    assert tracks[1]["offset_s"] == 1.5 and tracks[1]["gain_db"] == -6 and tracks[1]["fade_out_s"] == 0.2
    assert tracks[0]["offset_s"] < 0.5  # dropped at the lane's start
    expect(page.locator("#history-list li[data-job]").first).to_contain_text("Mix of 2 tracks")


# -- a server without them --------------------------------------------------------------------------


def without(paths: list[str], also_stream_field: bool = False):  # noqa: ANN201
    """A route handler giving the page the server's OpenAPI document without `paths`."""

    def handle(route):  # noqa: ANN001
        document = route.fetch().json()
        for p in paths:
            document["paths"].pop(p, None)
        if also_stream_field:
            document["components"]["schemas"]["MusicRequest"]["properties"].pop("stream", None)
        route.fulfill(json=document)

    return handle


def test_the_page_says_so_when_the_server_cannot_mix_or_stream(studio):
    studio.page.route("**/openapi.json", without([MIX_ROUTE, STREAM_ROUTE], also_stream_field=True))
    page = studio.open().page
    expect(page.locator("#mix-notice")).to_be_visible()
    expect(page.locator("#mix-notice")).to_contain_text("no POST /api/mix")
    expect(page.locator("#stream")).to_be_disabled()
    expect(page.locator("#stream-note")).to_have_text("(this server does not stream)")
    # The rest of the page works: a clip still goes onto the timeline, it just cannot be mixed.
    clip = make_clip(studio, "a clip without a mixer", 1.0)
    page.locator("#history-refresh").click()
    page.locator(f"#history-list li[data-job='{clip}'] [data-action='timeline']").click()
    expect(page.locator(".clip")).to_have_count(1)
    expect(page.locator("#mix")).to_be_disabled()
    # A clip moves in time when dragged sideways (pointer events), and the inspector follows.
    box = page.locator(".clip").bounding_box()
    pps = page.evaluate("() => document.querySelector('.lane').clientWidth") / 20  # the lanes show 20 s
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 10 + 3 * pps, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert float(page.locator("#clip-offset").input_value()) == pytest.approx(3.0, abs=0.15)


def test_a_404_from_the_mix_route_is_a_message_not_a_broken_page(studio):
    """The document claims a mixer but the route answers 404 (an older server behind a newer page)."""

    def with_mix(route):  # noqa: ANN001
        document = route.fetch().json()
        document["paths"].setdefault(MIX_ROUTE, {"post": {"responses": {"202": {"description": "Accepted"}}}})
        route.fulfill(json=document)

    def missing(route):  # noqa: ANN001
        body = {"error": {"code": "not_found", "message": "Not Found"}}
        route.fulfill(status=404, content_type="application/json", body=json.dumps(body))

    studio.page.route("**/openapi.json", with_mix)
    studio.page.route("**/api/mix", missing)
    studio.allow(r"status of 404")
    page = studio.open().page
    clip = make_clip(studio, "a clip for a missing mixer", 1.0)
    page.locator("#history-refresh").click()
    page.locator(f"#history-list li[data-job='{clip}'] [data-action='timeline']").click()
    page.locator("#mix").click()
    expect(page.locator("#banner")).to_contain_text("this server has no mixing")
    expect(page.locator("#mix-notice")).to_be_visible()
    expect(page.locator("#mix")).to_be_disabled()
    expect(page.locator("#generate")).to_be_enabled()


def test_a_404_from_the_stream_route_still_plays_the_finished_audio(studio):
    """The document claims streaming but the stream URL answers 404: the page says so and plays the
    job's audio once it is done."""

    def with_stream(route):  # noqa: ANN001
        document = route.fetch().json()
        document["paths"].setdefault(STREAM_ROUTE, {"get": {"responses": {"200": {"description": "OK"}}}})
        props = document["components"]["schemas"]["MusicRequest"]["properties"]
        props.setdefault("stream", {"type": "boolean"})
        route.fulfill(json=document)

    def without_stream_field(route):  # noqa: ANN001
        # A server without the field refuses it (422): this one takes the request as if it had none.
        body = json.loads(route.request.post_data or "{}")
        if not has_route(studio.server, STREAM_ROUTE):
            body.pop("stream", None)
        route.continue_(post_data=json.dumps(body))

    def missing(route):  # noqa: ANN001
        body = {"error": {"code": "not_found", "message": "Not Found"}}
        route.fulfill(status=404, content_type="application/json", body=json.dumps(body))

    studio.page.route("**/openapi.json", with_stream)
    studio.page.route("**/api/generate/music", without_stream_field)
    studio.page.route("**/api/jobs/*/stream*", missing)
    studio.allow(r"status of 404")
    page = studio.open().page
    page.locator("#stream").check()
    generate(studio, "no stream here", 1.0)
    expect(page.locator("#banner")).to_contain_text("this server has no streaming")
    studio.wait(AUDIO_READY_JS, "the finished audio, played without the stream")
    expect(page.locator("#stream")).to_be_disabled()
    assert httpx.get(f"{studio.server.base}/health", timeout=QUICK_HANG_GUARD_S).status_code == 200
