"""Opaque keyset-pagination cursors: encode a (created_at, id) position, decode it strictly."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import UTC, datetime
from typing import NamedTuple

CURSOR_VERSION = 1
MAX_CURSOR_LENGTH = 256
_URLSAFE_BASE64 = re.compile(r"^[A-Za-z0-9_-]+$")


class InvalidCursorError(ValueError):
    """The cursor was not produced by encode_cursor (garbage, truncated or tampered with)."""


class CursorPosition(NamedTuple):
    """The sort key of the last item on a page; the next page starts strictly after it."""

    created_at: datetime
    id: uuid.UUID


def encode_cursor(position: CursorPosition) -> str:
    """Encode a position as URL-safe base64 JSON without padding."""
    if position.created_at.tzinfo is None:
        raise ValueError("cursor timestamps must be timezone-aware")
    payload = {
        "v": CURSOR_VERSION,
        "t": position.created_at.isoformat(),
        "i": str(position.id),
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> CursorPosition:
    """Decode a cursor from encode_cursor; raise InvalidCursorError for anything else."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH or not _URLSAFE_BASE64.fullmatch(cursor):
        raise InvalidCursorError("cursor is not a token returned by this API")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursorError("cursor is not a token returned by this API") from exc
    if not isinstance(payload, dict) or set(payload) != {"v", "t", "i"}:
        raise InvalidCursorError("cursor has the wrong shape")
    version, timestamp, identifier = payload["v"], payload["t"], payload["i"]
    # bool is an int subclass; a forged `true` must not pass as version 1.
    if type(version) is not int or version != CURSOR_VERSION:
        raise InvalidCursorError("cursor version is not supported")
    if not isinstance(timestamp, str) or not isinstance(identifier, str):
        raise InvalidCursorError("cursor fields have the wrong types")
    try:
        created_at = datetime.fromisoformat(timestamp)
        document_id = uuid.UUID(identifier)
    except ValueError as exc:
        raise InvalidCursorError("cursor fields have invalid values") from exc
    if created_at.tzinfo is None:
        raise InvalidCursorError("cursor timestamp has no time zone")
    try:
        # The database compares in UTC: 0001-01-01T00:00:00+14:00 has no UTC equivalent.
        created_at = created_at.astimezone(UTC)
    except OverflowError:
        raise InvalidCursorError("cursor timestamp is out of range") from None
    return CursorPosition(created_at, document_id)
