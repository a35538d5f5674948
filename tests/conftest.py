"""Shared pytest setup: the URL guard, the `integration` marker, and loading the harness fixtures.

Only cheap imports at module level: the guard must decide before collection.
The fixtures (SQLAlchemy, FastAPI, boto3) are registered only once it passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import contract, guard

INTEGRATION_DIR = Path(__file__).parent / "integration"
EMBEDDED_SWITCH = "TEST_EMBEDDED_SERVICES"
GUARDED_TARGETS = pytest.StashKey[guard.GuardedTargets]()


def _matches_only_integration(name: str, /, **kwargs: str | int | bool | None) -> bool:
    return name == "integration"


def _selects_integration(config: pytest.Config) -> bool:
    """True when the run could collect tests under tests/integration/."""
    markexpr = config.getoption("markexpr", "") or ""
    if markexpr:
        try:
            from _pytest.mark.expression import Expression
        except ImportError:  # pragma: no cover - private API moved; be safe and guard
            pass
        else:
            expr = Expression.compile(markexpr)
            if not expr.evaluate(_matches_only_integration):
                return False
    integration = INTEGRATION_DIR.resolve()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if path == integration or integration in path.parents or path in integration.parents:
            return True
    return False


def _start_embedded_services_if_asked(config: pytest.Config) -> None:
    """`TEST_EMBEDDED_SERVICES=1 pytest tests/integration`: the IDE-friendly switch."""
    if os.environ.get(EMBEDDED_SWITCH, "").lower() not in {"1", "true", "yes"}:
        return
    if hasattr(config, "workerinput"):
        return  # xdist workers inherit the controller's services through the environment
    if os.environ.get("POSTGRES_PORT") or os.environ.get("TEST_DATABASE_URL"):
        return  # services already provided (tox, make, or the user)
    from tests.harness.services import start_embedded_services

    running = start_embedded_services()
    os.environ.update(running.env)
    config.add_cleanup(running.stop)


def _use_warm_services_if_up() -> None:
    """`make services-up` wrote .services.env: use those services unless others are named."""
    if any(os.environ.get(name) for name in ("TEST_DATABASE_URL", "POSTGRES_PORT")):
        return
    from tests.harness.warm import StaleServicesError, load_warm_services

    try:
        warm = load_warm_services()
    except StaleServicesError as stale:
        pytest.exit(str(stale), returncode=pytest.ExitCode.USAGE_ERROR)
    if warm:
        os.environ.update(warm)


def pytest_configure(config: pytest.Config) -> None:
    if not _selects_integration(config):
        return
    _use_warm_services_if_up()
    _start_embedded_services_if_asked(config)
    env = dict(os.environ)
    try:
        targets = guard.check_targets(
            contract.resolve_database_url(env), contract.resolve_s3(env), env
        )
    except guard.GuardError as refusal:
        pytest.exit(str(refusal), returncode=pytest.ExitCode.USAGE_ERROR)
    config.stash[GUARDED_TARGETS] = targets
    # Set before xdist starts its workers, so they all share the run id.
    from tests.harness.janitor import new_run_id

    os.environ.setdefault(contract.RUN_ID_VARIABLE, new_run_id())
    from tests.harness import fixtures

    config.pluginmanager.register(fixtures, "docstore-harness-fixtures")
    # Embedded launcher: its servers booted while the imports above ran; wait until they answer.
    from tests.harness.readiness import wait_for_services_or_exit

    wait_for_services_or_exit(config)
    if "TEST_DATABASE_URL" in env and not hasattr(config, "workerinput"):
        # A URL you typed may be a real database: refuse one with tables we did not create.
        from tests.harness.safety import check_database_is_for_tests

        try:
            check_database_is_for_tests(targets.database_url, env)
        except guard.GuardError as refusal:
            pytest.exit(str(refusal), returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = INTEGRATION_DIR.resolve()
    for item in items:
        if integration in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
