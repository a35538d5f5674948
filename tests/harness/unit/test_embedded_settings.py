"""The settings the launcher is given, and its command line's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from realstack.config import EmbeddedSettings, embedded_settings, service_variables
from realstack.contract import ContractError
from realstack.embedded.__main__ import main
from realstack.embedded.launcher import create_embedded_services
from realstack.project import Project

from tests.harness.helpers import write_project

POSTGRES_VARIABLES = {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD"}
POSTGRES_VARIABLES |= {"POSTGRES_DB"}
S3_VARIABLES = {"MINIO_HOST", "MINIO_PORT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "S3_REGION"}


def test_credentials_come_from_the_environment_else_the_projects_defaults(project: Project) -> None:
    settings = embedded_settings(project, {"POSTGRES_USER": "me"})

    assert settings.credentials.pg_user == "me"
    assert settings.credentials.pg_password == project.credentials.pg_password == "sample_test_pw"
    assert settings.credentials.s3_region == "us-east-1"
    assert settings.timeout_s == 30.0


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "NaN", "0", "-5", "soon"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused(
    project: Project, raw: str
) -> None:
    with pytest.raises(ContractError, match=f"TEST_SERVICES_TIMEOUT='{raw}'"):
        embedded_settings(project, {"TEST_SERVICES_TIMEOUT": raw})


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_the_cli_refuses_such_a_timeout_with_exit_2_and_no_traceback(
    project: Project, raw: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("TEST_SERVICES_TIMEOUT", raw)

    code = main(["run", "--", "true"])

    err = capsys.readouterr().err
    assert code == 2
    assert "TEST_SERVICES_TIMEOUT" in err and "positive, finite" in err
    assert "Traceback" not in err


def test_the_cli_outside_a_project_says_how_to_configure_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    code = main(["up"])

    assert code == 2
    assert "[tool.harness]" in capsys.readouterr().err


def test_the_cli_without_a_command_after_run_is_a_usage_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.root)
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2


def test_the_exported_variables_are_exactly_the_docker_paths(settings: EmbeddedSettings) -> None:
    assert set(service_variables(settings, 5432, 8333)) == POSTGRES_VARIABLES | S3_VARIABLES


def test_a_postgres_only_project_gets_no_s3_server_and_no_s3_variables(tmp_path: Path) -> None:
    project = write_project(tmp_path / "pg-only", services=("postgres",))
    settings = embedded_settings(project, {"TEST_HARNESS_RUN_BASE": str(tmp_path / "runs")})

    running = create_embedded_services(settings, report=None)
    try:
        assert not settings.with_s3
        assert running.s3 is None
        assert set(running.env) == POSTGRES_VARIABLES
    finally:
        running.stop()
    assert list((tmp_path / "runs").glob("run-*")) == []
