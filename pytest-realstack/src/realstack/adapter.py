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
import re
import traceback
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterator,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from types import ModuleType, NoneType, UnionType
from typing import (
    Annotated,
    Any,
    ForwardRef,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
)

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .config import RunTargets
from .project import Project

REQUIRED = ("metadata", "create_app", "session_dependency")
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]
SessionShape = Literal["session", "sessionmaker"]
_SHAPES = {"session": "an AsyncSession", "sessionmaker": "an async_sessionmaker"}


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
    declared = hasattr(module, "session_dependency_yields")
    _check_session_shape(project.adapter, module.session_dependency, shape, declared)
    return AppAdapter(
        module=module,
        metadata=module.metadata,
        create_app=module.create_app,
        session_dependency=module.session_dependency,
        app_environment=getattr(module, "app_environment", None),
        lifespan=lifespan,
        session_dependency_yields=cast(SessionShape, shape),  # checked above
    )


def _check_session_shape(adapter: str, dependency: Any, shape: str, declared: bool) -> None:
    """The tests hand the app their session by replacing this dependency: one annotated to yield
    something else than a session or a sessionmaker would leave the app's own sessions in
    place, committing behind the tests' backs; one annotated with the other shape than the
    adapter declares would fail in the first request (`'AsyncSessionTransaction' object has
    no attribute ...`). Say so now. No annotation, or one that cannot be read, passes."""
    returns, written = _return_annotation(dependency)
    if returns is _NO_ANNOTATION:
        return
    annotated = _shape_named(returns)
    if annotated == "unknown":
        return
    name = getattr(dependency, "__qualname__", repr(dependency))
    shown = _shown(written)
    if annotated is None:
        raise AdapterError(
            f"{adapter}.session_dependency is {name}, annotated to yield {shown!r}: neither an "
            "AsyncSession nor an async_sessionmaker. The tests hand the app their session by "
            f"replacing this dependency; replacing {name} leaves the app's own sessions in "
            "place, and its writes would escape the test's transaction.\n"
            "  fix:  set session_dependency to the FastAPI dependency your routes get their "
            "AsyncSession or async_sessionmaker from (e.g. session_dependency = get_session) "
            f"in {adapter}"
        )
    if annotated != shape:
        expects = (
            f"the adapter declares session_dependency_yields = {shape!r}"
            if declared
            else f"the harness expects {_SHAPES[shape]} (session_dependency_yields, by default "
            f"{shape!r}; the adapter does not set it)"
        )
        raise AdapterError(
            f"{adapter}.session_dependency ({name}) yields {shown!r}, but {expects}: the tests "
            "would hand the app the wrong kind of object.\n"
            f'  fix:  session_dependency_yields = "{annotated}" in {adapter}'
        )


_NO_ANNOTATION = object()


def _return_annotation(dependency: Any) -> tuple[Any, Any]:
    """The dependency's return annotation evaluated (else as written), and as written;
    _NO_ANNOTATION without one (`-> None` is one: None)."""
    try:
        written = inspect.get_annotations(dependency).get("return", _NO_ANNOTATION)
    except TypeError:  # not a function we can read: nothing to check
        return _NO_ANNOTATION, _NO_ANNOTATION
    try:
        evaluated = inspect.get_annotations(dependency, eval_str=True).get("return", written)
    except Exception:  # a name that does not evaluate (a TYPE_CHECKING import): as written
        evaluated = written
    return evaluated, written


# The names a session dependency's annotation may use, as a raw string shows them.
_SESSIONMAKER_NAME = re.compile(r"\b\w*sessionmaker\b")
_SESSION_NAME = re.compile(r"\bAsyncSession\b")
_CONTAINERS = (AsyncIterator, AsyncGenerator, Iterator, Generator, Awaitable, Coroutine)


def _shape_named(annotation: Any) -> str | None:
    """The shape an annotation names, "session" or "sessionmaker", the outermost first
    (`AsyncIterator[async_sessionmaker[AsyncSession]]` is a sessionmaker), through what yields
    or awaits it, Annotated, unions and aliases; None when it names neither; "unknown" when it
    cannot tell (Any, a type variable, a bare AsyncIterator, a name that did not evaluate)."""
    if isinstance(annotation, ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        if _SESSIONMAKER_NAME.search(annotation):
            return "sessionmaker"
        return "session" if _SESSION_NAME.search(annotation) else "unknown"
    if type(annotation).__name__ == "TypeAliasType":  # `type Db = ...` (Python 3.12+)
        return _shape_named(annotation.__value__)
    if annotation is Any or annotation is object or isinstance(annotation, TypeVar):
        return "unknown"
    if annotation is None or annotation is NoneType:
        return None
    origin = get_origin(annotation)
    if origin is Annotated:  # the type; the rest is metadata (Depends(...))
        return _shape_named(get_args(annotation)[0])
    outer = origin if isinstance(origin, type) else annotation
    if isinstance(outer, type) and not _is_union(outer):
        if issubclass(outer, async_sessionmaker):
            return "sessionmaker"
        if issubclass(outer, AsyncSession):
            return "session"
        if not issubclass(outer, _CONTAINERS):
            return None  # SnapshotRepository, dict[str, Any]: neither
    arguments = get_args(annotation)
    if not arguments:
        return "unknown"  # a bare AsyncIterator says nothing of what it yields
    found: str | None = None
    for argument in arguments:
        named = _shape_named(argument)
        if named in ("session", "sessionmaker"):
            return named
        found = found or named
    return found


def _is_union(annotation: Any) -> bool:
    return annotation is Union or annotation is UnionType


def _shown(annotation: Any) -> str:
    """An annotation as a person writes it: `AsyncIterator[SnapshotRepository]`, no modules,
    no Depends(...) of an Annotated."""
    if isinstance(annotation, ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        return annotation
    if annotation is None or annotation is NoneType:
        return "None"
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return f"Annotated[{_shown(arguments[0])}, ...]"
    if _is_union(origin):
        return " | ".join(_shown(argument) for argument in arguments)
    if isinstance(origin, type) and arguments:
        return f"{origin.__name__}[{', '.join(_shown(argument) for argument in arguments)}]"
    text = inspect.formatannotation(annotation)
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", text)


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
