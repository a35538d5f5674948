"""Issue 21's probe app (probe_app/) under its own adapter, in nested runs: the lifespan runs
once per session and its state reaches every request, the adapter's dependency overrides
survive the tests' own, a dependency that yields a sessionmaker works inside the test's
transaction, and an adapter replaces the app's lifespan or opts out of it."""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from realstack.config import HarnessConfig
from realstack.stamps import RunNames
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.helpers import names_for, run_leftovers
from tests.harness.nested import run_nested_pytest
from tests.harness.probe_project import NO_LIFESPAN, REPLACED_LIFESPAN, build_probe_project

Completed = subprocess.CompletedProcess[str]
PROBE = "probe_app_probe.py"
LIFESPANS = "probe_app_lifespan_probe.py"
ADAPTER = Path(__file__).resolve().parents[1] / "probe_app" / "adapter.py"
MAX_ADAPTER_LINES = 25
_RESULT = re.compile(r"::(test_\w+) (PASSED|FAILED|ERROR)")


@dataclass(frozen=True)
class ProbeRun:
    result: Completed = field(repr=False)  # its output is in each assertion's message
    run_id: str

    @property
    def outcomes(self) -> dict[str, str]:
        return dict(_RESULT.findall(self.result.stdout))

    def passed(self, *tests: str) -> bool:
        return all(self.outcomes.get(test) == "PASSED" for test in tests)

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


@dataclass(frozen=True)
class ProbeRuns:
    app: ProbeRun  # the probe's own adapter
    replaced: ProbeRun  # an adapter whose lifespan replaces the app's
    none: ProbeRun  # an adapter with lifespan = None


@pytest_asyncio.fixture(scope="module")
async def probe_runs(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path_factory: pytest.TempPathFactory
) -> ProbeRuns:
    """The three nested runs, started together (they mostly wait on the servers)."""

    async def run(label: str, probe: str, adapter: str | None, *args: str) -> ProbeRun:
        root = tmp_path_factory.mktemp(label)
        project = build_probe_project(root, probe, adapter)
        run_id = names_for(run_names, label).run_id
        result = await run_nested_pytest(
            harness_config, ["-v", f"checks/{probe}", *args], run_id=run_id, project=project
        )
        return ProbeRun(result, run_id)

    runs = await asyncio.gather(
        run("app", PROBE, None),
        run("replaced", LIFESPANS, REPLACED_LIFESPAN, "-k", "runs_instead"),
        run("none", LIFESPANS, NO_LIFESPAN, "-k", "no_lifespan"),
    )
    return ProbeRuns(*runs)


def test_a_route_reads_what_the_lifespan_yielded(probe_runs: ProbeRuns) -> None:
    assert probe_runs.app.passed("test_a_route_reads_the_lifespans_state"), probe_runs.app.output


def test_each_request_gets_a_shallow_copy_of_the_lifespan_state(probe_runs: ProbeRuns) -> None:
    assert probe_runs.app.passed("test_each_request_gets_a_shallow_copy_of_the_state"), (
        probe_runs.app.output
    )


def test_the_lifespan_runs_once_per_session(probe_runs: ProbeRuns) -> None:
    assert probe_runs.app.passed("test_the_apps_lifespan_ran_once_for_the_whole_session"), (
        probe_runs.app.output
    )


def test_the_adapters_overrides_survive_and_a_tests_own_is_undone(probe_runs: ProbeRuns) -> None:
    assert probe_runs.app.passed(
        "test_a_test_overrides_a_dependency_for_itself",
        "test_the_adapters_override_is_back_after_it",
    ), probe_runs.app.output


def test_a_sessionmaker_dependency_writes_in_the_tests_rolled_back_transaction(
    probe_runs: ProbeRuns,
) -> None:
    assert probe_runs.app.passed(
        "test_a_sessionmaker_dependency_writes_in_the_tests_transaction",
        "test_its_writes_are_gone_in_the_next_test",
        "test_gathered_requests_take_turns_on_the_tests_sessionmaker",
        "test_the_tests_sessionmaker_shares_the_apps_transaction",
    ), probe_runs.app.output


def test_what_a_repository_wrote_with_its_own_client_is_gone_when_the_next_test_starts(
    probe_runs: ProbeRuns,
) -> None:
    assert probe_runs.app.passed(
        "test_a_repository_writes_with_its_own_client_and_no_request",
        "test_the_bucket_is_empty_when_the_next_test_starts",
    ), probe_runs.app.output


async def test_the_runs_pass_whole_and_leave_nothing(
    probe_runs: ProbeRuns, admin: AsyncEngine
) -> None:
    runs = (probe_runs.app, probe_runs.replaced, probe_runs.none)

    assert [run.result.returncode for run in runs] == [0, 0, 0], [run.output for run in runs]
    assert [await run_leftovers(admin, run.run_id) for run in runs] == [[], [], []]


@pytest.mark.parametrize(
    ("run", "test"),
    [("replaced", "test_the_adapters_lifespan_runs_instead"), ("none", "test_no_lifespan_runs")],
)
def test_an_adapter_replaces_the_apps_lifespan_or_opts_out(
    probe_runs: ProbeRuns, run: str, test: str
) -> None:
    nested: ProbeRun = getattr(probe_runs, run)

    assert nested.outcomes == {test: "PASSED"}, nested.output


def test_the_probes_adapter_is_short() -> None:
    assert len(ADAPTER.read_text().splitlines()) <= MAX_ADAPTER_LINES
