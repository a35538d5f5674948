"""The seam to the app: the one module a project writes (named by `adapter` in [tool.harness]).

The core asks it for exactly these, and for nothing else:

    metadata                   the models' sqlalchemy MetaData (drift check, real-commit cleanup)
    create_app(run)            the ASGI app for a RunTargets (database URL, schema, bucket)
    session_dependency         the FastAPI dependency that yields the request's AsyncSession;
                               tests replace it with the test's session
    app_environment(run)       optional: the app's own variables for a server process
                               (make dev, load tests), e.g. {"DATABASE_URL": ...}

Anything else in the module (pytest fixtures such as clients with tokens) is registered as a
pytest plugin, so the app's tests can ask for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from sqlalchemy import MetaData

from .config import RunTargets
from .project import Project

REQUIRED = ("metadata", "create_app", "session_dependency")


class AdapterError(Exception):
    """The adapter module is missing or incomplete; str() names what to add."""


@dataclass(frozen=True)
class AppAdapter:
    module: ModuleType
    metadata: MetaData
    create_app: Callable[[RunTargets], Any]
    session_dependency: Callable[..., Any]
    app_environment: Callable[[RunTargets], Mapping[str, str]] | None

    def environment_for(self, run: RunTargets) -> dict[str, str]:
        if self.app_environment is None:
            raise AdapterError(
                f"{self.module.__name__} defines no app_environment(run): add one that returns "
                "your app's own variables (e.g. its database URL) for a server process"
            )
        return dict(self.app_environment(run))


def load_adapter(project: Project) -> AppAdapter:
    try:
        module = importlib.import_module(project.adapter)
    except ModuleNotFoundError as exc:
        if exc.name and project.adapter.startswith(exc.name):
            raise AdapterError(
                f"the adapter module {project.adapter!r} (named by `adapter` in [tool.harness] "
                f"of {project.root / 'pyproject.toml'}) cannot be imported: {exc}.\n"
                "  fix:  create it, or correct the name; it must be importable from the "
                "project root"
            ) from None
        raise
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise AdapterError(
            f"the adapter module {project.adapter!r} lacks {', '.join(missing)}.\n"
            "  fix:  define them; tests/harness/adapter.py says what each one is"
        )
    if not isinstance(module.metadata, MetaData):
        raise AdapterError(
            f"{project.adapter}.metadata is a {type(module.metadata).__name__}, not a "
            "sqlalchemy MetaData; fix: metadata = Base.metadata"
        )
    return AppAdapter(
        module=module,
        metadata=module.metadata,
        create_app=module.create_app,
        session_dependency=module.session_dependency,
        app_environment=getattr(module, "app_environment", None),
    )
