"""Pagination cursors round-trip a (created_at, id) position and reject anything forged."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.cursor import CursorPosition, InvalidCursorError, decode_cursor, encode_cursor

POSITION = CursorPosition(
    datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
)


def forge(payload: object) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_position_survives_encode_then_decode_exactly() -> None:
    assert decode_cursor(encode_cursor(POSITION)) == POSITION


def test_non_utc_offsets_survive_the_round_trip() -> None:
    position = POSITION._replace(
        created_at=POSITION.created_at.astimezone(timezone(timedelta(hours=5)))
    )

    assert decode_cursor(encode_cursor(position)) == position


def test_cursors_are_url_safe_and_carry_no_padding() -> None:
    cursor = encode_cursor(POSITION)

    assert cursor.replace("-", "").replace("_", "").isalnum()
    assert "=" not in cursor


def test_naive_timestamps_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode_cursor(POSITION._replace(created_at=datetime(2025, 1, 1)))


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all!",
        "%%%%",
        "a",
        "x" * 1000,
        base64.urlsafe_b64encode(b"\xff\xfe not json").decode().rstrip("="),
    ],
)
def test_garbage_is_rejected(cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(cursor)


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2, 3],
        "a string",
        {"v": 1, "t": "2025-01-01T00:00:00+00:00"},
        {"v": 1, "t": "2025-01-01T00:00:00+00:00", "i": str(POSITION.id), "extra": 1},
        {"v": 2, "t": "2025-01-01T00:00:00+00:00", "i": str(POSITION.id)},
        {"v": True, "t": "2025-01-01T00:00:00+00:00", "i": str(POSITION.id)},
        {"v": "1", "t": "2025-01-01T00:00:00+00:00", "i": str(POSITION.id)},
        {"v": 1, "t": 1735689600, "i": str(POSITION.id)},
        {"v": 1, "t": "2025-01-01T00:00:00+00:00", "i": 42},
        {"v": 1, "t": "yesterday", "i": str(POSITION.id)},
        {"v": 1, "t": "2025-01-01T00:00:00+00:00", "i": "not-a-uuid"},
        {"v": 1, "t": "2025-01-01T00:00:00", "i": str(POSITION.id)},
        {"v": 1, "t": None, "i": None},
    ],
    ids=[
        "list",
        "string",
        "missing-id",
        "extra-key",
        "future-version",
        "bool-version",
        "string-version",
        "numeric-time",
        "numeric-id",
        "unparsable-time",
        "unparsable-id",
        "naive-time",
        "nulls",
    ],
)
def test_well_encoded_cursors_with_forged_contents_are_rejected(payload: object) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(forge(payload))


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00", "0001-01-01T00:00:00+00:01"],
)
def test_a_timestamp_with_no_utc_equivalent_is_refused_as_out_of_range(timestamp: str) -> None:
    cursor = forge({"v": 1, "t": timestamp, "i": str(POSITION.id)})

    with pytest.raises(InvalidCursorError, match="out of range"):
        decode_cursor(cursor)


def test_decoded_timestamps_are_in_utc() -> None:
    cursor = forge({"v": 1, "t": "2025-01-01T05:00:00+05:00", "i": str(POSITION.id)})

    assert decode_cursor(cursor).created_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert decode_cursor(cursor).created_at.tzinfo is UTC
