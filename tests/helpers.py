"""Shared helpers of docstore's tests: one home each for creating and patching documents,
counting what is stored, bearer headers, and watching processes (psutil).

Imported by the app's tests (tests/integration/) and by the benchmarks (bench/); the harness
core never imports it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from realstack import apoll_until, object_keys, poll_until
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.models import Document

__all__ = [
    "alive",
    "bearer",
    "children_of",
    "count_rows",
    "create_document",
    "eventually",
    "object_keys",
    "patch_document",
    "proc_status_kb",
    "upload",
    "wait_until",
]


# ---------------------------------------------------------------- documents through the API


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a docstore token (tests.app_adapter.TOKENS holds them)."""
    return {"Authorization": f"Bearer {token}"}


async def upload(
    client: httpx.AsyncClient,
    content: bytes = b"content",
    filename: str = "doc.txt",
    content_type: str = "text/plain",
    **data: Any,
) -> httpx.Response:
    """POST /documents with one `file` part (and form fields such as tags="a,b"); the answer
    is returned as it is, for tests of refusals."""
    return await client.post(
        "/documents", files={"file": (filename, content, content_type)}, data=data
    )


async def create_document(
    client: httpx.AsyncClient,
    content: bytes = b"content",
    *,
    filename: str = "doc.txt",
    content_type: str = "text/plain",
    tags: str = "",
) -> dict[str, Any]:
    """Upload a document that must be accepted (201); return its metadata."""
    response = await upload(client, content, filename, content_type, tags=tags)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def patch_document(
    client: httpx.AsyncClient, document_id: str, changes: dict[str, Any], if_match: str = "1"
) -> httpx.Response:
    """PATCH /documents/{id} with `changes` under If-Match (version 1 unless told); the answer
    is returned as it is, for tests of refusals."""
    return await client.patch(
        f"/documents/{document_id}", json=changes, headers={"If-Match": if_match}
    )


# ---------------------------------------------------------------- what is stored


async def count_rows(session: AsyncSession, model: type[Any] = Document) -> int:
    """The rows of `model`'s table that `session` sees (documents by default)."""
    return await session.scalar(select(func.count()).select_from(model)) or 0


# object_keys(s3_client, bucket) is re-exported from the harness: the keys in a bucket.


# ---------------------------------------------------------------- processes (psutil)


def children_of(parent: int) -> set[int]:
    """The pids whose parent is `parent` (a postmaster's backends and auxiliary processes)."""
    try:
        return {child.pid for child in psutil.Process(parent).children()}
    except psutil.NoSuchProcess:
        return set()


def alive(pids: set[int]) -> set[int]:
    """The pids that still run (a zombie waiting to be reaped does not count)."""
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def proc_status_kb(pid: int, field: str) -> int:
    """A kB figure of /proc/<pid>/status, e.g. VmRSS (now) or VmHWM (the peak, which psutil
    does not give)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` at the deadline."""
    if not poll_until(condition, timeout_s=deadline_s, interval_s=0.02):
        raise AssertionError(f"{what} did not happen within {deadline_s} s")


async def eventually(
    condition: Callable[[], Awaitable[bool]], deadline_s: float, what: str
) -> None:
    """Await `condition` until it holds; AssertionError naming `what` at the deadline."""
    if not await apoll_until(condition, timeout_s=deadline_s):
        raise AssertionError(f"{what} did not happen within {deadline_s} s")
