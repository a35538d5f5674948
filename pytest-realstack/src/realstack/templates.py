"""A migrated template database per fingerprint of the schema's source, built once per server
under an advisory lock (concurrent runs and xdist workers wait for one builder); each run then
clones it with CREATE DATABASE ... TEMPLATE instead of replaying the migrations.

The fingerprint covers the migration scripts and the Alembic config, the files the table's
`template_inputs` names (what the migrations read from elsewhere), the models' DDL (so the drift
check reruns when a model changes), the PostgreSQL major version and TEMPLATE_FORMAT.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from .engines import autocommit_engine, create_test_engine, database_url
from .janitor import (
    StoreJanitor,
    TemplateVanishedError,
    comment_on_database,
    drop_database,
    quote,
    run_store,
)
from .migrations import MigrationError, alembic_config, prepare
from .project import Project, is_bytecode
from .stamps import RunNames, Stamp

TEMPLATE_FORMAT = "1"  # bump when what a template holds, or how it is keyed, changes
BUILD_WAIT_S = 30.0  # how long a run waits for another's build (TEST_SERVICES_TIMEOUT)
LOCK_NOT_AVAILABLE = "55P03"
KEEP_STALE = 2  # templates of other fingerprints kept per project (other branches, say)


def _feed(digest: hashlib._Hash, *parts: str | bytes) -> None:
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)


def fingerprint(project: Project, metadata: MetaData, server_version_num: int) -> str:
    """Raises ProjectConfigError when a `template_inputs` pattern matches no file."""
    digest = hashlib.sha256()
    _feed(digest, TEMPLATE_FORMAT, project.name, str(server_version_num // 10000))
    config = project.alembic_config
    if config.name == "pyproject.toml":
        alembic_table = tomllib.loads(config.read_text()).get("tool", {}).get("alembic", {})
        _feed(digest, json.dumps(alembic_table, sort_keys=True))
    else:
        _feed(digest, config.read_bytes())
    scripts = Path(ScriptDirectory.from_config(alembic_config(project)).dir)
    for path in sorted(scripts.rglob("*")):
        if path.is_file() and not is_bytecode(path):
            _feed(digest, str(path.relative_to(scripts)), path.read_bytes())
    for relative, path in project.template_input_files().items():
        _feed(digest, "input", relative, path.read_bytes())
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    for table in metadata.sorted_tables:
        _feed(digest, str(CreateTable(table).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            _feed(digest, str(CreateIndex(index).compile(dialect=dialect)))
    return digest.hexdigest()[:16]


def template_prefix(project: Project) -> str:
    return f"tmpl_{project.slug}_"


async def _lock(conn: AsyncConnection, name: str) -> None:
    await conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"), {"n": name})


async def _unlock(conn: AsyncConnection, name: str) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:n, 0))"), {"n": name})


async def _build(
    conn: AsyncConnection, server_url: str, project: Project, metadata: MetaData, name: str, fp: str
) -> None:
    quoted = quote(conn, name)
    await conn.execute(text(f"CREATE DATABASE {quoted}"))
    await comment_on_database(conn, name, Stamp.for_template(project, fp).to_json())
    engine = create_test_engine(database_url(server_url, name), None, poolclass=NullPool)
    try:
        async with engine.begin() as migrating:
            await migrating.run_sync(lambda sync: prepare(sync, project, metadata))
    except BaseException:
        await engine.dispose()
        await drop_database(conn, name)
        raise
    await engine.dispose()
    # A template nobody connects to: CREATE DATABASE ... TEMPLATE needs it idle.
    await conn.execute(
        text(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
    )


async def _stamped_templates(
    conn: AsyncConnection, project: Project
) -> list[tuple[str, bool, Stamp]]:
    """This project's migrated templates on the server, complete or half-built (name, whether
    complete, stamp): only databases whose stamp says this project's harness built them."""
    rows = (
        await conn.execute(
            text(
                "SELECT datname, datistemplate, shobj_description(oid, 'pg_database') "
                "FROM pg_database WHERE starts_with(datname, :prefix) ORDER BY datname"
            ),
            {"prefix": template_prefix(project)},
        )
    ).all()
    found = []
    for name, is_template, comment in rows:
        stamp = Stamp.from_json(project, comment)
        if stamp is not None and stamp.template:
            found.append((name, bool(is_template), stamp))
    return found


async def sweep_stale_templates(conn: AsyncConnection, project: Project, current: str) -> list[str]:
    """Drop this project's templates of other fingerprints beyond the newest KEEP_STALE, and
    half-built ones whose builder is gone (nobody holds their advisory lock)."""
    complete, half_built = [], []
    for name, is_template, stamp in await _stamped_templates(conn, project):
        if name == current:
            continue
        if is_template:
            complete.append((stamp.created_at, name))
        else:
            half_built.append(name)
    stale = [name for _, name in sorted(complete, reverse=True)[KEEP_STALE:]]
    dropped = []
    for name in stale + half_built:
        # Exclusive: not while another run builds, sweeps or clones it (a clone holds the lock
        # shared, janitor.DatabaseJanitor._clone). A concurrent sweep may drop it first: then
        # this one skips it; housekeeping never fails a run.
        got = await conn.scalar(
            text("SELECT pg_try_advisory_lock(hashtextextended(:n, 0))"), {"n": name}
        )
        if got:
            try:
                with contextlib.suppress(DBAPIError):
                    await drop_database(conn, name)
                    dropped.append(name)
            finally:
                await _unlock(conn, name)
    return dropped


async def _build_lock_holder(conn: AsyncConnection, project: Project, name: str) -> str:
    """Who holds a template's build lock: the builder's stamp on the half-built template if it
    has written one, else the server backend that holds the lock."""
    stamp = Stamp.from_json(
        project,
        await conn.scalar(
            text(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"
            ),
            {"n": name},
        ),
    )
    if stamp is not None:
        return f"pid {stamp.pid} on host {stamp.host}, building since {stamp.created_at}"
    row = (
        await conn.execute(
            text(
                "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.mode = 'ExclusiveLock' "
                "AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(:n, 0)"
            ),
            {"n": name},
        )
    ).first()
    if row is None:
        return "a session that has let it go since"
    return f"server backend {row[0]} (client {row[1] or 'local'}, connected since {row[2]})"


async def _take_build_lock(
    conn: AsyncConnection, project: Project, name: str, wait_s: float
) -> None:
    await conn.execute(text(f"SET lock_timeout = '{int(wait_s * 1000)}ms'"))
    try:
        await _lock(conn, name)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        holder = await _build_lock_holder(conn, project, name)
        raise MigrationError(
            f"waited {wait_s:g} s for another run's build of the migrated template {name} "
            f"(its advisory lock, hashtextextended('{name}', 0)), held by {holder}.\n"
            f"  fix:  let that run finish, or stop it (a killed builder's half-built template "
            f"is dropped by the next run); raise TEST_SERVICES_TIMEOUT if builds are just slow"
        ) from None
    finally:
        await conn.execute(text("RESET lock_timeout"))


async def ensure_template(
    server_url: str, project: Project, metadata: MetaData, *, wait_s: float = BUILD_WAIT_S
) -> str:
    """The name of the migrated (and drift-checked) template for the current source, built now
    if this server has none; raises MigrationError (DriftError) when the build fails, or when
    another run's build holds it longer than `wait_s`."""
    admin = autocommit_engine(server_url)
    try:
        async with admin.connect() as conn:
            version = int(await conn.scalar(text("SHOW server_version_num")) or 0)
            fp = fingerprint(project, metadata, version)
            name = template_prefix(project) + fp
            await _take_build_lock(conn, project, name, wait_s)
            try:
                ready = await conn.scalar(
                    text("SELECT datistemplate FROM pg_database WHERE datname = :n"), {"n": name}
                )
                if ready:
                    return name
                if ready is not None:  # a build that died half-way
                    await drop_database(conn, name)
                await _build(conn, server_url, project, metadata, name, fp)
            finally:
                await _unlock(conn, name)
            with contextlib.suppress(DBAPIError):  # housekeeping: never fails the run
                await sweep_stale_templates(conn, project, name)
            return name
    finally:
        await admin.dispose()


async def drop_project_templates(
    server_url: str, project: Project, *, wait_s: float = BUILD_WAIT_S
) -> list[str]:
    """Drop every migrated template of this project on the server, of any fingerprint, so the
    next ensure_template builds afresh (TEST_REBUILD_TEMPLATE): only databases its stamp marks,
    each under its build lock, so a build or clone under way ends first (waited for at most
    `wait_s`, then MigrationError names the holder). The names dropped, in order."""
    admin = autocommit_engine(server_url)
    dropped = []
    try:
        async with admin.connect() as conn:
            for name, _, _ in await _stamped_templates(conn, project):
                await _take_build_lock(conn, project, name, wait_s)
                try:
                    # Looked up again under the lock: a concurrent sweep may have dropped it.
                    if name in {found for found, _, _ in await _stamped_templates(conn, project)}:
                        await drop_database(conn, name)
                        dropped.append(name)
                finally:
                    await _unlock(conn, name)
    finally:
        await admin.dispose()
    return dropped


# How often a run builds the template again when a concurrent run's sweep dropped it between
# the build and the clone (it holds the template's shared lock from then on).
CLONE_ATTEMPTS = 3


@asynccontextmanager
async def run_database(
    server_url: str,
    project: Project,
    metadata: MetaData,
    names: RunNames,
    *,
    keep: bool = False,
    wait_s: float = BUILD_WAIT_S,
) -> AsyncIterator[StoreJanitor]:
    """The run's own database, a clone of the migrated template for the current source (built
    first if the server has none); dropped at exit unless `keep` (or `.keep`)."""
    async with AsyncExitStack() as stack:
        for attempt in range(1, CLONE_ATTEMPTS + 1):
            template = await ensure_template(server_url, project, metadata, wait_s=wait_s)
            try:
                store = await stack.enter_async_context(
                    run_store(server_url, names, "database", keep=keep, template=template)
                )
                break
            except TemplateVanishedError:
                if attempt == CLONE_ATTEMPTS:
                    raise
        yield store
