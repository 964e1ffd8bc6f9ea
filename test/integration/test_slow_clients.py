"""Clients that stop sending do not hold the server (issue 16, "No body timeout"): on the real server
process, over raw sockets, a request whose headers or body stop coming is answered 408 (when it can
be) and its connection closed. The tests wait on the server's answer and close, never on a clock."""

from __future__ import annotations

import json
import socket

import pytest
from server_process import ServerProcess
from waiting import QUICK_HANG_GUARD_S

TIMEOUT_S = 1  # the server's header and body timeouts in these tests


@pytest.fixture(scope="module")
def server(tiny_hub, tmp_path_factory):
    data = tmp_path_factory.mktemp("slow-clients")
    srv = ServerProcess(tiny_hub, data, header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S).start()
    yield srv
    srv.terminate()


def send_and_read_to_close(server: ServerProcess, data: bytes) -> bytes:
    """Send `data`, then stop; everything the server sends until it closes the connection. The
    socket timeout is a hang guard only: a server that never closes fails the test."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=QUICK_HANG_GUARD_S) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def json_of(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_a_silent_connection_is_closed(server):
    assert send_and_read_to_close(server, b"") == b""


def test_headers_that_stop_coming_are_408(server):
    answer = send_and_read_to_close(server, b"POST /api/generate/music HTTP/1.1\r\nHost: localhost\r\nContent-")
    assert status_of(answer) == 408 and b"connection: close" in answer.lower()


REQUESTS = {
    "music json": ("/api/generate/music", "application/json", b'{"prompt": "'),
    "jobs json": ("/api/jobs", "application/json", b"["),
    "melody multipart": (
        "/api/generate/melody",
        "multipart/form-data; boundary=b",
        b'--b\r\nContent-Disposition: form-data; name="melody"; filename="m.wav"\r\n\r\nRIFF',
    ),
    "encode raw": ("/api/encode", "audio/wav", b"RIFF"),
    "decode multipart": ("/api/decode", "multipart/form-data; boundary=b", b"--b\r\n"),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_body_that_stops_coming_is_408(server, name):
    """Content-Length: 1000, then a few bytes and nothing: the answer comes, and the close."""
    path, ctype, start = REQUESTS[name]
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: 1000\r\n\r\n"
    answer = send_and_read_to_close(server, head.encode() + start)
    assert status_of(answer) == 408, answer
    assert b"connection: close" in answer.lower()
    assert json_of(answer)["error"]["code"] == "request_timeout"


def test_a_chunked_body_that_stops_coming_is_408(server):
    head = b"POST /api/generate/music HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    answer = send_and_read_to_close(server, head + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"pro\r\n')
    assert status_of(answer) == 408, answer


def test_a_body_nobody_reads_does_not_hold_the_connection(server):
    """The answer comes first (here a 405, the body unread); the rest of a body that stops is not
    waited for."""
    head = b"POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nx"
    assert status_of(send_and_read_to_close(server, head)) == 405


def test_the_server_still_answers(server):
    answer = send_and_read_to_close(server, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200 and json_of(answer)["status"] == "ok"
