"""Make user-supplied filenames safe to store and to put into a Content-Disposition header."""

from __future__ import annotations

import os.path
import re
import unicodedata
from urllib.parse import quote

FALLBACK_FILENAME = "document"
MAX_FILENAME_BYTES = 255

# Cc: control chars incl. CR/LF/NUL; Cf: invisible format chars such as bidi overrides
# (used to disguise extensions); Zl/Zp: Unicode line and paragraph separators.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_WHITESPACE_RUN = re.compile(r"\s+")
_UNSAFE_IN_ASCII_FALLBACK = re.compile(r"[^A-Za-z0-9 !#$&\'()+,.=@\[\]^_`{}~-]")


def _truncate_utf8(name: str, limit: int) -> str:
    """Shorten to at most `limit` UTF-8 bytes, keeping a short extension when there is one."""
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext.encode("utf-8")) > 16:
        stem, ext = name, ""
    budget = limit - len(ext.encode("utf-8"))
    shortened = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip()
    return shortened + ext


def sanitize_filename(raw: str | None, fallback: str = FALLBACK_FILENAME) -> str:
    """Return a display filename with no directories, control characters or quotes.

    Unicode letters are kept (NFC-normalised); the result is at most 255 UTF-8 bytes and
    never empty, "." or "..": those become `fallback`.
    """
    name = unicodedata.normalize("NFC", raw or "")
    # Browsers and Windows clients may send a full path; keep only the last component.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _REMOVED_CATEGORIES)
    name = name.replace('"', "")
    name = _WHITESPACE_RUN.sub(" ", name).strip(" .")
    name = _truncate_utf8(name, MAX_FILENAME_BYTES)
    return name or fallback


def ascii_fallback(name: str) -> str:
    """An ASCII-only stand-in for old clients that ignore filename* (RFC 6266 section 4.3)."""
    decomposed = unicodedata.normalize("NFKD", name)
    without_marks = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    ascii_name = _UNSAFE_IN_ASCII_FALLBACK.sub("_", without_marks).strip(" .")
    return ascii_name or FALLBACK_FILENAME


def content_disposition(name: str, disposition: str = "attachment") -> str:
    """Build a Content-Disposition value with an ASCII filename and an RFC 5987 filename*."""
    safe = sanitize_filename(name)
    return (
        f'{disposition}; filename="{ascii_fallback(safe)}"; '
        f"filename*=UTF-8''{quote(safe, safe='')}"
    )
