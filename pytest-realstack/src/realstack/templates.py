"""A migrated template database per fingerprint of the schema's source, built once per server
under an advisory lock (concurrent runs and xdist workers wait for one builder); each run then
clones it with CREATE DATABASE ... TEMPLATE instead of replaying the migrations.

The fingerprint covers the migration scripts and the Alembic config, the models' DDL (so the
drift check reruns when a model changes), the PostgreSQL major version and TEMPLATE_FORMAT.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from .engines import autocommit_engine, create_test_engine, database_url
from .janitor import comment_on_database, drop_database, quote
from .migrations import alembic_config, prepare
from .project import Project
from .stamps import Stamp

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
        stamp = Stamp.from_json(project, comment)
        if stamp is None or not stamp.template:
            continue
        if is_template:
            complete.append((stamp.created_at, name))
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
                await drop_database(conn, name)
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
                    await drop_database(conn, name)
                await _build(conn, server_url, project, metadata, name, fp)
            finally:
                await _unlock(conn, name)
            await sweep_stale_templates(conn, project, name)
            return name
    finally:
        await admin.dispose()
