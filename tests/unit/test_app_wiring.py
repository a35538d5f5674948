"""How the app is wired: no request waits for a worker thread just to read app.state."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import SecretStr

from api import Settings, create_app


def offline_settings() -> Settings:
    return Settings(
        database_url="postgresql+asyncpg://u:p@127.0.0.1:9/db",
        s3_access_key=SecretStr("k"),
        s3_secret_key=SecretStr("s"),
        s3_bucket="docs",
        api_tokens={"alice": SecretStr("a-token-of-16-chars")},
    )


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The app's endpoints, through included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's included-router wrapper
        if included is not None:
            yield from api_routes(included.routes)


def dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from dependencies(sub)


def runs_on_the_event_loop(call: Any) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    return inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def test_every_dependency_and_endpoint_runs_on_the_event_loop_not_in_a_thread() -> None:
    app = create_app(offline_settings())
    routes = list(api_routes(app.routes))
    assert len(routes) == 9  # HEAD on the download is a route of its own

    calls: list[tuple[str, Any]] = [
        (route.path, dep.call)
        for route in routes
        for dep in [route.dependant, *dependencies(route.dependant)]
        if dep.call is not None
    ]
    calls += [("(every route)", dep.dependency) for dep in app.router.dependencies]
    in_threads = [
        f"{path}: {getattr(call, '__qualname__', call)}"
        for path, call in calls
        if not runs_on_the_event_loop(call)
    ]

    assert in_threads == []
    assert {getattr(call, "__name__", "") for _, call in calls} >= {
        "get_session",
        "get_storage",
        "get_settings",
        "refuse_control_characters",
    }
