"""Hostile input never gets a 5xx and never leaves anything behind.

Every case sends one malicious or malformed request and then checks the answer
(a 4xx with a JSON `detail`, or for hostile filenames a sanitised 201) and that
nothing was stored: no row in PostgreSQL (through `db_session`) and no object
in the bucket (through `s3_client`).
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from api import Settings
from api.models import Document, PendingObjectDeletion, Tag
from tests.app_adapter import TOKENS
from tests.helpers import count_rows, create_document, object_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ALICE_TOKEN = TOKENS["alice"]
ORIGINAL = b"original"  # the content of the document a hostile request must leave alone
BOUNDARY = "hostile-boundary-7f3a"


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Stored:
    """What the database and the bucket hold."""

    documents: int
    tags: int
    outbox: int
    objects: tuple[str, ...]


async def stored(db_session: AsyncSession, s3_client: S3Client, bucket: str) -> Stored:
    return Stored(
        documents=await count_rows(db_session, Document),
        tags=await count_rows(db_session, Tag),
        outbox=await count_rows(db_session, PendingObjectDeletion),
        objects=tuple(sorted(object_keys(s3_client, bucket))),
    )


NOTHING = Stored(documents=0, tags=0, outbox=0, objects=())


def assert_json_client_error(response: httpx.Response, *expected: int) -> None:
    assert response.status_code in expected, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json()


def part(
    name: str, value: bytes, filename: bytes | None = None, ctype: bytes | None = None
) -> bytes:
    """One multipart part with raw (unescaped) header bytes, as a hostile client would send."""
    disposition = b'Content-Disposition: form-data; name="' + name.encode() + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    headers = disposition + b"\r\n"
    if ctype is not None:
        headers += b"Content-Type: " + ctype + b"\r\n"
    return b"--" + BOUNDARY.encode() + b"\r\n" + headers + b"\r\n" + value + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"


MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def chunked(body: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The body as a stream: httpx sends it without Content-Length (chunked)."""
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


# ---------------------------------------------------------------- missing or invalid tokens

BAD_AUTHORIZATION: dict[str, bytes | None] = {
    "no-header": None,
    "basic-scheme": b"Basic " + base64.b64encode(b"alice:" + ALICE_TOKEN.encode()),
    "token-scheme": b"Token " + ALICE_TOKEN.encode(),
    "bearer-without-token": b"Bearer",
    "empty-bearer": b"Bearer ",
    "unknown-token": b"Bearer not-a-real-token",
    "token-with-inner-space": b"Bearer " + ALICE_TOKEN.replace("-token", " token").encode(),
    "token-with-suffix": b"Bearer " + ALICE_TOKEN.encode() + b" x",
    "token-prefix-only": b"Bearer " + ALICE_TOKEN[:-1].encode(),
    "unicode-token": "Bearer alicé-tøken-🙂".encode(),
    "unicode-lookalike-token": ("Bearer \u0430" + ALICE_TOKEN[1:]).encode(),  # Cyrillic a
    "very-long-token": b"Bearer " + b"A" * 8000,
}


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
async def test_upload_with_a_bad_token_gets_401_and_stores_nothing(
    client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    authorization: bytes | None,
) -> None:
    headers = {} if authorization is None else {b"Authorization": authorization}

    response = await client.post(
        "/documents", files={"file": ("a.txt", b"data")}, data={"tags": "t"}, headers=headers
    )

    assert_json_client_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert await stored(db_session, s3_client, s3_bucket) == NOTHING


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_patch_or_delete_with_a_bad_token_gets_401_and_changes_nothing(
    authed_client: httpx.AsyncClient,
    client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    method: str,
    authorization: bytes | None,
) -> None:
    created = await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)
    headers = {b"If-Match": b"1"}
    if authorization is not None:
        headers[b"Authorization"] = authorization
    body = {"filename": "hijacked.txt", "tags": ["owned"]} if method == "PATCH" else None

    response = await client.request(
        method, f"/documents/{created['id']}", json=body, headers=headers
    )

    assert_json_client_error(response, 401)
    assert await stored(db_session, s3_client, s3_bucket) == before
    assert (await client.get(f"/documents/{created['id']}")).json() == created


# ---------------------------------------------------------------- another owner's document

FOREIGN_PATCHES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "rename": ({"filename": "bobs.txt"}, {"If-Match": "1"}),
    "retag": ({"tags": ["bob"]}, {"If-Match": "1"}),
    "rename-and-retag": ({"filename": "b.txt", "tags": []}, {"If-Match": '"1"'}),
    "without-if-match": ({"filename": "b.txt"}, {}),
    "stale-if-match": ({"filename": "b.txt"}, {"If-Match": "7"}),
}


@pytest.mark.parametrize(("body", "headers"), FOREIGN_PATCHES.values(), ids=FOREIGN_PATCHES.keys())
async def test_patch_by_another_owner_gets_403_before_any_precondition_and_changes_nothing(
    authed_client: httpx.AsyncClient,
    other_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    created = await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)

    response = await other_client.patch(f"/documents/{created['id']}", json=body, headers=headers)

    assert_json_client_error(response, 403)
    assert (await authed_client.get(f"/documents/{created['id']}")).json() == created
    assert await stored(db_session, s3_client, s3_bucket) == before


async def test_delete_by_another_owner_gets_403_and_leaves_row_object_and_outbox_alone(
    authed_client: httpx.AsyncClient,
    other_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    created = await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)

    response = await other_client.delete(f"/documents/{created['id']}")

    assert_json_client_error(response, 403)
    assert before.objects == (f"documents/{created['id']}",)
    assert await stored(db_session, s3_client, s3_bucket) == before
    content = await authed_client.get(f"/documents/{created['id']}/content")
    assert content.content == ORIGINAL


# ---------------------------------------------------------------- oversize and empty uploads


@pytest.mark.parametrize(
    ("extra", "expected"),
    [(1, 413), (256 * 1024, 413), (0, 201)],
    ids=["one-byte-over", "far-over", "exactly-at-limit-control"],
)
async def test_a_chunked_upload_without_content_length_is_held_to_the_limit(
    authed_client: httpx.AsyncClient,
    settings: Settings,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    extra: int,
    expected: int,
) -> None:
    body = multipart(part("file", b"x" * (settings.max_upload_bytes + extra), b"big.bin"))

    response = await authed_client.post(
        "/documents", content=chunked(body), headers={"Content-Type": MULTIPART_TYPE}
    )

    assert "content-length" not in response.request.headers
    assert response.status_code == expected, response.text
    after = await stored(db_session, s3_client, s3_bucket)
    if expected == 201:
        assert (after.documents, len(after.objects)) == (1, 1)
    else:
        assert after == NOTHING


HOSTILE_BODIES: dict[str, tuple[bytes, int]] = {
    "empty-file-with-tags": (
        multipart(part("tags", b"a,b"), part("file", b"", b"empty.txt")),
        422,
    ),
    "empty-file-without-filename": (multipart(part("file", b"")), 422),
    "empty-body": (b"", 422),
    "only-closing-boundary": (b"--" + BOUNDARY.encode() + b"--\r\n", 422),
    "truncated-before-closing-boundary": (
        b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="a"\r\n\r\n' + b"x" * 1000,
        422,
    ),
    "garbage-instead-of-multipart": (b"\x00\xff" * 500, 422),
    "bad-tags-after-the-file": (
        multipart(part("file", b"data", b"a.txt"), part("tags", b"ok,not ok!")),
        422,
    ),
    "second-file-part": (
        multipart(part("file", b"one", b"1.txt"), part("file", b"two", b"2.txt")),
        422,
    ),
    "extra-file-part-before-the-file": (
        multipart(part("other", b"x", b"x.txt"), part("file", b"data", b"a.txt")),
        422,
    ),
    "part-without-a-name": (
        b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n"
        b"--" + BOUNDARY.encode() + b"--\r\n",
        422,
    ),
    "too-many-tags": (
        multipart(
            part("file", b"d", b"a"), part("tags", ",".join(f"t{i}" for i in range(21)).encode())
        ),
        422,
    ),
    "oversized-text-field": (
        multipart(part("file", b"d", b"a"), part("tags", b"a," * 5000)),
        422,
    ),
}


@pytest.mark.parametrize(("body", "expected"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
async def test_an_empty_or_malformed_upload_body_gets_4xx_and_stores_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    body: bytes,
    expected: int,
) -> None:
    response = await authed_client.post(
        "/documents", content=body, headers={"Content-Type": MULTIPART_TYPE}
    )

    assert_json_client_error(response, expected)
    assert await stored(db_session, s3_client, s3_bucket) == NOTHING


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "text/plain", "multipart/mixed"],
    ids=["no-boundary", "empty-boundary", "text-plain", "multipart-mixed"],
)
async def test_an_upload_with_a_bad_content_type_gets_4xx_and_stores_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    content_type: str,
) -> None:
    body = multipart(part("file", b"data", b"a.txt"))

    response = await authed_client.post(
        "/documents", content=body, headers={"Content-Type": content_type}
    )

    assert_json_client_error(response, 415, 422)
    assert await stored(db_session, s3_client, s3_bucket) == NOTHING


# ---------------------------------------------------------------- malformed ids

MALFORMED_IDS = {
    "not-a-uuid": "not-a-uuid",
    "very-long": "a" * 5000,
    "uuid-plus-junk": f"{uuid.uuid4()}x",
    "unicode": "ünïcødé-🙂",
    "encoded-path-traversal": "..%2F..%2Fetc",
    "dot-dot": "..",
    "encoded-nul": "%00",
    "sql": "1%27%20OR%20%271%27%3D%271",
    "negative-number": "-1",
    "huge-number": str(10**40),
    "encoded-control-characters": "a%01%1B%7F%C2%85",
    "encoded-uuid-with-nul": f"{uuid.uuid4()}%00",
}
ID_ROUTES = [("GET", ""), ("GET", "/content"), ("PATCH", ""), ("DELETE", "")]


@pytest.mark.parametrize(("method", "suffix"), ID_ROUTES, ids=[f"{m}{s}" for m, s in ID_ROUTES])
@pytest.mark.parametrize("bad_id", MALFORMED_IDS.values(), ids=MALFORMED_IDS.keys())
async def test_a_malformed_document_id_gets_422_or_404_and_touches_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    method: str,
    suffix: str,
    bad_id: str,
) -> None:
    await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)
    body = {"filename": "x.txt"} if method == "PATCH" else None

    response = await authed_client.request(
        method, f"/documents/{bad_id}{suffix}", json=body, headers={"If-Match": "1"}
    )

    assert_json_client_error(response, 404, 422)
    assert await stored(db_session, s3_client, s3_bucket) == before


async def test_a_raw_path_traversal_id_never_reaches_another_route(
    authed_client: httpx.AsyncClient, db_session: AsyncSession, s3_client: S3Client, s3_bucket: str
) -> None:
    await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)
    # httpx would normalise "../"; send the raw path as a hostile client can.
    request = authed_client.build_request("DELETE", "http://test/documents/x")
    request.url = request.url.copy_with(raw_path=b"/documents/../../etc/passwd")

    response = await authed_client.send(request)

    assert_json_client_error(response, 404, 405, 422)
    assert await stored(db_session, s3_client, s3_bucket) == before


# ---------------------------------------------------------------- over-long or odd-charset tags

HOSTILE_TAGS = {
    "100-chars": "a" * 100,
    "51-chars": "a" * 51,
    "emoji": "🙂",
    "inner-space": "two words",
    "sql-ish": "x'; drop table documents; --",
    "nul-byte": "nul\x00byte",
    "leading-dash": "-dash",
    "unicode-letters": "ünïcode",
    "fullwidth": "\uff41\uff42\uff43",
    "newline": "a\nb",
    "path-traversal": "../etc",
    "percent": "100%",
    "soh": "a\x01b",
    "escape": "a\x1bb",
    "del": "a\x7fb",
    "c1-control": "a\x85b",
    "only-a-nul": "\x00",
}


@pytest.mark.parametrize("tag", HOSTILE_TAGS.values(), ids=HOSTILE_TAGS.keys())
async def test_an_upload_with_a_hostile_tag_gets_422_and_stores_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    tag: str,
) -> None:
    response = await authed_client.post(
        "/documents", files={"file": ("a.txt", b"data")}, data={"tags": ["fine", tag]}
    )

    assert_json_client_error(response, 422)
    assert await stored(db_session, s3_client, s3_bucket) == NOTHING


@pytest.mark.parametrize("tag", HOSTILE_TAGS.values(), ids=HOSTILE_TAGS.keys())
async def test_a_patch_with_a_hostile_tag_gets_422_and_changes_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    tag: str,
) -> None:
    created = await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)

    response = await authed_client.patch(
        f"/documents/{created['id']}", json={"tags": ["fine", tag]}, headers={"If-Match": "1"}
    )

    assert_json_client_error(response, 422)
    assert (await authed_client.get(f"/documents/{created['id']}")).json() == created
    assert await stored(db_session, s3_client, s3_bucket) == before


@pytest.mark.parametrize("tag", HOSTILE_TAGS.values(), ids=HOSTILE_TAGS.keys())
async def test_a_hostile_tag_filter_gets_422(client: httpx.AsyncClient, tag: str) -> None:
    response = await client.get("/documents", params={"tag": tag})

    assert_json_client_error(response, 422)


# ---------------------------------------------------------------- hostile filenames

# The Content-Disposition the API builds: an ASCII fallback with no quote, backslash or
# control character inside its quotes, and an RFC 5987 filename* of percent-escapes only.
SAFE_DISPOSITION = re.compile(
    r"""attachment; filename="[\x20\x21\x23-\x5b\x5d-\x7e]+"; filename\*=UTF-8''[A-Za-z0-9%._~-]+"""
)

HOSTILE_FILENAMES: dict[str, tuple[bytes, str]] = {
    # id: (raw bytes in the part's filename="...", expected stored name)
    "unix-traversal": (b"../../etc/passwd", "passwd"),
    "windows-path": (b"C:\\\\Windows\\\\evil.exe", "evil.exe"),
    "unicode": ("naïve résumé.pdf".encode(), "naïve résumé.pdf"),
    "rtl-override": ("invoice\u202egpj.exe".encode(), "invoicegpj.exe"),
    "zero-width-and-bidi": ("a\u200bb\u2066c.txt".encode(), "abc.txt"),
    "1000-chars": (b"n" * 996 + b".pdf", "n" * 251 + ".pdf"),
    "1000-multibyte-chars": ("é".encode() * 1000, "é" * 127),
    "only-dots": (b"..", "document"),
    "empty": (b"", "document"),
    "escaped-quote-injection": (b'a\\"; filename=b', "a; filename=b"),
    "percent-encoded-crlf": (b"a%0D%0ASet-Cookie: x=y", "a%0D%0ASet-Cookie: x=y"),
    "tab-and-vertical-tab": (b"a\tb\x0bc.txt", "abc.txt"),
    "nul-byte": (b"a\x00b.txt", "ab.txt"),
    "latin1-bytes": (b"caf\xe9.txt", "café.txt"),
    "escape-and-del": (b"a\x1bb\x7fc.txt", "abc.txt"),
    "c1-controls": ("a\x85b\x9f.txt".encode(), "ab.txt"),
    "only-controls": (b"\x00\x01\x1f", "document"),
    "line-separator": ("a\u2028b.txt".encode(), "ab.txt"),
}


def assert_safe_filename(name: str) -> None:
    assert name
    assert "/" not in name and "\\" not in name and '"' not in name
    assert name not in {".", ".."}
    assert len(name.encode()) <= 255
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in name)


@pytest.mark.parametrize(
    ("raw_filename", "expected"), HOSTILE_FILENAMES.values(), ids=HOSTILE_FILENAMES.keys()
)
async def test_a_hostile_filename_is_stored_sanitised_and_downloads_with_a_safe_header(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    raw_filename: bytes,
    expected: str,
) -> None:
    body = multipart(part("file", b"payload", raw_filename, b"text/plain"))

    created = await authed_client.post(
        "/documents", content=body, headers={"Content-Type": MULTIPART_TYPE}
    )
    assert created.status_code == 201, created.text
    document_id = created.json()["id"]
    download = await authed_client.get(f"/documents/{document_id}/content")

    assert created.json()["filename"] == expected
    assert_safe_filename(expected)
    row = await db_session.get(Document, uuid.UUID(document_id))
    assert row is not None and row.filename == expected
    assert (await stored(db_session, s3_client, s3_bucket)).objects == (f"documents/{document_id}",)
    assert download.status_code == 200
    assert download.content == b"payload"
    assert SAFE_DISPOSITION.fullmatch(download.headers["content-disposition"])
    assert "set-cookie" not in download.headers


HEADER_INJECTIONS: dict[str, bytes] = {
    "crlf-set-cookie": b"a\r\nSet-Cookie: x=y",
    "lf-set-cookie": b"a\nSet-Cookie: x=y",
    "cr-only": b"a\rSet-Cookie: x=y",
    "quote-and-second-filename": b'a"; filename=b',
    "quote-then-crlf": b'a"\r\nX-Injected: 1\r\nfoo: "bar',
}


@pytest.mark.parametrize("raw_filename", HEADER_INJECTIONS.values(), ids=HEADER_INJECTIONS.keys())
async def test_header_injection_through_a_raw_filename_stays_inside_the_body(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    raw_filename: bytes,
) -> None:
    # The raw CR/LF or quote breaks the part header the way an attacker would send it: the
    # API must treat the rest as part of the multipart framing, never as response headers.
    body = multipart(part("file", b"payload", raw_filename, b"text/plain"))

    created = await authed_client.post(
        "/documents", content=body, headers={"Content-Type": MULTIPART_TYPE}
    )

    assert created.status_code in {201, 422}, created.text
    assert "set-cookie" not in created.headers and "x-injected" not in created.headers
    after = await stored(db_session, s3_client, s3_bucket)
    if created.status_code == 422:
        assert after == NOTHING
        return
    filename = created.json()["filename"]
    assert_safe_filename(filename)
    download = await authed_client.get(f"/documents/{created.json()['id']}/content")
    disposition = download.headers["content-disposition"]
    assert SAFE_DISPOSITION.fullmatch(disposition), disposition
    assert "set-cookie" not in download.headers and "x-injected" not in download.headers
    assert after.documents == 1 and len(after.objects) == 1


@pytest.mark.parametrize(
    "filename",
    ["a\r\nSet-Cookie: x=y", 'a"; filename=b', "../../etc/passwd", "C:\\evil.exe", "\u202egpj.exe"],
    ids=["crlf-set-cookie", "quote-and-second-filename", "traversal", "windows-path", "rtl"],
)
async def test_a_hostile_filename_given_to_patch_is_sanitised_too(
    authed_client: httpx.AsyncClient, filename: str
) -> None:
    created = await create_document(authed_client, ORIGINAL, tags="keep")

    response = await authed_client.patch(
        f"/documents/{created['id']}", json={"filename": filename}, headers={"If-Match": "1"}
    )
    download = await authed_client.get(f"/documents/{created['id']}/content")

    assert response.status_code == 200, response.text
    assert_safe_filename(response.json()["filename"])
    assert SAFE_DISPOSITION.fullmatch(download.headers["content-disposition"])
    assert "set-cookie" not in download.headers


# ---------------------------------------------------------------- limits and forged cursors

HOSTILE_LIMITS = {
    "minus-one": "-1",
    "zero": "0",
    "101": "101",
    "10-pow-20": str(10**20),
    "abc": "abc",
    "float": "1.5",
    "exponent": "1e3",
    "empty": "",
    "hex": "0x10",
    "nul": "1\x00",
}


@pytest.mark.parametrize("limit", HOSTILE_LIMITS.values(), ids=HOSTILE_LIMITS.keys())
async def test_a_hostile_page_limit_gets_422(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get("/documents", params={"limit": limit})

    assert_json_client_error(response, 422)


HOSTILE_MIN_COUNTS = {
    "minus-one": "-1",
    "zero": "0",
    "10-pow-20": str(10**20),
    "int64-overflow": str(2**63),
    "abc": "abc",
    "float": "1.5",
}


@pytest.mark.parametrize("min_count", HOSTILE_MIN_COUNTS.values(), ids=HOSTILE_MIN_COUNTS.keys())
async def test_a_hostile_tag_min_count_gets_422(client: httpx.AsyncClient, min_count: str) -> None:
    response = await client.get("/tags", params={"min_count": min_count})

    assert_json_client_error(response, 422)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(payload: object) -> str:
    return b64(json.dumps(payload).encode())


GOOD_ID = "00000000-0000-4000-8000-000000000000"
GOOD_TIME = "2025-01-01T00:00:00+00:00"
FORGED_CURSORS = {
    "random-base64": b64(bytes(range(7, 250, 3))),
    "random-base64-padded": base64.urlsafe_b64encode(b"\x01\x02\x03\x04").decode(),
    "json-list": b64json([1, GOOD_TIME, GOOD_ID]),
    "json-null": b64json(None),
    "json-string": b64json("cursor"),
    "missing-field": b64json({"v": 1, "t": GOOD_TIME}),
    "extra-field": b64json({"v": 1, "t": GOOD_TIME, "i": GOOD_ID, "x": 1}),
    "version-as-string": b64json({"v": "1", "t": GOOD_TIME, "i": GOOD_ID}),
    "version-as-bool": b64json({"v": True, "t": GOOD_TIME, "i": GOOD_ID}),
    "version-as-float": b64json({"v": 1.0, "t": GOOD_TIME, "i": GOOD_ID}),
    "version-2": b64json({"v": 2, "t": GOOD_TIME, "i": GOOD_ID}),
    "time-as-number": b64json({"v": 1, "t": 1735689600, "i": GOOD_ID}),
    "id-as-number": b64json({"v": 1, "t": GOOD_TIME, "i": 12345}),
    "id-as-object": b64json({"v": 1, "t": GOOD_TIME, "i": {"$ne": None}}),
    "naive-time": b64json({"v": 1, "t": "2025-01-01T00:00:00", "i": GOOD_ID}),
    "sql-in-time": b64json({"v": 1, "t": "2025-01-01'; DROP TABLE documents; --", "i": GOOD_ID}),
    "sql-in-id": b64json({"v": 1, "t": GOOD_TIME, "i": "' OR 1=1 --"}),
    "raw-sql": "' OR 1=1 --",
    "not-json": b64(b"{not json"),
    "invalid-utf8": b64(b"\xff\xfe\xfd"),
    "very-long": "A" * 10_000,
    "just-over-the-limit": b64json({"v": 1, "t": GOOD_TIME, "i": GOOD_ID, "p": "x" * 200}),
    "nul-byte": "abc\x00def",
}


@pytest.mark.parametrize("cursor", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
async def test_a_forged_cursor_gets_422(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/documents", params={"cursor": cursor})

    assert_json_client_error(response, 422)


# ---------------------------------------------------------------- NUL and control characters

CONTROL_CHARACTERS = {
    "nul": "\x00",
    "soh": "\x01",
    "tab": "\t",
    "newline": "\n",
    "carriage-return": "\r",
    "escape": "\x1b",
    "unit-separator": "\x1f",
    "del": "\x7f",
    "c1-next-line": "\x85",
    "c1-last": "\x9f",
}
# Every query parameter of every route, and one no route declares.
QUERY_PARAMETERS = [
    ("GET", "/documents", "limit", "5"),
    ("GET", "/documents", "cursor", "x"),
    ("GET", "/documents", "tag", "keep"),
    ("GET", "/documents", "owner", "alice"),
    ("GET", "/tags", "min_count", "1"),
    ("GET", "/documents", "undeclared", "x"),
    ("GET", "/health", "undeclared", "x"),
    ("GET", "/documents/{id}", "undeclared", "x"),
    ("GET", "/documents/{id}/content", "undeclared", "x"),
    ("PATCH", "/documents/{id}", "undeclared", "x"),
    ("DELETE", "/documents/{id}", "undeclared", "x"),
    ("POST", "/documents", "undeclared", "x"),
]


@pytest.mark.parametrize("where", ["value", "name"])
@pytest.mark.parametrize(
    ("method", "path", "name", "value"),
    QUERY_PARAMETERS,
    ids=[f"{m}{p}?{n}" for m, p, n, _ in QUERY_PARAMETERS],
)
async def test_a_control_character_in_any_query_parameter_gets_422_and_touches_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    method: str,
    path: str,
    name: str,
    value: str,
    where: str,
) -> None:
    created = await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)

    for label, control in CONTROL_CHARACTERS.items():
        params = (
            {name: value[:1] + control + value[1:]}
            if where == "value"
            else {name[:1] + control + name[1:]: value}
        )
        response = await authed_client.request(
            method,
            path.format(id=created["id"]),
            params=params,
            json={"filename": "x.txt"} if method == "PATCH" else None,
            headers={"If-Match": "1"},
            files={"file": ("a.txt", b"data")} if method == "POST" else None,
        )

        assert_json_client_error(response, 422)
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["query", *params], label

    assert await stored(db_session, s3_client, s3_bucket) == before
    assert (await authed_client.get(f"/documents/{created['id']}")).json() == created


@pytest.mark.parametrize("header", ["If-Match", "Range"])
async def test_a_control_character_in_a_header_never_gets_a_5xx(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
    header: str,
) -> None:
    created = await create_document(authed_client, ORIGINAL, tags="keep")
    before = await stored(db_session, s3_client, s3_bucket)
    method, path = ("PATCH", "") if header == "If-Match" else ("GET", "/content")
    allowed = {200, 400, 412, 422} if method == "PATCH" else {200, 206, 416}

    for label, control in CONTROL_CHARACTERS.items():
        value = {"If-Match": "1", "Range": "bytes=0-1"}[header] + control
        response = await authed_client.request(
            method,
            f"/documents/{created['id']}{path}",
            headers={header.encode(): value.encode("latin-1")},
            json={"filename": "renamed.txt"} if method == "PATCH" else None,
        )

        assert response.status_code in allowed, (label, response.status_code, response.text)
    if method == "GET":
        assert await stored(db_session, s3_client, s3_bucket) == before
