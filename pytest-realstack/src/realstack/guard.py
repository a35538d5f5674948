"""Refuse the guarded tests anything but a postgresql+asyncpg:// URL (and an S3 endpoint, if used).

It runs in `pytest_configure`, before a single test is collected, so it imports
only the standard library: the decision must take a fraction of a second.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import SplitResult, urlsplit

from . import contract
from .contract import (
    POSTGRES_HOST,
    POSTGRES_PORT,
    TEST_ALLOWED_HOSTS,
    TEST_DATABASE_URL,
    TEST_TOX_DOCKER_SERVICES,
    DatabaseTarget,
    S3Target,
)
from .process import pid_alive
from .project import Project

REQUIRED_SCHEME = "postgresql+asyncpg"
SERVER_DATABASES = frozenset({"postgres", "template0", "template1"})
ALLOW_HOSTS_VARIABLE = TEST_ALLOWED_HOSTS.name
EXAMPLE_URL = "postgresql+asyncpg://USER:***@127.0.0.1:5432/DBNAME"
HOW_TO_START = (
    f"Start throwaway services for the run: `python -m {__package__}.embedded run -- pytest ...` "
    "(real servers from PyPI wheels, no Docker), TEST_EMBEDDED_SERVICES=1 for a plain pytest, "
    "or your project's own tox or make target for its integration tests."
)


class GuardError(Exception):
    """A refusal, worded for the person who hits it."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, keeping everything else as typed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


class DatabaseOrigin(StrEnum):
    """Who set the variables the run's database came from. The harness's own services and
    tox-docker's containers are throwaway servers; a URL you typed, or POSTGRES_* from anywhere
    else (a docker-compose .env, a shell profile), may name a real database."""

    EXPLICIT = "an explicit database URL"
    SERVICES = "the harness's own services"
    TOX_DOCKER = "tox-docker"
    UNMARKED = "POSTGRES_* variables"

    @property
    def inspected(self) -> bool:
        """Refused when its database holds tables the harness did not create (safety.py)."""
        return self in {DatabaseOrigin.EXPLICIT, DatabaseOrigin.UNMARKED}


@dataclass(frozen=True)
class Provenance:
    origin: DatabaseOrigin
    detail: str  # in words, for messages: which container, or why nothing vouches for them


def database_provenance(
    project: Project, env: Mapping[str, str], published: Mapping[str, str]
) -> Provenance:
    """Where the database target of `env` came from. `published` holds what the harness's own
    services published (sources.find_services: the launcher's ready file, the warm services
    file); POSTGRES_HOST/POSTGRES_PORT equal to theirs came from them. Otherwise only the mark
    of the harness's tox hook vouches for them, when it names a container with exactly these
    values whose tox run is still alive (a mark left in a shell, or copied, does not)."""
    if TEST_DATABASE_URL.get(env, project) is not None:
        return Provenance(DatabaseOrigin.EXPLICIT, "you set it")
    endpoint = {v.name: v.raw(env, project) or "" for v in (POSTGRES_HOST, POSTGRES_PORT)}
    if published and all(published.get(name) == value for name, value in endpoint.items()):
        return Provenance(DatabaseOrigin.SERVICES, "the embedded launcher's or warm services")
    shown = " ".join(f"{name}={value}" for name, value in endpoint.items())
    mark_name = TEST_TOX_DOCKER_SERVICES.name
    mark = TEST_TOX_DOCKER_SERVICES.get(env, project)
    if mark is None:
        return Provenance(DatabaseOrigin.UNMARKED, f"{mark_name} is unset")
    found = mark.container_with(endpoint)
    if found is None:
        why = f"{mark_name} names no container with {shown} (it says {str(mark)!r})"
        return Provenance(DatabaseOrigin.UNMARKED, why)
    container, tox_pid = found
    if not pid_alive(tox_pid):
        why = f"{mark_name} names {container}, but its tox run (pid {tox_pid}) has ended"
        return Provenance(DatabaseOrigin.UNMARKED, why)
    return Provenance(DatabaseOrigin.TOX_DOCKER, f"tox-docker's container {container}")


def _missing_database_message(project: Project, env: Mapping[str, str]) -> str:
    lines = [
        "Integration tests need a PostgreSQL test database, and none is configured.",
        "  seen: TEST_DATABASE_URL is unset, and POSTGRES_HOST/POSTGRES_PORT are "
        f"{env.get(contract.POSTGRES_HOST.name) or 'unset'}/"
        f"{env.get(contract.POSTGRES_PORT.name) or 'unset'}.",
        f"  fix:  {HOW_TO_START}",
        f"        Or set TEST_DATABASE_URL={EXAMPLE_URL}",
        "        Or set POSTGRES_HOST and POSTGRES_PORT (tox-docker does this for you).",
    ]
    app_variable = project.app_database_url_variable
    if env.get(app_variable, "").strip():
        lines.append(
            f"  note: {app_variable} is set, but the integration tests never use it: it points "
            "at your own database, which the tests must not touch."
        )
    return "\n".join(lines)


def _bad_url_message(reason: str, url: str, source: str) -> str:
    return "\n".join(
        [
            f"Integration tests require {REQUIRED_SCHEME}:// ({reason}).",
            f"  got:  {source}={mask_url(url)!r}",
            f"  fix:  set {source} to a PostgreSQL test database, e.g. {EXAMPLE_URL}",
            f"        or unset it. {HOW_TO_START}",
        ]
    )


def _parse(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError:
        return None
    return parts


def check_database_target(
    project: Project, target: DatabaseTarget, allowed: frozenset[str], env: Mapping[str, str]
) -> str:
    """Return the URL if it is a usable postgresql+asyncpg:// URL; raise GuardError otherwise.

    `env` is read only to explain a missing URL.
    """
    if target.url is None:
        raise GuardError(_missing_database_message(project, env))
    url = target.url
    if not url.strip():
        raise GuardError(_bad_url_message("the URL is empty", url, target.source))
    # The scheme is compared exactly: SQLAlchemy and asyncpg accept only lower case.
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme != REQUIRED_SCHEME:
        reason = f"the scheme is {scheme!r}" if scheme else "it has no scheme"
        raise GuardError(_bad_url_message(reason, url, target.source))
    parts = _parse(url)
    if parts is None:
        raise GuardError(_bad_url_message("it cannot be parsed", url, target.source))
    if not parts.hostname:
        raise GuardError(_bad_url_message("it names no host", url, target.source))
    database = parts.path.strip("/")
    if not database:
        raise GuardError(_bad_url_message("it names no database", url, target.source))
    if database in SERVER_DATABASES:
        raise GuardError(
            "\n".join(
                [
                    f"Integration tests refuse the server's own database {database!r}.",
                    f"  got:  {target.source}={mask_url(url)!r}",
                    "  why:  postgres and template0/1 belong to the server: every new database is "
                    "copied from template1, and tools expect postgres to be there.",
                    f"  fix:  name a test database of its own, e.g. POSTGRES_DB="
                    f"{project.credentials.pg_database} (or that name in TEST_DATABASE_URL).",
                ]
            )
        )
    if target.source == contract.TEST_DATABASE_URL.name:
        _check_host_allowed(parts.hostname, target.source, mask_url(url), allowed)
    return url


def is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_host_allowed(host: str, source: str, shown: str, allowed: frozenset[str]) -> None:
    """An explicit URL may name only loopback, unless its host is listed in the allow variable.

    URLs built from POSTGRES_HOST/MINIO_HOST come from tox-docker or the embedded
    launcher, which start throwaway servers: they are trusted and not checked here.
    """
    if is_loopback(host) or host.lower() in allowed:
        return
    raise GuardError(
        "\n".join(
            [
                f"Integration tests refuse the non-loopback host {host!r} unless you allow it.",
                f"  got:  {source}={shown!r}",
                "  why:  the tests create, empty and drop things; a remote host may be a "
                "shared or production server.",
                f"  fix:  if it is a throwaway test service (a CI service container, say), set "
                f"{ALLOW_HOSTS_VARIABLE}={host}",
            ]
        )
    )


def check_s3_target(target: S3Target, allowed: frozenset[str]) -> str:
    """Return the S3 endpoint URL if one is configured; raise GuardError otherwise."""
    if target.endpoint_url is None:
        raise GuardError(
            "\n".join(
                [
                    "Integration tests need an S3 endpoint, and none is configured.",
                    "  seen: TEST_S3_ENDPOINT_URL and MINIO_HOST/MINIO_PORT are unset.",
                    f"  fix:  {HOW_TO_START}",
                    "        Or set TEST_S3_ENDPOINT_URL=http://127.0.0.1:9000 "
                    "(with TEST_S3_ACCESS_KEY and TEST_S3_SECRET_KEY).",
                ]
            )
        )
    parts = _parse(target.endpoint_url)
    if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
        raise GuardError(
            "\n".join(
                [
                    "Integration tests need an http:// or https:// S3 endpoint.",
                    f"  got:  {target.source}={mask_url(target.endpoint_url)!r}",
                    "  fix:  set TEST_S3_ENDPOINT_URL=http://127.0.0.1:9000, or unset it. "
                    + HOW_TO_START,
                ]
            )
        )
    if target.source == contract.TEST_S3_ENDPOINT_URL.name:
        _check_host_allowed(parts.hostname, target.source, target.endpoint_url, allowed)
    if not (target.access_key and target.secret_key):
        raise GuardError(
            "Integration tests need S3 credentials.\n"
            "  fix:  set MINIO_ROOT_USER and MINIO_ROOT_PASSWORD "
            "(or TEST_S3_ACCESS_KEY and TEST_S3_SECRET_KEY)."
        )
    return target.endpoint_url
