"""Peak RSS growth of the API process (uvicorn, a subprocess) while it receives a 200 MB upload.

The client streams a hand-built multipart body from a generator and hashes it on the way,
so neither side needs to hold the file. RSS is read from /proc/<pid>/status: VmRSS before
the upload (after one small warm-up upload), VmHWM (the peak) after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from realstack import HarnessConfig, sandbox

from api.config import MIB
from tests.app_adapter import environment_of, settings_for
from tests.helpers import bearer, proc_status_kb
from tests.load_client import serve

UPLOAD_BYTES = 200 * MIB
CHUNK = 1024 * 1024
TOKEN = "bench-token-0123456789"  # noqa: S105 - a throwaway token for a throwaway server
BOUNDARY = "bench-boundary-7d1c0f2e9a"


class UploadFailure(RuntimeError):
    """The API did not store the upload as expected."""


@dataclass(frozen=True)
class UploadResult:
    peak_rss_growth_mb: float
    rss_before_mb: float
    peak_rss_mb: float
    seconds: float
    size_bytes: int


class StreamedForm:
    """multipart/form-data with one `file` part of `size` pseudo-random bytes, as a generator."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._rng = random.Random(seed)
        self.sha256 = hashlib.sha256()
        self._head = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    @property
    def content_length(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        left = self.size
        while left:
            chunk = self._rng.randbytes(min(CHUNK, left))
            self.sha256.update(chunk)
            left -= len(chunk)
            yield chunk
        yield self._tail


def _upload(client: httpx.Client, size: int, seed: int) -> str:
    form = StreamedForm(size, seed)
    response = client.post(
        "/documents",
        content=iter(form),
        headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(form.content_length),
        },
    )
    if response.status_code != 201:
        raise UploadFailure(f"upload answered {response.status_code}: {response.text[:500]}")
    got = response.json()["sha256"]
    if got != form.sha256.hexdigest():
        raise UploadFailure(f"sha256 mismatch: API {got}, client {form.sha256.hexdigest()}")
    return str(got)


def _measure(base_url: str, pid: int) -> UploadResult:
    with httpx.Client(
        base_url=base_url,
        headers=bearer(TOKEN),
        timeout=httpx.Timeout(300.0, connect=5.0),
    ) as client:
        _upload(client, 64 * 1024, seed=1)  # warm-up: first-request imports and caches
        before = proc_status_kb(pid, "VmRSS")
        started = time.perf_counter()
        _upload(client, UPLOAD_BYTES, seed=2)
        elapsed = time.perf_counter() - started
        peak = proc_status_kb(pid, "VmHWM")
    kib = 1024.0
    return UploadResult((peak - before) / kib, before / kib, peak / kib, elapsed, UPLOAD_BYTES)


async def measure_upload(config: HarnessConfig) -> UploadResult:
    """In the sandbox's own stamped schema and bucket, both removed after."""
    async with sandbox(config, "upload") as run:
        settings = settings_for(run, tokens={"bench": TOKEN}, max_upload_bytes=300 * MIB)
        app_env = {"PYTHONDONTWRITEBYTECODE": "", **environment_of(settings)}
        async with serve(app_env) as served:
            return await asyncio.to_thread(_measure, served.base_url, served.pid)
