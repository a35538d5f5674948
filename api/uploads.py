"""Receive a multipart upload straight into S3, hashing and size-checking it on the way."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio

from api.filenames import sanitize_filename
from api.multipart import Event, MultipartError, PartData, PartEnd, PartStart, iter_multipart
from api.schemas import normalize_tags, split_tag_field
from api.storage import Storage

FILE_FIELD = "file"
TAGS_FIELD = "tags"
MAX_TEXT_FIELD_BYTES = 8 * 1024
MAX_TEXT_FIELDS = 50
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


class UploadTooLargeError(Exception):
    """The file is larger than MAX_UPLOAD_BYTES."""


class UploadRejectedError(ValueError):
    """The upload is well-formed HTTP but not an acceptable document (empty, no file, bad tags)."""


class UploadIdleError(Exception):
    """The client sent nothing for longer than the idle deadline."""


async def with_idle_deadline(chunks: AsyncIterator[bytes], idle_s: float) -> AsyncIterator[bytes]:
    """`chunks`, but UploadIdleError when the next one takes longer than `idle_s` seconds."""
    iterator = aiter(chunks)
    while True:
        with anyio.move_on_after(idle_s) as waiting:
            chunk = await anext(iterator, None)
        if waiting.cancelled_caught:
            raise UploadIdleError(f"the client sent nothing for {idle_s:g} s")
        if chunk is None:
            return
        yield chunk


@dataclass(frozen=True)
class ReceivedUpload:
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    tags: list[str]


def media_type_of(raw: str | None) -> str:
    """The part's media type without parameters, or application/octet-stream if unusable."""
    candidate = (raw or "").split(";", 1)[0].strip().lower()
    return candidate if _MEDIA_TYPE.fullmatch(candidate) else DEFAULT_CONTENT_TYPE


class _FormFields:
    """Collects the small text fields around the file part."""

    def __init__(self) -> None:
        self.raw_tags: list[str] = []
        self._count = 0

    async def read_until_file(self, events: AsyncIterator[Event]) -> PartStart:
        async for event in events:
            if isinstance(event, PartStart):
                if event.name == FILE_FIELD:
                    return event
                await self._read_text_field(event, events)
        raise UploadRejectedError(f"the form has no `{FILE_FIELD}` part")

    async def read_rest(self, events: AsyncIterator[Event]) -> None:
        async for event in events:
            if isinstance(event, PartStart):
                if event.name == FILE_FIELD:
                    raise UploadRejectedError(f"send exactly one `{FILE_FIELD}` part")
                await self._read_text_field(event, events)

    async def _read_text_field(self, start: PartStart, events: AsyncIterator[Event]) -> None:
        if start.filename is not None:
            raise UploadRejectedError(
                f"unexpected file part {start.name[:40]!r}; send the document as `{FILE_FIELD}`"
            )
        self._count += 1
        if self._count > MAX_TEXT_FIELDS:
            raise UploadRejectedError(f"too many form fields (at most {MAX_TEXT_FIELDS})")
        value = bytearray()
        async for event in events:
            if isinstance(event, PartEnd):
                break
            if isinstance(event, PartData):
                value += event.data
                if len(value) > MAX_TEXT_FIELD_BYTES:
                    raise UploadRejectedError(
                        f"form field {start.name[:40]!r} exceeds {MAX_TEXT_FIELD_BYTES} bytes"
                    )
        if start.name == TAGS_FIELD:
            self.raw_tags.extend(split_tag_field(value.decode("utf-8", errors="replace")))


async def _file_bytes(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, PartData):
            yield event.data
        elif isinstance(event, PartEnd):
            return
    raise MultipartError("the file part was not terminated")


def _checked_tags(raw_tags: list[str]) -> list[str]:
    try:
        return normalize_tags(raw_tags)
    except ValueError as exc:
        raise UploadRejectedError(str(exc)) from None


async def receive_upload(
    content_type: str | None,
    body: AsyncIterator[bytes],
    storage: Storage,
    storage_key: str,
    max_bytes: int,
    discard: Callable[[BaseException], Awaitable[None]],
) -> ReceivedUpload:
    """Stream the `file` part of a multipart body into `storage_key`.

    Raises UploadTooLargeError, UploadRejectedError, MultipartError, StorageError, or what
    `body` raises (the client gone or idle). Once the file has started towards storage, any
    failure, a cancellation included, first awaits `discard(error)` (shielded), whose job is
    that no object outlives the failed upload.
    """
    events = iter_multipart(content_type, body)
    form = _FormFields()
    file_part = await form.read_until_file(events)
    _checked_tags(form.raw_tags)  # fail before uploading when tags come first

    file_bytes = _file_bytes(events)
    first_chunk = await anext(file_bytes, None)
    if first_chunk is None:
        raise UploadRejectedError("the file is empty")

    digest = hashlib.sha256()
    size = 0

    async def counted_chunks() -> AsyncIterator[bytes]:
        nonlocal size
        chunk: bytes | None = first_chunk
        while chunk is not None:
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLargeError(f"the file exceeds the limit of {max_bytes} bytes")
            digest.update(chunk)
            yield chunk
            chunk = await anext(file_bytes, None)

    content_type_of_file = media_type_of(file_part.content_type)
    try:
        await storage.upload_stream(storage_key, counted_chunks(), content_type_of_file)
        # The object is stored; the closing boundary and any fields after the file remain.
        await form.read_rest(events)
        tags = _checked_tags(form.raw_tags)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await discard(exc)
        raise
    return ReceivedUpload(
        filename=sanitize_filename(file_part.filename),
        content_type=content_type_of_file,
        size_bytes=size,
        sha256=digest.hexdigest(),
        tags=tags,
    )
