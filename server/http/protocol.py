"""uvicorn's h11 protocol with the two read timeouts uvicorn lacks.

- **Headers**: once a request has started (a connection opened, or the first byte of the next
  request on a kept-alive one), its headers must be complete within `header_timeout_s`, however
  slowly they trickle in; else the answer is 408 and the connection is closed. (uvicorn's
  keep-alive timeout covers only a silent connection between requests.)
- **A body nobody reads**: once the answer is sent, the rest of the request body is read and
  dropped, so that the client reads the answer cleanly; a pause longer than `body_timeout_s` in it
  closes the connection. (A body the app reads has its own timeout: server/http/payload.py answers
  408.)
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_LATE = b"the request headers did not come in time\n"
# Written as bytes: h11 sends no answer before a request has been read, and the connection ends here.
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_LATE), _LATE)
)


def timed_protocol(header_timeout_s: float, body_timeout_s: float) -> type[H11Protocol]:
    """The protocol class for uvicorn's `http=` with these timeouts."""

    class TimedH11Protocol(H11Protocol):
        _read_timer: asyncio.TimerHandle | None = None
        _waiting_for: str | None = None  # "headers" or "body"

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm("headers")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _follow(self) -> None:
            """Arm the timer that fits where the client is in its request."""
            theirs = self.conn.their_state
            if theirs is h11.IDLE:
                if self.conn.trailing_data[0]:  # the next request has begun: its headers are timed
                    if self._waiting_for != "headers":
                        self._arm("headers")
                elif self._waiting_for == "body":  # between requests: uvicorn's keep-alive timeout
                    self._disarm()
            elif theirs is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete:
                self._arm("body")  # a body after the answer: timed per read
            else:  # the app reads the body (payload.py times it), or the request is complete
                self._disarm()

        def _arm(self, what: str) -> None:
            self._disarm()
            seconds = header_timeout_s if what == "headers" else body_timeout_s
            self._read_timer = self.loop.call_later(seconds, self._late)
            self._waiting_for = what

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
            self._read_timer = self._waiting_for = None

        def _late(self) -> None:
            late, self._read_timer, self._waiting_for = self._waiting_for, None, None
            if self.transport.is_closing():
                return
            if late == "headers" and self.conn.trailing_data[0]:  # part of a request came: say why it ends
                self.transport.write(_TIMEOUT_ANSWER)
            self.transport.close()

    return TimedH11Protocol
