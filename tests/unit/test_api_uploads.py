"""Uploads stream from the multipart body into storage, hashed and size-checked on the way;
waiting for the client holds no thread, and a failed upload leaves nothing."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import pytest

from api.multipart import MultipartError
from api.storage import Storage, StorageError
from api.uploads import (
    UploadIdleError,
    UploadRejectedError,
    UploadTooLargeError,
    receive_upload,
    with_idle_deadline,
)

BOUNDARY = "test-boundary-7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
KEY = "documents/test"
PART = 16  # the fake's part size: files above it go up as multipart uploads


class FakeS3Client:
    """Just enough of boto3's S3 client, in memory: objects, and open multipart uploads."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, list[bytes]] = {}
        self.calls: list[str] = []
        self.fail: set[str] = set()  # operations that raise like an unreachable server

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://s3.invalid")

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:
        self._call("put_object")
        self.objects[Key] = Body

    def create_multipart_upload(self, Bucket: str, Key: str, **_: Any) -> dict[str, str]:
        self._call("create_multipart_upload")
        upload_id = f"upload-{len(self.uploads)}"
        self.uploads[upload_id] = []
        return {"UploadId": upload_id}

    def upload_part(self, UploadId: str, Body: bytes, PartNumber: int, **_: Any) -> dict[str, str]:
        self._call("upload_part")
        assert PartNumber == len(self.uploads[UploadId]) + 1
        self.uploads[UploadId].append(Body)
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, Key: str, UploadId: str, **_: Any) -> None:
        self._call("complete_multipart_upload")
        self.objects[Key] = b"".join(self.uploads.pop(UploadId))

    def abort_multipart_upload(self, UploadId: str, **_: Any) -> None:
        self._call("abort_multipart_upload")
        self.uploads.pop(UploadId, None)

    def delete_object(self, Bucket: str, Key: str) -> None:
        self._call("delete_object")
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
    return Storage(cast(Any, s3), "bucket", part_bytes=PART, call_deadline_s=5)


def receive(
    storage: Storage,
    body: AsyncIterator[bytes],
    max_bytes: int = 100,
    discarded: list[str] | None = None,
) -> Any:
    """receive_upload with the route's discard: delete the object (the failure is recorded)."""

    async def discard(failure: BaseException) -> None:
        if discarded is not None:
            discarded.append(type(failure).__name__)
        await storage.delete_quietly(KEY)

    return receive_upload(CONTENT_TYPE, body, storage, KEY, max_bytes, discard)


async def test_the_file_is_streamed_to_storage_with_its_sha256_and_size(
    s3: FakeS3Client, storage: Storage
) -> None:
    content = b"hello, streaming world\n" * 10
    body = multipart(("file", "../../greeting.txt", content))

    upload = await receive(storage, in_pieces(body), 10_000)

    assert s3.objects[KEY] == content
    assert s3.calls.count("upload_part") == len(content) // PART + 1
    assert s3.uploads == {}
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

    upload = await receive(storage, in_pieces(body), 100)

    assert upload.tags == ["2025", "invoices", "urgent"]


async def test_a_file_over_the_limit_is_rejected_and_nothing_is_stored(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "big.bin", b"x" * 101))

    with pytest.raises(UploadTooLargeError):
        await receive(storage, in_pieces(body, 10), 100)

    assert s3.objects == {}


async def test_a_file_exactly_at_the_limit_is_accepted(s3: FakeS3Client, storage: Storage) -> None:
    body = multipart(("file", "edge.bin", b"x" * 100))

    upload = await receive(storage, in_pieces(body), 100)

    assert upload.size_bytes == 100


async def test_an_empty_file_is_rejected_without_touching_storage(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "empty.txt", b""))

    with pytest.raises(UploadRejectedError, match="empty"):
        await receive(storage, in_pieces(body), 100)

    assert s3.calls == []


async def test_a_form_without_a_file_part_is_rejected(storage: Storage) -> None:
    body = multipart(("tags", None, b"a"))

    with pytest.raises(UploadRejectedError, match="no `file` part"):
        await receive(storage, in_pieces(body), 100)


async def test_bad_tags_sent_after_the_file_remove_the_uploaded_object(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "a.txt", b"data"), ("tags", None, b"no spaces allowed"))

    with pytest.raises(UploadRejectedError, match="invalid tag"):
        await receive(storage, in_pieces(body), 100)

    assert s3.objects == {}


async def test_bad_tags_sent_before_the_file_fail_before_uploading(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("tags", None, b"UPPER/slash"), ("file", "a.txt", b"data"))

    with pytest.raises(UploadRejectedError):
        await receive(storage, in_pieces(body), 100)

    assert s3.calls == []


async def test_a_body_cut_off_before_the_closing_boundary_stores_nothing(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "a.txt", b"data"), ("tags", None, b"ok"))
    truncated = body[: body.rindex(b"--" + BOUNDARY.encode())]

    with pytest.raises(MultipartError):
        await receive(storage, in_pieces(truncated), 100)

    assert s3.objects == {}


async def test_a_body_that_is_not_multipart_is_rejected(storage: Storage) -> None:
    async def discard(failure: BaseException) -> None:
        raise AssertionError("nothing reached storage, so nothing is discarded")

    with pytest.raises(MultipartError, match="multipart/form-data"):
        await receive_upload("application/json", in_pieces(b"{}"), storage, KEY, 100, discard)


async def test_a_small_file_goes_up_in_one_put(s3: FakeS3Client, storage: Storage) -> None:
    await receive(storage, in_pieces(multipart(("file", "a.txt", b"x" * PART))))

    assert s3.calls == ["put_object"]
    assert s3.objects[KEY] == b"x" * PART


async def stalling(
    body: bytes, stop_at: int, error: BaseException | None = None
) -> AsyncIterator[bytes]:
    """The first `stop_at` bytes of `body`, then `error` (a client gone) or a wait forever."""
    async for piece in in_pieces(body[:stop_at], 7):
        yield piece
    if error is not None:
        raise error
    await anyio.sleep_forever()


class ClientGone(Exception):
    pass


@pytest.mark.parametrize("stop_at", [5, 60, 150, 200, -40, -1], ids=lambda n: f"byte {n}")
async def test_a_client_gone_at_any_byte_leaves_no_object_and_no_open_multipart_upload(
    s3: FakeS3Client, storage: Storage, stop_at: int
) -> None:
    body = multipart(("file", "a.bin", b"y" * 100), ("tags", None, b"t"))
    discarded: list[str] = []

    with pytest.raises(ClientGone):
        await receive(storage, stalling(body, stop_at % len(body), ClientGone()), 1000, discarded)

    assert s3.objects == {}
    assert s3.uploads == {}
    if "put_object" in s3.calls or "upload_part" in s3.calls:
        assert discarded == ["ClientGone"]


async def test_a_cancelled_upload_aborts_its_multipart_upload(
    s3: FakeS3Client, storage: Storage
) -> None:
    body = multipart(("file", "a.bin", b"z" * 100))

    with anyio.move_on_after(0.5):
        await receive(storage, stalling(body, body.index(b"z") + 60), 1000)

    assert "upload_part" in s3.calls
    assert s3.uploads == {}
    assert s3.objects == {}


async def test_an_s3_failure_is_raised_and_left_to_the_caller(
    s3: FakeS3Client, storage: Storage
) -> None:
    s3.fail.add("upload_part")
    discarded: list[str] = []

    with pytest.raises(StorageError):
        await receive(storage, in_pieces(multipart(("file", "a.bin", b"w" * 100))), 1000, discarded)

    assert discarded == ["StorageError"]
    assert "abort_multipart_upload" not in s3.calls  # S3 may be down: storage_gc's job


async def test_a_client_waiting_to_send_holds_no_thread(s3: FakeS3Client) -> None:
    storage = Storage(cast(Any, s3), "bucket", part_bytes=PART, max_threads=1)
    stalled_body = multipart(("file", "slow.bin", b"s" * 100))
    second = multipart(("file", "fast.bin", b"f" * 100))

    async with anyio.create_task_group() as group:
        group.start_soon(receive, storage, stalling(stalled_body, stalled_body.index(b"s") + 60))
        with anyio.fail_after(5):
            upload = await receive_upload(
                CONTENT_TYPE, in_pieces(second), storage, "documents/fast", 1000, _no_discard
            )
        group.cancel_scope.cancel()

    assert upload.size_bytes == 100
    assert s3.objects == {"documents/fast": b"f" * 100}


async def _no_discard(failure: BaseException) -> None:
    raise AssertionError(f"unexpected failure {failure!r}")


async def test_an_idle_body_raises_after_the_idle_deadline() -> None:
    async def idle() -> AsyncIterator[bytes]:
        yield b"first"
        await anyio.sleep_forever()

    received = []
    with pytest.raises(UploadIdleError, match=r"sent nothing for 0\.05 s"):
        async for chunk in with_idle_deadline(idle(), 0.05):
            received.append(chunk)

    assert received == [b"first"]


class BlockingS3Client(FakeS3Client):
    """put_object blocks its thread until released, like a write to a stalled server."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:
        self.release.wait(10)
        super().put_object(Bucket=Bucket, Key=Key, Body=Body)

    def head_bucket(self, Bucket: str) -> None:
        self._call("head_bucket")

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._call("get_object")
        return {"Body": io.BytesIO(self.objects[Key]), "ContentLength": len(self.objects[Key])}


async def test_stuck_writes_leave_the_read_and_health_pools_alone() -> None:
    s3 = BlockingS3Client()
    s3.objects["documents/old"] = b"readable"
    storage = Storage(cast(Any, s3), "bucket", part_bytes=PART, max_threads=1)

    async with anyio.create_task_group() as group:
        for n in range(3):  # more than the write pool's one thread, all stuck
            body = multipart(("file", "w.bin", b"w"))
            group.start_soon(
                receive_upload, CONTENT_TYPE, in_pieces(body), storage, f"k{n}", 100, _no_discard
            )
        with anyio.fail_after(5):
            await storage.check_bucket()
            stream = await storage.open_download("documents/old", None)
            assert b"".join([chunk async for chunk in stream.chunks]) == b"readable"
        s3.release.set()

    assert sorted(s3.objects) == ["documents/old", "k0", "k1", "k2"]


async def test_a_call_past_its_deadline_is_given_up_as_a_storage_error() -> None:
    s3 = BlockingS3Client()
    storage = Storage(cast(Any, s3), "bucket", call_deadline_s=0.2)

    with anyio.fail_after(5), pytest.raises(StorageError, match=r"did not answer within 0\.2 s"):
        await storage.upload_stream("documents/slow", in_pieces(b"data"), "text/plain")
    s3.release.set()
