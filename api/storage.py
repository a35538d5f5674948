"""S3 access for the service: blocking boto3 calls run in worker threads behind async methods."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.to_thread
import boto3.session
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from api.config import MIB, Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

DOWNLOAD_CHUNK_BYTES = 64 * 1024

# use_threads=False keeps boto3's managed (multipart above the threshold) transfer on the
# one worker thread that called it, which is what lets the reader below hop back to the
# event loop for the next request chunk; memory stays bounded by one part.
UPLOAD_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * MIB,
    multipart_chunksize=8 * MIB,
    use_threads=False,
)

_STORAGE_ERRORS = (BotoCoreError, ClientError, Boto3Error)


class StorageError(Exception):
    """S3 refused the request or could not be reached."""


class ObjectNotFoundError(StorageError):
    """The object does not exist in the bucket."""


def make_s3_client(settings: Settings) -> S3Client:
    """Build a boto3 S3 client for the configured endpoint; no request is made here."""
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


class _AsyncChunkReader:
    """A blocking, file-like read() over an async iterator, for boto3 in a worker thread."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._exhausted = False
        self.failure: BaseException | None = None

    async def _next_chunk(self) -> bytes | None:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        # boto3 expects file semantics: a short read means end of file.
        while not self._exhausted and (size < 0 or len(self._buffer) < size):
            try:
                chunk = anyio.from_thread.run(self._next_chunk)
            except BaseException as exc:
                self.failure = exc
                raise
            if chunk is None:
                self._exhausted = True
            else:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


@dataclass(frozen=True)
class ObjectStream:
    """An open S3 object body and what S3 said about it."""

    chunks: AsyncIterator[bytes]
    content_length: int


class Storage:
    """Async facade over one bucket."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def _call(self, func: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await anyio.to_thread.run_sync(partial(func, *args, **kwargs))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise ObjectNotFoundError(code) from exc
            raise StorageError(f"S3 error {code or type(exc).__name__}") from exc
        except _STORAGE_ERRORS as exc:
            raise StorageError(f"S3 unavailable ({type(exc).__name__})") from exc

    async def check_bucket(self) -> None:
        """Raise StorageError unless the bucket exists and our credentials reach it."""
        await self._call(self.client.head_bucket, Bucket=self.bucket)

    async def upload_stream(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str
    ) -> None:
        """Stream `chunks` into object `key` with boto3's managed transfer.

        An exception raised by `chunks` (for example "too large") aborts the transfer and is
        re-raised as is; S3 failures become StorageError. On any failure the key is deleted
        best-effort, so no partial or complete object is left behind.
        """
        reader = _AsyncChunkReader(chunks)
        upload = partial(
            self.client.upload_fileobj,
            cast("IO[bytes]", reader),
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=UPLOAD_TRANSFER_CONFIG,
        )
        try:
            await anyio.to_thread.run_sync(upload)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self.delete_quietly(key)
            if reader.failure is not None and reader.failure is not exc:
                raise reader.failure from None
            if isinstance(exc, _STORAGE_ERRORS):
                raise StorageError(f"S3 upload failed ({type(exc).__name__})") from exc
            raise

    async def open_download(self, key: str, byte_range: tuple[int, int] | None) -> ObjectStream:
        """Start a GET (optionally of an inclusive byte range) and return its body as chunks."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        response: GetObjectOutputTypeDef = await self._call(self.client.get_object, **kwargs)
        body = response["Body"]
        return ObjectStream(self._iterate_body(body.read, body.close), response["ContentLength"])

    async def _iterate_body(
        self, read: Callable[[int], bytes], close: Callable[[], None]
    ) -> AsyncIterator[bytes]:
        try:
            while chunk := await anyio.to_thread.run_sync(read, DOWNLOAD_CHUNK_BYTES):
                yield chunk
        finally:
            close()

    async def delete(self, key: str) -> None:
        """Delete an object; deleting a missing key succeeds (S3 semantics)."""
        await self._call(self.client.delete_object, Bucket=self.bucket, Key=key)

    async def delete_quietly(self, key: str) -> bool:
        """Delete an object, logging instead of raising on failure; True when it worked."""
        try:
            await self.delete(key)
        except StorageError:
            logger.warning("could not delete object %s from bucket %s", key, self.bucket)
            return False
        return True
