"""Byte ranges for downloads and the If-Match version format of PATCH."""

from __future__ import annotations

import pytest

from api.ranges import RangeNotSatisfiableError, parse_byte_range, parse_if_match_version


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=2-5", (2, 5)),
        ("bytes=5-", (5, 9)),
        ("bytes=-3", (7, 9)),
        ("bytes=-50", (0, 9)),
        ("bytes=8-100", (8, 9)),
    ],
)
def test_single_ranges_resolve_to_inclusive_positions_within_the_size(
    header: str, expected: tuple[int, int]
) -> None:
    assert parse_byte_range(header, 10) == expected


@pytest.mark.parametrize(
    "header", [None, "bytes=", "bytes=-", "items=0-1", "bytes=0-1,3-4", "bytes=5-2", "garbage"]
)
def test_absent_malformed_or_multi_ranges_mean_the_whole_body(header: str | None) -> None:
    assert parse_byte_range(header, 10) is None


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=10-20", "bytes=-0"])
def test_ranges_starting_past_the_end_are_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_byte_range(header, 10)


@pytest.mark.parametrize(("header", "version"), [("3", 3), ('"3"', 3), (' "12" ', 12)])
def test_if_match_accepts_bare_and_quoted_versions(header: str, version: int) -> None:
    assert parse_if_match_version(header) == version


@pytest.mark.parametrize("header", ["*", 'W/"3"', "three", '"3', "", "3, 4"])
def test_if_match_values_that_are_not_a_version_parse_to_none(header: str) -> None:
    assert parse_if_match_version(header) is None
