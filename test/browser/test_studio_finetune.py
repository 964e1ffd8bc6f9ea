"""The studio's fine-tune panel in a real browser: start a LoRA run on a dataset made through the API,
watch its step and loss move (the job's server-sent events), see it finish, and generate with the
model it made from the Create form; and cancel a run."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from playwright.sync_api import expect
from test_studio_page import generate, wait_newest_done

SEEN_JS = """() => {
    // Every step and loss text the run's item shows, as it changes.
    window.__ftSeen = [];
    const list = document.getElementById('ft-list');
    const seen = () => {
        const item = list.querySelector('li[data-job]');
        const text = (cls) => item.querySelector(cls).textContent;
        if (item) window.__ftSeen.push(text('.ft-step') + '|' + text('.ft-loss'));
    };
    new MutationObserver(seen).observe(list, {childList: true, characterData: true, subtree: true});
}"""
ITEM_STATE_JS = """([job, state]) =>
    document.querySelector(`#ft-list li[data-job="${job}"]`)?.dataset.state === state"""
STEPPED_JS = """(job) => {
    const step = document.querySelector(`#ft-list li[data-job="${job}"] .ft-step`)?.textContent || '';
    return Number((/^step (\\d+)/.exec(step) || [0, 0])[1]) >= 1;
}"""


def wav(seconds: float, freq: float) -> bytes:
    t = np.arange(int(seconds * 32000)) / 32000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 32000, format="WAV")
    return buf.getvalue()


def make_dataset(studio, name: str) -> None:  # noqa: ANN001
    files = [("a.wav", wav(2.0, 220)), ("b.wav", wav(2.0, 330))]
    data = {"name": name, "model": "musicgen-small", "caption": "warm bass", "window_s": "2"}
    r = studio.http.post("/api/datasets", data=data, files=[("files", f) for f in files])
    assert r.status_code == 201, r.text


def start_run(studio, dataset: str, label: str, steps: int) -> str:  # noqa: ANN001
    """Fill the panel's form and start; the new run's job id (its item is the list's first)."""
    page = studio.page
    page.locator("#ft-refresh").click()
    page.locator("#ft-dataset").select_option(dataset)
    page.locator("#ft-base").select_option("musicgen-small")
    expect(page.locator("#ft-dataset-note")).to_contain_text("musicgen-small's 32 kHz codec")
    page.locator("#ft-name").fill(label)
    page.locator("#ft-steps").fill(str(steps))
    page.locator("#ft-rank").fill("2")
    page.locator("#ft-start").click()
    first = page.locator("#ft-list li[data-job]").first
    expect(first.locator(".ft-title")).to_contain_text(f"musicgen-small+{label}")
    return first.get_attribute("data-job")


def test_a_finetune_from_the_page_progresses_finishes_and_generates(studio):
    make_dataset(studio, "page-set")
    page = studio.open().page
    expect(page.locator("#finetune")).to_be_visible()
    page.evaluate(SEEN_JS)
    job = start_run(studio, "page-set", "from-page", steps=6)
    studio.wait(ITEM_STATE_JS, "the fine-tune to finish", [job, "succeeded"])
    item = page.locator(f'#ft-list li[data-job="{job}"]')
    expect(item.locator(".ft-state")).to_have_text("Done")
    expect(item.locator(".ft-step")).to_have_text("step 6 / 6")
    expect(item.locator(".ft-loss")).to_contain_text("loss ")
    # The live figures came step by step while it ran (its events), each with its loss.
    seen = page.evaluate("window.__ftSeen")
    steps = sorted({int(s.split("|")[0].split()[1]) for s in seen if s.startswith("step ") and "loss" in s})
    assert len([s for s in steps if 0 < s < 6]) >= 1, seen
    studio.shot("finetune-done")

    name = "musicgen-small+from-page"
    # The model is in the Create form's list at once, and "Use in Create" picks it.
    expect(page.locator(f'#model option[value="{name}"]')).to_have_count(1)
    item.locator("[data-action=use]").click()
    expect(page.locator("#model")).to_have_value(name)
    generate(studio, "warm bass", 0.5, seed=1)
    wait_newest_done(studio, "music", "a clip of the fine-tuned model")
    r = studio.http.get("/api/jobs", params={"limit": 5}).json()["jobs"]
    assert next(j for j in r if j["kind"] == "music")["model"] == name


def test_cancel_a_finetune_from_the_page(studio):
    make_dataset(studio, "cancel-set")
    page = studio.open().page
    job = start_run(studio, "cancel-set", "never", steps=100000)
    studio.wait(STEPPED_JS, "the run's first step", job)
    page.locator(f'#ft-list li[data-job="{job}"] [data-action=cancel]').click()
    studio.wait(ITEM_STATE_JS, "the run to be cancelled", [job, "cancelled"])
    expect(page.locator(f'#ft-list li[data-job="{job}"] [data-action=cancel]')).to_be_hidden()
    assert studio.http.get(f"/api/finetune/{job}").json()["state"] == "cancelled"
    assert "musicgen-small+never" not in {m["name"] for m in studio.http.get("/api/models").json()["models"]}
