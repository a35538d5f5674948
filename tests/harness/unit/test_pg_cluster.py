"""The cached cluster's SQL quoting and key, and the version the binaries report."""

from __future__ import annotations

import dataclasses

import pytest
from realstack.embedded.pg_binaries import parse_version
from realstack.embedded.pg_cluster import cluster_key, quote_ident, quote_literal
from realstack.project import Credentials


def test_identifiers_are_double_quoted_with_embedded_quotes_doubled() -> None:
    assert quote_ident('we"ird; DROP') == '"we""ird; DROP"'


def test_literals_are_single_quoted_with_embedded_quotes_doubled() -> None:
    assert quote_literal("it's\\") == "'it''s\\'"


@pytest.mark.parametrize("bad", ["", "a\0b"])
def test_identifiers_that_postgres_cannot_hold_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        quote_ident(bad)


def test_the_version_comes_from_postgres_version_output() -> None:
    assert parse_version("postgres (PostgreSQL) 18.6") == "18.6"


def test_the_cluster_key_changes_with_version_and_password() -> None:
    creds = Credentials("u", "p", "d", "k", "s")
    key = cluster_key("postgres (PostgreSQL) 18.6", creds)

    assert key == cluster_key("postgres (PostgreSQL) 18.6", Credentials("u", "p", "d", "x", "y"))
    assert key != cluster_key("postgres (PostgreSQL) 18.7", creds)
    assert key != cluster_key(
        "postgres (PostgreSQL) 18.6", dataclasses.replace(creds, pg_password="q")
    )
