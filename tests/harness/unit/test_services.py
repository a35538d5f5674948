"""The services layer's table: each kind the project names, in the table's order, with the
variables of its endpoint, its embedded program and its fixtures' module."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from realstack.project import KNOWN_SERVICES
from realstack.services import kind, kinds_of

from tests.harness.helpers import write_project


def test_every_known_service_has_a_module_whose_kind_bears_its_name() -> None:
    for name in KNOWN_SERVICES:
        found = kind(name)
        assert found.name == name
        assert importlib.util.find_spec(found.fixtures) is not None


def test_a_project_gets_its_services_postgres_first(tmp_path: Path) -> None:
    both = write_project(tmp_path / "both", ("s3", "postgres"))
    postgres_only = write_project(tmp_path / "pg", ("postgres",))

    assert [k.name for k in kinds_of(both)] == ["postgres", "s3"]
    assert [k.name for k in kinds_of(postgres_only)] == ["postgres"]


def test_each_kind_names_the_variables_tox_docker_gives_its_endpoint() -> None:
    assert (kind("postgres").host.name, kind("postgres").port.name) == (
        "POSTGRES_HOST",
        "POSTGRES_PORT",
    )
    assert (kind("s3").host.name, kind("s3").port.name) == ("MINIO_HOST", "MINIO_PORT")


def test_an_unknown_service_is_named_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown service 'redis'; known: postgres, s3"):
        kind("redis")


@pytest.mark.parametrize("name", KNOWN_SERVICES)
async def test_a_kind_sweeps_nothing_where_no_endpoint_is_named(tmp_path: Path, name: str) -> None:
    project = write_project(tmp_path / "sample")

    assert kind(name).where(project, {}) == ""
    assert await kind(name).sweep_dead(project, {}, False) == []
