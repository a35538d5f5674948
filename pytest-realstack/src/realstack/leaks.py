"""What a test may leave behind that would hang or pollute the rest of the run, found and
undone right after it, and explained in terms of the test and the fix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from .janitor import RunStore

REAL_COMMITS_FIX = (
    "mark the test @pytest.mark.real_commits (it then commits for real and its tables are "
    "emptied after it), or do the work through db_session / the app's requests"
)
LOCK_TIMEOUT_SQLSTATE = "55P03"

_OPEN_TRANSACTIONS = (
    "SELECT coalesce(json_agg(json_build_array(pid, state, "
    "left(regexp_replace(query, '\\s+', ' ', 'g'), 120))), '[]') "
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' "
    "AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')"
)


async def terminate(driver: Any, found: list[list[object]]) -> list[str]:
    """Terminate the connections `found` (pid, state, query) through `driver` (an asyncpg
    connection); describe each."""
    for pid, _, _ in found:
        await driver.execute("SELECT pg_terminate_backend($1)", pid)
    return [f"pid {pid}, {state}, last query: {query!r}" for pid, state, query in found]


def open_transactions_message(test: str, found: list[str]) -> str:
    return (
        f"{test} left {len(found)} connection(s) with an open transaction; they would hold "
        "their locks and hang the cleanup, so the harness closed them:\n  "
        + "\n  ".join(found)
        + "\n  fix: close what the test opens (`async with engine.connect()`, or "
        "`await engine.dispose()` at its end), and commit or roll back"
    )


def _counts_sql(dialect: Dialect, tables: Sequence[str]) -> list[str]:
    quote = dialect.identifier_preparer.quote_identifier
    return [f"SELECT count(*) FROM {quote(t)}" for t in tables]


async def table_counts(conn: AsyncConnection, tables: Sequence[str]) -> tuple[int, ...]:
    """The row count of each table, in one round trip."""
    if not tables:
        return ()
    columns = ", ".join(f"({c})" for c in _counts_sql(conn.dialect, tables))
    row = (await conn.execute(text(f"SELECT {columns}"))).one()
    return tuple(int(n) for n in row)


def foreign_commits_message(test: str, changed: dict[str, tuple[int, int]]) -> str:
    shown = ", ".join(f"{t} ({before} -> {after} rows)" for t, (before, after) in changed.items())
    return (
        f"{test} committed rows through a connection of its own ({shown}). The test's "
        "transaction is rolled back, theirs is not: those rows would leak into later tests, "
        "so the harness emptied the tables.\n"
        f"  fix: {REAL_COMMITS_FIX}"
    )


def is_lock_timeout(error: BaseException | None) -> bool:
    """True when a lock wait gave up (lock_timeout), wherever it sits in the chain."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for candidate in (error, getattr(error, "orig", None)):
            if getattr(candidate, "sqlstate", None) == LOCK_TIMEOUT_SQLSTATE:
                return True
        error = error.__cause__ or error.__context__
    return False


def lock_timeout_explanation(lock_timeout: str) -> str:
    return (
        f"A statement waited more than {lock_timeout} for a lock and gave up (lock_timeout). "
        "In the default mode the test's rows are uncommitted inside its own transaction: a "
        "second connection (an engine the test or the app opened itself) cannot see them, and "
        "waits for any row or table the test has written.\n"
        f"  fix: {REAL_COMMITS_FIX}"
    )


@dataclass
class Baseline:
    """The migrated database's row counts (data migrations may seed rows), for spotting
    commits that bypassed the test's transaction."""

    tables: list[str]
    counts: tuple[int, ...]


async def undo_leftovers(
    test: str,
    conn: AsyncConnection,
    store: RunStore,
    baseline: Baseline,
    *,
    committed: bool,
) -> list[str]:
    """After the test, on its own connection (no transaction open on it any more), in one
    round trip when all is well: close the test's other open transactions (on a database of
    the run's own only), then empty what it committed (real_commits) or what a second
    connection committed behind its back."""
    own_database = store.schema is None
    columns = ([_OPEN_TRANSACTIONS] if own_database else ["'[]'"]) + (
        [] if committed else _counts_sql(conn.dialect, baseline.tables)
    )
    problems: list[str] = []
    # The driver's own connection, outside any transaction: one round trip, a statement asyncpg
    # prepares once, and none of SQLAlchemy's per-statement work (a check after every test
    # that used the database is worth keeping cheap).
    driver: Any = (await conn.get_raw_connection()).driver_connection
    row = await driver.fetchrow("SELECT " + ", ".join(f"({c})" for c in columns))
    open_ones = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    if open_ones:
        problems.append(open_transactions_message(test, await terminate(driver, open_ones)))
    tables = baseline.tables
    if not committed:
        changed = {
            t: (before, int(after))
            for t, before, after in zip(tables, baseline.counts, row[1:], strict=True)
            if before != after
        }
        if not changed:
            return problems
        problems.append(foreign_commits_message(test, changed))
        tables = list(changed)
    if tables:  # in a transaction of its own, for the cleanup's lock timeout
        async with conn.begin():
            await store.truncate(conn, tables)
    return problems
