"""docstore served by a real uvicorn, and a bounded load against it: shared by
tests/integration/test_load.py (small) and bench/load.py (the CLI, large), by the slow-client
and paused-server tests, and by bench/bench_upload.py (`serve`).

`serve` runs `uvicorn api.asgi:app` with the app's variables (tests.app_adapter.environment_of)
on a free loopback port; `run_load` lets every client upload one random file and download it
again, all at once; `open_slow_upload` starts an upload over a raw socket that stops sending
at a chosen point; `verify` and `stored_keys` count the rows and the objects left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from realstack import apoll_until, die_with_parent, free_port, object_keys
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import NullPool

from api.config import Settings
from api.db import create_engine_for
from api.models import Document, PendingObjectDeletion
from api.storage import make_s3_client
from tests.helpers import bearer

REPO = Path(__file__).resolve().parents[1]
OWNER = "load"
SERVE_TIMEOUT_S = 30.0


@dataclass
class LoadReport:
    """What one load run did and saw."""

    clients: int
    size_bytes: int
    upload_s: list[float] = field(default_factory=list)
    download_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    rows: int | None = None
    objects: int | None = None
    idle_uploads: int = 0  # raw-socket uploads that went quiet beside the clients

    @property
    def requests(self) -> int:
        return len(self.upload_s) + len(self.download_s)

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and len(self.ids) == self.clients
            and self.rows == self.objects == self.clients
        )

    def table(self) -> str:
        def row(name: str, latencies: list[float]) -> str:
            if not latencies:
                return f"{name:<10} {0:>8} {'-':>10} {'-':>10}"
            ordered = sorted(latencies)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            median = statistics.median(ordered)
            return f"{name:<10} {len(ordered):>8} {median * 1000:>8.1f}ms {p95 * 1000:>8.1f}ms"

        moved = 2 * len(self.ids) * self.size_bytes / 2**20
        rate = self.requests / self.elapsed_s if self.elapsed_s else 0.0
        lines = [
            f"load: {self.clients} clients x {self.size_bytes // 1024} KiB, "
            f"upload then download each, in {self.elapsed_s:.2f} s",
            f"{'':<10} {'requests':>8} {'median':>10} {'p95':>10}",
            row("upload", self.upload_s),
            row("download", self.download_s),
            f"{'total':<10} {self.requests:>8}   errors {len(self.errors)}   "
            f"{rate:.1f} req/s   {moved / self.elapsed_s if self.elapsed_s else 0:.1f} MiB/s",
            f"rows {self.rows}   objects {self.objects}   expected {self.clients}",
        ]
        if self.idle_uploads:
            lines.insert(
                1,
                f"beside {self.idle_uploads} idle uploads (half stopped mid-file, half after "
                "their file), held through the load, then hung up",
            )
        lines += [f"error: {error}" for error in self.errors[:20]]
        return "\n".join(lines)


@dataclass(frozen=True)
class ServedApp:
    base_url: str
    pid: int
    log: Callable[[], str] = field(repr=False)  # uvicorn's and the app's output so far


@contextlib.asynccontextmanager
async def serve(
    app_env: Mapping[str, str], timeout_s: float = SERVE_TIMEOUT_S, open_files: int | None = None
) -> AsyncIterator[ServedApp]:
    """Run the service (`python -m api.serve`: uvicorn with its bounds) with `app_env` over
    this process's environment on a free loopback port, its open-file limit lowered to
    `open_files` if given; yield its URL and pid once /health answers 200; stop it (SIGTERM,
    then SIGKILL after 10 s) on the way out."""
    dies_with_us = die_with_parent(os.getpid(), signal.SIGTERM)

    def before_exec() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
        dies_with_us()

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "api.serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    with tempfile.TemporaryFile() as log:
        # Popen only forks and execs; it stays on this (main) thread so that the parent-death
        # signal is tied to the thread that lives as long as the run.
        proc = subprocess.Popen(  # noqa: ASYNC220
            argv,
            cwd=REPO,
            env={**os.environ, **app_env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # uvicorn must not outlive a killed load run or test process.
            preexec_fn=before_exec,
        )

        final: list[str] = []

        def log_text() -> str:
            """The output so far; after the block, all of it (the file is gone then)."""
            if final:
                return final[0]
            log.seek(0)
            return log.read().decode(errors="replace")

        def log_tail() -> str:
            return log_text()[-3000:]

        try:
            await _wait_healthy(proc, base_url, timeout_s, log_tail)
            yield ServedApp(base_url, proc.pid, log_text)
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
            final.append(log_text())


async def _wait_healthy(
    proc: subprocess.Popen[bytes], base_url: str, timeout_s: float, log_tail: Callable[[], str]
) -> None:
    last = ["no answer yet"]
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:

        async def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log_tail()}")
            try:
                response = await client.get("/health")
            except httpx.TransportError as exc:
                last[0] = type(exc).__name__
                return False
            last[0] = f"{response.status_code} {response.text[:200]}"
            return response.status_code == 200

        if not await apoll_until(healthy, timeout_s=timeout_s):
            raise RuntimeError(
                f"uvicorn at {base_url} not healthy within {timeout_s} s "
                f"(last: {last[0]}):\n{log_tail()}"
            )


async def run_load(
    base_url: str,
    token: str,
    *,
    clients: int,
    size_bytes: int,
    timeout_s: float = 120.0,
    idle_uploads: int = 0,
) -> LoadReport:
    """Every client uploads one random file, then downloads it and checks its sha256; all
    clients run at once. Bounded: `clients` uploads and downloads, and `timeout_s` overall.
    With `idle_uploads`, that many raw-socket uploads go quiet first (half in the middle of
    their file, half right after it) and stay so until the clients are done; then they hang
    up, and nothing of theirs may stay stored (see `verify`)."""
    report = LoadReport(clients=clients, size_bytes=size_bytes, idle_uploads=idle_uploads)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def one_client(client: httpx.AsyncClient, n: int) -> None:
        content = secrets.token_bytes(size_bytes)
        expected = hashlib.sha256(content).hexdigest()
        started = time.perf_counter()
        created = await client.post(
            "/documents", files={"file": (f"load-{n}.bin", content)}, data={"tags": "load"}
        )
        report.upload_s.append(time.perf_counter() - started)
        if created.status_code != 201:
            report.errors.append(f"upload {n}: {created.status_code} {created.text[:200]}")
            return
        body = created.json()
        report.ids.append(body["id"])
        if body["sha256"] != expected or body["size_bytes"] != size_bytes:
            report.errors.append(f"upload {n}: the API recorded other bytes than were sent")
        started = time.perf_counter()
        downloaded = await client.get(f"/documents/{body['id']}/content")
        report.download_s.append(time.perf_counter() - started)
        if downloaded.status_code != 200:
            report.errors.append(f"download {n}: {downloaded.status_code}")
        elif hashlib.sha256(downloaded.content).hexdigest() != expected:
            report.errors.append(f"download {n}: sha256 mismatch")

    idle = [
        await open_slow_upload(
            base_url, token, secrets.token_bytes(size_bytes), "mid-file" if n % 2 else "file"
        )
        for n in range(idle_uploads)
    ]
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(
            base_url=base_url, headers=bearer(token), limits=limits, timeout=60.0
        ) as client:
            try:
                async with asyncio.timeout(timeout_s):
                    results = await asyncio.gather(
                        *(one_client(client, n) for n in range(clients)), return_exceptions=True
                    )
            except TimeoutError:
                report.errors.append(f"the load did not finish within {timeout_s} s")
                results = []
        report.elapsed_s = time.perf_counter() - started
    finally:
        for upload in idle:
            upload.close()
    report.errors += [f"client failed: {r!r}" for r in results if isinstance(r, BaseException)]
    return report


async def verify(report: LoadReport, settings: Settings, settle_s: float = 30.0) -> LoadReport:
    """Count the rows of the load's database and the objects of its bucket into the report;
    first wait (up to `settle_s`) until they agree: the service notices hung-up uploads and
    deletes what they stored a moment after they hang up."""

    async def settled() -> StoredKeys | None:
        stored = await stored_keys(settings)
        return stored if stored.consistent else None

    stored = await apoll_until(settled, timeout_s=settle_s, interval_s=0.1) or await stored_keys(
        settings
    )
    report.rows, report.objects = len(stored.rows), len(stored.objects)
    return report


# ---------------------------------------------------------------- what is stored


@dataclass(frozen=True)
class StoredKeys:
    """The storage keys the rows name, the objects in the bucket, and the outbox's size."""

    rows: frozenset[str]
    objects: frozenset[str]
    outbox: int

    @property
    def consistent(self) -> bool:
        """Every row has its object and every object its row."""
        return self.rows == self.objects


async def stored_keys(settings: Settings) -> StoredKeys:
    engine = create_engine_for(settings, poolclass=NullPool)
    try:
        async with AsyncSession(engine) as session:
            rows = frozenset(await session.scalars(select(Document.storage_key)))
            outbox = await session.scalar(select(func.count()).select_from(PendingObjectDeletion))
    finally:
        await engine.dispose()
    keys = await asyncio.to_thread(object_keys, make_s3_client(settings), settings.s3_bucket)
    return StoredKeys(rows, frozenset(keys), outbox or 0)


# ---------------------------------------------------------------- slow clients

# How far a slow upload gets before it stops sending: only its request headers, half of its
# file, the whole file part (the object is then stored), or all of its body but the last byte.
SLOW_STAGES = ("headers", "mid-file", "file", "all-but-last")


@dataclass
class SlowUpload:
    """An upload over a raw socket that sent its body up to `stage` and then went quiet."""

    stage: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def answer(self, timeout_s: float) -> bytes:
        """Whatever the server sends until it closes the connection (bounded in time)."""
        async with asyncio.timeout(timeout_s):
            return await self.reader.read()

    def close(self) -> None:
        """Hang up, as a client that gives up does."""
        self.writer.close()


def upload_request(
    host: str, token: str, content: bytes, *, filename: str = "slow.bin", tags: str = "slow"
) -> tuple[bytes, dict[str, int]]:
    """A complete POST /documents as bytes, and where each of SLOW_STAGES stops in it."""
    boundary = f"slow-{secrets.token_hex(8)}"
    file_head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename={filename}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    # The file part ends, for the parser, where the next part's delimiter begins.
    next_part = f"\r\n--{boundary}\r\n".encode()
    tags_part = f"Content-Disposition: form-data; name=tags\r\n\r\n{tags}".encode()
    body = file_head + content + next_part + tags_part + f"\r\n--{boundary}--\r\n".encode()
    head = (
        f"POST /documents HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    stops = {
        "headers": len(head),
        "mid-file": len(head) + len(file_head) + len(content) // 2,
        "file": len(head) + len(file_head) + len(content) + len(next_part),
        "all-but-last": len(head) + len(body) - 1,
        "complete": len(head) + len(body),
    }
    return head + body, stops


async def open_slow_upload(base_url: str, token: str, content: bytes, stage: str) -> SlowUpload:
    """Connect, send the upload up to `stage` (one of SLOW_STAGES), and stop sending."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    request, stops = upload_request(f"{host}:{port}", token, content)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request[: stops[stage]])
    await writer.drain()
    return SlowUpload(stage, reader, writer)
