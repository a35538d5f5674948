"""An outage of the database (503) is told from what it refused on purpose (500), and the log
line carries the driver's cause without SQL text or parameters."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.errors import cause_of, is_database_outage


class _DriverError(Exception):
    """What SQLAlchemy's asyncpg adapter raises: a DBAPI error carrying a SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def dbapi_error(sqlstate: str, message: str = "boom") -> DBAPIError:
    return DBAPIError(
        "SELECT secret FROM t WHERE x = $1", {"x": "param"}, _DriverError(message, sqlstate)
    )


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        PoolTimeoutError("QueuePool limit reached"),
        dbapi_error("57014", "canceling statement due to statement timeout"),
        dbapi_error("57P01", "terminating connection due to administrator command"),
        dbapi_error("53300", "too many connections"),
        dbapi_error("08006", "connection failure"),
    ],
    ids=lambda e: type(e).__name__ + getattr(getattr(e, "orig", None), "sqlstate", ""),
)
def test_an_outage_is_a_503(error: BaseException) -> None:
    assert is_database_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        dbapi_error("22012", "division by zero"),
        dbapi_error("42703", 'column "x" does not exist'),
        dbapi_error("22021", "invalid byte sequence for encoding UTF8: 0x00"),
        ProgrammingError("SELECT", {}, Exception("syntax error")),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__ + getattr(getattr(e, "orig", None), "sqlstate", ""),
)
def test_what_the_database_refused_is_not_an_outage(error: BaseException) -> None:
    assert not is_database_outage(error)


def test_the_cause_is_one_line_without_sql_or_parameters() -> None:
    line = cause_of(dbapi_error("22012", "division by zero\nDETAIL: more"))

    assert line == "_DriverError: division by zero"
    assert "SELECT" not in line and "param" not in line


def test_the_cause_names_the_drivers_own_error_under_the_adapters() -> None:
    adapter = Exception("wrapped")
    adapter.__cause__ = asyncpg.exceptions.DivisionByZeroError("division by zero")

    assert cause_of(DBAPIError("SELECT 1", {}, adapter)) == "DivisionByZeroError: division by zero"


def test_a_cause_without_a_message_is_its_class() -> None:
    assert cause_of(TimeoutError()) == "TimeoutError"
