"""pytest-realstack: test a Python service against real PostgreSQL and real S3.

The public API is `__all__` below; everything else is internal and may change. The names load
lazily, on first use: pytest imports this package before it guards the run, and tox imports it
for its hooks, so importing it costs nothing of SQLAlchemy, boto3 or the app.
"""

from __future__ import annotations

import importlib

# Not typing's: importing typing here would widen the moments at which a Ctrl-C during start-up
# prints a traceback (`python -m realstack.embedded` imports this package first). Type checkers
# take any `TYPE_CHECKING` as true.
TYPE_CHECKING = False

__version__ = "0.1.0"

# Each public name, and the module (relative to this package) it lives in.
_HOMES = {
    # The [tool.harness] table, the variables, and the resolved, guarded configuration.
    "Project": "project",
    "ProjectConfigError": "project",
    "find_pyproject": "project",
    "load_project": "project",
    "HarnessConfig": "config",
    "RunTargets": "config",
    "EmbeddedSettings": "config",
    "embedded_settings": "config",
    "resolve_config": "config",
    "S3Target": "contract",
    "ContractError": "contract",
    "GuardError": "guard",
    "find_services": "sources",
    "resolve_for_tool": "sources",
    # A run's own database (or schema) and bucket outside pytest; clients and faults for tests.
    "sandbox": "sandbox",
    "object_keys": "buckets",
    "asgi_client": "clients",
    "ServerFaults": "faults",
    # The embedded servers (no Docker), and the process helpers tests of servers need.
    "start_embedded_services": "embedded.launcher",
    "embedded_services": "embedded.launcher",
    "load_warm_services": "embedded.warm",
    "free_port": "process",
    "poll_until": "process",
    "apoll_until": "process",
    "die_with_parent": "process",
}
# Public modules: `contract` is the table of every variable the harness reads.
_MODULES = ("contract",)

__all__ = [
    "ContractError",
    "EmbeddedSettings",
    "GuardError",
    "HarnessConfig",
    "Project",
    "ProjectConfigError",
    "RunTargets",
    "S3Target",
    "ServerFaults",
    "__version__",
    "apoll_until",
    "asgi_client",
    "contract",
    "die_with_parent",
    "embedded_services",
    "embedded_settings",
    "find_pyproject",
    "find_services",
    "free_port",
    "load_project",
    "load_warm_services",
    "object_keys",
    "poll_until",
    "resolve_config",
    "resolve_for_tool",
    "sandbox",
    "start_embedded_services",
]

if TYPE_CHECKING:
    from typing import Any

    from . import contract
    from .buckets import object_keys
    from .clients import asgi_client
    from .config import (
        EmbeddedSettings,
        HarnessConfig,
        RunTargets,
        embedded_settings,
        resolve_config,
    )
    from .contract import ContractError, S3Target
    from .embedded.launcher import embedded_services, start_embedded_services
    from .embedded.warm import load_warm_services
    from .faults import ServerFaults
    from .guard import GuardError
    from .process import apoll_until, die_with_parent, free_port, poll_until
    from .project import Project, ProjectConfigError, find_pyproject, load_project
    from .sandbox import sandbox
    from .sources import find_services, resolve_for_tool


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
