"""The URL guard: what it accepts, what it says when it refuses, and when it acts.

The project here is a made-up "sample" one: the guard knows nothing of any app. The
subprocess tests run pytest on the harness tier's own configuration (its guarded path is
tests/harness/integration).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from realstack import contract, guard
from realstack.config import HarnessConfig, resolve_config
from realstack.guard import DatabaseOrigin
from realstack.project import Project

ROOT = Path(__file__).resolve().parents[3]
TIER = ROOT / "tests/harness"
GUARDED = "tests/harness/integration"
THIS_FILE = "tests/harness/unit/test_guard.py"

PROJECT = Project(
    root=Path("/nonexistent/sample"),
    name="sample",
    services=frozenset({"postgres", "s3"}),
    guarded_paths=(Path("/nonexistent/sample/tests/integration"),),
    adapter="sample_adapter",
    alembic_config=Path("/nonexistent/sample/alembic.ini"),
    app_database_url_variable="SAMPLE_DATABASE_URL",
    drift_check=True,
)
POSTGRES_ONLY = replace(PROJECT, services=frozenset({"postgres"}))

GOOD_URL = "postgresql+asyncpg://u:hunter2@127.0.0.1:5432/sample_test"
GOOD_S3 = {"TEST_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}
SQLITE_URL = "sqlite+aiosqlite:///t.db"
REQUIRES = "Integration tests require postgresql+asyncpg://"
NONE_CONFIGURED = "Integration tests need a PostgreSQL test database, and none is configured."

BAD_URLS = {
    "sqlite": SQLITE_URL,
    "mysql": "mysql+aiomysql://u:hunter2@127.0.0.1/db",
    "plain postgresql": "postgresql://u:hunter2@127.0.0.1/db",
    "psycopg": "postgresql+psycopg://u:hunter2@127.0.0.1/db",
    "postgres alias": "postgres://u:hunter2@127.0.0.1/db",
    "garbage": "not a url at all",
    "missing host": "postgresql+asyncpg://u:hunter2@/db",
    "missing database": "postgresql+asyncpg://u:hunter2@127.0.0.1:5432/",
    "upper-case scheme": "POSTGRESQL+ASYNCPG://u:hunter2@127.0.0.1/db",
}
BLANKS = {"empty": "", "whitespace": "   "}


def _check(env: dict[str, str], project: Project = PROJECT) -> HarnessConfig:
    return resolve_config(project, env)


def _check_database(env: dict[str, str]) -> str:
    target = contract.resolve_database(PROJECT, env)
    return guard.check_database_target(PROJECT, target, frozenset(), env)


# ---------------------------------------------------------------- what is accepted


def test_accepts_an_asyncpg_url_and_an_s3_endpoint() -> None:
    config = _check({"TEST_DATABASE_URL": GOOD_URL, **GOOD_S3})

    assert config.database_url == GOOD_URL
    assert config.s3 is not None and config.s3.endpoint_url == "http://127.0.0.1:9000"
    assert config.database_origin is guard.DatabaseOrigin.EXPLICIT
    assert config.project is PROJECT


def test_builds_the_url_from_the_service_variables_with_the_projects_credentials() -> None:
    target = contract.resolve_database(
        PROJECT, {"POSTGRES_HOST": "172.17.0.1", "POSTGRES_PORT": "49153"}
    )

    assert target.url == (
        "postgresql+asyncpg://sample_test:sample_test_pw@172.17.0.1:49153/sample_test"
    )
    assert target.source == "POSTGRES_HOST/POSTGRES_PORT"


def test_test_database_url_wins_over_the_service_variables() -> None:
    env = {"TEST_DATABASE_URL": GOOD_URL, "POSTGRES_HOST": "h", "POSTGRES_PORT": "1"}

    assert contract.resolve_database(PROJECT, env).url == GOOD_URL


def test_the_apps_own_database_url_alone_is_never_used() -> None:
    env = {"SAMPLE_DATABASE_URL": GOOD_URL, "DATABASE_URL": GOOD_URL}

    assert contract.resolve_database(PROJECT, env).url is None


def test_a_postgres_only_project_needs_no_s3_endpoint() -> None:
    config = _check({"TEST_DATABASE_URL": GOOD_URL}, POSTGRES_ONLY)

    assert config.s3 is None


def test_the_run_id_comes_from_the_projects_own_variable() -> None:
    env = {"TEST_DATABASE_URL": GOOD_URL, **GOOD_S3, "SAMPLE_TEST_RUN_ID": "250101_42"}

    assert _check(env).run_id == "250101_42"


# ---------------------------------------------------------------- blank counts as unset


@pytest.mark.parametrize("blank", BLANKS.values(), ids=BLANKS.keys())
def test_a_blank_test_database_url_falls_back_to_the_service_variables(blank: str) -> None:
    env = {"TEST_DATABASE_URL": blank, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432"}

    url = _check_database(env)

    assert url == "postgresql+asyncpg://sample_test:sample_test_pw@127.0.0.1:5432/sample_test"


@pytest.mark.parametrize("blank", BLANKS.values(), ids=BLANKS.keys())
def test_a_blank_test_database_url_and_nothing_else_is_none_configured(blank: str) -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check_database({"TEST_DATABASE_URL": blank})

    assert str(refusal.value).startswith(NONE_CONFIGURED)


def test_blank_credentials_fall_back_to_the_projects() -> None:
    env = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432", "POSTGRES_USER": " "}
    env |= {"POSTGRES_PASSWORD": "", "POSTGRES_DB": ""}

    assert _check_database(env).startswith("postgresql+asyncpg://sample_test:sample_test_pw@")


def test_a_blank_s3_endpoint_falls_back_to_the_service_variables() -> None:
    env = {"TEST_DATABASE_URL": GOOD_URL, "TEST_S3_ENDPOINT_URL": " "}
    env |= {"MINIO_HOST": "127.0.0.1", "MINIO_PORT": "9000"}

    config = _check(env)

    assert config.s3 is not None and config.s3.endpoint_url == "http://127.0.0.1:9000"
    assert (config.s3.access_key, config.s3.secret_key) == ("sample-test", "sample-test-secret")


# ---------------------------------------------------------------- what is refused, and how


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_refuses_anything_but_postgresql_asyncpg(url: str) -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check({"TEST_DATABASE_URL": url, **GOOD_S3})

    message = str(refusal.value)
    assert message.startswith(REQUIRES)
    assert "hunter2" not in message
    assert "TEST_DATABASE_URL=" in message


@pytest.mark.parametrize("database", ["postgres", "template0", "template1"])
@pytest.mark.parametrize("variable", ["TEST_DATABASE_URL", "POSTGRES_DB"])
def test_refuses_the_servers_own_databases_and_names_a_test_database_instead(
    database: str, variable: str
) -> None:
    env = (
        {"TEST_DATABASE_URL": GOOD_URL.replace("/sample_test", f"/{database}")}
        if variable == "TEST_DATABASE_URL"
        else {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432", "POSTGRES_DB": database}
    )
    with pytest.raises(guard.GuardError) as refusal:
        _check({**env, **GOOD_S3})

    message = str(refusal.value)
    assert message.startswith(f"Integration tests refuse the server's own database {database!r}.")
    assert "fix:  name a test database of its own, e.g. POSTGRES_DB=sample_test" in message
    assert "hunter2" not in message


def test_masks_the_password_but_shows_the_rest() -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check({"TEST_DATABASE_URL": "postgresql://me:s3cret@db.local:5432/app", **GOOD_S3})

    assert "postgresql://me:***@db.local:5432/app" in str(refusal.value)
    assert "s3cret" not in str(refusal.value)


def test_missing_url_names_every_way_to_provide_one_and_warns_about_the_apps_url() -> None:
    env = {"SAMPLE_DATABASE_URL": "postgresql+asyncpg://me:pw@prod/app", **GOOD_S3}

    with pytest.raises(guard.GuardError) as refusal:
        _check(env)

    message = str(refusal.value)
    assert message.startswith(NONE_CONFIGURED)
    for name in ("TEST_DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "embedded run -- pytest"):
        assert name in message
    assert "SAMPLE_DATABASE_URL is set, but the integration tests never use it" in message
    assert "pw@prod" not in message


def test_missing_s3_endpoint_is_refused_with_the_variables_to_set() -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check({"TEST_DATABASE_URL": GOOD_URL})

    assert "TEST_S3_ENDPOINT_URL" in str(refusal.value)
    assert "MINIO_HOST/MINIO_PORT" in str(refusal.value)


@pytest.mark.parametrize("endpoint", ["ftp://127.0.0.1:21", "127.0.0.1:9000", "http://"])
def test_an_s3_endpoint_must_be_http_or_https_with_a_host(endpoint: str) -> None:
    target = contract.resolve_s3(PROJECT, {"TEST_S3_ENDPOINT_URL": endpoint})

    with pytest.raises(guard.GuardError) as refusal:
        guard.check_s3_target(target, frozenset())

    assert "http:// or https://" in str(refusal.value)


@pytest.mark.parametrize(
    "env",
    [
        {"TEST_DATABASE_URL": "postgresql+asyncpg://u:hunter2@db.prod.example:5432/app", **GOOD_S3},
        {"TEST_DATABASE_URL": GOOD_URL, "TEST_S3_ENDPOINT_URL": "https://s3.amazonaws.com"},
    ],
    ids=["database", "s3"],
)
def test_an_explicit_url_on_a_remote_host_is_refused_unless_allowed(env: dict[str, str]) -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check(env)

    assert "refuse the non-loopback host" in str(refusal.value)
    assert "TEST_ALLOWED_HOSTS=" in str(refusal.value)
    assert "hunter2" not in str(refusal.value)


def test_listed_hosts_are_allowed_for_ci_service_containers() -> None:
    env = {
        "TEST_DATABASE_URL": "postgresql+asyncpg://u:p@postgres:5432/app",
        "TEST_S3_ENDPOINT_URL": "http://minio:9000",
        "TEST_ALLOWED_HOSTS": "postgres, MINIO",
    }

    assert _check(env).database_url.startswith("postgresql+asyncpg://u:p@postgres")


def test_the_s3_target_is_checked_against_the_allowed_hosts_it_is_given() -> None:
    target = contract.resolve_s3(PROJECT, {"TEST_S3_ENDPOINT_URL": "http://minio:9000"})

    assert guard.check_s3_target(target, frozenset({"minio"})) == "http://minio:9000"
    with pytest.raises(guard.GuardError):
        guard.check_s3_target(target, frozenset())


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.1.1", "[::1]"])
def test_loopback_hosts_need_no_permission(host: str) -> None:
    env = {"TEST_DATABASE_URL": f"postgresql+asyncpg://u:p@{host}:5432/app", **GOOD_S3}

    assert _check(env).database_url.endswith("/app")


def test_urls_built_from_service_variables_are_trusted_on_any_host() -> None:
    env = {"POSTGRES_HOST": "172.17.0.1", "POSTGRES_PORT": "5432", "MINIO_HOST": "172.17.0.1"}
    env["MINIO_PORT"] = "9000"

    assert "172.17.0.1" in _check(env).database_url


# ---------------------------------------------------------------- where the database came from

ENDPOINT = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "32768"}
MARK = "TEST_TOX_DOCKER_SERVICES"


def _ended_pid() -> int:
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    return probe.pid


def _mark(pid: int, port: str = "32768") -> str:
    """What the harness's tox hook writes for a tox run of this pid (toxplugin.py)."""
    postgres = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": port}
    minio = {"MINIO_HOST": "127.0.0.1", "MINIO_PORT": "32770"}
    mark = contract.ToxDockerMark.of({f"postgres-tox-{pid}": postgres, f"minio-tox-{pid}": minio})
    return str(mark)


def test_postgres_variables_the_harness_services_published_are_trusted() -> None:
    config = resolve_config(PROJECT, {**ENDPOINT, **GOOD_S3}, published=ENDPOINT)

    assert config.database_origin is DatabaseOrigin.SERVICES
    assert not config.database_origin.inspected


def test_postgres_variables_the_tox_hook_marked_for_a_live_tox_run_are_trusted() -> None:
    env = {**ENDPOINT, **GOOD_S3, MARK: _mark(os.getpid())}

    config = _check(env)

    assert config.database_origin is DatabaseOrigin.TOX_DOCKER
    assert not config.database_origin.inspected
    assert config.database_origin_detail == f"tox-docker's container postgres-tox-{os.getpid()}"


@pytest.mark.parametrize(
    ("tox_run", "marked_port", "published_port", "why"),
    [
        (None, None, None, f"{MARK} is unset"),
        (None, None, "40123", f"{MARK} is unset"),  # the harness's services are elsewhere
        ("live", "5432", None, "names no container with POSTGRES_HOST=127.0.0.1"),
        ("ended", "32768", None, "has ended"),
    ],
    ids=["no mark", "other published services", "mark of another port", "mark of an ended run"],
)
def test_postgres_variables_nobody_vouches_for_are_inspected_and_say_why(
    tox_run: str | None, marked_port: str | None, published_port: str | None, why: str
) -> None:
    env = {**ENDPOINT, **GOOD_S3}
    if tox_run is not None:
        pid = os.getpid() if tox_run == "live" else _ended_pid()
        env[MARK] = _mark(pid, port=marked_port or "")
    published = {**ENDPOINT, "POSTGRES_PORT": published_port} if published_port else {}

    config = resolve_config(PROJECT, env, published=published)

    assert config.database_origin is DatabaseOrigin.UNMARKED
    assert config.database_origin.inspected
    assert why in config.database_origin_detail


def test_a_test_database_url_is_inspected_whatever_the_mark_says() -> None:
    env = {"TEST_DATABASE_URL": GOOD_URL, **ENDPOINT, **GOOD_S3, MARK: _mark(os.getpid())}

    config = resolve_config(PROJECT, env, published=ENDPOINT)

    assert config.database_origin is DatabaseOrigin.EXPLICIT
    assert config.database_origin.inspected


def test_xdist_workers_take_the_controllers_origin() -> None:
    config = _check({**ENDPOINT, **GOOD_S3})

    copy = HarnessConfig.from_json(PROJECT, config.to_json())

    assert copy.database_origin is DatabaseOrigin.UNMARKED
    assert copy == config


def test_a_malformed_switch_is_refused_by_name() -> None:
    env = {"TEST_DATABASE_URL": GOOD_URL, **GOOD_S3, "TEST_KEEP_ON_FAILURE": "maybe"}

    with pytest.raises(contract.ContractError) as refusal:
        _check(env)

    assert "TEST_KEEP_ON_FAILURE='maybe'" in str(refusal.value)


# ---------------------------------------------------------------- when pytest meets the guard


@pytest.fixture
def run_pytest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., pytest.RunResult]:
    """pytest on the harness tier's configuration (pytester, in a subprocess), with none of
    this run's harness variables."""
    harness = {variable.name for variable in contract.VARIABLES}
    for name in list(os.environ):
        if (
            name in harness
            or name.endswith(("_SERVICES_READY_FILE", "_TEST_RUN_ID", "DATABASE_URL"))
            or name == "PYTEST_ADDOPTS"
        ):
            monkeypatch.delenv(name)

    def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> pytest.RunResult:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(cwd)
        return pytester.runpytest_subprocess(
            "-c", str(TIER / "pyproject.toml"), "-p", "no:cacheprovider", *args, timeout=60
        )

    return run


@pytest.mark.parametrize(
    ("args", "cwd"),
    [([GUARDED], ROOT), (["tests/harness"], ROOT), (["-m", "integration"], TIER)],
    ids=["guarded path", "the tier", "marker, from the tier's folder"],
)
def test_pytest_exits_before_collection_on_a_sqlite_url(
    run_pytest: Callable[..., pytest.RunResult], args: list[str], cwd: Path
) -> None:
    result = run_pytest(args, {"TEST_DATABASE_URL": SQLITE_URL, **GOOD_S3}, cwd)

    assert result.ret == pytest.ExitCode.USAGE_ERROR, str(result.stdout) + str(result.stderr)
    assert REQUIRES in str(result.stderr)
    assert "collected" not in str(result.stdout)


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_every_bad_url_stops_pytest_before_collection_with_the_password_masked(
    run_pytest: Callable[..., pytest.RunResult], url: str
) -> None:
    result = run_pytest([GUARDED], {"TEST_DATABASE_URL": url, **GOOD_S3})

    assert result.ret == pytest.ExitCode.USAGE_ERROR, str(result.stdout) + str(result.stderr)
    assert REQUIRES in str(result.stderr)
    assert "hunter2" not in str(result.stderr) + str(result.stdout)
    assert "collected" not in str(result.stdout)


@pytest.mark.parametrize("blank", [None, *BLANKS.values()], ids=["unset", *BLANKS.keys()])
def test_pytest_exits_before_collection_without_any_url(
    run_pytest: Callable[..., pytest.RunResult], blank: str | None
) -> None:
    result = run_pytest([GUARDED], {} if blank is None else {"TEST_DATABASE_URL": blank})

    assert result.ret == pytest.ExitCode.USAGE_ERROR, str(result.stdout) + str(result.stderr)
    assert NONE_CONFIGURED in str(result.stderr)
    assert "TEST_DATABASE_URL" in str(result.stderr)
    assert "collected" not in str(result.stdout)


def test_unit_only_runs_never_meet_the_guard(run_pytest: Callable[..., pytest.RunResult]) -> None:
    result = run_pytest(
        [str(ROOT / THIS_FILE), "-k", "accepts_an_asyncpg", "-q"],
        {"TEST_DATABASE_URL": SQLITE_URL},
    )

    result.assert_outcomes(passed=1)


def test_deselecting_the_integration_marker_skips_the_guard(
    run_pytest: Callable[..., pytest.RunResult],
) -> None:
    result = run_pytest(
        [str(ROOT / "tests/harness"), "-m", "not integration", "-k", "accepts_an_asyncpg", "-q"],
        {"TEST_DATABASE_URL": SQLITE_URL},
    )

    assert result.ret == 0, str(result.stdout) + str(result.stderr)


def test_not_integration_deselects_every_guarded_test_in_a_run_with_no_services(
    run_pytest: Callable[..., pytest.RunResult],
) -> None:
    """The marker is added as each test is collected: before `-m` selects, even in a run that
    resolves nothing (it used to be added only once the services were resolved)."""
    result = run_pytest(
        [str(ROOT / "tests/harness"), "-m", "not integration", "--collect-only", "-q"], {}
    )

    collected = str(result.stdout)
    assert result.ret == 0, collected + str(result.stderr)
    assert "\nunit/test_guard.py::" in collected  # paths relative to the tier's rootdir
    assert "integration/" not in collected
    assert re.search(r"\d+/\d+ tests collected \([1-9]\d* deselected\)", collected), collected
