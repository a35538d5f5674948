"""The harness as a pytest plugin: read [tool.harness], resolve and guard the targets once
before collection, then register the fixtures and the app adapter.

Load it from the project's top conftest.py: `pytest_plugins = ["tests.harness.plugin"]`.
Only cheap imports at module level: the guard must decide before anything heavy loads.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from . import contract
from .config import HarnessConfig, resolve_config
from .guard import GuardError
from .project import Project, ProjectConfigError, find_pyproject, load_project
from .sources import find_services

if TYPE_CHECKING:
    from .adapter import AppAdapter

PROJECT = pytest.StashKey[Project]()
CONFIG = pytest.StashKey[HarnessConfig]()
ADAPTER: pytest.StashKey[AppAdapter] = pytest.StashKey()
WORKER_INPUT_KEY = "harness_config"
MARKERS = (
    "integration: needs the real services (set automatically for the guarded paths)",
    "real_commits: the test commits for real instead of rolling back a SAVEPOINT; "
    "its rows are removed afterwards",
)
REQUIRED_INI = {
    "asyncio_mode": "auto",
    "asyncio_default_fixture_loop_scope": "session",
    "asyncio_default_test_loop_scope": "session",
}


def _exit(message: object, code: pytest.ExitCode = pytest.ExitCode.USAGE_ERROR) -> None:
    pytest.exit(str(message), returncode=code)


def _find_project(config: pytest.Config) -> Project:
    inipath = config.inipath
    start = inipath if inipath is not None and inipath.name == "pyproject.toml" else None
    return load_project(find_pyproject(start or config.rootpath))


def _matches_only_integration(name: str, /, **kwargs: str | int | bool | None) -> bool:
    return name == "integration"


def selects_guarded(config: pytest.Config, project: Project) -> bool:
    """True when the run could collect tests under a guarded path."""
    markexpr = config.getoption("markexpr", "") or ""
    if markexpr:
        try:
            from _pytest.mark.expression import Expression
        except ImportError:  # pragma: no cover - private API moved; be safe and guard
            pass
        else:
            if not Expression.compile(markexpr).evaluate(_matches_only_integration):
                return False
    base = config.invocation_params.dir
    return any(project.is_guarded(Path(base, arg.split("::", 1)[0])) for arg in config.args)


def _check_pytest_settings(config: pytest.Config, project: Project) -> None:
    wrong = {k: v for k, v in REQUIRED_INI.items() if str(config.getini(k) or "") != v}
    if wrong:
        lines = "\n".join(f'        {k} = "{v}"' for k, v in REQUIRED_INI.items())
        _exit(
            "The harness needs these pytest settings (one event loop for the whole session, so "
            "one engine serves every test); seen: "
            + ", ".join(f"{k}={config.getini(k)!r}" for k in wrong)
            + f".\n  fix:  add to [tool.pytest.ini_options] of {project.root / 'pyproject.toml'}:\n"
            + lines
        )


def _import_fixtures() -> None:
    """The heavy imports (SQLAlchemy, Alembic, httpx), while the launcher's servers boot."""
    from . import fixtures  # noqa: F401


def _resolve(config: pytest.Config, project: Project) -> HarnessConfig:
    from .embedded.procs import HarnessSetupError, ServiceStartError
    from .embedded.readiness import ServicesNotReadyError
    from .embedded.warm import StaleServicesError

    env = dict(os.environ)
    try:
        env |= find_services(
            project, env, add_cleanup=config.add_cleanup, before_wait=_import_fixtures
        )
        return resolve_config(project, env)
    except KeyboardInterrupt:
        _exit(
            "interrupted while the services started; nothing was left running",
            pytest.ExitCode.INTERRUPTED,
        )
    except (
        GuardError,
        contract.ContractError,
        ServicesNotReadyError,
        StaleServicesError,
        ServiceStartError,
        HarnessSetupError,
    ) as refusal:
        _exit(refusal)
    raise AssertionError("unreachable")


def _choose_per_run(resolved: HarnessConfig) -> HarnessConfig:
    """One look at the server: refuse a database the tests must not use, and decide whether
    each run gets a database or a schema of its own (said once, on the fallback)."""
    from .safety import choose_per_run

    notes: list[str] = []
    try:
        per_run = choose_per_run(resolved, notes)
    except GuardError as refusal:
        _exit(refusal)
    for note in notes:
        sys.stderr.write(note + "\n")
    return dataclasses.replace(resolved, per_run=per_run)


class _XdistController:
    """Hands the controller's resolved configuration to each worker: they never resolve."""

    def __init__(self, resolved: HarnessConfig) -> None:
        self.resolved = resolved

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_INPUT_KEY] = self.resolved.to_json()


def _register_fixtures(config: pytest.Config, project: Project) -> None:
    from . import faults, fixtures
    from .adapter import AdapterError, load_adapter

    config.pluginmanager.register(fixtures, "harness-fixtures")
    config.pluginmanager.register(faults, "harness-faults")
    if project.uses_s3:
        from . import s3_fixtures

        config.pluginmanager.register(s3_fixtures, "harness-s3-fixtures")
    try:
        adapter = load_adapter(project)
    except AdapterError as exc:
        _exit(exc)
    config.stash[ADAPTER] = adapter
    config.pluginmanager.register(adapter.module, "harness-app-adapter")


def _skip_the_final_collection() -> None:
    """At exit, after pytest's own last collection (which reports unraisable exceptions): the
    app stack leaves ~200k objects, and the interpreter's shutdown would walk them all once
    more (0.35 s of every run, measured here). gc.freeze() takes them out of that walk;
    Python never promised __del__ at exit, and what pytest wrote is flushed and closed."""
    gc.freeze()


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    try:
        project = _find_project(config)
    except ProjectConfigError as exc:
        _exit(exc)
    config.stash[PROJECT] = project
    if not selects_guarded(config, project):
        return
    _check_pytest_settings(config, project)
    # What follows imports the app's stack: ~200k objects that live as long as the run. The
    # collector would walk that growing heap again and again meanwhile, for garbage that
    # imports hardly make (importing the same modules alone: 1.35 s with it, 1.01 s without;
    # inside pytest, where much is imported before, 0.01-0.1 s). It runs again afterwards.
    gc.disable()
    try:
        _configure_guarded(config, project)
    finally:
        gc.enable()


def _configure_guarded(config: pytest.Config, project: Project) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        resolved = HarnessConfig.from_json(project, workerinput[WORKER_INPUT_KEY])
    else:
        resolved = _choose_per_run(_resolve(config, project))
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_XdistController(resolved), "harness-xdist")
    config.stash[CONFIG] = resolved
    atexit.register(_skip_the_final_collection)
    # An app that reads its URL at import must find the guarded test database there, never yours.
    os.environ[project.app_database_url_variable] = resolved.database_url
    _register_fixtures(config, project)


def _add_after_test_checks(item: pytest.Item) -> None:
    """Give a test that uses the run's database or bucket its after-test checks, first in its
    fixtures so they are set up before and torn down after all the others (fixtures.py,
    _after_db_test; s3_fixtures.py, _after_s3_test). Tests that use neither pay nothing."""
    names: list[str] | None = getattr(item, "fixturenames", None)
    if names is None:
        return
    if "_run_store" in names:
        after = "_after_db_test"
    elif "_run_bucket" in names:
        after = "_after_s3_test"
    else:
        return
    if names[:1] != [after]:  # parametrized tests share one list
        if after in names:
            names.remove(after)
        names.insert(0, after)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    project = config.stash.get(PROJECT, None)
    resolved = config.stash.get(CONFIG, None)
    if project is None or resolved is None:
        return
    for item in items:
        _add_after_test_checks(item)
        if project.is_guarded(item.path):
            item.add_marker(pytest.mark.integration)
            if item.get_closest_marker("timeout") is None:
                # pytest-timeout's signal method fails the test where it hangs and lets the
                # teardown (and the rest of the run) go on; its thread method would end the run.
                item.add_marker(pytest.mark.timeout(resolved.test_timeout_s, method="signal"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every module the run needs is imported by now: ~200k objects (the app stack, the
    tests) that live until the end. gc.freeze() moves them out of the collector's way, so
    Python's full collections during the run, and pytest's last one at the end, walk only
    what the tests create (0.1 s per full collection here). Garbage the tests make is still
    collected, and still reported by pytest's unraisable-exception check."""
    if CONFIG in session.config.stash:
        gc.freeze()


def _where_async_tests_hang(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The awaits the event loop's tasks were stuck in when pytest-timeout fired: for an async
    test its traceback ends in the loop's selector, not in the test."""
    import asyncio
    import traceback

    loops = {
        id(loop): loop
        for frame, _ in traceback.walk_tb(excinfo.tb)
        if isinstance(loop := frame.f_locals.get("self"), asyncio.AbstractEventLoop)
    }
    stacks = []
    for loop in loops.values():
        for task in asyncio.all_tasks(loop):
            frames, awaited = [], cast(object, task.get_coro())
            while (frame := getattr(awaited, "cr_frame", None)) is not None:
                frames.append((frame, frame.f_lineno))
                awaited = getattr(awaited, "cr_await", None)
            stacks.append("".join(traceback.StackSummary.extract(frames).format()))
    return "\n".join(stacks)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A lock wait that gave up gets an explanation in the test's report: why, and the fix;
    an async test stopped by pytest-timeout, the await where it hung."""
    report = yield
    if call.excinfo is not None and CONFIG in item.config.stash:
        from .janitor import TEST_LOCK_TIMEOUT
        from .leaks import is_lock_timeout, lock_timeout_explanation

        if is_lock_timeout(call.excinfo.value):
            report.sections.append(
                ("harness: lock timeout", lock_timeout_explanation(TEST_LOCK_TIMEOUT))
            )
        if str(call.excinfo.value).startswith("Timeout (>"):
            where = _where_async_tests_hang(call.excinfo)
            if where:
                report.sections.append(("harness: where the test hung", where))
    return report
