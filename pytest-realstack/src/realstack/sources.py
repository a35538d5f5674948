"""Where the services are, from the first source that names them: the embedded launcher's
ready file, explicit variables (tox-docker, you), warm services (their services file), or embedded
services started in this process. Used by the pytest plugin and by tools beside it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from . import contract
from .config import HarnessConfig, embedded_settings, resolve_config
from .project import Project, find_pyproject, load_project


def find_services(
    project: Project,
    env: Mapping[str, str],
    *,
    add_cleanup: Callable[[Callable[[], None]], None] | None = None,
    before_wait: Callable[[], None] | None = None,
    tell: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """The variables the harness's own services publish, to merge over `env` and to hand to
    resolve_config as `published`; {} when `env` names other services (or nothing does: the
    guard then says what to set). When `env` names this checkout's warm services already
    (`run -- CMD` hands them to CMD), those of their variables it holds unchanged.
    `before_wait` runs while a launcher's servers boot; `add_cleanup` receives the stop of
    servers started here; `tell` writes a line for the person running the tests (default:
    stderr)."""
    settings = embedded_settings(project, env)
    if env.get(project.ready_file_variable, "").strip():
        from .embedded.readiness import wait_for_services

        if before_wait:
            before_wait()
        return wait_for_services(settings, env)
    if contract.TEST_DATABASE_URL.get(env, project):
        return {}
    from .embedded.warm import load_warm_services, warm_services_named

    if contract.POSTGRES_PORT.get(env, project):
        return warm_services_named(settings, env)

    warm = load_warm_services(settings, tell)
    if warm:
        return warm
    if add_cleanup is not None and contract.TEST_EMBEDDED_SERVICES.get(env, project):
        from .embedded.launcher import start_embedded_services

        running = start_embedded_services(settings)
        add_cleanup(running.stop)
        return dict(running.env)
    return {}


def resolve_for_tool(start: Path | None = None) -> HarnessConfig:
    """For commands beside pytest (make dev, load scripts, benchmarks): the project found from
    `start` (default: the current directory), its services, guarded like a test run."""
    project = load_project(find_pyproject(start or Path.cwd()))
    env = dict(os.environ)
    published = find_services(project, env)
    return resolve_config(project, env | published, published=published)
