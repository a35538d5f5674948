"""The services a project tests against, one module per kind (postgres.py, s3.py): where its
target comes from, how it is guarded and isolated per test, and how what killed runs left on
it is swept. A new kind is one module here plus its name in project.KNOWN_SERVICES.

Everything above this layer asks `kinds_of(project)` instead of naming a service.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..config import HarnessConfig
from ..contract import Variable
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


def kind(name: str) -> ServiceKind:
    if name not in KNOWN_SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(KNOWN_SERVICES)}")
    found: ServiceKind = importlib.import_module(f"{__name__}.{name}").KIND
    return found


def kinds_of(project: Project) -> list[ServiceKind]:
    """The project's services, in the table's order (PostgreSQL first)."""
    return [kind(name) for name in KNOWN_SERVICES if name in project.services]


def endpoints_down(config: HarnessConfig, timeout_s: float = 2.0) -> list[str]:
    """The run's services that no longer accept connections at all (stopped, crashed,
    killed), e.g. "PostgreSQL at 127.0.0.1:5432 (Connection refused)"; [] when all do. A
    paused server still accepts them (the kernel does), so server_faults never shows here."""
    urls = {"PostgreSQL": config.database_url}
    if config.s3 is not None and config.s3.endpoint_url:
        urls["S3"] = config.s3.endpoint_url
    down = []
    for name, url in urls.items():
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80 if name == "S3" else 5432)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout_s):
                pass
        except OSError as exc:
            down.append(f"{name} at {parts.hostname}:{port} ({exc.strerror or exc})")
    return down
