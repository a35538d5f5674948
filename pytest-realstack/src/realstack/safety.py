"""One look at the target server before any test runs: may the role create databases (then
each run gets its own) or at least schemas (then a schema per run), and does a database you
named yourself hold tables the harness did not create?

URLs built from the variables of tox-docker's containers (as the harness's tox hook marked them)
or of the harness's own services point at throwaway servers; a TEST_DATABASE_URL, or POSTGRES_*
variables from anywhere else (a docker-compose .env), may point at someone's real database, so
it is inspected (guard.database_provenance decides which is which).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import asyncpg

from .config import HarnessConfig
from .contract import (
    POSTGRES_DB,
    POSTGRES_HOST,
    POSTGRES_PASSWORD,
    POSTGRES_PORT,
    POSTGRES_USER,
    TEST_ALLOW_USER_TABLES,
    TEST_DATABASE_URL,
    TEST_TOX_DOCKER_SERVICES,
)
from .guard import HOW_TO_START, DatabaseOrigin, GuardError, mask_url
from .project import Project
from .stamps import Stamp

CONNECT_TIMEOUT_S = 10.0
SHOWN_TABLES = 5

_TABLES = """
SELECT n.nspname, c.relname, obj_description(n.oid, 'pg_namespace')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""
_PRIVILEGES = """
SELECT current_user, current_database(),
       (SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user),
       has_database_privilege(current_database(), 'CREATE')
"""


@dataclass(frozen=True)
class ServerFacts:
    role: str
    database: str
    can_create_databases: bool
    can_create_schemas: bool
    user_tables: list[str]


async def inspect_server(project: Project, url: str) -> ServerFacts:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        row = await conn.fetchrow(_PRIVILEGES)
        assert row is not None  # one row, always
        role, database, createdb, create = row
        rows = await conn.fetch(_TABLES)
    finally:
        await conn.close()
    tables = [f"{s}.{t}" for s, t, comment in rows if not Stamp.from_json(project, comment)]
    return ServerFacts(role, database, bool(createdb), bool(create), tables)


def _unreachable(config: HarnessConfig, error: BaseException) -> GuardError:
    explicit = config.database_origin is DatabaseOrigin.EXPLICIT
    source = TEST_DATABASE_URL.name if explicit else "the test database"
    return GuardError(
        "\n".join(
            [
                f"Integration tests cannot reach {source}.",
                f"  got:  {mask_url(config.database_url)!r}",
                f"  why:  {type(error).__name__}: {error}",
                f"  fix:  start that server, correct the URL, or unset it. {HOW_TO_START}",
            ]
        )
    )


def _postgres_variables(url: str) -> str:
    """The POSTGRES_* values the URL was built from (contract.resolve_database), password
    masked."""
    parts = urlsplit(url)
    values = {
        POSTGRES_HOST.name: parts.hostname or "",
        POSTGRES_PORT.name: str(parts.port or ""),
        POSTGRES_USER.name: unquote(parts.username or ""),
        POSTGRES_DB.name: unquote(parts.path.lstrip("/")),
    }
    shown = [f"{name}={value!r}" for name, value in values.items()]
    return " ".join([*shown[:3], f"{POSTGRES_PASSWORD.name}='***'", shown[3]])


def _user_tables_message(config: HarnessConfig, tables: list[str]) -> str:
    more = " ..." if len(tables) > SHOWN_TABLES else ""
    lines = [
        "Integration tests refuse a database that holds tables they did not create "
        f"({len(tables)}: {', '.join(tables[:SHOWN_TABLES])}{more})."
    ]
    if config.database_origin is DatabaseOrigin.EXPLICIT:
        lines += [
            f"  got:  {TEST_DATABASE_URL.name}={mask_url(config.database_url)!r}",
            "  why:  it looks like a real database; the tests create and drop things beside it.",
            f"  fix:  point {TEST_DATABASE_URL.name} at an empty test database, or unset it. "
            f"{HOW_TO_START}",
        ]
    else:
        lines += [
            f"  got:  {_postgres_variables(config.database_url)}",
            "  why:  they did not come from the harness's own services nor from tox-docker's "
            f"containers ({config.database_origin_detail}); POSTGRES_* set elsewhere (a "
            "docker-compose .env, a shell profile) may name a real database.",
            f"  fix:  unset {POSTGRES_HOST.name} and {POSTGRES_PORT.name}, or point them at an "
            f"empty test database. {HOW_TO_START}",
            "        With tox-docker, run the tests through tox: the harness's tox hook "
            f"(toxfile.py) marks its containers in {TEST_TOX_DOCKER_SERVICES.name}.",
        ]
    lines.append(
        f"        If you are sure, set {TEST_ALLOW_USER_TABLES.name}=1 "
        "(the tests still touch only what they stamped)."
    )
    return "\n".join(lines)


def choose_per_run(config: HarnessConfig, report: list[str]) -> str:
    """ "database" or "schema": what each run (or worker) gets of its own. Raises GuardError
    for a database the tests must not use; appends a note to `report` for the fallback."""
    try:
        facts = asyncio.run(inspect_server(config.project, config.database_url))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise _unreachable(config, error) from None
    shown = mask_url(config.database_url)
    if not (facts.can_create_databases or facts.can_create_schemas):
        raise GuardError(
            "\n".join(
                [
                    f"Integration tests need a role that may create databases or schemas; "
                    f"{facts.role!r} may create neither in {facts.database!r}.",
                    f"  got:  {shown!r}",
                    f"  fix:  ALTER ROLE {facts.role} CREATEDB; or GRANT CREATE ON DATABASE "
                    f"{facts.database} TO {facts.role}; or unset the URL. {HOW_TO_START}",
                ]
            )
        )
    if config.database_origin.inspected and facts.user_tables and not config.allow_user_tables:
        raise GuardError(_user_tables_message(config, facts.user_tables))
    if facts.can_create_databases:
        return "database"
    report.append(
        f"harness: role {facts.role!r} may not create databases, so each run gets a schema in "
        f"{facts.database!r} instead (ALTER ROLE {facts.role} CREATEDB gives each its own "
        "database, and full URLs for second connections)"
    )
    return "schema"
