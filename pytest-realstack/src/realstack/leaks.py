"""What a test may leave behind that would hang or pollute the rest of the run, found and
undone right after it, and explained in terms of the test and the fix."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from .janitor import RunStore

REAL_COMMITS_FIX = (
    "mark the test @pytest.mark.real_commits (it then commits for real and its tables are "
    "put back as the migrations left them after it), or do the work through db_session / the "
    "app's requests"
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


# Rows of a user table as a count and a sum of xmin: any transaction committed on it since
# changes one or the other (its new rows carry the newest xid; a delete alone changes the
# count), where a count alone misses an UPDATE or an INSERT + DELETE.
def _tables_sql(dialect: Dialect, tables: Sequence[str]) -> list[str]:
    quote = dialect.identifier_preparer.quote_identifier
    return [
        f"SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM {quote(t)}"
        for t in tables
    ]


# The same over the catalogs that DDL writes, limited to user objects (oid >= 16384, which
# the oid indexes serve): a cheap trigger, not the judge. CREATE/ALTER/DROP of tables,
# columns, indexes, constraints, functions, types, views, triggers and schemas all write here.
# ANALYZE and VACUUM update pg_class in place (no new xmin); pg_stat_* counters are not used,
# as another backend's commit can stay invisible there for seconds.
FIRST_USER_OID = 16384
_CATALOGS = {
    "pg_namespace": "oid",
    "pg_class": "oid",
    "pg_attribute": "attrelid",
    "pg_attrdef": "oid",
    "pg_constraint": "oid",
    "pg_index": "indexrelid",
    "pg_proc": "oid",
    "pg_type": "oid",
    "pg_enum": "oid",
    "pg_trigger": "oid",
    "pg_rewrite": "oid",
    "pg_sequence": "seqrelid",
}


# One aggregate over all of them (one scan each, no per-catalog plan): 0.05 ms less than a
# sum per catalog, measured here.
CATALOGS_SQL = (
    "SELECT count(*) || ':' || coalesce(sum(xmin::text::bigint), 0) FROM ("
    + " UNION ALL ".join(
        f"SELECT xmin FROM {catalog} WHERE {key} >= {FIRST_USER_OID}"
        for catalog, key in _CATALOGS.items()
    )
    + ") AS catalogs"
)


# What a later test relies on, described: the judge once the trigger fired. Every object of
# the user's schemas (the run's schema only, in schema mode), with what defines it. Temporary
# tables are a session's own and are left out.
_SCHEMA_FILTER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND n.nspname !~ '^pg_(toast_)?temp_'"
)
_DESCRIBE = """
SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE {where}
UNION ALL
SELECT (CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'i' THEN 'index'
        WHEN 'I' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
        WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' ELSE 'relation' END)
       || ' ' || n.nspname || '.' || c.relname
       || coalesce(': ' || pg_get_indexdef(c.oid), '')
       || CASE WHEN c.relkind IN ('v', 'm') THEN ': ' || md5(pg_get_viewdef(c.oid)) ELSE '' END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {where} AND c.relkind <> 'c' AND c.relkind <> 't'
UNION ALL
SELECT 'column ' || n.nspname || '.' || c.relname || '.' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE {where} AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'constraint ' || n.nspname || '.' || co.conname || ': ' || pg_get_constraintdef(co.oid)
FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE {where}
UNION ALL
SELECT 'function ' || n.nspname || '.' || p.proname
       || '(' || pg_get_function_identity_arguments(p.oid) || '): ' || md5(p.prosrc)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {where}
UNION ALL
SELECT 'trigger ' || n.nspname || '.' || c.relname || '.' || t.tgname
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {where} AND NOT t.tgisinternal
UNION ALL
SELECT 'type ' || n.nspname || '.' || t.typname
       || coalesce(': ' || (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                            FROM pg_enum e WHERE e.enumtypid = t.oid), '')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE {where} AND t.typtype IN ('e', 'd', 'r', 'm')
   OR (t.typtype = 'c' AND {where} AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
"""


# The sequences that were used (RESTART IDENTITY puts them back to their start).
_SEQUENCES = (
    "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
    "WHERE schemaname = current_schema() AND last_value IS NOT NULL"
)


def _describe_sql(schema: str | None) -> str:
    where = _SCHEMA_FILTER if schema is None else "n.nspname = " + _literal(schema)
    return _DESCRIBE.format(where=where)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def describe_schema(driver: Any, schema: str | None) -> frozenset[str]:
    """Every user object of the database (or of `schema`) with what defines it."""
    return frozenset(r[0] for r in await driver.fetch(_describe_sql(schema)))


def schema_diff(before: frozenset[str], after: frozenset[str]) -> list[str]:
    return [f"- {d}" for d in sorted(before - after)] + [f"+ {d}" for d in sorted(after - before)]


def foreign_commits_message(test: str, changed: dict[str, tuple[int, int]]) -> str:
    shown = ", ".join(
        f"{t} ({before} -> {after} rows)" if before != after else f"{t} (rows changed in place)"
        for t, (before, after) in changed.items()
    )
    return (
        f"{test} committed rows through a connection of its own ({shown}). The test's "
        "transaction is rolled back, theirs is not: those rows would leak into later tests, "
        "so the harness put the tables back as the migrations left them.\n"
        f"  fix: {REAL_COMMITS_FIX}.\n"
        "  If the test wrote only through the app's requests, the app committed through a "
        "session of its own: the adapter's session_dependency is then not the dependency the "
        "app's routes get their session from (the tests replace that one only). fix: set "
        "session_dependency in the adapter to the dependency the routes use"
    )


def schema_changed_message(test: str, diff: list[str]) -> str:
    shown = "\n    ".join(diff[:20]) + (
        f"\n    ... and {len(diff) - 20} more" if len(diff) > 20 else ""
    )
    return (
        f"{test} changed the schema through a connection of its own (committed DDL, which the "
        f"test's rollback cannot undo):\n    {shown}\n"
        "  Later tests would run on a changed schema, so the harness stops the run here (the "
        "next run gets a fresh copy).\n"
        "  fix: change the schema in a migration; a test that must run DDL does it through "
        "db_session (rolled back with the test), or on a database of its own"
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
    """What the migrated database holds, for spotting what a test changed behind its
    transaction. Compared after every test in the same round trip as the open-transactions
    check: a signature of each table's rows and one of the catalogs. Kept for when one
    changed: the schema described (to tell DDL from harmless catalog writes) and the rows the
    migrations seeded, with the sequences' values (to put the tables back)."""

    tables: list[str]
    schema: str | None  # the run's schema in schema mode, else None (its own database)
    rows: tuple[str, ...] = ()
    catalogs: str = ""
    described: frozenset[str] = frozenset()
    seeds: dict[str, bytes] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    # Set when a test changed the schema: the run must not go on on it.
    stopped: str | None = None
    rows_sql: list[str] = field(default_factory=list)

    async def take(self, conn: AsyncConnection) -> Baseline:
        """Read all of it (once per run, and after the app's start-up)."""
        self.rows_sql = _tables_sql(conn.dialect, self.tables)
        driver = await _driver(conn)
        await self._sign(driver)
        self.described = await describe_schema(driver, self.schema)
        self.seeds = {}
        for table, signature in zip(self.tables, self.rows, strict=True):
            if not signature.startswith("0/"):
                copied = io.BytesIO()
                await driver.copy_from_table(
                    table, output=copied, format="binary", schema_name=self.schema
                )
                self.seeds[table] = copied.getvalue()
        found = await driver.fetch(_SEQUENCES)
        self.sequences = {r[0]: int(r[1]) for r in found}
        return self

    async def _sign(self, driver: Any) -> None:
        row = await driver.fetchrow(
            "SELECT " + ", ".join(f"({c})" for c in [CATALOGS_SQL, *self.rows_sql])
        )
        self.catalogs, self.rows = row[0], tuple(row[1:])

    async def restore(self, conn: AsyncConnection, store: RunStore) -> None:
        """Put the tables back as the migrations left them: emptied (stamp checked), the
        seeded rows copied back, the sequences set where they were."""
        async with conn.begin():  # in a transaction of its own, for the cleanup's lock timeout
            await store.truncate(conn, self.tables)
            driver = await _driver(conn)
            for table, data in self.seeds.items():  # in the models' order: referenced first
                await driver.copy_to_table(
                    table, source=io.BytesIO(data), format="binary", schema_name=self.schema
                )
            for sequence, value in self.sequences.items():
                await driver.execute("SELECT setval($1::regclass, $2)", sequence, value)
        await self._sign(await _driver(conn))


async def _driver(conn: AsyncConnection) -> Any:
    """The driver's own connection (asyncpg): one round trip, a statement it prepares once,
    and none of SQLAlchemy's per-statement work."""
    return (await conn.get_raw_connection()).driver_connection


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
    the run's own only), spot DDL committed behind the test's back (the run then stops), and
    put the tables back after what it committed (real_commits) or what a second connection
    committed behind its back."""
    own_database = store.schema is None
    columns = [
        _OPEN_TRANSACTIONS if own_database else "'[]'",
        CATALOGS_SQL,
        *([] if committed else baseline.rows_sql),
    ]
    problems: list[str] = []
    driver = await _driver(conn)
    row = await driver.fetchrow("SELECT " + ", ".join(f"({c})" for c in columns))
    open_ones = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    if open_ones:
        problems.append(open_transactions_message(test, await terminate(driver, open_ones)))
    if row[1] != baseline.catalogs:
        # Something wrote the catalogs: DDL, or what changes nothing a test relies on (a
        # TRUNCATE's new file, a temporary table). The description tells which.
        diff = schema_diff(baseline.described, await describe_schema(driver, store.schema))
        if diff:
            baseline.stopped = (
                f"the run stopped: {test} changed the schema through a connection of its own "
                "(its error lists the changes), and later tests would run on the changed schema"
            )
            return [*problems, schema_changed_message(test, diff)]
        baseline.catalogs = row[1]
    if committed:
        await baseline.restore(conn, store)
        return problems
    changed = {
        t: (_count(before), _count(after))
        for t, before, after in zip(baseline.tables, baseline.rows, row[2:], strict=True)
        if before != after
    }
    if changed:
        problems.append(foreign_commits_message(test, changed))
        await baseline.restore(conn, store)
    return problems


def _count(signature: str) -> int:
    return int(signature.split("/", 1)[0])
