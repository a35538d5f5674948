"""The one table of variables the integration tests read, who sets them, and how they become URLs.

tox-docker, the embedded launcher and a user all produce these same variables;
nothing else in the harness reads the environment for service locations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote


class SetBy(StrEnum):
    TOX_DOCKER = "tox-docker (expose), or the embedded launcher"
    TOX_SET_ENV = "tox set_env, or the embedded launcher"
    USER = "you (optional override)"
    HARNESS = "the harness itself"


@dataclass(frozen=True)
class Variable:
    name: str
    set_by: SetBy
    meaning: str
    default: str | None = None
    secret: bool = False


# Credentials used by both paths: tox.ini repeats these literals for the
# containers, and tests/unit/test_config_contract.py keeps the two in step.
POSTGRES_USER_DEFAULT = "docstore_test"
POSTGRES_PASSWORD_DEFAULT = "docstore_test_pw"
POSTGRES_DB_DEFAULT = "docstore_test"
S3_ACCESS_KEY_DEFAULT = "docstore-test"
S3_SECRET_KEY_DEFAULT = "docstore-test-secret"
S3_REGION_DEFAULT = "us-east-1"

VARIABLES: tuple[Variable, ...] = (
    Variable("POSTGRES_HOST", SetBy.TOX_DOCKER, "host of the test PostgreSQL"),
    Variable("POSTGRES_PORT", SetBy.TOX_DOCKER, "mapped port of the test PostgreSQL"),
    Variable("MINIO_HOST", SetBy.TOX_DOCKER, "host of the test S3 server"),
    Variable("MINIO_PORT", SetBy.TOX_DOCKER, "mapped port of the test S3 server"),
    Variable("POSTGRES_USER", SetBy.TOX_SET_ENV, "test-only database user", POSTGRES_USER_DEFAULT),
    Variable(
        "POSTGRES_PASSWORD",
        SetBy.TOX_SET_ENV,
        "password of that user",
        POSTGRES_PASSWORD_DEFAULT,
        secret=True,
    ),
    Variable("POSTGRES_DB", SetBy.TOX_SET_ENV, "test-only database", POSTGRES_DB_DEFAULT),
    Variable("MINIO_ROOT_USER", SetBy.TOX_SET_ENV, "S3 access key", S3_ACCESS_KEY_DEFAULT),
    Variable(
        "MINIO_ROOT_PASSWORD",
        SetBy.TOX_SET_ENV,
        "S3 secret key",
        S3_SECRET_KEY_DEFAULT,
        secret=True,
    ),
    Variable("S3_REGION", SetBy.TOX_SET_ENV, "S3 region name", S3_REGION_DEFAULT),
    Variable(
        "TEST_DATABASE_URL",
        SetBy.USER,
        "full postgresql+asyncpg:// URL; wins over the POSTGRES_* variables",
        secret=True,
    ),
    Variable(
        "TEST_S3_ENDPOINT_URL",
        SetBy.USER,
        "full S3 endpoint URL; wins over MINIO_HOST/MINIO_PORT",
    ),
    Variable("TEST_S3_ACCESS_KEY", SetBy.USER, "S3 access key; wins over MINIO_ROOT_USER"),
    Variable(
        "TEST_S3_SECRET_KEY",
        SetBy.USER,
        "S3 secret key; wins over MINIO_ROOT_PASSWORD",
        secret=True,
    ),
    Variable(
        "TEST_EMBEDDED_SERVICES",
        SetBy.USER,
        "1: a plain `pytest tests/integration` starts the embedded services itself",
    ),
    Variable(
        "TEST_KEEP_ON_FAILURE",
        SetBy.USER,
        "1: after a failing run, keep the services, schema and bucket, and print how to connect",
    ),
    Variable(
        "TEST_ALLOWED_HOSTS",
        SetBy.USER,
        "comma-separated non-loopback hosts an explicit TEST_DATABASE_URL/TEST_S3_ENDPOINT_URL "
        "may name (CI service containers)",
    ),
    Variable(
        "TEST_ALLOW_USER_TABLES",
        SetBy.USER,
        "1: accept a TEST_DATABASE_URL whose database holds tables the harness did not create",
    ),
    Variable("PG_BINDIR", SetBy.USER, "embedded path: use these PostgreSQL binaries instead"),
    Variable(
        "TEST_SERVICES_TIMEOUT",
        SetBy.USER,
        "embedded path: seconds each service may take to become ready",
        "30",
    ),
    Variable(
        "TEST_HARNESS_CACHE_DIR",
        SetBy.USER,
        "embedded path: where the initdb template (and, as root, a binaries copy) is cached",
        "/var/tmp/docstore-harness-cache-<uid>",
    ),
    Variable(
        "TEST_HARNESS_RUN_BASE",
        SetBy.USER,
        "embedded path: where each run's data, sockets and logs live (removed after the run)",
        "/dev/shm/docstore-harness-<uid>",
    ),
    Variable(
        "DOCSTORE_TEST_RUN_ID",
        SetBy.HARNESS,
        "names this run's schema and bucket; shared by xdist workers",
    ),
    Variable(
        "DOCSTORE_SERVICES_READY_FILE",
        SetBy.HARNESS,
        "embedded path: created by the launcher once the services answer; pytest waits for it",
    ),
)

RUN_ID_VARIABLE = "DOCSTORE_TEST_RUN_ID"

BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}

# Variables that the Docker path sets through tox-docker's `expose`/`host_var`.
SERVICE_VARIABLES = ("POSTGRES_HOST", "POSTGRES_PORT", "MINIO_HOST", "MINIO_PORT")


def value_of(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value in `env` (blank counts as unset), else its default from the table."""
    value = env.get(name, "").strip()
    if value:
        return value
    return BY_NAME[name].default


@dataclass(frozen=True)
class DatabaseTarget:
    url: str | None
    source: str  # which variable(s) the URL came from, for messages


@dataclass(frozen=True)
class S3Target:
    endpoint_url: str | None
    access_key: str
    secret_key: str
    region: str
    source: str


def resolve_database_url(env: Mapping[str, str] | None = None) -> DatabaseTarget:
    """TEST_DATABASE_URL wins; else POSTGRES_HOST/PORT/USER/PASSWORD/DB. Never DATABASE_URL."""
    env = os.environ if env is None else env
    explicit = env.get("TEST_DATABASE_URL")
    if explicit is not None:
        return DatabaseTarget(explicit, "TEST_DATABASE_URL")
    host, port = env.get("POSTGRES_HOST", "").strip(), env.get("POSTGRES_PORT", "").strip()
    if not (host and port):
        return DatabaseTarget(None, "nothing")
    user = quote(value_of(env, "POSTGRES_USER") or "", safe="")
    password = quote(value_of(env, "POSTGRES_PASSWORD") or "", safe="")
    db = quote(value_of(env, "POSTGRES_DB") or "", safe="")
    url = f"postgresql+asyncpg://{user}:{password}@{host}:{port}/{db}"
    return DatabaseTarget(url, "POSTGRES_HOST/POSTGRES_PORT")


def resolve_s3(env: Mapping[str, str] | None = None) -> S3Target:
    """TEST_S3_ENDPOINT_URL wins; else MINIO_HOST/MINIO_PORT."""
    env = os.environ if env is None else env
    access = value_of(env, "TEST_S3_ACCESS_KEY") or value_of(env, "MINIO_ROOT_USER") or ""
    secret = value_of(env, "TEST_S3_SECRET_KEY") or value_of(env, "MINIO_ROOT_PASSWORD") or ""
    region = value_of(env, "S3_REGION") or S3_REGION_DEFAULT
    explicit = env.get("TEST_S3_ENDPOINT_URL", "").strip()
    if explicit:
        return S3Target(explicit, access, secret, region, "TEST_S3_ENDPOINT_URL")
    host, port = env.get("MINIO_HOST", "").strip(), env.get("MINIO_PORT", "").strip()
    if not (host and port):
        return S3Target(None, access, secret, region, "nothing")
    return S3Target(f"http://{host}:{port}", access, secret, region, "MINIO_HOST/MINIO_PORT")


def service_environment(
    database_url: str,
    s3: S3Target,
    *,
    bucket: str,
    tokens: Mapping[str, str],
    schema: str | None = None,
    max_upload_bytes: int | None = None,
) -> dict[str, str]:
    """The service's own variables (api/config.py) pointed at these test services.

    How `make dev`, bench/load.py and bench/bench_upload.py run the real uvicorn.
    """
    env = {
        "DATABASE_URL": database_url,
        "S3_REGION": s3.region,
        "S3_ACCESS_KEY": s3.access_key,
        "S3_SECRET_KEY": s3.secret_key,
        "S3_BUCKET": bucket,
        "API_TOKENS": json.dumps(dict(tokens)),
    }
    if s3.endpoint_url is not None:
        env["S3_ENDPOINT_URL"] = s3.endpoint_url
    if schema is not None:
        env["DATABASE_SCHEMA"] = schema
    if max_upload_bytes is not None:
        env["MAX_UPLOAD_BYTES"] = str(max_upload_bytes)
    return env
