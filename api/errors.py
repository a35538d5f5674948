"""Telling a database outage (503: retry later) from a bug of ours (500), and the one-line
cause the logs carry."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# SQLSTATE classes and codes that mean "the database cannot serve now", not "our SQL is wrong":
# connection exceptions, insufficient resources, operator intervention (a cancelled statement,
# our statement_timeout among them, or a shutdown).
_OUTAGE_SQLSTATE_PREFIXES = ("08", "53", "57")


def cause_of(exc: BaseException) -> str:
    """One line: the driver's own exception and its message's first line, without the SQL
    text or its parameters (SQLAlchemy's message carries both)."""
    cause: BaseException = getattr(exc, "orig", None) or exc
    if cause.__cause__ is not None:  # SQLAlchemy's asyncpg adapter wraps asyncpg's error
        cause = cause.__cause__
    first_line = (str(cause).strip().splitlines() or [""])[0][:300]
    return f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__


def is_database_outage(exc: BaseException) -> bool:
    """The database cannot serve now (unreachable, a deadline passed, shutting down, out of
    connections); False for what it refused on purpose, which is a bug of ours."""
    if isinstance(exc, OSError | OperationalError | InterfaceError | PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATE_PREFIXES)
    return False
