"""The services a project tests against, one module per kind (postgres.py, s3.py): where its
target comes from, how it is guarded and isolated per test, and how what killed runs left on
it is swept. A new kind is one module here plus its name in project.KNOWN_SERVICES.

Everything above this layer asks `kinds_of(project)` instead of naming a service.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import HarnessConfig
from ..contract import Variable
from ..process import connect_error
from ..project import KNOWN_SERVICES, Project


@dataclass(frozen=True)
class ServiceKind:
    """One kind of service, as the layers above need it."""

    name: str  # as in [tool.harness] services
    describe: str  # for messages: "PostgreSQL"
    host: Variable[str]  # the variables tox-docker and the launcher give its endpoint
    port: Variable[str]
    embedded_program: str  # the server program the embedded launcher runs (its argv[0])
    fixtures: str  # the module of its pytest fixtures, registered when a project uses it
    # (project, the run's variables, include kept) -> what killed runs left on it, removed;
    # [] when the variables name no such service. Raises when the service cannot be reached.
    sweep_dead: Callable[[Project, Mapping[str, str], bool], Coroutine[Any, Any, list[str]]]
    # The service's endpoint in the variables, for messages: "" when they name none.
    where: Callable[[Project, Mapping[str, str]], str]
    # Its endpoint URL in the run's resolved targets; None when they name none.
    endpoint: Callable[[HarnessConfig], str | None]


def kind(name: str) -> ServiceKind:
    if name not in KNOWN_SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(KNOWN_SERVICES)}")
    found: ServiceKind = importlib.import_module(f"{__name__}.{name}").KIND
    return found


def kinds_of(project: Project) -> list[ServiceKind]:
    """The project's services, in the table's order (PostgreSQL first)."""
    return [kind(name) for name in KNOWN_SERVICES if name in project.services]


def service_urls(config: HarnessConfig) -> dict[str, str]:
    """The endpoint URL of each of the run's services, by its name ("postgres", "s3")."""
    return {k.name: url for k in kinds_of(config.project) if (url := k.endpoint(config))}


# Where a URL without a port connects.
_DEFAULT_PORTS = {"postgresql": 5432, "https": 443, "http": 80}


def endpoints_down(config: HarnessConfig, timeout_s: float = 2.0) -> list[str]:
    """The run's services that no longer accept connections at all (stopped, crashed,
    killed), e.g. "PostgreSQL at 127.0.0.1:5432 (Connection refused)"; [] when all do. A
    paused server still accepts them (the kernel does), so server_faults never shows here."""
    down = []
    for name, url in service_urls(config).items():
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.split("+")[0], 80)
        error = connect_error(parts.hostname or "127.0.0.1", port, timeout_s)
        if error is not None:
            down.append(f"{kind(name).describe} at {parts.hostname}:{port} ({error})")
    return down
