"""Config contract: tox.ini's containers, the variable table and the docs agree.

CI here cannot start containers, so these tests keep the Docker path correct by
construction: pinned images, health checks, and one set of variable names.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from tests.harness import contract

ROOT = Path(__file__).resolve().parents[2]
DOCKER_SECTIONS = ("docker:postgres", "docker:minio")


def _tox_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return parser


def _resolve(value: str, ini: configparser.ConfigParser) -> str:
    """Expand tox's {[section]key} references, as tox would."""
    return re.sub(r"\{\[([^\]]+)\](\w+)\}", lambda m: ini[m.group(1)][m.group(2)], value)


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _kv(value: str, ini: configparser.ConfigParser) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in _lines(_resolve(value, ini)) if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def test_integration_env_lists_one_container_per_line() -> None:
    # tox-docker reads `docker = postgres minio` on one line as ONE section name.
    assert _lines(_tox_ini()["testenv:integration"]["docker"]) == ["postgres", "minio"]


def test_postgres_image_is_pinned_to_the_projects_major_and_overridable() -> None:
    image = _tox_ini()["docker:postgres"]["image"]
    match = re.fullmatch(r"\{env:POSTGRES_IMAGE:([^}]+)\}", image)
    assert match, "the image must be overridable with POSTGRES_IMAGE"
    name, _, tag = match.group(1).partition(":")
    assert name == "postgres"
    assert tag.startswith("18"), "one PostgreSQL major for the project: 18"


def test_minio_image_is_a_pinned_release_built_from_an_overridable_dockerfile() -> None:
    dockerfile = _tox_ini()["docker:minio"]["dockerfile"]
    assert dockerfile.startswith("{env:MINIO_DOCKERFILE:")
    text = (ROOT / "tests/docker/minio.Dockerfile").read_text()
    assert re.search(r"^FROM quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z$", text, re.M)
    assert 'CMD ["server", "/data"' in text
    assert (ROOT / "tests/docker/.dockerignore").read_text().strip() == "*"


@pytest.mark.parametrize("section", DOCKER_SECTIONS)
def test_every_container_has_a_bounded_health_check(section: str) -> None:
    conf = _tox_ini()[section]
    assert conf["healthcheck_cmd"].strip()
    for option in ("healthcheck_interval", "healthcheck_timeout", "healthcheck_retries"):
        assert float(conf[option]) > 0, option


def test_postgres_health_check_goes_over_tcp() -> None:
    assert "-h 127.0.0.1" in _tox_ini()["docker:postgres"]["healthcheck_cmd"]


def test_exposed_variables_are_exactly_the_ones_the_conftest_reads() -> None:
    ini = _tox_ini()
    exported = set()
    for section in DOCKER_SECTIONS:
        exported |= {line.split("=", 1)[0] for line in _lines(ini[section]["expose"])}
        exported.add(ini[section]["host_var"].strip())
    assert exported == set(contract.SERVICE_VARIABLES)


def test_the_service_variables_alone_are_enough_and_each_is_needed() -> None:
    env = {name: "1" for name in contract.SERVICE_VARIABLES}
    assert contract.resolve_database_url(env).url is not None
    assert contract.resolve_s3(env).endpoint_url is not None
    for name in contract.SERVICE_VARIABLES:
        partial = {k: v for k, v in env.items() if k != name}
        resolved = (
            contract.resolve_database_url(partial).url,
            contract.resolve_s3(partial).endpoint_url,
        )
        assert None in resolved, f"{name} is exported but not needed"


def test_credentials_agree_between_containers_tests_and_the_contract() -> None:
    ini = _tox_ini()
    set_env = _kv(ini["test_services"]["set_env"], ini)
    for name, value in set_env.items():
        assert contract.BY_NAME[name].default == value, name
    pg = _kv(ini["docker:postgres"]["environment"], ini)
    assert {k: pg[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")} == {
        k: set_env[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    }
    minio = _kv(ini["docker:minio"]["environment"], ini)
    assert minio == {k: set_env[k] for k in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")}


@pytest.mark.parametrize("env", ["testenv:integration", "testenv:integration-embedded"])
def test_both_integration_envs_give_the_tests_the_same_credentials(env: str) -> None:
    assert "{[test_services]set_env}" in _tox_ini()[env]["set_env"]


def test_set_env_never_substitutes_tox_docker_variables() -> None:
    # set_env is read before the containers start: {env:POSTGRES_PORT} would be empty.
    for section in _tox_ini().values():
        value = section.get("set_env", "")
        for name in contract.SERVICE_VARIABLES:
            assert f"{{env:{name}" not in value


def test_env_example_documents_every_variable() -> None:
    text = (ROOT / ".env.test.example").read_text()
    for variable in contract.VARIABLES:
        assert re.search(rf"^#?\s*{variable.name}=", text, re.M), variable.name


def test_readme_table_lists_every_variable() -> None:
    text = (ROOT / "README.md").read_text()
    for variable in contract.VARIABLES:
        assert f"| `{variable.name}`" in text, variable.name
