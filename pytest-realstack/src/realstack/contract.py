"""The one table of variables the harness reads, who sets them, and how they become URLs.

tox-docker, the embedded launcher and a user all produce these same variables. Each one owns
its parsing and its default, and a blank value counts as unset, for every variable alike.
Standard library only: it runs before collection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import quote

from .project import Credentials, Project

T = TypeVar("T")


class ContractError(Exception):
    """A variable has a value its parser refuses; str() names it, the value and the fix."""


class SetBy(StrEnum):
    TOX_DOCKER = "tox-docker (expose), or the embedded launcher"
    TOX_SET_ENV = "tox set_env, or the embedded launcher"
    USER = "you (optional override)"
    HARNESS = "the harness itself"
    TOX_HOOK = "the harness's tox hook (toxfile.py), once tox-docker's containers are healthy"
    LAUNCHER = "the embedded launcher (never by hand)"


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be 1 or 0 (also true/false, yes/no, on/off)")


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive, finite number of seconds, e.g. 30")
    return value


# Below this a deadline fails working services and tests: their set-up alone takes longer.
MIN_TIMEOUT_S = 1.0


def _timeout(raw: str) -> float:
    value = _seconds(raw)
    if value < MIN_TIMEOUT_S:
        raise ValueError(
            f"is below the minimum of {MIN_TIMEOUT_S:g} s (a start or a test takes longer), e.g. 30"
        )
    return value


def _hosts(raw: str) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())


Default = str | Callable[[Project], str] | None


@dataclass(frozen=True)
class Variable(Generic[T]):
    name: str
    set_by: SetBy
    meaning: str
    parse: Callable[[str], T]
    default: Default = None
    secret: bool = False

    def raw(self, env: Mapping[str, str], project: Project) -> str | None:
        """The value as text: blank counts as unset, then the default applies."""
        value = env.get(self.name, "").strip()
        if value:
            return value
        return self.default(project) if callable(self.default) else self.default

    def get(self, env: Mapping[str, str], project: Project) -> T | None:
        """The parsed value, or the parsed default; None only when neither exists."""
        raw = self.raw(env, project)
        if raw is None:
            return None
        try:
            return self.parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if self.secret else repr(raw)
            raise ContractError(f"{self.name}={shown} {exc}; fix: correct or unset it") from None

    def value(self, env: Mapping[str, str], project: Project) -> T:
        """The parsed value of a variable that has a default: never None."""
        found = self.get(env, project)
        if found is None:
            raise TypeError(f"{self.name} has no default: use get()")
        return found


def _text(
    name: str, set_by: SetBy, meaning: str, default: Default = None, **kw: bool
) -> Variable[str]:
    return Variable(name, set_by, meaning, str, default, **kw)


def _cache_dir(project: Project) -> str:
    import os

    return f"/var/tmp/{project.name}-harness-cache-{os.geteuid()}"


_CONTAINER = re.compile(r"(?P<base>[\w.-]+)-tox-(?P<pid>[0-9]+)")


def tox_container(name: str) -> tuple[str, int] | None:
    """(the [docker:NAME] section's name, the pid of its tox run) of a container tox-docker
    named `<NAME>-tox-<pid>`; None for any other name."""
    match = _CONTAINER.fullmatch(name)
    return (match["base"], int(match["pid"])) if match else None


_ASSIGNMENT = re.compile(r"(?P<name>[A-Z0-9_]+)=(?P<value>\S+)")
MARK_EXAMPLE = "postgres-tox-4242 POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=32768"


@dataclass(frozen=True)
class ToxDockerMark:
    """What the harness's tox hook saw tox-docker start for one tox run: each container's name
    (`<name>-tox-<pid of tox>`, tox-docker's naming rule) and the variables tox-docker set for
    it. As text: `NAME VAR=value VAR=value; NAME ...` (MARK_EXAMPLE)."""

    containers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    @classmethod
    def of(cls, containers: Mapping[str, Mapping[str, str]]) -> ToxDockerMark:
        return cls(tuple((name, tuple(sorted(v.items()))) for name, v in containers.items()))

    @classmethod
    def parse(cls, raw: str) -> ToxDockerMark:
        containers: dict[str, dict[str, str]] = {}
        for entry in filter(None, (e.strip() for e in raw.split(";"))):
            name, *assignments = entry.split()
            found = [_ASSIGNMENT.fullmatch(a) for a in assignments]
            if not _CONTAINER.fullmatch(name) or not found or not all(found):
                raise ValueError(
                    "is not what the harness's tox hook writes, e.g. "
                    f"{MARK_EXAMPLE!r}; only that hook should set it"
                )
            containers[name] = {m["name"]: m["value"] for m in found if m}
        if not containers:
            raise ValueError(f"names no container, e.g. {MARK_EXAMPLE!r}")
        return cls.of(containers)

    def __str__(self) -> str:
        return "; ".join(
            " ".join([name, *(f"{k}={v}" for k, v in variables)])
            for name, variables in self.containers
        )

    def container_with(self, values: Mapping[str, str]) -> tuple[str, int] | None:
        """(name, pid of its tox run) of the container tox-docker set all of `values` for."""
        for name, variables in self.containers:
            if values.items() <= dict(variables).items():
                named = tox_container(name)
                assert named is not None  # parse() and the hook write only such names
                return name, named[1]
        return None


POSTGRES_HOST = _text("POSTGRES_HOST", SetBy.TOX_DOCKER, "host of the test PostgreSQL")
POSTGRES_PORT = _text("POSTGRES_PORT", SetBy.TOX_DOCKER, "mapped port of the test PostgreSQL")
MINIO_HOST = _text("MINIO_HOST", SetBy.TOX_DOCKER, "host of the test S3 server")
MINIO_PORT = _text("MINIO_PORT", SetBy.TOX_DOCKER, "mapped port of the test S3 server")
POSTGRES_USER = _text(
    "POSTGRES_USER", SetBy.TOX_SET_ENV, "test-only database user", lambda p: p.credentials.pg_user
)
POSTGRES_PASSWORD = _text(
    "POSTGRES_PASSWORD",
    SetBy.TOX_SET_ENV,
    "password of that user",
    lambda p: p.credentials.pg_password,
    secret=True,
)
POSTGRES_DB = _text(
    "POSTGRES_DB", SetBy.TOX_SET_ENV, "test-only database", lambda p: p.credentials.pg_database
)
MINIO_ROOT_USER = _text(
    "MINIO_ROOT_USER", SetBy.TOX_SET_ENV, "S3 access key", lambda p: p.credentials.s3_access_key
)
MINIO_ROOT_PASSWORD = _text(
    "MINIO_ROOT_PASSWORD",
    SetBy.TOX_SET_ENV,
    "S3 secret key",
    lambda p: p.credentials.s3_secret_key,
    secret=True,
)
S3_REGION = _text(
    "S3_REGION", SetBy.TOX_SET_ENV, "S3 region name", lambda p: p.credentials.s3_region
)
TEST_DATABASE_URL = _text(
    "TEST_DATABASE_URL",
    SetBy.USER,
    "full postgresql+asyncpg:// URL; wins over the POSTGRES_* variables",
    secret=True,
)
TEST_S3_ENDPOINT_URL = _text(
    "TEST_S3_ENDPOINT_URL", SetBy.USER, "full S3 endpoint URL; wins over MINIO_HOST/MINIO_PORT"
)
TEST_S3_ACCESS_KEY = _text(
    "TEST_S3_ACCESS_KEY", SetBy.USER, "S3 access key; wins over MINIO_ROOT_USER"
)
TEST_S3_SECRET_KEY = _text(
    "TEST_S3_SECRET_KEY", SetBy.USER, "S3 secret key; wins over MINIO_ROOT_PASSWORD", secret=True
)
TEST_EMBEDDED_SERVICES = Variable(
    "TEST_EMBEDDED_SERVICES",
    SetBy.USER,
    "1: a plain `pytest` of the guarded paths starts the embedded services itself",
    _flag,
    "0",
)
TEST_KEEP_ON_FAILURE = Variable(
    "TEST_KEEP_ON_FAILURE",
    SetBy.USER,
    "1: after a failing run, keep the services, schema and bucket, and print how to connect",
    _flag,
    "0",
)
TEST_ALLOWED_HOSTS = Variable(
    "TEST_ALLOWED_HOSTS",
    SetBy.USER,
    "comma-separated non-loopback hosts an explicit TEST_DATABASE_URL/TEST_S3_ENDPOINT_URL "
    "may name (CI service containers)",
    _hosts,
    "",
)
TEST_ALLOW_USER_TABLES = Variable(
    "TEST_ALLOW_USER_TABLES",
    SetBy.USER,
    "1: accept a database you named (TEST_DATABASE_URL, or POSTGRES_* that no tox-docker run "
    "of the harness marked) that holds tables the harness did not create",
    _flag,
    "0",
)
TEST_REBUILD_TEMPLATE = Variable(
    "TEST_REBUILD_TEMPLATE",
    SetBy.USER,
    "1: before its tests, the run drops this project's migrated templates on the server, so "
    "its template is built afresh (the migrations read a file template_inputs does not name)",
    _flag,
    "0",
)
TEST_TOX_DOCKER_SERVICES = Variable(
    "TEST_TOX_DOCKER_SERVICES",
    SetBy.TOX_HOOK,
    "the containers tox-docker started for this tox run, and the host and port variables it set "
    "for each; POSTGRES_* that it does not name are inspected like TEST_DATABASE_URL",
    ToxDockerMark.parse,
)
TEST_S3_WRITE_TRACE = _text(
    "TEST_S3_WRITE_TRACE",
    SetBy.LAUNCHER,
    "embedded path: a folder of the embedded S3 server's store whose files change whenever it "
    "stores or deletes anything; a test's bucket is listed only after it changed",
)
PG_BINDIR = Variable(
    "PG_BINDIR", SetBy.USER, "embedded path: use these PostgreSQL binaries instead", Path
)
TEST_SERVICES_TIMEOUT = Variable(
    "TEST_SERVICES_TIMEOUT",
    SetBy.USER,
    "embedded path: seconds each service may take to become ready (also the template build)",
    _timeout,
    "30",
)
TEST_TIMEOUT = Variable(
    "TEST_TIMEOUT",
    SetBy.USER,
    "seconds one guarded test may run before pytest-timeout fails it where it hangs "
    "(a test's own @pytest.mark.timeout wins)",
    _timeout,
    "60",
)
TEST_HARNESS_CACHE_DIR = Variable(
    "TEST_HARNESS_CACHE_DIR",
    SetBy.USER,
    "embedded path: where the cached cluster (an initdb'd data dir) and, as root, a copy of the "
    "binaries live",
    Path,
    _cache_dir,
)
TEST_HARNESS_RUN_BASE = Variable(
    "TEST_HARNESS_RUN_BASE",
    SetBy.USER,
    "embedded path: where each run's data, sockets and logs live (removed after the run); "
    "default /dev/shm/<name>-harness-<uid>, or the temp dir without /dev/shm",
    Path,
)

VARIABLES: tuple[Variable[object], ...] = (
    POSTGRES_HOST,
    POSTGRES_PORT,
    MINIO_HOST,
    MINIO_PORT,
    POSTGRES_USER,
    POSTGRES_PASSWORD,
    POSTGRES_DB,
    MINIO_ROOT_USER,
    MINIO_ROOT_PASSWORD,
    S3_REGION,
    TEST_DATABASE_URL,
    TEST_S3_ENDPOINT_URL,
    TEST_S3_ACCESS_KEY,
    TEST_S3_SECRET_KEY,
    TEST_EMBEDDED_SERVICES,
    TEST_KEEP_ON_FAILURE,
    TEST_ALLOWED_HOSTS,
    TEST_ALLOW_USER_TABLES,
    TEST_REBUILD_TEMPLATE,
    TEST_TOX_DOCKER_SERVICES,
    TEST_S3_WRITE_TRACE,
    PG_BINDIR,
    TEST_SERVICES_TIMEOUT,
    TEST_TIMEOUT,
    TEST_HARNESS_CACHE_DIR,
    TEST_HARNESS_RUN_BASE,
)  # type: ignore[assignment]

# What tox-docker and tox set_env provide on the Docker path, and the launcher on its own.
SERVICE_VARIABLES = (POSTGRES_HOST, POSTGRES_PORT, MINIO_HOST, MINIO_PORT)
S3_ONLY = frozenset(
    {"MINIO_HOST", "MINIO_PORT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "S3_REGION"}
)
S3_ONLY |= {
    "TEST_S3_ENDPOINT_URL",
    "TEST_S3_ACCESS_KEY",
    "TEST_S3_SECRET_KEY",
    "TEST_S3_WRITE_TRACE",
}


def credential_variables(creds: Credentials, *, with_s3: bool) -> dict[str, str]:
    """The test credentials as the variables tox set_env (and tox-docker's containers) read."""
    env = {
        POSTGRES_USER.name: creds.pg_user,
        POSTGRES_PASSWORD.name: creds.pg_password,
        POSTGRES_DB.name: creds.pg_database,
    }
    if with_s3:
        env |= {
            MINIO_ROOT_USER.name: creds.s3_access_key,
            MINIO_ROOT_PASSWORD.name: creds.s3_secret_key,
        }
    return env


def variables_for(project: Project) -> tuple[Variable[object], ...]:
    """The variables this project reads: a Postgres-only project has no S3 ones."""
    return tuple(v for v in VARIABLES if project.uses_s3 or v.name not in S3_ONLY)


@dataclass(frozen=True)
class DatabaseTarget:
    url: str | None = field(repr=False)  # carries the password
    source: str  # which variable(s) the URL came from, for messages


@dataclass(frozen=True)
class S3Target:
    endpoint_url: str | None
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    source: str = ""


# A target's `source` when the service variables (tox-docker's, or the launcher's) named it.
FROM_POSTGRES_VARIABLES = "POSTGRES_HOST/POSTGRES_PORT"
FROM_MINIO_VARIABLES = "MINIO_HOST/MINIO_PORT"


def resolve_database(project: Project, env: Mapping[str, str]) -> DatabaseTarget:
    """TEST_DATABASE_URL wins; else POSTGRES_HOST/PORT/USER/PASSWORD/DB. Never the app's URL."""
    explicit = TEST_DATABASE_URL.get(env, project)
    if explicit is not None:
        return DatabaseTarget(explicit, TEST_DATABASE_URL.name)
    host, port = POSTGRES_HOST.get(env, project), POSTGRES_PORT.get(env, project)
    if not (host and port):
        return DatabaseTarget(None, "nothing")
    user, password, db = (
        quote(var.get(env, project) or "", safe="")
        for var in (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB)
    )
    url = f"postgresql+asyncpg://{user}:{password}@{host}:{port}/{db}"
    return DatabaseTarget(url, FROM_POSTGRES_VARIABLES)


def resolve_s3(project: Project, env: Mapping[str, str]) -> S3Target:
    """TEST_S3_ENDPOINT_URL wins; else MINIO_HOST/MINIO_PORT."""
    access = TEST_S3_ACCESS_KEY.get(env, project) or MINIO_ROOT_USER.get(env, project) or ""
    secret = TEST_S3_SECRET_KEY.get(env, project) or MINIO_ROOT_PASSWORD.get(env, project) or ""
    region = S3_REGION.get(env, project) or project.credentials.s3_region
    explicit = TEST_S3_ENDPOINT_URL.get(env, project)
    if explicit:
        return S3Target(explicit, access, secret, region, TEST_S3_ENDPOINT_URL.name)
    host, port = MINIO_HOST.get(env, project), MINIO_PORT.get(env, project)
    if not (host and port):
        return S3Target(None, access, secret, region, "nothing")
    return S3Target(f"http://{host}:{port}", access, secret, region, FROM_MINIO_VARIABLES)
