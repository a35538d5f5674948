"""Per-test isolation overhead on the real PostgreSQL: the same test body under five strategies.

Each "test" writes a Document with three Tags (documents, tags, document_tags: two foreign
keys) and commits, as application code would, then checks it sees only its own rows. The
setup and teardown around the body are timed apart from it; overhead = setup + teardown.

Run from the repo root: `.venv/bin/python bench/bench_isolation.py` (starts an embedded
PostgreSQL unless TEST_DATABASE_URL, POSTGRES_HOST/POSTGRES_PORT, a launcher's ready file or
warm services say where one runs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg.errors import InsufficientPrivilege
from pytest_postgresql.janitor import DatabaseJanitor
from realstack import (
    HarnessConfig,
    Project,
    contract,
    embedded_settings,
    find_pyproject,
    find_services,
    load_project,
    resolve_config,
)
from realstack.engines import create_test_engine
from realstack.isolation import committing_session, savepoint_session
from realstack.janitor import SchemaJanitor
from realstack.leaks import Baseline, undo_leftovers
from realstack.migrations import migrate
from realstack.stamps import RunNames
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import NullPool

from api.models import Base, Document, Tag, document_tags

ROOT = Path(__file__).resolve().parents[1]
TESTS = int(os.environ.get("BENCH_ISOLATION_TESTS", "100"))
WARMUP = 5  # per method, not counted: pool, statement caches, first catalog lookups
AUTOVACUUM_RETRIES = 100  # 0.1 s apart
TABLES = [t.name for t in Base.metadata.sorted_tables]

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


@dataclass(frozen=True)
class MethodResult:
    name: str
    overhead_ms: float  # median of setup + teardown
    setup_ms: float
    teardown_ms: float
    body_ms: float
    tests: int


async def test_body(session: AsyncSession, i: int) -> None:
    """What every strategy must isolate: rows in three tables, FKs, a commit, a read-back."""
    tags = [Tag(name=f"bench-{i}-{k}") for k in range(3)]
    session.add(
        Document(
            owner="bench",
            filename=f"report-{i}.pdf",
            content_type="application/pdf",
            size_bytes=1024 + i,
            sha256=f"{i:064x}",
            storage_key=f"documents/{uuid.uuid4()}",
            tags=tags,
        )
    )
    await session.commit()
    seen = await session.scalar(select(func.count()).select_from(document_tags))
    if seen != len(tags):  # a strategy that leaks rows between tests is not isolating
        raise AssertionError(f"test {i} sees {seen} document_tags rows, expected {len(tags)}")


async def run_method(name: str, open_session: SessionFactory) -> MethodResult:
    setups: list[float] = []
    teardowns: list[float] = []
    bodies: list[float] = []
    for i in range(WARMUP + TESTS):
        cm = open_session()
        t0 = time.perf_counter()
        session = await cm.__aenter__()
        t1 = time.perf_counter()
        try:
            await test_body(session, i)
        except BaseException as exc:
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        t2 = time.perf_counter()
        await cm.__aexit__(None, None, None)
        t3 = time.perf_counter()
        if i >= WARMUP:
            setups.append(t1 - t0)
            bodies.append(t2 - t1)
            teardowns.append(t3 - t2)
    ms = 1000.0
    return MethodResult(
        name=name,
        overhead_ms=statistics.median(s + t for s, t in zip(setups, teardowns, strict=True)) * ms,
        setup_ms=statistics.median(setups) * ms,
        teardown_ms=statistics.median(teardowns) * ms,
        body_ms=statistics.median(bodies) * ms,
        tests=TESTS,
    )


def truncating(engine: AsyncEngine, schema: str) -> SessionFactory:
    """A plain session; every table emptied with TRUNCATE ... RESTART IDENTITY CASCADE after."""
    names = ", ".join(f'"{schema}"."{t}"' for t in TABLES)

    @asynccontextmanager
    async def open_session() -> AsyncIterator[AsyncSession]:
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                yield session
        finally:
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))

    return open_session


def dropping_and_creating(engine: AsyncEngine) -> SessionFactory:
    """metadata.create_all before the test, drop_all after."""

    @asynccontextmanager
    async def open_session() -> AsyncIterator[AsyncSession]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                yield session
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)

    return open_session


@dataclass
class TemplateCloner:
    """pytest-postgresql's noproc + template way: one migrated template database, and per
    test a database cloned from it (DatabaseJanitor.init) and dropped after (.drop)."""

    project: Project
    url: str
    run_id: str
    counter: int = 0

    def _janitor(self, dbname: str, template: str | None = None) -> DatabaseJanitor:
        u = make_url(self.url)
        assert u.host and u.port and u.username
        return DatabaseJanitor(
            user=u.username,
            password=u.password,
            host=u.host,
            port=u.port,
            dbname=dbname,
            template_dbname=template,
            as_template=template is None,
        )

    @property
    def template(self) -> str:
        return f"bench_tpl_{self.run_id}"

    def _url_for(self, dbname: str) -> str:
        return make_url(self.url).set(database=dbname).render_as_string(hide_password=False)

    async def create_template(self) -> None:
        self._janitor(self.template).init()
        engine = create_test_engine(self._url_for(self.template), None, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: migrate(self.project, sync))
        finally:
            await engine.dispose()

    def drop_template(self) -> None:
        past_autovacuum(self._janitor(self.template).drop)

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[AsyncSession]:
        self.counter += 1
        janitor = self._janitor(f"bench_{self.run_id}_{self.counter}", self.template)
        past_autovacuum(janitor.init)
        try:
            engine = create_test_engine(self._url_for(janitor.dbname), None, poolclass=NullPool)
            try:
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    await session.connection()  # the connection is part of the setup
                    yield session
            finally:
                await engine.dispose()
        finally:
            past_autovacuum(janitor.drop)


def past_autovacuum(step: Callable[[], None]) -> None:
    """A DatabaseJanitor step, again after a moment when it failed on an autovacuum worker:
    before CREATE DATABASE ... TEMPLATE and DROP DATABASE it terminates the connections to the
    database, and a test role may not terminate an autovacuum worker (PostgreSQL 18: permission
    denied). The worker leaves within moments; CREATE DATABASE would have stopped it itself."""
    for attempt in range(AUTOVACUUM_RETRIES):
        try:
            step()
            return
        except InsufficientPrivilege:
            if attempt == AUTOVACUUM_RETRIES - 1:
                raise
            time.sleep(0.1)


@dataclass(frozen=True)
class CheckResult:
    """The harness's check after each test that used the database, when nothing leaked (the
    fast path: one round trip), and the row-count-only check it replaced."""

    check_ms: float  # median, open transactions + catalogs' and tables' xmin sums
    counts_only_ms: float  # median, open transactions + row counts (before issue 19)
    tests: int


async def measure_after_test_check(engine: AsyncEngine, janitor: SchemaJanitor) -> CheckResult:
    """After a SAVEPOINT test each time (its rows rolled back), as the fixture runs it."""
    async with engine.connect() as conn:
        baseline = await Baseline(TABLES, janitor.schema).take(conn)
    counts = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in TABLES)
    checks: list[float] = []
    counts_only: list[float] = []
    for i in range(WARMUP + TESTS):
        async with savepoint_session(engine) as session:
            await test_body(session, i)
        async with engine.connect() as conn:
            t0 = time.perf_counter()
            problems = await undo_leftovers("bench", conn, janitor, baseline, committed=False)
            t1 = time.perf_counter()
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.fetchrow(counts)
            t2 = time.perf_counter()
        if problems:  # a check that finds something after a rolled-back test is wrong
            raise AssertionError(f"the after-test check found {problems}")
        if i >= WARMUP:
            checks.append(t1 - t0)
            counts_only.append(t2 - t1)
    ms = 1000.0
    return CheckResult(statistics.median(checks) * ms, statistics.median(counts_only) * ms, TESTS)


async def measure_isolation(config: HarnessConfig) -> tuple[list[MethodResult], CheckResult]:
    """Every strategy, in one stamped, migrated schema (and, for templates, scratch databases).

    Not the harness's sandbox: the commit-mode strategy needs the schema's janitor itself.
    """
    project, url = config.project, config.database_url
    names = RunNames(project, config.run_id, "bench")
    admin = create_test_engine(url, None, poolclass=NullPool)
    results: list[MethodResult] = []
    try:
        async with SchemaJanitor(admin, names) as janitor:
            engine = create_test_engine(url, names.schema)
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(lambda sync: migrate(project, sync))
                methods: list[tuple[str, SessionFactory]] = [
                    ("savepoint", lambda: savepoint_session(engine)),
                    ("commit_mode", lambda: committing_session(engine, janitor, TABLES)),
                    ("truncate", truncating(engine, names.schema)),
                ]
                for name, factory in methods:
                    results.append(await run_method(name, factory))
                check = await measure_after_test_check(engine, janitor)
                async with engine.begin() as conn:  # drop_create starts from an empty schema
                    await conn.run_sync(Base.metadata.drop_all)
                results.append(await run_method("drop_create", dropping_and_creating(engine)))
            finally:
                await engine.dispose()
        cloner = TemplateCloner(project, url, config.run_id)
        try:
            await cloner.create_template()
            results.append(await run_method("template_clone", cloner.open_session))
        finally:
            cloner.drop_template()
    finally:
        await admin.dispose()
    return results, check


def print_results(measured: tuple[list[MethodResult], CheckResult]) -> None:
    results, check = measured
    print(
        f"after-test check: {check.check_ms:.3f} ms (row counts only: "
        f"{check.counts_only_ms:.3f} ms), median of {check.tests}"
    )
    print(f"| isolation (median of {TESTS} tests) | overhead ms | setup | teardown | body ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r.name} | {r.overhead_ms:.2f} | {r.setup_ms:.2f} | {r.teardown_ms:.2f} "
            f"| {r.body_ms:.2f} |"
        )


def main() -> tuple[list[MethodResult], CheckResult]:
    """Against the configured PostgreSQL, or an embedded one started (and stopped) here."""
    # PostgreSQL is all this bench needs: no S3 endpoint is asked for, none is started.
    project = replace(load_project(find_pyproject(ROOT)), services=frozenset({"postgres"}))
    env = dict(os.environ)
    env |= find_services(project, env)
    if contract.resolve_database(project, env).url is not None:
        return asyncio.run(measure_isolation(resolve_config(project, env)))
    from realstack import embedded_services

    with embedded_services(embedded_settings(project, env), report=None) as running:
        return asyncio.run(measure_isolation(resolve_config(project, running.env)))


if __name__ == "__main__":
    print_results(main())
