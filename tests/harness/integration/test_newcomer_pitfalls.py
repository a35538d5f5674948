"""Issue 10's acceptance: the tests a newcomer writes that the README did not foresee
(examples/newcomer_probe.py), in a nested run. Each passes, or fails within seconds with a
message that names the cause and the fix; the tests after it pass; the run ends and leaves
nothing. And what is decided before collection: the server's own databases, and a role that may
create neither databases nor schemas, are refused; a role that may create schemas but not
databases falls back to a schema per run and says so once.

The test role may create databases but not roles, so the roles are made on a PostgreSQL of this
module's own, where the tier is superuser over the server's Unix socket.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from realstack.config import HarnessConfig
from realstack.embedded.launcher import RunningServices
from realstack.engines import database_url as url_with_database
from realstack.stamps import RunNames
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.helpers import engine_on, names_for, run_leftovers
from tests.harness.integration.private_server import Role, make_role, superuser
from tests.harness.nested import EXAMPLES, run_nested_pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Completed = subprocess.CompletedProcess[str]
PROBE = EXAMPLES / "newcomer_probe.py"
PROBE_ID = "examples/newcomer_probe.py"
FIXTURES_PROBE = str(EXAMPLES / "fixtures_probe.py")
LIMIT_S = 15.0
PASSED, FAILED, ERROR = "passed", "failed", "error"

ROUNDS = 20
GATHERED = [f"test_gathered_requests_share_the_tests_session[{i}]" for i in range(ROUNDS)]
LOCK_WAIT = "test_a_second_connection_waiting_on_the_tests_row_fails_fast"
FOREIGN_COMMIT = "test_a_commit_through_a_second_connection_is_undone_and_reported"
LEFT_OPEN = "test_a_transaction_left_open_is_closed_and_reported"
LEFT_OPEN_REAL_COMMITS = "test_real_commits_leaving_a_transaction_open_is_closed_and_reported"
SLEEPS = "test_a_test_that_sleeps_forever_is_stopped_where_it_hangs"
# Every test of the probe, in its order, and how it must end.
EXPECTED = {
    **dict.fromkeys(GATHERED, PASSED),
    "test_gathered_rows_were_rolled_back": PASSED,
    "test_a_second_connection_does_not_see_the_tests_rows": PASSED,
    LOCK_WAIT: FAILED,
    FOREIGN_COMMIT: ERROR,  # at teardown; its call passed
    "test_the_next_test_sees_no_leaked_row": PASSED,
    "test_an_engine_url_keeps_its_password_when_rendered": PASSED,
    LEFT_OPEN: ERROR,
    LEFT_OPEN_REAL_COMMITS: ERROR,
    "test_after_them_the_run_goes_on": PASSED,
    SLEEPS: FAILED,
    "test_and_the_run_goes_on_after_it": PASSED,
}
SUMMARY = re.compile(r"=+ 2 failed, 29 passed, 3 errors in [\d.]+s")

SERVER_DATABASES = ("postgres", "template1")
FALLBACK_NOTE = "may not create databases, so each run gets a schema"
NEITHER = "may create neither"

# A title of a failure or error in pytest's terminal report: "___ test_x[1] ___" or
# "_ ERROR at teardown of test_x _" (traceback separators "_ _ _" are not titles).
_TITLE = re.compile(r"^_+ (?:ERROR at (?:setup|teardown) of )?(test\S*) _+$")


@dataclass(frozen=True)
class Outcome:
    result: str  # passed, failed or error
    seconds: float  # setup, call and teardown (junitxml's "total")
    message: str  # junitxml's failure or error, and the test's part of the terminal report


@dataclass(frozen=True)
class NestedRuns:
    """This module's nested runs, started together (most of their time is spent waiting)."""

    probe: Completed
    probe_run_id: str
    outcomes: dict[str, Outcome]
    server_databases: dict[str, tuple[str, Completed]]  # run id, result
    neither: tuple[Role, Completed]
    fallback: tuple[Role, Completed]
    fallback_reports: list[dict[str, object]]


def terminal_parts(output: str) -> dict[str, str]:
    """Each test's part of the terminal report's FAILURES and ERRORS, by test name."""
    parts: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if title := _TITLE.match(line):
            current = parts.setdefault(title.group(1), [])
        elif line.startswith("=" * 3):
            current = None
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in parts.items()}


def read_outcomes(junit: Path, terminal: str) -> dict[str, Outcome]:
    """Each test's outcome, in the run's order, from the junitxml file and the terminal."""
    parts = terminal_parts(terminal)
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):  # noqa: S314 - our own nested run wrote it
        name = case.get("name", "")
        result, messages = PASSED, []
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                result = {"failure": FAILED, "error": ERROR}.get(child.tag, "skipped")
                messages += [child.get("message") or "", child.text or ""]
        messages.append(parts.get(name, ""))
        outcomes[name] = Outcome(result, float(case.get("time", "inf")), "\n".join(messages))
    return outcomes


def probe_line(snippet: str) -> str:
    """Where `snippet` is in the probe, as a traceback names it."""
    lines = PROBE.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if snippet in line)
    return f'{PROBE.name}", line {number}'


async def private_leftovers(running: RunningServices) -> list[str]:
    """Databases and schemas named like a run's on the private server."""
    like = "LIKE 'test\\_%'"
    async with superuser(running) as conn:
        databases = await conn.fetch(f"SELECT datname FROM pg_database WHERE datname {like}")
    async with superuser(running, running.settings.credentials.pg_database) as conn:
        schemas = await conn.fetch(f"SELECT nspname FROM pg_namespace WHERE nspname {like}")
    return [f"database {r[0]}" for r in databases] + [f"schema {r[0]}" for r in schemas]


@pytest_asyncio.fixture(scope="module")
async def nested(
    harness_config: HarnessConfig,
    run_names: RunNames,
    database_url: str,
    private_postgres: RunningServices,
    tmp_path_factory: pytest.TempPathFactory,
) -> NestedRuns:
    folder = tmp_path_factory.mktemp("newcomer")
    junit, reports = folder / "probe.xml", folder / "reports"
    reports.mkdir()
    neither = await make_role(private_postgres, "neither")
    fallback = await make_role(
        private_postgres, "fallback", "GRANT CREATE ON DATABASE {database} TO {role}"
    )
    labels = ("newcomer", *SERVER_DATABASES, "neither", "fallback")
    run_ids = {label: names_for(run_names, label).run_id for label in labels}

    def run(args: list[str], label: str, **env: str) -> asyncio.Task[Completed]:
        started = run_nested_pytest(harness_config, args, run_id=run_ids[label], env=env)
        return asyncio.ensure_future(started)

    probe = run([str(PROBE), f"--junitxml={junit}"], "newcomer")
    refused = {
        name: run([FIXTURES_PROBE], name, TEST_DATABASE_URL=url_with_database(database_url, name))
        for name in SERVER_DATABASES
    }
    no_privileges = run([FIXTURES_PROBE], "neither", TEST_DATABASE_URL=neither.url)
    schema_per_run = run(
        ["-n", "2", FIXTURES_PROBE],
        "fallback",
        TEST_DATABASE_URL=fallback.url,
        PROBE_REPORT_DIR=str(reports),
    )
    await asyncio.gather(probe, no_privileges, schema_per_run, *refused.values())

    result = probe.result()
    if not junit.exists():
        pytest.fail(f"the probe's run wrote no junitxml:\n{result.stdout}{result.stderr}")
    return NestedRuns(
        probe=result,
        probe_run_id=run_ids["newcomer"],
        outcomes=read_outcomes(junit, result.stdout),
        server_databases={n: (run_ids[n], r.result()) for n, r in refused.items()},
        neither=(neither, no_privileges.result()),
        fallback=(fallback, schema_per_run.result()),
        fallback_reports=[json.loads(p.read_text()) for p in sorted(reports.glob("*.json"))],
    )


# ---------------------------------------------------------------- the newcomer's pitfalls


def test_every_probe_test_ends_as_expected_and_the_whole_run_finished(nested: NestedRuns) -> None:
    result = nested.probe
    output = result.stdout + result.stderr

    assert {name: o.result for name, o in nested.outcomes.items()} == EXPECTED, output
    assert list(nested.outcomes) == list(EXPECTED)  # in the probe's order: none was skipped
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output  # not interrupted, no crash
    assert SUMMARY.search(result.stdout), output


def test_every_probe_test_finished_within_15_s(nested: NestedRuns) -> None:
    slow = {n: o.seconds for n, o in nested.outcomes.items() if not o.seconds < LIMIT_S}

    assert slow == {}


def test_gathered_uploads_and_reads_share_the_tests_session_in_all_20_rounds(
    nested: NestedRuns,
) -> None:
    rounds = [nested.outcomes[name].result for name in GATHERED]

    assert rounds == [PASSED] * ROUNDS  # 10 POSTs and 10 GETs at once, 20 times: 0 flakes
    assert nested.outcomes["test_gathered_rows_were_rolled_back"].result == PASSED


def test_a_lock_wait_on_the_tests_row_fails_within_seconds_and_names_real_commits(
    nested: NestedRuns,
) -> None:
    outcome = nested.outcomes[LOCK_WAIT]

    assert outcome.result == FAILED
    assert "canceling statement due to lock timeout" in outcome.message  # the cause
    assert "harness: lock timeout" in outcome.message  # the harness's explanation
    assert "gave up (lock_timeout)" in outcome.message
    assert "cannot see them" in outcome.message
    assert "fix: mark the test @pytest.mark.real_commits" in outcome.message
    assert outcome.seconds < LIMIT_S


def test_a_commit_through_a_second_connection_errors_at_teardown_and_is_undone(
    nested: NestedRuns,
) -> None:
    outcome = nested.outcomes[FOREIGN_COMMIT]

    assert outcome.result == ERROR
    assert "failed on teardown" in outcome.message
    assert f"{PROBE_ID}::{FOREIGN_COMMIT} committed rows through a connection" in outcome.message
    assert "notes (0 -> 1 rows)" in outcome.message
    assert "the harness put the tables back as the migrations left them" in outcome.message
    assert "fix: mark the test @pytest.mark.real_commits" in outcome.message
    # ...and the next test, in the default mode, sees none of it.
    assert nested.outcomes["test_the_next_test_sees_no_leaked_row"].result == PASSED


@pytest.mark.parametrize(
    ("name", "query"),
    [
        (LEFT_OPEN, "INSERT INTO notes (title, body) VALUES ('open', '')"),
        (LEFT_OPEN_REAL_COMMITS, "SELECT * FROM notes FOR UPDATE"),
    ],
)
def test_a_transaction_left_open_is_closed_and_errors_at_teardown_naming_the_test(
    nested: NestedRuns, name: str, query: str
) -> None:
    outcome = nested.outcomes[name]

    assert outcome.result == ERROR
    assert f"{PROBE_ID}::{name} left 1 connection(s) with an open transaction" in outcome.message
    assert "idle in transaction" in outcome.message
    assert query in outcome.message  # the last query of the connection left open
    assert "so the harness closed them" in outcome.message
    assert "fix: close what the test opens" in outcome.message
    assert outcome.seconds < LIMIT_S  # no hang on the locks it held


def test_a_test_that_sleeps_forever_is_stopped_where_it_hangs_and_the_run_goes_on(
    nested: NestedRuns,
) -> None:
    outcome = nested.outcomes[SLEEPS]

    assert outcome.result == FAILED
    assert "Timeout (>3.0s) from pytest-timeout" in outcome.message
    assert "harness: where the test hung" in outcome.message
    assert f"{probe_line('await asyncio.sleep(3600)')}, in {SLEEPS}" in outcome.message
    assert outcome.seconds < LIMIT_S
    assert nested.outcomes["test_and_the_run_goes_on_after_it"].result == PASSED


def test_after_each_pitfall_the_next_test_passes(nested: NestedRuns) -> None:
    names = list(nested.outcomes)
    for i, name in enumerate(names):
        if EXPECTED[name] != PASSED:
            following = next(n for n in names[i + 1 :] if EXPECTED[n] == PASSED)
            assert nested.outcomes[following].result == PASSED, (name, following)


async def test_the_probes_run_leaves_no_database_and_no_bucket(
    nested: NestedRuns, admin: AsyncEngine, s3_client: S3Client
) -> None:
    buckets = await asyncio.to_thread(s3_client.list_buckets)
    dashed = nested.probe_run_id.replace("_", "-").lower()

    assert await run_leftovers(admin, nested.probe_run_id) == []
    assert [b["Name"] for b in buckets.get("Buckets", []) if dashed in b["Name"]] == []


def test_every_guarded_test_gets_the_default_timeout(
    request: pytest.FixtureRequest, harness_config: HarnessConfig
) -> None:
    marker = request.node.get_closest_marker("timeout")

    assert harness_config.test_timeout_s == 60.0  # TEST_TIMEOUT's default
    assert marker is not None
    assert (marker.args, marker.kwargs) == ((60.0,), {"method": "signal"})


# ---------------------------------------------------------------- before collection


@pytest.mark.parametrize("database", SERVER_DATABASES)
async def test_the_servers_own_database_is_refused_before_collection_and_left_untouched(
    nested: NestedRuns, admin: AsyncEngine, database_url: str, database: str
) -> None:
    run_id, result = nested.server_databases[database]
    output = result.stdout + result.stderr
    server = engine_on(database_url, database)
    try:
        async with server.connect() as conn:
            listing = text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'test\\_%'")
            schemas = (await conn.execute(listing)).scalars().all()
    finally:
        await server.dispose()

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert output.count("Integration tests refuse") == 1, output
    assert f"Integration tests refuse the server's own database {database!r}." in output
    assert "fix:  name a test database of its own" in output
    assert f":{make_url(database_url).password}@" not in output  # the password is masked
    assert "collected" not in result.stdout
    assert schemas == []
    assert await run_leftovers(admin, run_id) == []


async def test_a_role_that_may_create_neither_databases_nor_schemas_is_refused(
    nested: NestedRuns, private_postgres: RunningServices
) -> None:
    role, result = nested.neither
    output = result.stdout + result.stderr
    database = private_postgres.settings.credentials.pg_database

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert output.count(NEITHER) == 1, output
    assert f"{role.name!r} {NEITHER} in {database!r}" in output
    assert f"fix:  ALTER ROLE {role.name} CREATEDB;" in output
    assert f"GRANT CREATE ON DATABASE {database} TO {role.name}" in output
    assert role.password not in output
    assert "collected" not in result.stdout
    assert await private_leftovers(private_postgres) == []


async def test_a_role_that_may_not_create_databases_gets_a_schema_per_run_and_is_told_once(
    nested: NestedRuns, private_postgres: RunningServices
) -> None:
    role, result = nested.fallback
    output = result.stdout + result.stderr

    assert result.returncode == pytest.ExitCode.OK, output
    assert "9 passed" in result.stdout
    assert output.count(FALLBACK_NOTE) == 1, output  # the controller says it; workers do not
    assert f"role {role.name!r} {FALLBACK_NOTE}" in output
    assert sorted(str(r["per_run"]) for r in nested.fallback_reports) == ["schema"] * 3
    assert await private_leftovers(private_postgres) == []  # each worker's schema dropped
