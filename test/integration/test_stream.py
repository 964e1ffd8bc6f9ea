"""`"stream": true` and GET /api/jobs/{id}/stream, through the app (on both job queues) and against
the real server: the streamed audio is the non-streamed audio, every format decodes, the first audio
comes while the job runs, a streaming request batched with another gets its own tokens, and a client
that goes away cancels its job. No timed assertions: waits follow progress (test/waiting.py)."""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess

import av
import numpy as np
import pytest
import soundfile as sf
from api_client import make_client
from server_process import ServerProcess
from waiting import HANG_GUARD_S, STALL_S, get_json, job_signature, wait_for_progress, wait_job

# Streamed and one-pass audio differ by float rounding only (test/unit/test_live.py).
TOLERANCE = 1e-5
EXACT = {"sample_rate": "native", "bit_depth": 32, "normalize": "none"}
SR = 32000


def wav(data: bytes) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.T


@pytest.fixture
def client(tiny_hub, tmp_path, backend):
    on_redis = {"queue_url": backend.redis_url} if backend.name == "redis" else {}
    with make_client(tiny_hub, tmp_path, **on_redis) as c:
        yield c


def test_streamed_audio_is_the_non_streamed_audio_and_the_jobs_own(client):
    body = {"prompt": "a stream", "duration": 3, "seed": 9, **EXACT}
    whole = client.post("/api/generate/music", json=body)
    assert whole.status_code == 200, whole.text
    reference = wav(whole.content)

    r = client.post("/api/generate/music", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-sample-format"] == "f32le"
    assert struct.unpack("<I", r.content[4:8])[0] == 0xFFFFFFFF  # an open length
    streamed = wav(r.content)
    assert streamed.shape == reference.shape == (1, 3 * SR)
    assert np.abs(streamed - reference).max() < TOLERANCE
    job_id = r.headers["x-job-id"]
    assert get_json(client, f"/api/jobs/{job_id}")["state"] == "succeeded"
    # Its stored answer is the streamed audio itself, and so is its stream once it has finished.
    assert np.array_equal(wav(client.get(f"/api/jobs/{job_id}/audio").content), streamed)
    again = client.get(f"/api/jobs/{job_id}/stream", params={"bit_depth": 32})
    assert again.status_code == 200 and np.array_equal(wav(again.content), streamed)

    pcm = client.post("/api/generate/music", json={**body, "stream": True, "format": "pcm"})
    assert pcm.headers["content-type"] == "application/octet-stream"
    assert (pcm.headers["x-sample-rate"], pcm.headers["x-channels"], pcm.headers["x-sample-format"]) == (
        "32000",
        "1",
        "f32le",
    )
    assert np.abs(np.frombuffer(pcm.content, "<f4")[None] - reference).max() < TOLERANCE
    # The stored answer of a pcm stream is a wav file.
    stored = client.get(f"/api/jobs/{pcm.headers['x-job-id']}/audio")
    assert stored.headers["content-type"] == "audio/wav"


def test_streams_are_unnormalised_and_the_stored_answer_is_normalised_as_asked(client):
    body = {"prompt": "loud", "duration": 2, "seed": 4, "sample_rate": "native", "bit_depth": 32}
    r = client.post("/api/generate/music", json={**body, "stream": True})  # normalize: loudness, the default
    job_id = r.headers["x-job-id"]
    raw = client.get(f"/api/jobs/{job_id}/audio", params={"normalize": "none"})
    assert np.array_equal(wav(r.content), wav(raw.content))
    stored = wav(client.get(f"/api/jobs/{job_id}/audio").content)
    assert not np.allclose(stored, wav(r.content))  # the stored answer reached the loudness target


@pytest.mark.parametrize(("fmt", "rate", "codec"), [("mp3", 44100, "mp3"), ("ogg", 48000, "opus")])
def test_mp3_and_ogg_streams_decode(client, fmt, rate, codec):
    r = client.post(
        "/api/generate/music", json={"prompt": "coded", "duration": 2, "seed": 1, "stream": True, "format": fmt}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"audio/{'mpeg' if fmt == 'mp3' else 'ogg'}"
    assert r.headers["x-sample-rate"] == str(rate)
    with av.open(io.BytesIO(r.content)) as container:
        assert container.streams.audio[0].codec_context.codec.id == av.Codec(codec).id
        samples = sum(f.samples for f in container.decode(audio=0))
    assert abs(samples - 2 * rate) < 0.1 * rate
    job_id = r.headers["x-job-id"]
    # A finished job streams in any format, whatever it was asked in.
    other = client.get(f"/api/jobs/{job_id}/stream", params={"format": "wav", "sample_rate": "native"})
    assert other.status_code == 200 and wav(other.content).shape == (1, 2 * SR)


def test_stream_with_async_answers_202_and_plays_from_its_url(client):
    r = client.post(
        "/api/generate/music",
        json={"prompt": "later", "duration": 2, "seed": 2, "stream": True, "async": True, **EXACT},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["id"]
    played = client.get(f"/api/jobs/{job_id}/stream", params={"bit_depth": 32})
    assert played.status_code == 200 and played.headers["x-job-id"] == job_id
    wait_job(client, job_id)
    assert np.array_equal(wav(played.content), wav(client.get(f"/api/jobs/{job_id}/audio").content))


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/generate/music", {"prompt": "x", "stream": True, "format": "flac"}, "format"),
        ("/api/generate/music", {"prompt": "x", "format": "pcm"}, "format"),
        ("/api/generate/music", {"prompt": "x", "stream": 1}, "stream"),
        ("/api/generate/sound", {"prompt": "x", "stream": True, "format": "mp3", "sample_rate": 12345}, "sample_rate"),
        ("/api/jobs", {"kind": "music", "prompt": "x", "stream": True, "format": "flac"}, "format"),
    ],
)
def test_bad_stream_combinations_are_422_naming_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field and r.json()["error"]["hint" if field == "format" else "message"]


def test_stream_urls_refuse_what_cannot_stream(client):
    assert client.get("/api/jobs/nope/stream").status_code == 404
    job_id = client.post("/api/generate/music", json={"prompt": "x", "duration": 1, "async": True}).json()["job"]["id"]
    wait_job(client, job_id)
    for query, field in [
        ({"format": "flac"}, "format"),
        ({"bit_depth": 8}, "bit_depth"),
        ({"sample_rate": "fast"}, "sample_rate"),
    ]:
        r = client.get(f"/api/jobs/{job_id}/stream", params=query)
        assert r.status_code == 422 and r.json()["error"]["field"].startswith(field), r.text
    cancelled = client.post("/api/generate/music", json={"prompt": "x", "duration": 30, "async": True}).json()["job"][
        "id"
    ]
    client.delete(f"/api/jobs/{cancelled}")
    wait_job(client, cancelled)
    r = client.get(f"/api/jobs/{cancelled}/stream")
    assert r.status_code == 409 and r.json()["error"]["code"] == "cancelled"


# -- against the real server -------------------------------------------------------------------------


@pytest.fixture
def server(tiny_hub, tmp_path):
    proc = ServerProcess(tiny_hub, tmp_path / "server", dtype="float32", max_batch=2).start()
    yield proc
    proc.kill()


def _read_past(stream, n_bytes: int) -> bytes:
    """Bytes of a streaming answer until there are more than n_bytes (as they come)."""
    got = b""
    for chunk in stream:
        got += chunk
        if len(got) > n_bytes:
            return got
    raise AssertionError(f"the stream ended after {len(got)} bytes")


@pytest.mark.e2e
def test_first_audio_comes_while_the_job_runs_and_the_whole_is_the_non_streamed(server):
    body = {"prompt": "early", "duration": 10, "seed": 6, **EXACT}
    with server.client() as c:
        with c.stream("POST", "/api/generate/music", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            chunks = r.iter_raw()
            first = _read_past(chunks, 44)  # the header, then audio
            job = get_json(c, f"/api/jobs/{r.headers['x-job-id']}")
            assert job["state"] == "running" and job["progress"] < 0.5, job
            data = first + b"".join(chunks)
        streamed = wav(data)
        assert streamed.shape == (1, 10 * SR)
        stored = wav(c.get(f"/api/jobs/{job['id']}/audio").content)
        assert np.array_equal(streamed, stored)
        alone = c.post("/api/generate/music", json={**body, "async": True}).json()["job"]["id"]
        wait_job(c, alone)
        assert np.abs(wav(c.get(f"/api/jobs/{alone}/audio").content) - streamed).max() < TOLERANCE


@pytest.mark.e2e
def test_a_stream_batched_with_another_request_gets_the_tokens_it_gets_alone(server):
    other = {"prompt": "beside", "duration": 8, "seed": 30, **EXACT}
    mine = {"prompt": "streamed", "duration": 4, "seed": 31, **EXACT}
    with server.client() as c:
        beside = c.post("/api/generate/music", json={**other, "async": True}).json()["job"]["id"]
        with c.stream("POST", "/api/generate/music", json={**mine, "stream": True}) as r:
            chunks = r.iter_raw()
            data = _read_past(chunks, 44)
            both = [get_json(c, f"/api/jobs/{i}") for i in (beside, r.headers["x-job-id"])]
            data += b"".join(chunks)
        # Two decode jobs running at once are in the one batch (the lane keeps one).
        assert [j["state"] for j in both] == ["running", "running"], both
        wait_job(c, beside)
        alone = [c.post("/api/generate/music", json={**b, "async": True}).json()["job"]["id"] for b in (mine, other)]
        for job_id in alone:
            wait_job(c, job_id)
        assert np.abs(wav(data) - wav(c.get(f"/api/jobs/{alone[0]}/audio").content)).max() < TOLERANCE
        assert c.get(f"/api/jobs/{beside}/audio").content == c.get(f"/api/jobs/{alone[1]}/audio").content


@pytest.mark.e2e
def test_a_client_that_goes_away_cancels_its_job(server):
    body = json.dumps({"prompt": "gone", "duration": 30, "seed": 8, "stream": True}).encode()
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=STALL_S) as sock:
        sock.sendall(
            b"POST /api/generate/music HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        got = b""
        while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 64:  # headers, then audio
            more = sock.recv(65536)
            assert more, got
            got += more
        head = got.split(b"\r\n\r\n", 1)[0].decode()
        assert head.startswith("HTTP/1.1 200"), head
        job_id = next(
            line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("x-job-id")
        )
    with server.client() as c:

        def ended():
            job = get_json(c, f"/api/jobs/{job_id}")
            return (job if job["state"] != "running" else None), job_signature(job)

        job = wait_for_progress(ended, f"job {job_id} to stop once its client went away")
        assert job["state"] == "cancelled" and job["progress"] < 1, job


@pytest.mark.e2e
def test_the_cli_streams_to_stdout_and_to_a_file(server, tmp_path):
    from test_cli_support import cli_command

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [*cli_command(), "generate", "music", "--prompt", "cli", "--duration", "2", "--seed", "3", *args]
        return subprocess.run(
            [*command, "--server", server.base, "--no-progress"],
            capture_output=True,
            cwd=tmp_path,
            timeout=HANG_GUARD_S,
        )

    piped = cli("--stream", "--sample-rate", "native", "--bit-depth", "32", "-o", "-")
    assert piped.returncode == 0, piped.stderr.decode()
    assert struct.unpack("<I", piped.stdout[4:8])[0] == 0xFFFFFFFF and b"streamed" in piped.stderr
    audio = wav(piped.stdout)
    assert audio.shape == (1, 2 * SR)
    written = cli("--stream", "--sample-rate", "native", "--bit-depth", "32", "-o", str(tmp_path / "x.wav"), "--json")
    assert written.returncode == 0, written.stderr.decode()
    outcome = json.loads(written.stdout)
    assert outcome["format"] == "wav" and np.array_equal(wav((tmp_path / "x.wav").read_bytes()), audio)
    with server.client() as c:  # the stream is the job's audio
        stored = c.get(f"/api/jobs/{outcome['job']}/audio", params={"normalize": "none"})
        assert np.array_equal(wav(stored.content), audio)
    pcm = cli("--stream", "--format", "pcm", "-o", str(tmp_path / "x.pcm"))
    assert pcm.returncode == 0 and (tmp_path / "x.pcm").stat().st_size == 2 * 44100 * 2
    refused = cli("--play", "-o", str(tmp_path / "y.wav"))
    assert refused.returncode == 1 and b"--stream" in refused.stderr


@pytest.mark.e2e
def test_a_stream_through_an_api_node_comes_from_its_worker_over_redis(tiny_hub, tmp_path):
    """The API node holds no model: the worker's chunks reach it through the job's Redis stream."""
    from redis_server import RedisServer, ensure_installed

    why_not = ensure_installed()
    if why_not:
        pytest.skip(why_not)
    redis_server = RedisServer(tmp_path / "redis").start()
    shared = {"queue_url": redis_server.url(), "artifacts_dir": tmp_path / "artifacts", "dtype": "float32"}
    procs = []
    try:
        procs.append(api := ServerProcess(tiny_hub, tmp_path / "api", role="api", **shared).start())
        procs.append(ServerProcess(tiny_hub, tmp_path / "worker", role="worker", worker_id="w1", **shared).start())
        body = {"prompt": "over redis", "duration": 10, "seed": 12, **EXACT}
        with api.client() as c:
            with c.stream("POST", "/api/generate/music", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                chunks = r.iter_raw()
                data = _read_past(chunks, 44)
                job = get_json(c, f"/api/jobs/{r.headers['x-job-id']}")
                assert job["state"] == "running" and job["progress"] < 0.5, job
                # A second reader, on the same API node, gets the stream from its start.
                follower = c.get(f"/api/jobs/{job['id']}/stream", params={"bit_depth": 32})
                data += b"".join(chunks)
            assert follower.status_code == 200
            streamed = wav(data)
            assert streamed.shape == (1, 10 * SR) and np.array_equal(wav(follower.content), streamed)
            assert np.array_equal(wav(c.get(f"/api/jobs/{job['id']}/audio").content), streamed)
    finally:
        for proc in procs:
            proc.kill()
        redis_server.stop()
