"""The URL guard: what it accepts, what it says when it refuses, and when it acts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import contract, guard

ROOT = Path(__file__).resolve().parents[2]
GOOD_URL = "postgresql+asyncpg://u:hunter2@127.0.0.1:5432/docstore_test"
GOOD_S3 = {"TEST_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}

BAD_URLS = {
    "sqlite": "sqlite+aiosqlite:///t.db",
    "mysql": "mysql+aiomysql://u:hunter2@127.0.0.1/db",
    "plain postgresql": "postgresql://u:hunter2@127.0.0.1/db",
    "psycopg": "postgresql+psycopg://u:hunter2@127.0.0.1/db",
    "postgres alias": "postgres://u:hunter2@127.0.0.1/db",
    "empty": "",
    "whitespace": "   ",
    "garbage": "not a url at all",
    "missing host": "postgresql+asyncpg://u:hunter2@/db",
    "missing database": "postgresql+asyncpg://u:hunter2@127.0.0.1:5432/",
    "upper-case scheme": "POSTGRESQL+ASYNCPG://u:hunter2@127.0.0.1/db",
}


def _check(env: dict[str, str]) -> guard.GuardedTargets:
    return guard.check_targets(contract.resolve_database_url(env), contract.resolve_s3(env), env)


def test_accepts_an_asyncpg_url_and_an_s3_endpoint() -> None:
    targets = _check({"TEST_DATABASE_URL": GOOD_URL, **GOOD_S3})
    assert targets.database_url == GOOD_URL
    assert targets.s3_endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_refuses_anything_but_postgresql_asyncpg(url: str) -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check({"TEST_DATABASE_URL": url, **GOOD_S3})
    message = str(refusal.value)
    assert message.startswith("Integration tests require postgresql+asyncpg://")
    assert "hunter2" not in message
    assert "TEST_DATABASE_URL=" in message


def test_masks_the_password_but_shows_the_rest() -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check({"TEST_DATABASE_URL": "postgresql://me:s3cret@db.local:5432/app", **GOOD_S3})
    assert "postgresql://me:***@db.local:5432/app" in str(refusal.value)
    assert "s3cret" not in str(refusal.value)


def test_missing_url_names_every_way_to_provide_one_and_warns_about_database_url() -> None:
    env = {"DATABASE_URL": "postgresql+asyncpg://me:pw@prod/app", **GOOD_S3}
    with pytest.raises(guard.GuardError) as refusal:
        _check(env)
    message = str(refusal.value)
    for name in ("TEST_DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "make test-integration"):
        assert name in message
    assert "DATABASE_URL is set, but the integration tier never uses it" in message


def test_database_url_alone_is_never_used() -> None:
    target = contract.resolve_database_url({"DATABASE_URL": GOOD_URL})
    assert target.url is None


def test_builds_the_url_from_the_service_variables_with_default_credentials() -> None:
    target = contract.resolve_database_url(
        {"POSTGRES_HOST": "172.17.0.1", "POSTGRES_PORT": "49153"}
    )
    assert target.url == (
        "postgresql+asyncpg://docstore_test:docstore_test_pw@172.17.0.1:49153/docstore_test"
    )


def test_test_database_url_wins_over_the_service_variables() -> None:
    env = {"TEST_DATABASE_URL": GOOD_URL, "POSTGRES_HOST": "h", "POSTGRES_PORT": "1"}
    assert contract.resolve_database_url(env).url == GOOD_URL


def test_missing_s3_endpoint_is_refused_with_the_variables_to_set() -> None:
    with pytest.raises(guard.GuardError) as refusal:
        _check({"TEST_DATABASE_URL": GOOD_URL})
    assert "TEST_S3_ENDPOINT_URL" in str(refusal.value)
    assert "MINIO_HOST/MINIO_PORT" in str(refusal.value)


def _run_pytest(args: list[str], env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in contract.BY_NAME and k not in {"DATABASE_URL", "PYTEST_ADDOPTS"}
    }
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args", [["tests/integration"], ["tests"], ["-m", "integration"]], ids=" ".join
)
def test_pytest_exits_before_collection_on_a_sqlite_url(args: list[str]) -> None:
    result = _run_pytest(args, {"TEST_DATABASE_URL": "sqlite+aiosqlite:///t.db", **GOOD_S3})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "Integration tests require postgresql+asyncpg://" in result.stderr
    assert "collected" not in result.stdout


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_every_bad_url_stops_pytest_before_collection_with_the_password_masked(url: str) -> None:
    result = _run_pytest(["tests/integration"], {"TEST_DATABASE_URL": url, **GOOD_S3})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "Integration tests require postgresql+asyncpg://" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "collected" not in result.stdout


def test_pytest_exits_before_collection_without_any_url() -> None:
    result = _run_pytest(["tests/integration"], {})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "TEST_DATABASE_URL" in result.stderr
    assert "collected" not in result.stdout


def test_unit_only_runs_never_meet_the_guard() -> None:
    result = _run_pytest(
        ["tests/unit/test_guard.py", "-k", "accepts_an_asyncpg", "-q"],
        {"TEST_DATABASE_URL": "sqlite+aiosqlite:///t.db"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_deselecting_the_integration_marker_skips_the_guard() -> None:
    result = _run_pytest(
        ["tests", "-m", "not integration", "-k", "accepts_an_asyncpg", "-q"],
        {"TEST_DATABASE_URL": "sqlite+aiosqlite:///t.db"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
        "TEST_ALLOWED_HOSTS": "postgres, minio",
    }
    assert _check(env).database_url.startswith("postgresql+asyncpg://u:p@postgres")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.1.1", "[::1]"])
def test_loopback_hosts_need_no_permission(host: str) -> None:
    env = {"TEST_DATABASE_URL": f"postgresql+asyncpg://u:p@{host}:5432/app", **GOOD_S3}
    assert _check(env).database_url.endswith("/app")


def test_urls_built_from_service_variables_are_trusted_on_any_host() -> None:
    env = {"POSTGRES_HOST": "172.17.0.1", "POSTGRES_PORT": "5432", "MINIO_HOST": "172.17.0.1"}
    env["MINIO_PORT"] = "9000"
    assert "172.17.0.1" in _check(env).database_url
