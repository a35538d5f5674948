"""The seam to the app: the one module a project writes (named by `adapter` in [tool.harness]).

The core asks it for exactly these, and for nothing else:

    metadata                   the models' sqlalchemy MetaData (drift check, real-commit cleanup)
    create_app(run)            the ASGI app for a RunTargets (database URL, schema, bucket)
    session_dependency         the FastAPI dependency that yields the request's AsyncSession
                               (or sessionmaker); tests replace it with the test's own
    session_dependency_yields  optional: "session" (the default) or "sessionmaker", when the
                               dependency yields an async_sessionmaker (`maker.begin()`)
    lifespan                   optional: the lifespan run once per session (per xdist worker)
                               around the app, instead of the app's own: lifespan(app) is an
                               async context manager yielding a dict (the lifespan state every
                               request gets a copy of) or nothing; None runs no lifespan
    app_environment(run)       optional: the app's own variables for a server process
                               (make dev, load tests), e.g. {"DATABASE_URL": ...}

Anything else in the module (pytest fixtures such as clients with tokens) is registered as a
pytest plugin, so the app's tests can ask for it.
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, cast, get_args

from sqlalchemy import MetaData

from .config import RunTargets
from .project import Project

REQUIRED = ("metadata", "create_app", "session_dependency")
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]
SessionShape = Literal["session", "sessionmaker"]


class AdapterError(Exception):
    """The adapter module is missing or incomplete; str() names what to add."""


@dataclass(frozen=True)
class AppAdapter:
    module: ModuleType
    metadata: MetaData
    create_app: Callable[[RunTargets], Any]
    session_dependency: Callable[..., Any]
    app_environment: Callable[[RunTargets], Mapping[str, str]] | None
    lifespan: Lifespan | None  # app_lifespan unless the adapter names one, or None
    session_dependency_yields: SessionShape

    def environment_for(self, run: RunTargets) -> dict[str, str]:
        if self.app_environment is None:
            raise AdapterError(
                f"{self.module.__name__} defines no app_environment(run): add one that returns "
                "your app's own variables (e.g. its database URL) for a server process"
            )
        return dict(self.app_environment(run))

    def lifespan_for(self, app: Any) -> AbstractAsyncContextManager[Any]:
        """What runs around the app for the session: the adapter's lifespan, else none."""
        return nullcontext() if self.lifespan is None else self.lifespan(app)


def app_lifespan(app: Any) -> AbstractAsyncContextManager[Any]:
    """The app's own lifespan, as a server runs it (Starlette's, and so FastAPI's); none for an
    app that is not a Starlette one."""
    own = getattr(getattr(app, "router", None), "lifespan_context", None)
    return nullcontext() if own is None else own(app)


def load_adapter(project: Project) -> AppAdapter:
    try:
        module = importlib.import_module(project.adapter)
    except ModuleNotFoundError as exc:
        if exc.name and project.adapter.startswith(exc.name):
            raise AdapterError(
                f"the adapter module {project.adapter!r} (named by `adapter` in [tool.harness] "
                f"of {project.root / 'pyproject.toml'}) cannot be imported: {exc}.\n"
                "  fix:  create it, or correct the name; it must be importable from the "
                'project root (pythonpath = ["."] in your pytest settings, [tool.pytest] or '
                "[tool.pytest.ini_options])"
            ) from None
        raise AdapterError(_import_failure(project, exc)) from None
    except Exception as exc:  # the adapter's own code failed: say where, not 40 frames
        raise AdapterError(_import_failure(project, exc)) from None
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise AdapterError(
            f"the adapter module {project.adapter!r} lacks {', '.join(missing)}.\n"
            f"  fix:  define them; {__file__} says what each one is"
        )
    if not isinstance(module.metadata, MetaData):
        raise AdapterError(
            f"{project.adapter}.metadata is a {type(module.metadata).__name__}, not a "
            "sqlalchemy MetaData; fix: metadata = Base.metadata"
        )
    lifespan = getattr(module, "lifespan", app_lifespan)
    if lifespan is not None and not callable(lifespan):
        raise AdapterError(
            f"{project.adapter}.lifespan is a {type(lifespan).__name__}, not a function.\n"
            "  fix:  make it one that takes the app and returns an async context manager "
            "(@asynccontextmanager), or set it to None to run no lifespan"
        )
    shape = getattr(module, "session_dependency_yields", "session")
    if shape not in get_args(SessionShape):
        raise AdapterError(
            f"{project.adapter}.session_dependency_yields is {shape!r}.\n"
            f"  fix:  set it to {' or '.join(map(repr, get_args(SessionShape)))}: what "
            "session_dependency yields (an AsyncSession, or an async_sessionmaker)"
        )
    _check_session_shape(project.adapter, module.session_dependency, shape)
    return AppAdapter(
        module=module,
        metadata=module.metadata,
        create_app=module.create_app,
        session_dependency=module.session_dependency,
        app_environment=getattr(module, "app_environment", None),
        lifespan=lifespan,
        session_dependency_yields=cast(SessionShape, shape),  # checked above
    )


def _check_session_shape(adapter: str, dependency: Any, shape: str) -> None:
    """A dependency annotated to yield the other shape than the adapter declares would fail in
    the first request (`'AsyncSessionTransaction' object has no attribute ...`): say so now."""
    try:
        returns = str(inspect.get_annotations(dependency).get("return", ""))
    except TypeError:  # not a function we can read: nothing to check
        return
    if "sessionmaker" in returns:
        annotated = "sessionmaker"
    elif "AsyncSession" in returns:
        annotated = "session"
    else:
        return
    if annotated != shape:
        name = getattr(dependency, "__qualname__", repr(dependency))
        raise AdapterError(
            f"{adapter}.session_dependency ({name}) yields {returns!r}, but the adapter "
            f"declares session_dependency_yields = {shape!r}: the tests would hand the app "
            "the wrong kind of object.\n"
            f'  fix:  session_dependency_yields = "{annotated}" in {adapter}'
        )


def _import_failure(project: Project, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (
        f"importing the adapter module {project.adapter!r} failed{where}: "
        f"{type(exc).__name__}: {exc}\n  fix:  correct that line (the adapter and what it imports "
        "must import without the services)"
    )


def _dependencies(dependant: Any) -> Iterator[Any]:
    for sub in getattr(dependant, "dependencies", ()):
        yield sub.call
        yield from _dependencies(sub)


def _dependants(router: Any, depth: int = 0) -> Iterator[Any]:
    """Every route's dependant, through included routers (FastAPI nests them differently
    across versions: .routes, .original_router)."""
    if depth > 20:
        return
    for route in getattr(router, "routes", ()):
        if getattr(route, "dependant", None) is not None:
            yield route.dependant
        for nested in (getattr(route, "original_router", None), getattr(route, "router", None)):
            if nested is not None and nested is not router:
                yield from _dependants(nested, depth + 1)


def check_session_dependency(adapter: AppAdapter, app: Any) -> None:
    """The tests hand their session to the app by overriding this dependency: it must be one
    that the app's routes really use, or the app would commit behind the test's back."""
    dependants = list(_dependants(getattr(app, "router", None)))
    if not dependants:
        return  # not a FastAPI app we can read: nothing to check
    used = {call for dependant in dependants for call in _dependencies(dependant)}
    if adapter.session_dependency not in used:
        name = getattr(adapter.session_dependency, "__qualname__", repr(adapter.session_dependency))
        raise AdapterError(
            f"{adapter.module.__name__}.session_dependency is {name}, which no route of the app "
            "depends on: the tests could not hand their session to the app, and its writes "
            "would escape the test's transaction.\n"
            "  fix:  set it to the FastAPI dependency your routes use to get their AsyncSession "
            "or async_sessionmaker (e.g. session_dependency = get_session)"
        )
