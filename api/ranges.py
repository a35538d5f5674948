"""Single byte-range requests (RFC 9110 section 14) and the conditional headers (section 13)."""

from __future__ import annotations

import re

_BYTE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$")
_VERSION_TAG = re.compile(r'^\s*(?:"(\d{1,9})"|(\d{1,9}))\s*$')


class RangeNotSatisfiableError(ValueError):
    """The range starts beyond the end of the representation."""


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (first, last) byte positions for a single range, or None to send everything.

    Malformed or multi-range headers are ignored (allowed by RFC 9110); a range entirely past
    the end raises RangeNotSatisfiableError.
    """
    if header is None:
        return None
    match = _BYTE_RANGE.fullmatch(header)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(header)
        return max(size - suffix, 0), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiableError(header)
    return first, min(last, size - 1)


def parse_if_match_version(header: str) -> int | None:
    """The document version in an If-Match value: `3` or `"3"`; None if it is neither."""
    match = _VERSION_TAG.fullmatch(header)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def if_match_allows(header: str, version: int) -> bool:
    """RFC 9110 13.1.1 for a document at `version`: `*` matches (the document exists), else a
    comma-separated list matches when one of its entity-tags is the version's, compared
    strongly (a weak `W/"3"` never matches). A bare `3` is accepted too, as it always was."""
    if header.strip() == "*":
        return True
    return any(parse_if_match_version(tag) == version for tag in header.split(","))


def if_range_allows(header: str | None, etag: str) -> bool:
    """RFC 9110 13.1.5: a Range is served only when If-Range is absent or is the current
    strong entity-tag; a date or any other tag means "send it all" (the download has no
    Last-Modified to compare a date with)."""
    return header is None or header.strip() == etag
