"""`python -m api.serve`: the service under uvicorn, with the deadlines and bounds uvicorn lacks.

uvicorn (0.54, h11) arms no timer on a connection before its first response, and its
keep-alive timeout is reset by every byte: 1,100 connections that each send half a request
held the process's 1,024 file descriptors, `/health` timed out, and asyncio logged every
failed accept with a traceback (79 MB in 15 s). Here:

- a request's headers must all arrive within HTTP_HEADER_TIMEOUT (10 s) of the moment the
  connection starts waiting for them, however slowly the bytes trickle, or it is closed;
- near the open-file limit (all but RESERVED_FDS of it), each new connection closes the
  connection that has waited longest for its headers: descriptors stay free for new
  requests (and the database and S3), so a flood of half-sent requests cannot lock `/health`
  out until their deadlines pass;
- an idle keep-alive connection closes after HTTP_KEEP_ALIVE_TIMEOUT (5 s, uvicorn's own);
- at most HTTP_MAX_CONNECTIONS (1,000) requests are served at once; more get 503 at once
  (uvicorn's limit_concurrency);
- closing for these reasons, and accepts that fail for want of descriptors, are logged once
  per 10 s each, with counts.

uvicorn's command line takes only its own protocol names, hence this module.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import time
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

LOG_INTERVAL_S = 10.0
# Descriptors kept free of client connections: the database pool, S3's, logs, the listener.
RESERVED_FDS = 100
logger = logging.getLogger("api.serve")


class _EveryInterval:
    """Say something at most once per interval, with how often it happened meanwhile."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.last = float("-inf")
        self.count = 0

    def due(self) -> int:
        """0 while quiet; else how many times it happened since it was last said."""
        self.count += 1
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return 0
        self.last, count, self.count = now, self.count, 0
        return count


def client_connection_limit() -> int:
    """How many client connections may be open: the open-file limit less the reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(soft - RESERVED_FDS, 1)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers, and shedding of
    the connections that wait longest for theirs when descriptors run short."""

    header_timeout_s: ClassVar[float] = 10.0
    connection_limit: ClassVar[int] = 1_000_000
    # Connections waiting for a request's headers, oldest first (dicts keep insertion order).
    waiting: ClassVar[dict[BoundedH11Protocol, None]] = {}
    late = _EveryInterval()
    shed = _EveryInterval()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        while len(self.connections) > self.connection_limit and self.waiting:
            oldest = next(iter(self.waiting))
            oldest._close("shed")
        self._wait_for_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request's headers are all in
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._wait_for_headers()  # the next request's headers get the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self.waiting[self] = None
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._close, "late")

    def _stop_waiting(self) -> None:
        self.waiting.pop(self, None)
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _close(self, why: str) -> None:
        self._stop_waiting()
        if self.transport.is_closing():
            return
        self.transport.close()
        count = (self.late if why == "late" else self.shed).due()
        if count and why == "late":
            logger.info(
                "closed %d connection(s) whose request headers took over %g s (since the last "
                "such line)",
                count,
                self.header_timeout_s,
            )
        elif count:
            logger.warning(
                "closed %d connection(s) still waiting for request headers to keep file "
                "descriptors free (open-file limit less %d reached; since the last such line)",
                count,
                RESERVED_FDS,
            )


class AcceptErrorsOncePerInterval(logging.Filter):
    """asyncio logs each accept that fails for want of descriptors, with a traceback, and
    retries every second per listening socket: keep one line per interval."""

    def __init__(self) -> None:
        super().__init__()
        self.every = _EveryInterval()

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in record.getMessage():
            return True
        count = self.every.due()
        if not count:
            return False
        record.msg = "accept failed %d time(s) since the last such line: out of file descriptors"
        record.args = (count,)
        record.exc_info = None
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    # The settings are loaded once, by api.asgi: a bad one is one message there, and exit 2.
    from api import asgi

    settings = asgi.settings
    protocol = type(
        "ConfiguredH11Protocol",
        (BoundedH11Protocol,),
        {
            "header_timeout_s": settings.http_header_timeout,
            "connection_limit": client_connection_limit(),
        },
    )
    logging.getLogger("asyncio").addFilter(AcceptErrorsOncePerInterval())
    uvicorn.run(
        asgi.app,
        host=args.host,
        port=args.port,
        http=protocol,
        timeout_keep_alive=settings.http_keep_alive_timeout,
        limit_concurrency=settings.http_max_connections,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
