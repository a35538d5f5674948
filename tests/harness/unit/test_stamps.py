"""One stamp type for everything the harness creates: a run's database, schema and bucket, and
a migrated template; what it reads as, what it refuses, and when its owner counts as dead."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from realstack.stamps import JanitorRefusal, RunNames, Stamp

from tests.harness.helpers import dead_pid, write_project


@pytest.fixture
def names(tmp_path: Path) -> RunNames:
    return RunNames(write_project(tmp_path / "sample"), "261207_42", "gw0")


def test_a_runs_stamp_round_trips_through_json_and_tags(names: RunNames) -> None:
    stamp = names.stamp()
    tags = {tag["Key"]: tag["Value"] for tag in stamp.to_tags()}

    assert Stamp.from_json(names.project, stamp.to_json()) == stamp
    assert Stamp.parse(names.project, tags) == stamp
    assert "template" not in json.loads(stamp.to_json())  # a run's stamp reads as it always did


def test_a_templates_stamp_belongs_to_no_run(names: RunNames) -> None:
    stamp = Stamp.for_template(names.project, "abc123")
    read = Stamp.from_json(names.project, stamp.to_json())

    assert read == stamp and read.template == "abc123"
    assert (read.run, read.worker) == ("", "")
    with pytest.raises(JanitorRefusal):
        names.refuse_unless_ours("database 'tmpl_x'", read, stamp.to_json())


@pytest.mark.parametrize(
    "raw", [None, "", "not json", "[1]", '{"created_by": "another-test-harness"}']
)
def test_what_is_not_this_projects_stamp_reads_as_none(names: RunNames, raw: str | None) -> None:
    assert Stamp.from_json(names.project, raw) is None


def test_another_runs_stamp_is_refused_and_ours_is_not(names: RunNames) -> None:
    ours = names.stamp()
    other = replace(ours, run="261207_43")

    names.refuse_unless_ours("schema 's'", ours, ours.to_json())
    with pytest.raises(JanitorRefusal, match="does not carry this run's stamp"):
        names.refuse_unless_ours("schema 's'", other, other.to_json())


def test_only_a_local_dead_owner_counts_as_dead_and_kept_only_when_asked(
    names: RunNames,
) -> None:
    alive = names.stamp()
    dead = replace(alive, pid=dead_pid())
    elsewhere = replace(dead, host=socket.gethostname() + "-other")
    kept = dead.marked_kept()

    assert not alive.owner_is_dead()
    assert dead.owner_is_dead()
    assert not elsewhere.owner_is_dead()
    assert not kept.owner_is_dead() and kept.owner_is_dead(include_kept=True)


def test_the_names_of_a_run_are_sql_and_bucket_safe(names: RunNames) -> None:
    assert names.database == names.schema == "test_261207_42_gw0"
    assert names.bucket == "test-261207-42-gw0"
