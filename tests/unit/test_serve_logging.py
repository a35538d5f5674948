"""python -m api.serve keeps asyncio's failed-accept flood to one line per interval."""

from __future__ import annotations

import logging

from api.serve import AcceptErrorsOncePerInterval

RESOURCE = "socket.accept() out of system resource"


def record(message: str) -> logging.LogRecord:
    try:
        raise OSError(24, "Too many open files")
    except OSError as exc:
        error = exc
    return logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, message, None, (OSError, error, None)
    )


def test_failed_accepts_become_one_line_per_interval_with_their_count() -> None:
    keep = AcceptErrorsOncePerInterval()

    passed = [r for r in (record(RESOURCE) for _ in range(1000)) if keep.filter(r)]

    assert len(passed) == 1  # the first: the others fall within the interval
    assert passed[0].getMessage() == (
        "accept failed 1 time(s) since the last such line: out of file descriptors"
    )
    assert passed[0].exc_info is None  # no traceback
    keep.every.last -= keep.every.interval_s  # the interval is over
    [later] = [r for r in [record(RESOURCE)] if keep.filter(r)]
    assert later.getMessage().startswith("accept failed 1000 time(s)")


def test_other_asyncio_lines_pass_untouched() -> None:
    keep = AcceptErrorsOncePerInterval()
    other = record("Task exception was never retrieved")

    assert keep.filter(other) and keep.filter(other)
    assert other.exc_info is not None
