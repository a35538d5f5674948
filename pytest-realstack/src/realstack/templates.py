"""A migrated template database per fingerprint of the schema's source, built once per server
under an advisory lock (concurrent runs and xdist workers wait for one builder); each run then
clones it with CREATE DATABASE ... TEMPLATE instead of replaying the migrations.

The fingerprint covers the migration scripts and the Alembic config, the models' DDL (so the
drift check reruns when a model changes), the PostgreSQL major version and TEMPLATE_FORMAT.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import tomllib
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from .isolation import create_test_engine
from .janitor import autocommit_engine, comment_on_database, database_url
from .migrations import alembic_config, prepare
from .project import Project

TEMPLATE_FORMAT = "1"  # bump when what a template holds, or how it is keyed, changes
BUILD_LOCK_TIMEOUT = "600s"  # how long a run waits for another's build before it gives up
KEEP_STALE = 2  # templates of other fingerprints kept per project (other branches, say)


def _feed(digest: hashlib._Hash, *parts: str | bytes) -> None:
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)


def fingerprint(project: Project, metadata: MetaData, server_version_num: int) -> str:
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
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            _feed(digest, str(path.relative_to(scripts)), path.read_bytes())
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    for table in metadata.sorted_tables:
        _feed(digest, str(CreateTable(table).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            _feed(digest, str(CreateIndex(index).compile(dialect=dialect)))
    return digest.hexdigest()[:16]


def template_prefix(project: Project) -> str:
    return f"tmpl_{project.slug}_"


def _quote(conn: AsyncConnection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


async def _lock(conn: AsyncConnection, name: str) -> None:
    await conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"), {"n": name})


async def _unlock(conn: AsyncConnection, name: str) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:n, 0))"), {"n": name})


async def _drop(conn: AsyncConnection, name: str) -> None:
    quoted = _quote(conn, name)
    await conn.execute(text(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE false"))
    await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))


async def _stamp(conn: AsyncConnection, project: Project, name: str, fp: str) -> None:
    stamp = json.dumps(
        {
            "created_by": project.stamp_mark,
            "template": fp,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        sort_keys=True,
    )
    await comment_on_database(conn, name, stamp)


async def _build(
    conn: AsyncConnection, server_url: str, project: Project, metadata: MetaData, name: str, fp: str
) -> None:
    quoted = _quote(conn, name)
    await conn.execute(text(f"CREATE DATABASE {quoted}"))
    await _stamp(conn, project, name, fp)
    engine = create_test_engine(database_url(server_url, name), None, poolclass=NullPool)
    try:
        async with engine.begin() as migrating:
            await migrating.run_sync(lambda sync: prepare(sync, project, metadata))
    except BaseException:
        await engine.dispose()
        await _drop(conn, name)
        raise
    await engine.dispose()
    # A template nobody connects to: CREATE DATABASE ... TEMPLATE needs it idle.
    await conn.execute(
        text(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
    )


async def sweep_stale_templates(conn: AsyncConnection, project: Project, current: str) -> list[str]:
    """Drop this project's templates of other fingerprints beyond the newest KEEP_STALE, and
    half-built ones whose builder is gone (nobody holds their advisory lock)."""
    rows = (
        await conn.execute(
            text(
                "SELECT datname, datistemplate, shobj_description(oid, 'pg_database') "
                "FROM pg_database WHERE starts_with(datname, :prefix) AND datname <> :current"
            ),
            {"prefix": template_prefix(project), "current": current},
        )
    ).all()
    complete, half_built = [], []
    for name, is_template, comment in rows:
        try:
            stamp = json.loads(comment or "")
        except ValueError:
            continue
        if isinstance(stamp, dict) and stamp.get("created_by") == project.stamp_mark:
            if is_template:
                complete.append((str(stamp.get("created_at", "")), name))
            else:
                half_built.append(name)
    stale = [name for _, name in sorted(complete, reverse=True)[KEEP_STALE:]]
    dropped = []
    for name in stale + half_built:
        got = await conn.scalar(
            text("SELECT pg_try_advisory_lock(hashtextextended(:n, 0))"), {"n": name}
        )
        if got:  # else someone is building or sweeping it right now
            try:
                await _drop(conn, name)
                dropped.append(name)
            finally:
                await _unlock(conn, name)
    return dropped


async def ensure_template(server_url: str, project: Project, metadata: MetaData) -> str:
    """The name of the migrated (and drift-checked) template for the current source, built now
    if this server has none; raises MigrationError (DriftError) when the build fails."""
    admin = autocommit_engine(server_url)
    try:
        async with admin.connect() as conn:
            version = int(await conn.scalar(text("SHOW server_version_num")) or 0)
            fp = fingerprint(project, metadata, version)
            name = template_prefix(project) + fp
            await conn.execute(text(f"SET lock_timeout = '{BUILD_LOCK_TIMEOUT}'"))
            await _lock(conn, name)
            try:
                ready = await conn.scalar(
                    text("SELECT datistemplate FROM pg_database WHERE datname = :n"), {"n": name}
                )
                if ready:
                    return name
                if ready is not None:  # a build that died half-way
                    await _drop(conn, name)
                await _build(conn, server_url, project, metadata, name, fp)
            finally:
                await _unlock(conn, name)
            await sweep_stale_templates(conn, project, name)
            return name
    finally:
        await admin.dispose()
