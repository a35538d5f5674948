"""Uploads stream from the multipart body into storage, hashed and size-checked on the way."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import IO, Any, cast

import pytest

from api.multipart import MultipartError
from api.storage import Storage
from api.uploads import UploadRejectedError, UploadTooLargeError, receive_upload

BOUNDARY = "test-boundary-7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
KEY = "documents/test"


class FakeS3Client:
    """Just enough of boto3's S3 client: reads the upload the way boto3 does, in pieces."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads = 0

    def upload_fileobj(self, fileobj: IO[bytes], bucket: str, key: str, **_: Any) -> None:
        data = bytearray()
        while chunk := fileobj.read(5):
            self.reads += 1
            data += chunk
        self.objects[key] = bytes(data)

    def delete_object(self, Bucket: str, Key: str) -> None:
        self.objects.pop(Key, None)


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        headers = ""
        if filename is not None:
            disposition += f'; filename="{filename}"'
            headers = "Content-Type: text/plain\r\n"
        body += (
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{headers}\r\n".encode()
            + content
            + b"\r\n"
        )
    return body + f"--{BOUNDARY}--\r\n".encode()


async def in_pieces(body: bytes, size: int = 3) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.fixture
def s3() -> FakeS3Client:
    return FakeS3Client()


@pytest.fixture
def storage(s3: FakeS3Client) -> Storage:
    return Storage(cast(Any, s3), "bucket")


async def test_the_file_is_streamed_to_storage_with_its_sha256_and_size(
    s3: FakeS3Client, storage: Storage
) -> None:
    content = b"hello, streaming world\n" * 10
    body = multipart(("file", "../../greeting.txt", content))

    upload = await receive_upload(CONTENT_TYPE, in_pieces(body), storage, KEY, 10_000)

    assert s3.objects[KEY] == content
    assert s3.reads > 1
    assert upload.sha256 == hashlib.sha256(content).hexdigest()
    assert upload.size_bytes == len(content)
    assert upload.filename == "greeting.txt"
    assert upload.content_type == "text/plain"


async def test_tags_before_and_after_the_file_are_merged_and_normalised(storage: Storage) -> None:
    body = multipart(
        ("tags", None, b" Invoices ,2025"),
        ("file", "a.txt", b"x"),
        ("tags", None, b"invoices"),
        ("tags", None, b"urgent,"),
    )

    upload = await receive_upload(CONTENT_TYPE, in_pieces(body), storage, KEY, 100)

    assert upload.tags == ["2025", "invoices", "urgent"]


async def test_a_file_over_the_limit_is_rejected_and_nothing_is_stored(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "big.bin", b"x" * 101))

    with pytest.raises(UploadTooLargeError):
        await receive_upload(CONTENT_TYPE, in_pieces(body, 10), storage, KEY, 100)

    assert s3.objects == {}


async def test_a_file_exactly_at_the_limit_is_accepted(s3: FakeS3Client, storage: Storage) -> None:
    body = multipart(("file", "edge.bin", b"x" * 100))

    upload = await receive_upload(CONTENT_TYPE, in_pieces(body), storage, KEY, 100)

    assert upload.size_bytes == 100


async def test_an_empty_file_is_rejected_without_touching_storage(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "empty.txt", b""))

    with pytest.raises(UploadRejectedError, match="empty"):
        await receive_upload(CONTENT_TYPE, in_pieces(body), storage, KEY, 100)

    assert s3.reads == 0


async def test_a_form_without_a_file_part_is_rejected(storage: Storage) -> None:
    body = multipart(("tags", None, b"a"))

    with pytest.raises(UploadRejectedError, match="no `file` part"):
        await receive_upload(CONTENT_TYPE, in_pieces(body), storage, KEY, 100)


async def test_bad_tags_sent_after_the_file_remove_the_uploaded_object(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "a.txt", b"data"), ("tags", None, b"no spaces allowed"))

    with pytest.raises(UploadRejectedError, match="invalid tag"):
        await receive_upload(CONTENT_TYPE, in_pieces(body), storage, KEY, 100)

    assert s3.objects == {}


async def test_bad_tags_sent_before_the_file_fail_before_uploading(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("tags", None, b"UPPER/slash"), ("file", "a.txt", b"data"))

    with pytest.raises(UploadRejectedError):
        await receive_upload(CONTENT_TYPE, in_pieces(body), storage, KEY, 100)

    assert s3.reads == 0


async def test_a_body_cut_off_before_the_closing_boundary_stores_nothing(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "a.txt", b"data"), ("tags", None, b"ok"))
    truncated = body[: body.rindex(b"--" + BOUNDARY.encode())]

    with pytest.raises(MultipartError):
        await receive_upload(CONTENT_TYPE, in_pieces(truncated), storage, KEY, 100)

    assert s3.objects == {}


async def test_a_body_that_is_not_multipart_is_rejected(storage: Storage) -> None:
    with pytest.raises(MultipartError, match="multipart/form-data"):
        await receive_upload("application/json", in_pieces(b"{}"), storage, KEY, 100)
