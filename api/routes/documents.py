"""Document endpoints: upload, list, read metadata, download, patch, delete."""

from __future__ import annotations

import contextlib
import logging
import uuid
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from api.config import Settings
from api.cursor import CursorPosition, InvalidCursorError, decode_cursor, encode_cursor
from api.deps import OwnerDep, SessionDep, SettingsDep, StorageDep
from api.errors import cause_of, is_database_outage
from api.filenames import content_disposition, sanitize_filename
from api.models import Document, PendingObjectDeletion
from api.multipart import MultipartError
from api.queries import document_by_id, document_page, ensure_tags, forget_pending_deletion
from api.ranges import (
    RangeNotSatisfiableError,
    if_match_allows,
    if_range_allows,
    parse_byte_range,
)
from api.schemas import (
    TAG_RULES,
    DocumentOut,
    DocumentPage,
    DocumentPatch,
    ErrorOut,
    normalize_tag,
)
from api.storage import ObjectNotFoundError, Storage, StorageError
from api.upload_slots import UPLOAD_RETRY_AFTER_S, UploadSlots
from api.uploads import (
    UploadIdleError,
    UploadRejectedError,
    UploadTooLargeError,
    receive_upload,
    with_idle_deadline,
)

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/documents", tags=["documents"])

# Multipart framing and the small text fields may add this much to Content-Length on top of
# the file itself before a declared length alone justifies a 413.
MULTIPART_OVERHEAD_ALLOWANCE = 64 * 1024

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "tags": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": (
                                "Optional. Repeat the `tags` field and/or give comma-separated "
                                f"names in one field (`tags=a,b`); blanks are ignored. {TAG_RULES}."
                            ),
                        },
                    },
                }
            }
        },
    }
}

_UPLOAD_DESCRIPTION = f"""\
Upload one document as `multipart/form-data`.

* `file` (required): the document; its bytes are streamed to storage, and its part filename
  (sanitised) and Content-Type are recorded.
* `tags` (optional): repeat the field (`tags=a`, `tags=b`) and/or separate names with commas
  (`tags=a,b`). {TAG_RULES}.

413 when the file exceeds MAX_UPLOAD_BYTES, 422 for an empty file or bad tags, 408 when the
client sends nothing for UPLOAD_IDLE_TIMEOUT seconds, 503 when storage or the database is
unavailable or MAX_ACTIVE_UPLOADS uploads are already in progress (with `Retry-After`); in
every failure case nothing is stored.
"""


def _not_found(document_id: uuid.UUID) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"document {document_id} not found")


async def _load_document(
    session: SessionDep, document_id: uuid.UUID, *, for_update: bool = False
) -> Document:
    document = await session.scalar(document_by_id(document_id, for_update=for_update))
    if document is None:
        raise _not_found(document_id)
    return document


RangeHeader = Annotated[str | None, Header(alias="range")]
IfRangeHeader = Annotated[
    str | None, Header(description="Serve the Range only if this is still the ETag.")
]


def _version_etag(document: Document) -> str:
    return f'"{document.version}"'


def _check_if_match(if_match: str | None, document: Document) -> None:
    """412 unless If-Match is absent or names the current version (or is `*`)."""
    if if_match is not None and not if_match_allows(if_match, document.version):
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED,
            "If-Match does not match the current version; fetch the document and retry",
        )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DocumentOut,
    description=_UPLOAD_DESCRIPTION,
    openapi_extra=_UPLOAD_BODY,
    responses={
        401: {"description": "Missing or unknown Bearer token."},
        408: {"description": "The client sent nothing for UPLOAD_IDLE_TIMEOUT seconds."},
        413: {"description": "The file is larger than MAX_UPLOAD_BYTES."},
        415: {"description": "The body is not multipart/form-data."},
        422: {"model": ErrorOut, "description": "Empty file, malformed form or bad tags."},
        503: {
            "description": "Storage or database unavailable, or too many uploads in "
            "progress; nothing was stored."
        },
    },
)
async def upload_document(
    request: Request,
    response: Response,
    owner: OwnerDep,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> DocumentOut:
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_ALLOWANCE:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"the upload exceeds the limit of {limit} bytes"
        )
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send the document as multipart/form-data"
        )
    slots: UploadSlots = request.app.state.upload_slots
    if not slots.acquire():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"too many uploads in progress (at most {slots.capacity}); retry shortly",
            headers={"Retry-After": str(UPLOAD_RETRY_AFTER_S)},
        )
    try:
        document = await _store_upload(request, owner, session, storage, settings)
    finally:
        slots.release()
    response.headers["Location"] = f"/documents/{document.id}"
    response.headers["ETag"] = _version_etag(document)
    return DocumentOut.from_model(document)


async def _discard_object(
    storage: Storage, session: AsyncSession, key: str, failure: BaseException
) -> None:
    """No object may outlive a failed upload: delete it now; or, when S3 itself just failed
    (it may be down, and a PUT it had queued may still land), record the key in the outbox,
    where `python -m api.storage_gc` deletes it (and aborts any multipart upload) later."""
    if not isinstance(failure, StorageError) and await storage.delete_quietly(key):
        return
    try:
        await session.rollback()
        session.add(PendingObjectDeletion(storage_key=key))
        await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        logger.error(
            "object %s may be orphaned: it could be neither deleted nor recorded for "
            "storage_gc (%s)",
            key,
            type(exc).__name__,
        )
    else:
        logger.warning("upload failed (%s); object %s is left to storage_gc", failure, key)


def _upload_failure(exc: BaseException) -> HTTPException | None:
    """The answer to a failed upload, or None to let the exception through."""
    if isinstance(exc, UploadTooLargeError):
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))
    if isinstance(exc, UploadRejectedError | MultipartError):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    if isinstance(exc, UploadIdleError):
        return HTTPException(
            status.HTTP_408_REQUEST_TIMEOUT,
            f"{exc}; nothing was stored",
            headers={"Connection": "close"},
        )
    if isinstance(exc, StorageError):
        logger.warning("upload to storage failed: %s", exc)
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "storage is unavailable; nothing was stored"
        )
    return None


async def _store_upload(
    request: Request, owner: str, session: AsyncSession, storage: Storage, settings: Settings
) -> Document:
    document_id = uuid.uuid4()
    storage_key = f"documents/{document_id}"
    body = with_idle_deadline(request.stream(), settings.upload_idle_timeout)
    try:
        upload = await receive_upload(
            request.headers.get("content-type"),
            body,
            storage,
            storage_key,
            settings.max_upload_bytes,
            partial(_discard_object, storage, session, storage_key),
        )
    except Exception as exc:
        answer = _upload_failure(exc)
        if answer is None:
            raise
        raise answer from None

    document = Document(
        id=document_id,
        owner=owner,
        filename=upload.filename,
        content_type=upload.content_type,
        size_bytes=upload.size_bytes,
        sha256=upload.sha256,
        storage_key=storage_key,
        version=1,
    )
    try:
        document.tags = await ensure_tags(session, upload.tags)
        session.add(document)
        await session.flush()
    except BaseException as exc:
        # Compensation: the row was never written, so the object must go too.
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await session.rollback()
            await _discard_object(storage, session, storage_key, exc)
        if is_database_outage(exc):
            logger.warning("saving document %s failed: %s", document_id, cause_of(exc))
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "database is unavailable; nothing was stored"
            ) from None
        raise  # a refusal or a bug: a 500 from the app's handler, after the compensation
    try:
        await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        # A COMMIT that failed in flight may still have gone through: the object stays, so
        # the worst case is an orphaned object, never a row without its object.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await session.rollback()
        logger.warning(
            "committing document %s failed (%s); its object %s is kept",
            document_id,
            cause_of(exc),
            storage_key,
        )
        if not is_database_outage(exc):
            raise
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "database is unavailable; the upload may be lost"
        ) from None
    return document


@router.get(
    "",
    response_model=DocumentPage,
    responses={422: {"model": ErrorOut, "description": "Bad limit, cursor, tag or owner."}},
)
async def list_documents(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=256, description="`next_cursor` of the previous page.")
    ] = None,
    tag: Annotated[str | None, Query(max_length=64, description="Only with this tag.")] = None,
    owner: Annotated[str | None, Query(max_length=64, description="Only of this owner.")] = None,
) -> DocumentPage:
    """Documents newest first (created_at DESC, id DESC), keyset-paginated."""
    try:
        after = None if cursor is None else decode_cursor(cursor)
    except InvalidCursorError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"bad cursor: {exc}") from None
    try:
        tag_name = None if tag is None else normalize_tag(tag)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    rows = list(await session.scalars(document_page(limit + 1, after, owner, tag_name)))
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(CursorPosition(last.created_at, last.id))
    return DocumentPage(items=[DocumentOut.from_model(d) for d in page], next_cursor=next_cursor)


@router.get("/{document_id}", response_model=DocumentOut, responses={404: {}})
async def get_document(
    document_id: uuid.UUID, session: SessionDep, response: Response
) -> DocumentOut:
    """Metadata of one document; its ETag is the version, for PATCH's If-Match."""
    document = await _load_document(session, document_id)
    response.headers["ETag"] = _version_etag(document)
    return DocumentOut.from_model(document)


@router.get(
    "/{document_id}/content",
    response_class=StreamingResponse,
    responses={
        # The stored bytes keep the media type they were uploaded with: any type may come back.
        200: {"content": {"*/*": {}}, "description": "The bytes."},
        206: {
            "content": {"*/*": {}},
            "description": "The requested byte range (`Range: bytes=a-b`).",
        },
        404: {},
        416: {"description": "The range starts past the end."},
        503: {"description": "Storage unavailable."},
    },
)
async def download_document(
    document_id: uuid.UUID,
    session: SessionDep,
    storage: StorageDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    """Stream the stored bytes; supports a single `Range: bytes=first-last`, and If-Range."""
    document = await _load_document(session, document_id)
    status_code, headers, byte_range = _download_answer(document, range_header, if_range)
    try:
        stream = await storage.open_download(document.storage_key, byte_range)
    except ObjectNotFoundError:
        # Deleted between reading the row and opening the object (a DELETE racing this GET).
        logger.info("object %s of document %s is gone", document.storage_key, document_id)
        raise _not_found(document_id) from None
    except StorageError as exc:
        logger.warning("download of %s failed: %s", document.storage_key, exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "storage is unavailable") from None
    headers["Content-Length"] = str(stream.content_length)
    return StreamingResponse(
        stream.chunks, status_code=status_code, media_type=document.content_type, headers=headers
    )


# HEAD answers what GET would, from the row alone (no object is read). Left out of the
# OpenAPI document: it is HTTP's own method on the same resource, not another operation.
@router.head("/{document_id}/content", include_in_schema=False)
async def head_document_content(
    document_id: uuid.UUID,
    session: SessionDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    document = await _load_document(session, document_id)
    status_code, headers, byte_range = _download_answer(document, range_header, if_range)
    first, last = byte_range or (0, document.size_bytes - 1)
    headers["Content-Length"] = str(last - first + 1)
    return Response(status_code=status_code, media_type=document.content_type, headers=headers)


def _download_answer(
    document: Document, range_header: str | None, if_range: str | None
) -> tuple[int, dict[str, str], tuple[int, int] | None]:
    """The status, headers and byte range of a download (GET or HEAD); 416 for a range that
    starts past the end."""
    size = document.size_bytes
    headers = {
        "ETag": f'"{document.sha256}"',
        "Content-Disposition": content_disposition(document.filename),
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }
    if not if_range_allows(if_range, headers["ETag"]):
        range_header = None  # the client's copy is another version: send all of this one
    try:
        byte_range = parse_byte_range(range_header, size)
    except RangeNotSatisfiableError:
        raise HTTPException(
            status.HTTP_416_RANGE_NOT_SATISFIABLE,
            f"range not satisfiable; the document has {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    if byte_range is None:
        return status.HTTP_200_OK, headers, None
    headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{size}"
    return status.HTTP_206_PARTIAL_CONTENT, headers, byte_range


@router.patch(
    "/{document_id}",
    response_model=DocumentOut,
    responses={
        400: {"description": "The body could not be parsed (not UTF-8 JSON)."},
        401: {},
        403: {"description": "Not the owner."},
        404: {},
        412: {"description": "If-Match does not carry the current version."},
        428: {"description": "If-Match is missing."},
    },
)
async def patch_document(
    document_id: uuid.UUID,
    changes: DocumentPatch,
    owner: OwnerDep,
    session: SessionDep,
    response: Response,
    if_match: Annotated[
        str | None, Header(description='The current version, e.g. `3` or `"3"`.')
    ] = None,
) -> DocumentOut:
    """Rename and/or replace the tags; optimistic concurrency through If-Match: <version>."""
    document = await _load_document(session, document_id, for_update=True)
    if document.owner != owner:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the owner may change a document")
    if if_match is None:
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            f"send If-Match with the current version ({_version_etag(document)} from GET)",
        )
    _check_if_match(if_match, document)
    if changes.filename is not None:
        document.filename = sanitize_filename(changes.filename)
    if changes.tags is not None:
        document.tags = await ensure_tags(session, changes.tags)
    document.version += 1
    document.updated_at = func.clock_timestamp()
    await session.flush()
    # Everything the answer needs is read here, while the row is still locked: a DELETE may
    # remove it the moment the commit releases the lock, and a write that committed must not
    # answer 500 for a read after it.
    await session.refresh(document, attribute_names=["updated_at"])
    answer, etag = DocumentOut.from_model(document), _version_etag(document)
    await session.commit()
    response.headers["ETag"] = etag
    return answer


@router.delete(
    "/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        401: {},
        403: {"description": "Not the owner."},
        404: {},
        412: {"description": "If-Match does not carry the current version."},
    },
)
async def delete_document(
    document_id: uuid.UUID,
    owner: OwnerDep,
    session: SessionDep,
    storage: StorageDep,
    if_match: Annotated[
        str | None,
        Header(description="Optional: delete only this version, e.g. `3`; 412 if it is stale."),
    ] = None,
) -> Response:
    """Delete the row (recording its object in the outbox atomically), then the object.
    Unconditional without If-Match; with it, only the version it names (412 otherwise)."""
    document = await _load_document(session, document_id, for_update=True)
    if document.owner != owner:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the owner may delete a document")
    _check_if_match(if_match, document)
    storage_key = document.storage_key
    await session.delete(document)
    session.add(PendingObjectDeletion(storage_key=storage_key))
    await session.commit()
    # From here the row is gone and the key is safe in the outbox: a failure below only
    # leaves work for `python -m api.storage_gc`, never a row without its object.
    if await storage.delete_quietly(storage_key):
        try:
            await session.execute(forget_pending_deletion(storage_key))
            await session.commit()
        except SQLAlchemyError:
            logger.warning("object %s deleted but its outbox row stays", storage_key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
