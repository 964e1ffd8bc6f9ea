"""The studio page as a person uses it: generate, cancel, play, download, re-run, continue, melody."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect
from waiting import QUICK_HANG_GUARD_S, wait_job

AUDIO_READY_JS = """() => {
    const a = document.getElementById('audio');
    return a.readyState >= 1 && Number.isFinite(a.duration) && a.duration > 0 && a.duration;
}"""
WAVEFORM_JS = "() => Number(document.getElementById('waveform').dataset.drawn || 0) > 0"
SEEN_JS = """() => {
    // Every text the job's status line shows, as it changes (the page's own progress, from SSE).
    window.__seen = [];
    const line = document.getElementById('job-state');
    const seen = () => window.__seen.push(line.textContent);
    new MutationObserver(seen).observe(line, {childList: true, characterData: true, subtree: true});
}"""


def generate(studio, prompt: str, duration_s: float, seed: int | None = None) -> None:  # noqa: ANN001
    page = studio.page
    page.get_by_label("Duration (seconds)").fill(str(duration_s))
    if seed is not None:
        page.get_by_label("Seed").fill(str(seed))
    page.locator("#prompt").fill(prompt)
    page.locator("#generate").click()


NEWEST_DONE_JS = """(kind) => {
    const first = document.querySelector('#history-list li[data-job]');
    return first && first.dataset.state === 'succeeded' && first.querySelector('.tag').textContent === kind;
}"""


def wait_newest_done(studio, kind: str, what: str) -> None:  # noqa: ANN001
    """Until the newest clip in the history is a finished job of `kind`."""
    studio.wait(NEWEST_DONE_JS, what, kind)


def history_ids(studio) -> list[str]:  # noqa: ANN001
    return studio.page.eval_on_selector_all("#history-list li[data-job]", "items => items.map(i => i.dataset.job)")


def test_the_page_is_served_with_a_strict_policy(studio_server):
    r = httpx.get(f"{studio_server.base}/", timeout=QUICK_HANG_GUARD_S)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    js = httpx.get(f"{studio_server.base}/studio/studio.js", timeout=QUICK_HANG_GUARD_S)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    missing = httpx.get(f"{studio_server.base}/studio/../app.py", timeout=QUICK_HANG_GUARD_S)
    assert missing.status_code == 404
    assert httpx.get(f"{studio_server.base}/studio/nope.js", timeout=QUICK_HANG_GUARD_S).json()["error"]["code"]


def test_generate_shows_progress_then_playable_audio(studio):
    page = studio.open().page
    expect(page.locator("#health-text")).to_have_text("online")
    expect(page.locator("#model")).to_have_value("musicgen-small")
    page.evaluate(SEEN_JS)
    generate(studio, "warm lo-fi piano with soft drums", 2.0, seed=7)
    expect(page.locator("#cancel")).to_be_visible()
    duration = studio.wait(AUDIO_READY_JS, "the generated audio to be playable in <audio>")
    assert abs(duration - 2.0) < 0.05
    studio.wait(WAVEFORM_JS, "the waveform to be drawn")
    expect(page.locator("#job-state")).to_have_text("Done")
    seen = page.evaluate("window.__seen")
    assert "Queued" in seen or any(s.startswith("Generating") for s in seen), seen
    expect(page.locator("#player-meta")).to_contain_text("seed 7")
    first = page.locator("#history-list li[data-job]").first
    expect(first).to_contain_text("warm lo-fi piano")
    expect(first).to_contain_text("seed 7")
    # The server panel shows the model the job loaded.
    expect(page.locator("#loaded-models")).to_contain_text("musicgen-small")
    # It plays: the media element runs through the decoded audio.
    page.evaluate("document.getElementById('audio').play()")
    studio.wait("() => document.getElementById('audio').currentTime > 0", "the audio to play")
    studio.shot("generated")

    # Every format downloads, named as the server names it.
    for fmt in ("wav", "flac", "mp3", "ogg"):
        with page.expect_download() as info:
            page.locator(f"#player-downloads [data-format='{fmt}']").click()
        download = info.value
        assert download.suggested_filename.endswith(f".{fmt}"), download.suggested_filename
        assert download.path().stat().st_size > 0


def test_cancel_stops_a_running_job(studio):
    page = studio.open().page
    generate(studio, "a very long ambient drone", 120.0)
    # A running job shows its progress from the events; then the button cancels it.
    studio.wait(
        "() => /^Generating [1-9]/.test(document.getElementById('job-state').textContent)",
        "the page to show the job's progress",
    )
    studio.shot("running", full_page=False)
    page.locator("#cancel").click()
    expect(page.locator("#job-state")).to_have_text("Cancelled")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#generate")).to_be_enabled()
    job_id = history_ids(studio)[0]
    assert studio.http.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"
    expect(page.locator(f"#history-list li[data-job='{job_id}']")).to_contain_text("cancelled")


def test_history_rerun_uses_the_same_seed(studio):
    page = studio.open().page
    generate(studio, "bright synth arpeggio", 1.0)
    studio.wait(AUDIO_READY_JS, "the first clip")
    first = history_ids(studio)[0]
    first_job = studio.http.get(f"/api/jobs/{first}").json()
    page.locator(f"#history-list li[data-job='{first}'] [data-action='rerun']").click()
    studio.wait(
        "(first) => { const ids = [...document.querySelectorAll('#history-list li[data-job]')].map(i => i.dataset.job);"
        " return ids[0] !== first && document.getElementById('job-state').textContent === 'Done'; }",
        "the re-run to finish",
        first,
    )
    second = history_ids(studio)[0]
    second_job = wait_job(studio.http, second)
    assert second_job["seed"] == first_job["seed"]
    assert second_job["request"]["prompt"] == first_job["request"]["prompt"]
    # The same seed and request: the same audio.
    audio = [studio.http.get(f"/api/jobs/{i}/audio").content for i in (first, second)]
    assert audio[0] == audio[1]
    expect(page.locator(f"#history-list li[data-job='{second}']")).to_contain_text(f"seed {first_job['seed']}")
    # Play from the history: the player takes that clip.
    page.locator(f"#history-list li[data-job='{first}'] [data-action='play']").click()
    expect(page.locator(f"#history-list li[data-job='{first}']")).to_have_class("clip-item current")
    expect(page.locator("#player-meta")).to_contain_text(f"seed {first_job['seed']}")


def test_generate_a_sound_effect(studio):
    page = studio.open().page
    page.get_by_role("tab", name="Sound").click()
    expect(page.locator("#model")).to_have_value("audiogen-medium")
    generate(studio, "glass shattering on a stone floor", 1.0)
    studio.wait(AUDIO_READY_JS, "the sound effect to be playable")
    first = page.locator("#history-list li[data-job]").first
    expect(first.locator(".tag")).to_have_text("sound")
    expect(first).to_contain_text("audiogen-medium")


def test_continue_an_uploaded_file(studio, tmp_path):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "riff.wav"
    t = np.arange(32000) / 32000
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 220 * t), 32000)
    page = studio.open().page
    page.get_by_role("tab", name="Continue").click()
    page.locator("#continue-file").set_input_files(str(wav))
    expect(page.locator("#continue-note")).to_contain_text("riff.wav")
    expect(page.locator("#continue-job")).to_be_disabled()
    page.get_by_label("Duration (seconds)").fill("1")
    page.locator("#generate").click()
    wait_newest_done(studio, "continuation", "the continuation of the upload to finish")
    job = studio.http.get(f"/api/jobs/{history_ids(studio)[0]}").json()
    assert "audio_job" not in job["request"]  # the file went as a multipart upload
    assert job["result"]["duration_s"] == pytest.approx(2.0, abs=0.05)  # the uploaded second, then one more
    studio.wait(AUDIO_READY_JS, "the continuation to be playable")


def test_continue_a_clip_from_the_history(studio):
    page = studio.open().page
    generate(studio, "slow blues guitar", 1.0)
    studio.wait(AUDIO_READY_JS, "the clip to continue")
    source = history_ids(studio)[0]
    page.locator(f"#history-list li[data-job='{source}'] [data-action='continue']").click()
    expect(page.locator("#continue-field")).to_be_visible()
    expect(page.locator("#continue-job")).to_have_value(source)
    page.get_by_label("Duration (seconds)").fill("1")
    page.locator("#generate").click()
    studio.wait(
        "(source) => { const first = document.querySelector('#history-list li[data-job]');"
        " return first && first.dataset.job !== source && first.dataset.state === 'succeeded'; }",
        "the continuation to finish",
        source,
    )
    job = studio.http.get(f"/api/jobs/{history_ids(studio)[0]}").json()
    assert job["kind"] == "continuation" and job["request"]["audio_job"] == source
    assert job["result"]["duration_s"] > 1.5  # the original second, then the new one
    studio.wait(AUDIO_READY_JS, "the continuation to be playable")


def test_record_a_melody_and_generate_with_it(studio):
    page = studio.open().page
    page.get_by_role("tab", name="Melody").click()
    expect(page.locator("#model")).to_have_value("musicgen-melody")
    page.locator("#record").click()
    expect(page.locator("#record")).to_have_text("■ Stop")
    # The fake microphone's beep, for a second of the page's own recording clock.
    studio.wait(
        "() => parseFloat(document.getElementById('melody-note').textContent.slice('Recording '.length)) >= 1",
        "a second of recording",
    )
    page.locator("#record").click()
    expect(page.locator("#melody-note")).to_contain_text("Recorded")
    recorded_s = float(page.locator("#melody-note").text_content().split()[1])
    assert recorded_s >= 1.0
    page.locator("#prompt").fill("strings")
    page.get_by_label("Duration (seconds)").fill("1")
    page.locator("#generate").click()
    wait_newest_done(studio, "melody", "the melody job to finish")
    studio.wait(AUDIO_READY_JS, "the melody result to be playable")
    studio.shot("melody", full_page=False)
