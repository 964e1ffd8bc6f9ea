"""POST /api/mix through the ASGI app, on both job queues: the answers (sync, async, multipart), the
mixed samples against what they must be, loudness, a mix of two earlier generation jobs, and every
422 naming its track."""

from __future__ import annotations

import base64
import io

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from api_client import make_client, wait_job

RATE = 16000
# What the samples are compared with: float32 wav, no normalisation, the tracks' own rate.
EXACT = {"format": "wav", "bit_depth": 32, "normalize": "none", "sample_rate": "native"}


def tone(freq: float, seconds: float, amplitude: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.repeat((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None, :], channels, axis=0)


def wav_bytes(audio: np.ndarray, rate: int = RATE, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def b64(audio: np.ndarray, rate: int = RATE) -> str:
    return base64.b64encode(wav_bytes(audio, rate)).decode()


def decoded(content: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    return audio.T, rate


A, B = tone(440, 1.0, 0.4), tone(1000, 0.5, 0.3)


def expected_ab(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    out[: A.shape[1]] += A[0] * 10 ** (-6 / 20)
    start = round(0.75 * RATE)
    out[start : start + B.shape[1]] += B[0] * 10 ** (2 / 20)
    return out


def ab_tracks(**extra) -> list[dict]:
    return [
        {"audio_base64": b64(A), "gain_db": -6, **extra},
        {"audio_base64": b64(B), "offset_s": 0.75, "gain_db": 2},
    ]


@pytest.fixture(params=["sqlite", "redis"])
def client(request, tiny_hub, tmp_path):
    queue = {"queue_url": request.getfixturevalue("redis_url")} if request.param == "redis" else {}
    with make_client(tiny_hub, tmp_path, auto_download=False, **queue) as c:
        yield c


@pytest.fixture(scope="module")
def strict(tiny_hub, tmp_path_factory):
    """One server for the refusals: at most 3 tracks, mixes up to 5 s."""
    with make_client(
        tiny_hub, tmp_path_factory.mktemp("mix-422"), auto_download=False, max_mix_tracks=3, max_mix_duration_s=5
    ) as c:
        yield c


def test_a_synchronous_mix_is_the_sum_of_its_tracks(client):
    r = client.post("/api/mix", json={"tracks": ab_tracks(), **EXACT})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-model"] == "mix"
    audio, rate = decoded(r.content)
    assert rate == RATE and audio.shape == (1, 20000)  # mono tracks, unpanned: mono; ends at 0.75 + 0.5 s
    assert float(r.headers["x-duration-s"]) == pytest.approx(1.25)
    np.testing.assert_allclose(audio[0], expected_ab(20000), atol=1e-6)
    job = client.get(f"/api/jobs/{r.headers['x-job-id']}").json()
    assert job["kind"] == "mix" and job["state"] == "succeeded"
    assert job["request"]["duration_s"] == pytest.approx(1.25) and job["request"]["sample_rate"] == RATE
    assert all("audio_base64" not in t for t in job["request"]["tracks"])  # references only are kept


def test_an_async_mix_answers_202_and_its_audio_converts(client):
    r = client.post("/api/mix", json={"tracks": ab_tracks(), "async": True, "duration_s": 2.0, **EXACT})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["job"]["kind"] == "mix" and r.headers["location"] == f"/api/jobs/{body['job']['id']}"
    job = wait_job(client, body["job"]["id"])
    assert job["state"] == "succeeded" and job["result"]["duration_s"] == 2.0
    audio, _ = decoded(client.get(f"/api/jobs/{job['id']}/audio").content)
    np.testing.assert_allclose(audio[0], np.pad(expected_ab(20000), (0, 12000)), atol=1e-6)
    flac = client.get(f"/api/jobs/{job['id']}/audio", params={"format": "flac", "sample_rate": 44100, "bit_depth": 24})
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"
    assert sf.info(io.BytesIO(flac.content)).samplerate == 44100
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as events:
        assert [line for line in events.iter_lines() if line.startswith("event:")][-1] == "event: done"


def test_multipart_uploads_are_named_by_the_tracks(client):
    tracks = '[{"upload": "music", "gain_db": -6}, {"upload": "thunder", "offset_s": 0.75, "gain_db": 2}]'
    r = client.post(
        "/api/mix",
        data={"tracks": tracks, **EXACT},
        files={"music": ("music.wav", wav_bytes(A), "audio/wav"), "thunder": ("t.wav", wav_bytes(B), "audio/wav")},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(decoded(r.content)[0][0], expected_ab(20000), atol=1e-6)


def test_every_format_and_the_loudness_target(client):
    quiet = [{"audio_base64": b64(tone(220, 3.0, 0.02)), "pan": -0.5}, {"audio_base64": b64(tone(330, 2.0, 0.02))}]
    for fmt, media_type in (("wav", "audio/wav"), ("flac", "audio/flac"), ("mp3", "audio/mpeg"), ("ogg", "audio/ogg")):
        r = client.post("/api/mix", json={"tracks": quiet, "format": fmt})
        assert r.status_code == 200, (fmt, r.text)
        assert r.headers["content-type"] == media_type
        audio, rate = decoded(r.content)
        assert rate == 44100 and audio.shape[0] == 2  # the default rate; stereo, as a track is panned
        if fmt in ("wav", "flac"):
            loudness = pyloudnorm.Meter(rate).integrated_loudness(audio.T.astype(np.float64))
            assert loudness == pytest.approx(-14.0, abs=0.5)  # normalize: loudness, as generation's default


def test_ducking_through_the_api(client):
    music, effect = tone(220, 2.0, 0.3), tone(1000, 0.5, 0.5)
    tracks = [{"audio_base64": b64(music)}, {"audio_base64": b64(effect), "offset_s": 0.5, "role": "effect"}]
    r = client.post("/api/mix", json={"tracks": tracks, "ducking": {"db": 12}, **EXACT})
    assert r.status_code == 200, r.text
    out = decoded(r.content)[0][0]
    placed = np.zeros_like(out)
    placed[8000:16000] = effect[0]
    t = slice(9000, 15000)  # well inside the effect
    ratio = (out - placed)[t] / np.where(np.abs(music[0][t]) > 0.1, music[0][t], np.nan)
    assert np.nanmax(np.abs(20 * np.log10(ratio) + 12)) < 0.01
    np.testing.assert_allclose(out[:6000], music[0][:6000], atol=1e-6)  # before the attack: untouched


def test_a_mix_of_two_earlier_generation_jobs(client):
    ids = []
    for seed in (1, 2):
        r = client.post("/api/generate/music", json={"prompt": "drums", "duration": 0.5, "seed": seed})
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-job-id"])
    masters = [decoded(client.get(f"/api/jobs/{i}/audio", params=EXACT).content) for i in ids]
    rate = masters[0][1]
    r = client.post(
        "/api/mix",
        json={"tracks": [{"job": ids[0]}, {"job": ids[1], "offset_s": 0.25, "gain_db": -3, "fade_in_s": 0.1}], **EXACT},
    )
    assert r.status_code == 200, r.text
    audio, mixed_rate = decoded(r.content)
    assert mixed_rate == rate  # native: the models' own rate
    first, second = masters[0][0][0], masters[1][0][0]
    start, ramp = round(0.25 * rate), round(0.1 * rate)
    expected = np.zeros(start + second.shape[0])
    expected[: first.shape[0]] += first
    faded = second * 10 ** (-3 / 20)
    faded[:ramp] *= np.arange(ramp) / ramp
    expected[start:] += faded
    np.testing.assert_allclose(audio[0], expected, atol=1e-5)
    # A mix is a job with audio like any other: it mixes again.
    again = client.post("/api/mix", json={"tracks": [{"job": r.headers["x-job-id"]}], **EXACT})
    assert again.status_code == 200
    np.testing.assert_allclose(decoded(again.content)[0], audio, atol=1e-6)


def _refused(client, body, field, code=None, files=None):
    r = client.post("/api/mix", json=body) if files is None else client.post("/api/mix", data=body, files=files)
    assert r.status_code == 422, (r.status_code, r.headers.get("content-type"), r.content[:300])
    error = r.json()["error"]
    assert error["field"] == field, error
    if code is not None:
        assert error["code"] == code, error
    return error


def test_refusals_name_the_track(strict, tiny_hub):
    ok = {"audio_base64": b64(A)}
    _refused(strict, {"tracks": [ok, {"job": "0123456789abcdef"}]}, "tracks[1].job", "unknown_job")
    _refused(strict, {"tracks": [ok, ok, {"audio_base64": base64.b64encode(b"not audio").decode()}]},
             "tracks[2].audio_base64", "invalid_audio")  # fmt: skip
    _refused(strict, {"tracks": [ok, {"audio_base64": "!!"}]}, "tracks[1].audio_base64")
    _refused(strict, {"tracks": [{**ok, "offset_s": -1}]}, "tracks[0].offset_s")
    for name in ("fade_in_s", "fade_out_s", "trim_start_s", "loop_crossfade_s"):
        _refused(strict, {"tracks": [ok, {**ok, name: -0.5}]}, f"tracks[1].{name}")
    _refused(strict, {"tracks": [ok, {**ok, "trim_start_s": 0.5, "trim_end_s": 0.2}]}, "tracks[1].trim_end_s")
    _refused(strict, {"tracks": [{**ok, "trim_start_s": 3.0}]}, "tracks[0].trim_start_s")
    _refused(strict, {"tracks": [{**ok, "loop": True, "loop_crossfade_s": 0.6}]}, "tracks[0].loop_crossfade_s")
    error = _refused(strict, {"tracks": [ok] * 4}, "tracks")
    assert "at most 3" in error["message"]
    _refused(strict, {"tracks": [ok, {"gain_db": 0}]}, "tracks[1]")  # no audio
    _refused(strict, {"tracks": [{**ok, "job": "abc"}]}, "tracks[0]")  # two sources
    _refused(strict, {"tracks": [ok, {"content": "nothing-here"}]}, "tracks[1].content", "content_not_found")
    _refused(strict, {"tracks": [ok], "duration_s": 6}, "duration_s")
    _refused(strict, {"tracks": [ok, {**ok, "offset_s": 4.5}]}, "duration_s")  # ends past the 5 s cap
    _refused(strict, {"tracks": [ok, {**ok, "offset_s": 2.0}], "duration_s": 1.5}, "tracks[1].offset_s")
    _refused(strict, {"tracks": [ok], "ducking": {"db": 6}}, "ducking")  # nothing to duck under
    wav = {"a": ("a.wav", wav_bytes(A), "audio/wav")}
    _refused(strict, {"tracks": '[{"upload": "b"}]'}, "tracks[0].upload", files=wav)
    _refused(strict, {"tracks": '[{"upload": "a"}]'}, "x", files={**wav, "x": ("x.wav", wav_bytes(A), "audio/wav")})
    _refused(strict, {"tracks": "not json"}, "tracks", files=wav)


def test_refused_requests_leave_nothing_behind(strict):
    before = strict.get("/api/jobs").json()["total"]
    _refused(strict, {"tracks": [{"audio_base64": b64(A)}, {"job": "nope"}]}, "tracks[1].job")
    assert strict.get("/api/jobs").json()["total"] == before


def test_a_job_without_audio_is_refused(strict):
    r = strict.post("/api/encode", files={"file": ("a.wav", wav_bytes(tone(440, 0.5, 0.3, 24000), 24000), "audio/wav")})
    assert r.status_code == 200, r.text
    _refused(strict, {"tracks": [{"job": r.headers["x-job-id"]}]}, "tracks[0].job", "no_audio")


def test_mp3_native_at_a_rate_it_cannot_hold(strict):
    odd = {"audio_base64": b64(tone(440, 0.5, 0.3, 9000), 9000)}
    _refused(strict, {"tracks": [odd], "format": "mp3", "sample_rate": "native"}, "sample_rate")
