"""A pytest plugin for the benchmarks, loaded with `-p bench.pytest_timing`: at the end of the
session it writes to the JSON file named by BENCH_TIMING_FILE (nothing without it)

    first_logstart  wall clock (time.time()) when the first test was announced, before its setup
    first_call      wall clock when the first test's body was called (its fixtures, and the
                    session's, all set up)
    tests           {nodeid: {"setup": s, "call": s, "teardown": s, "outcome": ...}}, pytest's
                    own per-phase durations (TestReport.duration)
    fixtures        {name: {"setup": [s, ...], "teardown": [s, ...]}} for function-scoped
                    fixtures: the setup of the fixture itself (its dependencies set up first),
                    and the time from the previous fixture's teardown (or the start of the
                    test's teardown phase) to the end of its own (a diagnostic: where the time
                    of a test's setup and teardown goes)
    first_setup     [[fixture, scope, s], ...]: every fixture set up during the first test's
                    setup phase (the session's included), in the order they finished; a fixture
                    that requests another one inside its body includes that one's time
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

TIMING_FILE = "BENCH_TIMING_FILE"
_marks: dict[str, float] = {}
_tests: dict[str, dict[str, Any]] = {}
_fixtures: dict[str, dict[str, list[float]]] = {}
_teardown_mark: list[float] = []  # while a test's teardown runs: when the last step ended
_first_setup: list[list[Any]] = []
_in_first_setup: list[bool] = []  # [True] while the first test's setup phase runs


def _record(name: str, phase: str, seconds: float) -> None:
    _fixtures.setdefault(name, {"setup": [], "teardown": []})[phase].append(seconds)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _marks.setdefault("first_logstart", time.time())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _marks.setdefault("first_call", time.time())


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        elapsed = time.perf_counter() - started
        if fixturedef.scope == "function":
            _record(fixturedef.argname, "setup", elapsed)
        if _in_first_setup:
            _first_setup.append([fixturedef.argname, fixturedef.scope, elapsed])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    first = "first_setup" not in _marks
    _marks.setdefault("first_setup", time.time())
    if first:
        _in_first_setup.append(True)
    try:
        return (yield)
    finally:
        _in_first_setup.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    _teardown_mark[:] = [time.perf_counter()]
    try:
        return (yield)
    finally:
        _teardown_mark.clear()


def pytest_fixture_post_finalizer(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    if not _teardown_mark:
        return
    now = time.perf_counter()
    if fixturedef.scope == "function":
        _record(fixturedef.argname, "teardown", now - _teardown_mark[0])
    _teardown_mark[:] = [now]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    phases = _tests.setdefault(report.nodeid, {"outcome": "passed"})
    phases[report.when] = report.duration
    if report.outcome != "passed":
        phases["outcome"] = f"{report.when} {report.outcome}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(TIMING_FILE, "")
    if target:
        found = {**_marks, "tests": _tests, "fixtures": _fixtures, "first_setup": _first_setup}
        Path(target).write_text(json.dumps(found))
