"""The cached cluster's SQL quoting and key, the version the binaries report, and the checks
that find a cached cluster unusable, so it is discarded instead of failing every run."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from realstack.embedded.pg_binaries import parse_version
from realstack.embedded.pg_cluster import (
    PG_CONTROL_SIZE,
    TEMPLATES_FILE,
    CachedCluster,
    UnusableClusterError,
    cluster_key,
    discard_cluster,
    major_version,
    quote_ident,
    quote_literal,
)
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


@pytest.mark.parametrize(
    ("version", "major"), [("18.6", "18"), ("18beta1", "18"), ("10.23", "10"), ("9.6.24", "9.6")]
)
def test_the_major_version_is_what_initdb_writes_to_pg_version(version: str, major: str) -> None:
    assert major_version(version) == major


def write_entry(path: Path, templates: str | None = None) -> Path:
    """The files of a cache entry that the checks look at, as initdb and save_cluster leave them."""
    (path / "data" / "global").mkdir(parents=True)
    (path / "data" / "base").mkdir()
    (path / "data" / "PG_VERSION").write_text("18\n")
    (path / "data" / "global" / "pg_control").write_bytes(bytes(PG_CONTROL_SIZE))
    if templates is not None:
        (path / TEMPLATES_FILE).write_text(templates)
    return path


def checked(entry: Path) -> set[str]:
    with CachedCluster(entry) as cluster:
        return cluster.check("18")


def test_an_entry_as_the_harness_wrote_it_is_usable_and_names_its_templates(
    tmp_path: Path,
) -> None:
    entry = write_entry(tmp_path / "pg-cluster-k", "tmpl_sample_a\ntmpl_sample_b\n")

    assert checked(entry) == {"tmpl_sample_a", "tmpl_sample_b"}


def test_an_entry_no_run_saved_templates_into_yet_holds_none(tmp_path: Path) -> None:
    assert checked(write_entry(tmp_path / "pg-cluster-k")) == set()


def _remove_pg_control(data: Path) -> None:
    (data / "global" / "pg_control").unlink()


def _empty_the_data_dir(data: Path) -> None:
    for child in data.iterdir():
        if child.is_dir():
            for grandchild in child.iterdir():
                grandchild.unlink()
            child.rmdir()
        else:
            child.unlink()


def _truncate_pg_control(data: Path) -> None:
    (data / "global" / "pg_control").write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_remove_pg_control, "data/global/pg_control is missing"),
        (_empty_the_data_dir, "its data directory is empty"),
        (lambda data: (data / "PG_VERSION").write_text("17\n"), "data/PG_VERSION says '17'"),
        (lambda data: (data / "PG_VERSION").write_bytes(b"\xff\xfe\n"), "data/PG_VERSION says"),
        (lambda data: (data / "PG_VERSION").unlink(), "data/PG_VERSION is missing"),
        (_truncate_pg_control, f"pg_control is not a file of {PG_CONTROL_SIZE} bytes"),
        (lambda data: data.rename(data.with_name("elsewhere")), "it has no data directory"),
    ],
    ids=[
        "missing-pg_control",
        "empty-data-dir",
        "wrong-PG_VERSION",
        "garbage-PG_VERSION",
        "missing-PG_VERSION",
        "truncated-pg_control",
        "no-data-dir",
    ],
)
def test_a_damaged_data_dir_makes_the_entry_unusable_and_says_why(
    tmp_path: Path, damage: Callable[[Path], object], reason: str
) -> None:
    entry = write_entry(tmp_path / "pg-cluster-k")
    damage(entry / "data")

    with pytest.raises(UnusableClusterError) as unusable:
        checked(entry)

    assert reason in str(unusable.value)
    assert "\n" not in str(unusable.value)


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (lambda p: p.write_bytes(random.Random(19).randbytes(4096)), "is not UTF-8 text"),
        (lambda p: p.write_bytes(b"tmpl_sample_\xff\xfe\n"), "is not UTF-8 text"),
        (lambda p: p.mkdir(), "is not a regular file"),
        (lambda p: p.write_text("tmpl_" + "x" * 100_000 + "\n"), "is longer than 65536 bytes"),
        (lambda p: p.write_text("tmpl_" + "x" * 80 + "\n"), "lists 'tmpl_xxxx"),
        (lambda p: p.write_text("tmpl_sample_a\nDROP TABLE\n"), "lists 'DROP'"),
        # Opening a FIFO to read blocks until a writer comes: it must not be opened so.
        pytest.param(os.mkfifo, "is not a regular file", marks=pytest.mark.timeout(10)),
    ],
    ids=[
        "random-bytes",
        "non-utf8",
        "directory",
        "huge-line",
        "too-long-name",
        "not-a-name",
        "fifo",
    ],
)
def test_a_garbage_templates_list_makes_the_entry_unusable_and_says_why(
    tmp_path: Path, garbage: Callable[[Path], object], reason: str
) -> None:
    entry = write_entry(tmp_path / "pg-cluster-k")
    garbage(entry / TEMPLATES_FILE)

    with pytest.raises(UnusableClusterError) as unusable:
        checked(entry)

    assert str(unusable.value).startswith(f"{TEMPLATES_FILE} ")
    assert reason in str(unusable.value)
    assert "\n" not in str(unusable.value) and len(str(unusable.value)) < 100


def test_discarding_removes_the_whole_entry_and_leaves_no_trace(tmp_path: Path) -> None:
    entry = write_entry(tmp_path / "pg-cluster-k", "tmpl_sample_a\n")
    with CachedCluster(entry) as cluster:
        identity = cluster.identity

    assert discard_cluster(entry, identity) is True
    assert list(tmp_path.iterdir()) == []


def test_an_entry_another_run_put_in_place_meanwhile_is_not_discarded(tmp_path: Path) -> None:
    entry = write_entry(tmp_path / "pg-cluster-k")
    with CachedCluster(entry) as cluster:
        seen = cluster.identity
    entry.rename(tmp_path / "old")
    write_entry(entry)  # another run's good one, under the same name

    assert discard_cluster(entry, seen) is False
    assert checked(entry) == set()


def test_a_copy_reads_the_entry_it_opened_even_after_another_run_replaced_it(
    tmp_path: Path,
) -> None:
    entry = write_entry(tmp_path / "pg-cluster-k")
    (entry / "data" / "base" / "mark").write_text("old")
    with CachedCluster(entry) as cluster:
        entry.rename(tmp_path / "aside")
        write_entry(entry)
        (entry / "data" / "base" / "mark").write_text("new")
        cluster.copy_data(tmp_path / "copy", None)

    assert (tmp_path / "copy" / "base" / "mark").read_text() == "old"  # never a mix of the two


def test_a_copy_of_an_entry_another_run_discarded_meanwhile_fails_with_os_error(
    tmp_path: Path,
) -> None:
    entry = write_entry(tmp_path / "pg-cluster-k")
    with CachedCluster(entry) as cluster:
        discard_cluster(entry)

        with pytest.raises(FileNotFoundError):
            cluster.copy_data(tmp_path / "copy", None)
