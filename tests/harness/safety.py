"""Refuse a user-given database that holds tables the harness did not create.

URLs built from tox-docker's or the embedded launcher's variables point at
throwaway servers and are trusted; an explicit TEST_DATABASE_URL may point at
someone's real database, so it is inspected before any test runs.
"""

from __future__ import annotations

import asyncio

import asyncpg

from .contract import TEST_ALLOW_USER_TABLES
from .guard import GuardError, mask_url
from .project import Project
from .stamps import Stamp

ALLOW_USER_TABLES_VARIABLE = TEST_ALLOW_USER_TABLES.name
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


async def find_user_tables(project: Project, url: str) -> list[str]:
    """Tables (schema.name) outside the schemas the harness stamped."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        rows = await conn.fetch(_TABLES)
    finally:
        await conn.close()
    return [
        f"{schema}.{table}"
        for schema, table, comment in rows
        if not Stamp.from_json(project, comment)
    ]


def check_database_is_for_tests(project: Project, url: str) -> None:
    """Raise GuardError when TEST_DATABASE_URL holds tables the harness did not create."""
    try:
        tables = asyncio.run(find_user_tables(project, url))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise GuardError(
            "\n".join(
                [
                    "Integration tests cannot reach the database in TEST_DATABASE_URL.",
                    f"  got:  TEST_DATABASE_URL={mask_url(url)!r}",
                    f"  why:  {type(error).__name__}: {error}",
                    "  fix:  start that server, correct the URL, or unset it and run "
                    "`make test-integration`.",
                ]
            )
        ) from None
    if not tables:
        return
    shown = ", ".join(tables[:SHOWN_TABLES]) + (" ..." if len(tables) > SHOWN_TABLES else "")
    raise GuardError(
        "\n".join(
            [
                f"Integration tests refuse a database that holds tables they did not create "
                f"({len(tables)}: {shown}).",
                f"  got:  TEST_DATABASE_URL={mask_url(url)!r}",
                "  why:  it looks like a real database; the tests create and drop schemas in it.",
                "  fix:  point TEST_DATABASE_URL at an empty test database, or unset it and run "
                "`make test-integration`.",
                f"        If you are sure, set {ALLOW_USER_TABLES_VARIABLE}=1 "
                "(the tests still touch only their own stamped schema).",
            ]
        )
    )
