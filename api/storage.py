"""S3 access for the service: blocking boto3 calls on bounded thread pools of their own, each
call with a deadline.

Three pools, so that no kind of work can starve another: writes (uploads, deletes), reads
(downloads) and the health probe. An upload waiting for its client's next bytes holds no
thread at all: the bytes are gathered on the event loop, and only a complete part (or the
whole small file) goes to S3 in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from api.config import MIB, Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, GetObjectOutputTypeDef

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

DOWNLOAD_CHUNK_BYTES = 64 * 1024
# Files up to one part go up in one PUT; larger ones as a multipart upload of such parts
# (S3's minimum part is 5 MiB). Memory per upload stays bounded by about one part.
PART_BYTES = 8 * MIB
PROBE_THREADS = 2
DELETE_BATCH = 1000  # S3's most keys per DeleteObjects request
DEFAULT_CALL_DEADLINE_S = 8.5
DEFAULT_THREADS = 16

_STORAGE_ERRORS = (BotoCoreError, ClientError, Boto3Error)
_MISSING = {"NoSuchKey", "404", "NotFound"}


class StorageError(Exception):
    """S3 refused the request, could not be reached, or did not answer in time."""


class ObjectNotFoundError(StorageError):
    """The object does not exist in the bucket."""


def make_s3_client(settings: Settings) -> S3Client:
    """Build a boto3 S3 client for the configured endpoint; no request is made here.

    From boto3's default session: the S3 model it loads (~0.08 s of JSON) is then loaded once
    per process, whoever asks first. Clients are thread-safe; only sessions are not, and
    this one is used here, at start-up, not from worker threads."""
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            # total_max_attempts counts the first try ("max_attempts" would count retries).
            retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
            # Every thread of the three pools may hold a connection at once.
            max_pool_connections=2 * settings.s3_max_threads + PROBE_THREADS,
        ),
    )


@dataclass(frozen=True)
class ObjectStream:
    """An open S3 object body and what S3 said about it."""

    chunks: AsyncIterator[bytes]
    content_length: int


class Storage:
    """Async facade over one bucket."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        call_deadline_s: float = DEFAULT_CALL_DEADLINE_S,
        max_threads: int = DEFAULT_THREADS,
        part_bytes: int = PART_BYTES,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.call_deadline_s = call_deadline_s
        self.part_bytes = part_bytes
        self._writes = anyio.CapacityLimiter(max_threads)
        self._reads = anyio.CapacityLimiter(max_threads)
        self._probe = anyio.CapacityLimiter(PROBE_THREADS)

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        return cls(
            make_s3_client(settings),
            settings.s3_bucket,
            call_deadline_s=settings.s3_call_deadline,
            max_threads=settings.s3_max_threads,
        )

    async def _call(
        self,
        pool: anyio.CapacityLimiter,
        func: Callable[_P, _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        """One blocking call in a thread of `pool`, given up after the call deadline (the
        thread is abandoned: botocore's own timeouts end it)."""
        try:
            with anyio.fail_after(self.call_deadline_s):
                return await anyio.to_thread.run_sync(
                    partial(func, *args, **kwargs), abandon_on_cancel=True, limiter=pool
                )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise ObjectNotFoundError(code) from exc
            raise StorageError(f"S3 error {code or type(exc).__name__}") from exc
        except _STORAGE_ERRORS as exc:
            raise StorageError(f"S3 unavailable ({type(exc).__name__})") from exc
        except TimeoutError:
            raise StorageError(f"S3 did not answer within {self.call_deadline_s:g} s") from None

    async def check_bucket(self) -> None:
        """Raise StorageError unless the bucket exists and our credentials reach it."""
        await self._call(self._probe, self.client.head_bucket, Bucket=self.bucket)

    async def upload_stream(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str
    ) -> None:
        """Store `chunks` as object `key`: one PUT for up to one part, else a multipart upload.

        An exception raised by `chunks` (too large, the client gone or idle, a cancelled
        request) aborts a started multipart upload and is re-raised as is: S3 is fine then,
        and nothing is left. An S3 failure raises StorageError and cleans up nothing: S3 may be
        down, and a request it queued may still land, so the caller hands the key to
        storage_gc.
        """
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []

        async def send_part(data: bytes) -> None:
            number = len(parts) + 1
            answer = await self._call(
                self._writes,
                self.client.upload_part,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id or "",
                PartNumber=number,
                Body=data,
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})

        try:
            async for chunk in chunks:
                buffer += chunk
                while len(buffer) > self.part_bytes:
                    if upload_id is None:
                        created = await self._call(
                            self._writes,
                            self.client.create_multipart_upload,
                            Bucket=self.bucket,
                            Key=key,
                            ContentType=content_type,
                        )
                        upload_id = created["UploadId"]
                    part = bytes(buffer[: self.part_bytes])
                    del buffer[: self.part_bytes]
                    await send_part(part)
            if upload_id is None:
                await self._call(
                    self._writes,
                    self.client.put_object,
                    Bucket=self.bucket,
                    Key=key,
                    Body=bytes(buffer),
                    ContentType=content_type,
                )
                return
            if buffer:
                await send_part(bytes(buffer))
            await self._call(
                self._writes,
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except StorageError:
            raise
        except BaseException:
            if upload_id is not None:
                with anyio.CancelScope(shield=True):
                    await self._abort_quietly(key, upload_id)
            raise

    async def _abort_quietly(self, key: str, upload_id: str) -> bool:
        try:
            await self.abort_multipart_upload(key, upload_id)
        except StorageError as exc:
            logger.warning("could not abort the multipart upload of %s: %s", key, exc)
            return False
        return True

    async def open_download(self, key: str, byte_range: tuple[int, int] | None) -> ObjectStream:
        """Start a GET (optionally of an inclusive byte range) and return its body as chunks;
        ObjectNotFoundError when the object is gone."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        response: GetObjectOutputTypeDef = await self._call(
            self._reads, self.client.get_object, **kwargs
        )
        body = response["Body"]
        return ObjectStream(self._iterate_body(body.read, body.close), response["ContentLength"])

    async def _iterate_body(
        self, read: Callable[[int], bytes], close: Callable[[], None]
    ) -> AsyncIterator[bytes]:
        # A StorageError here comes after the status line went out: the app's handler logs
        # one line, and the server breaks the connection off (the client sees a body shorter
        # than its Content-Length).
        try:
            while chunk := await self._call(self._reads, read, DOWNLOAD_CHUNK_BYTES):
                yield chunk
        finally:
            close()

    async def delete(self, key: str) -> None:
        """Delete an object; deleting a missing key succeeds (S3 semantics)."""
        await self._call(self._writes, self.client.delete_object, Bucket=self.bucket, Key=key)

    async def delete_many(self, keys: list[str]) -> dict[str, str]:
        """Delete objects in batches of S3's 1000 per request (a missing one counts as
        deleted); return the keys S3 refused, with its error code. Raises StorageError when
        a request as a whole fails."""
        refused: dict[str, str] = {}
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            answer = await self._call(
                self._writes,
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            for error in answer.get("Errors", []):
                refused[error.get("Key", "")] = f"S3 error {error.get('Code', 'unknown')}"
        return refused

    async def open_multipart_uploads(self) -> dict[str, list[str]]:
        """The bucket's multipart uploads that were neither completed nor aborted: key ->
        upload ids (what a failed upload may leave when S3 failed too)."""
        found: dict[str, list[str]] = {}
        key_marker = upload_marker = ""
        while True:
            page = await self._call(
                self._writes,
                self.client.list_multipart_uploads,
                Bucket=self.bucket,
                KeyMarker=key_marker,
                UploadIdMarker=upload_marker,
            )
            for upload in page.get("Uploads", []):
                if "Key" in upload and "UploadId" in upload:
                    found.setdefault(upload["Key"], []).append(upload["UploadId"])
            if not page.get("IsTruncated"):
                return found
            key_marker = page.get("NextKeyMarker", "")
            upload_marker = page.get("NextUploadIdMarker", "")

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        await self._call(
            self._writes,
            self.client.abort_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
        )

    async def delete_quietly(self, key: str) -> bool:
        """Delete an object, logging instead of raising on failure; True when it worked."""
        try:
            await self.delete(key)
        except StorageError as exc:
            logger.warning("could not delete object %s from bucket %s: %s", key, self.bucket, exc)
            return False
        return True
