"""The table of variables: each owns its parser and its default, a blank value counts as unset,
and the credentials become the variables tox and its containers read."""

from __future__ import annotations

from pathlib import Path

import pytest
from realstack import contract
from realstack.project import Project

from tests.harness.helpers import write_project


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "sample")


def test_a_variable_with_a_default_has_a_value_when_unset_or_blank(project: Project) -> None:
    assert contract.TEST_TIMEOUT.value({}, project) == 60.0
    assert contract.TEST_TIMEOUT.value({"TEST_TIMEOUT": "  "}, project) == 60.0
    assert contract.TEST_TIMEOUT.value({"TEST_TIMEOUT": "5"}, project) == 5.0
    assert str(contract.TEST_HARNESS_CACHE_DIR.value({}, project)).startswith("/var/tmp/sample-")


def test_a_variable_without_a_default_has_no_value(project: Project) -> None:
    assert contract.TEST_DATABASE_URL.get({}, project) is None
    with pytest.raises(TypeError, match="TEST_DATABASE_URL has no default"):
        contract.TEST_DATABASE_URL.value({}, project)


def test_a_malformed_value_names_the_variable_and_hides_a_secret(project: Project) -> None:
    with pytest.raises(contract.ContractError, match="TEST_TIMEOUT='soon' must be a positive"):
        contract.TEST_TIMEOUT.value({"TEST_TIMEOUT": "soon"}, project)


def test_the_credentials_become_the_variables_tox_hands_the_containers(project: Project) -> None:
    creds = project.credentials

    postgres_only = contract.credential_variables(creds, with_s3=False)
    with_s3 = contract.credential_variables(creds, with_s3=True)

    assert postgres_only == {
        "POSTGRES_USER": "sample_test",
        "POSTGRES_PASSWORD": "sample_test_pw",
        "POSTGRES_DB": "sample_test",
    }
    assert with_s3 == postgres_only | {
        "MINIO_ROOT_USER": "sample-test",
        "MINIO_ROOT_PASSWORD": "sample-test-secret",
    }


def test_every_variable_is_in_the_table_once() -> None:
    names = [v.name for v in contract.VARIABLES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("variable", [contract.TEST_TIMEOUT, contract.TEST_SERVICES_TIMEOUT])
@pytest.mark.parametrize("raw", ["0.001", "0.5"])
def test_a_timeout_below_the_minimum_is_refused_by_name(
    project: Project, variable: contract.Variable[float], raw: str
) -> None:
    with pytest.raises(contract.ContractError) as refused:
        variable.value({variable.name: raw}, project)

    assert f"{variable.name}='{raw}' is below the minimum of 1 s" in str(refused.value)
    assert "fix:" in str(refused.value)


def test_the_tox_hooks_mark_reads_back_as_written(project: Project) -> None:
    containers = {
        "postgres-tox-4242": {"POSTGRES_HOST": "172.17.0.1", "POSTGRES_PORT": "32768"},
        "minio-tox-4242": {"MINIO_HOST": "172.17.0.1", "MINIO_PORT": "32770"},
    }
    mark = contract.ToxDockerMark.of(containers)
    env = {"TEST_TOX_DOCKER_SERVICES": str(mark)}

    read = contract.TEST_TOX_DOCKER_SERVICES.get(env, project)

    assert read == mark
    assert str(mark).startswith("postgres-tox-4242 POSTGRES_HOST=172.17.0.1 POSTGRES_PORT=32768;")
    endpoint = {"POSTGRES_HOST": "172.17.0.1", "POSTGRES_PORT": "32768"}
    assert mark.container_with(endpoint) == ("postgres-tox-4242", 4242)
    assert mark.container_with({**endpoint, "POSTGRES_PORT": "5432"}) is None


@pytest.mark.parametrize(
    "raw",
    [
        "yes",
        "postgres POSTGRES_PORT=32768",  # not a tox-docker container name
        "postgres-tox-4242",  # no variable
        "postgres-tox-4242 POSTGRES_PORT",
        " ; ",
    ],
)
def test_a_mark_the_tox_hook_did_not_write_is_refused_by_name(project: Project, raw: str) -> None:
    with pytest.raises(contract.ContractError) as refused:
        contract.TEST_TOX_DOCKER_SERVICES.get({"TEST_TOX_DOCKER_SERVICES": raw}, project)

    assert str(refused.value).startswith("TEST_TOX_DOCKER_SERVICES=")
    assert "postgres-tox-4242 POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=32768" in str(refused.value)
