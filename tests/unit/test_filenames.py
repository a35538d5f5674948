"""Uploaded filenames are sanitised before storage and encoded safely in Content-Disposition."""

from __future__ import annotations

import pytest

from api.filenames import FALLBACK_FILENAME, ascii_fallback, content_disposition, sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("/absolute/path/notes.txt", "notes.txt"),
    ],
)
def test_directories_and_traversal_are_stripped(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_cr_lf_and_other_control_characters_are_removed() -> None:
    assert sanitize_filename("evil\r\nSet-Cookie: x=1\x00.txt") == "evilSet-Cookie: x=1.txt"


def test_double_quotes_are_removed() -> None:
    assert sanitize_filename('say "hi".txt') == "say hi.txt"


def test_bidi_override_characters_cannot_disguise_the_extension() -> None:
    assert sanitize_filename("invoice\u202egpj.exe") == "invoicegpj.exe"


def test_unicode_letters_are_kept_and_nfc_normalised() -> None:
    assert sanitize_filename("Cafe\u0301 ÷ 日本語.pdf") == "Café ÷ 日本語.pdf"


@pytest.mark.parametrize("raw", [None, "", "   ", ".", "..", "/", "\r\n", "../.."])
def test_empty_or_meaningless_names_fall_back_to_a_default(raw: str | None) -> None:
    assert sanitize_filename(raw) == FALLBACK_FILENAME


def test_leading_dots_and_surrounding_spaces_are_trimmed() -> None:
    assert sanitize_filename("  .hidden  name.txt ") == "hidden name.txt"


def test_long_names_are_cut_to_255_utf8_bytes_keeping_the_extension() -> None:
    result = sanitize_filename("ä" * 300 + ".pdf")

    assert len(result.encode("utf-8")) <= 255
    assert result.endswith(".pdf")
    assert result.startswith("ää")


def test_ascii_fallback_replaces_non_ascii_and_strips_accents() -> None:
    assert ascii_fallback("Café 日本.pdf") == "Cafe __.pdf"


def test_content_disposition_has_ascii_filename_and_rfc5987_filename_star() -> None:
    header = content_disposition("Café 日本.pdf")

    assert header == (
        "attachment; filename=\"Cafe __.pdf\"; filename*=UTF-8''Caf%C3%A9%20%E6%97%A5%E6%9C%AC.pdf"
    )


def test_content_disposition_cannot_be_used_for_header_injection() -> None:
    header = content_disposition('a";\r\nX-Evil: 1; filename="b.txt')

    assert "\r" not in header
    assert "\n" not in header
    assert header.count('"') == 2
    header.encode("latin-1")
