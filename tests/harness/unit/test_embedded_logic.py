"""The embedded launcher's logic without servers: SQL quoting, cache keys, port-conflict
detection, process identity, the run-dir sweep, SigV4 signing, the variables handed out,
the ready-file hand-over, the settings it is given, and the rules of the package itself."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from realstack import embedded
from realstack.config import EmbeddedSettings, embedded_settings, service_variables
from realstack.contract import ContractError
from realstack.embedded import pg_binaries
from realstack.embedded.__main__ import main
from realstack.embedded.launcher import create_embedded_services
from realstack.embedded.pg_binaries import first_untraversable, locate_binaries, parse_version
from realstack.embedded.pg_cluster import quote_ident, quote_literal, template_key
from realstack.embedded.procs import choose_ports, exit_status, is_port_conflict, server_user
from realstack.embedded.readiness import (
    ServicesNotReadyError,
    mark_ready,
    read_ready_file,
    wait_for_services,
)
from realstack.embedded.rundir import (
    STATE_FILE,
    Child,
    RunState,
    parse_start_time,
    proc_start_time,
    sweep_dead_runs,
)
from realstack.embedded.s3 import sigv4_headers
from realstack.project import Credentials, Project, ProjectConfigError, find_pyproject, load_project

from tests.harness.helpers import write_project

PACKAGE = Path(embedded.__file__).parent
NEVER_ALIVE_PID = 2**22 + 1  # above pid_max: never a live process
POSTGRES_VARIABLES = {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD"}
POSTGRES_VARIABLES |= {"POSTGRES_DB"}
S3_VARIABLES = {"MINIO_HOST", "MINIO_PORT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "S3_REGION"}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "sample")


@pytest.fixture
def settings(project: Project, tmp_path: Path) -> EmbeddedSettings:
    return embedded_settings(project, {"TEST_HARNESS_RUN_BASE": str(tmp_path / "runs")})


# --- SQL, versions, cache keys --------------------------------------------------------------


def test_identifiers_are_double_quoted_with_embedded_quotes_doubled() -> None:
    assert quote_ident('we"ird; DROP') == '"we""ird; DROP"'


def test_literals_are_single_quoted_with_embedded_quotes_doubled() -> None:
    assert quote_literal("it's\\") == "'it''s\\'"


@pytest.mark.parametrize("bad", ["", "a\0b"])
def test_identifiers_that_postgres_cannot_hold_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        quote_ident(bad)


def test_the_version_comes_from_postgres_version_output() -> None:
    assert parse_version("postgres (PostgreSQL) 18.6") == "18.6"


def test_the_template_key_changes_with_version_and_password() -> None:
    creds = Credentials("u", "p", "d", "k", "s")
    key = template_key("postgres (PostgreSQL) 18.6", creds)

    assert key == template_key("postgres (PostgreSQL) 18.6", Credentials("u", "p", "d", "x", "y"))
    assert key != template_key("postgres (PostgreSQL) 18.7", creds)
    assert key != template_key(
        "postgres (PostgreSQL) 18.6", dataclasses.replace(creds, pg_password="q")
    )


# --- the settings the launcher is given -----------------------------------------------------


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


# --- ports, exit codes, process identity, the sweep -----------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        'LOG:  could not bind IPv4 address "127.0.0.1": Address already in use',
        "E1121 mini.go:1244 Port allocation failed: port 60239 for Master (specified by flag "
        "master.port) is not available on 127.0.0.1 and cannot be used",
    ],
)
def test_port_conflicts_are_recognised_in_both_servers_logs(line: str) -> None:
    assert is_port_conflict(line)


def test_other_start_up_failures_are_not_port_conflicts() -> None:
    assert not is_port_conflict('FATAL:  data directory "/x" has invalid permissions')


def test_a_child_killed_by_a_signal_exits_128_plus_the_signal() -> None:
    assert (exit_status(-2), exit_status(3), exit_status(0)) == (130, 3, 0)


def test_chosen_ports_are_distinct_even_if_the_chooser_repeats() -> None:
    handed = iter([5, 5, 6, 5, 7])
    assert choose_ports(3, lambda: next(handed)) == [5, 6, 7]


def test_the_start_time_is_read_past_a_command_name_with_spaces_and_parens() -> None:
    stat = "42 (we ird) (x) S " + " ".join(str(n) for n in range(4, 30))
    assert parse_start_time(stat) == 22


def test_the_run_state_round_trips() -> None:
    state = RunState(1, 2, [Child(3, 4, "weed")], ["/tmp/x.sock"])
    assert RunState.load(state.dump()) == state


def _make_run(base: Path, name: str, owner_pid: int, owner_start: int) -> Path:
    run = base / name
    run.mkdir()
    (run / STATE_FILE).write_text(RunState(owner_pid, owner_start).dump())
    return run


def test_the_sweep_removes_runs_of_dead_owners_and_keeps_live_ones(tmp_path: Path) -> None:
    dead = _make_run(tmp_path, "run-dead", NEVER_ALIVE_PID, 123)
    me = os.getpid()
    live = _make_run(tmp_path, "run-live", me, proc_start_time(me) or 0)
    reused = _make_run(tmp_path, "run-reused", me, (proc_start_time(me) or 0) + 1)
    being_created = tmp_path / "run-new"
    being_created.mkdir()

    removed = sweep_dead_runs(tmp_path)

    assert sorted(removed) == sorted([dead, reused])
    assert live.exists() and being_created.exists()


# --- SigV4 ----------------------------------------------------------------------------------


def test_the_sigv4_signature_matches_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials("u", "p", "d", "AKID", "secret/key+x", "us-east-1")
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    body = b"ok"
    ours = sigv4_headers("127.0.0.1:8333", creds, "PUT", "/bucket/a key", body, now)

    request = AWSRequest(
        method="PUT",
        url="http://127.0.0.1:8333/bucket/a%20key",
        data=body,
        headers={"x-amz-date": ours["x-amz-date"]},
    )
    signer = S3SigV4Auth(BotoCredentials("AKID", "secret/key+x"), "s3", "us-east-1")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    signer.add_auth(request)

    assert (
        ours["Authorization"].rsplit("Signature=", 1)[1]
        == (str(request.headers["Authorization"]).rsplit("Signature=", 1)[1])
    )


# --- the ready file -------------------------------------------------------------------------


def test_the_ready_file_is_written_whole_with_the_variables(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    mark_ready(ready, {"POSTGRES_PORT": "5432"})

    assert json.loads(ready.read_text()) == {"POSTGRES_PORT": "5432"}
    assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]  # no temp file left
    assert ready.stat().st_mode & 0o077 == 0


def test_reading_returns_the_variables_once_the_ready_file_exists(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    mark_ready(ready, {"POSTGRES_PORT": "5432", "POSTGRES_HOST": "127.0.0.1"})

    assert read_ready_file(ready, timeout_s=0.01) == {
        "POSTGRES_PORT": "5432",
        "POSTGRES_HOST": "127.0.0.1",
    }


def test_reading_waits_for_a_file_written_later(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, os, sys, time; time.sleep(0.3); "
            "open(sys.argv[1] + '.tmp', 'w').write(json.dumps({'A': '1'})); "
            "os.replace(sys.argv[1] + '.tmp', sys.argv[1])",
            str(ready),
        ]
    )
    try:
        assert read_ready_file(ready, timeout_s=10) == {"A": "1"}
    finally:
        writer.wait(10)


def test_reading_fails_at_the_deadline_naming_the_file_the_variable_and_the_fix(
    tmp_path: Path,
) -> None:
    with pytest.raises(ServicesNotReadyError) as failure:
        read_ready_file(tmp_path / "ready.json", timeout_s=0.05, variable="SAMPLE_READY")

    message = str(failure.value)
    assert str(tmp_path / "ready.json") in message
    assert "SAMPLE_READY" in message and "within 0.05 s" in message
    assert "TEST_SERVICES_TIMEOUT" in message


def test_reading_stops_at_once_when_the_launchers_run_dir_is_gone(tmp_path: Path) -> None:
    with pytest.raises(ServicesNotReadyError, match=r"launcher is gone.*no longer exists"):
        read_ready_file(tmp_path / "removed-run" / "ready.json", timeout_s=60)


def test_reading_stops_at_once_when_the_launcher_died_and_left_its_run_dir(
    tmp_path: Path,
) -> None:
    run = _make_run(tmp_path, "run-killed", NEVER_ALIVE_PID, 123)

    with pytest.raises(ServicesNotReadyError, match=f"launcher is gone.*{NEVER_ALIVE_PID}"):
        read_ready_file(run / "ready.json", timeout_s=60)


def test_a_ready_file_that_is_not_a_json_object_of_strings_is_refused(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text('{"POSTGRES_PORT": 5432}')

    with pytest.raises(ServicesNotReadyError, match="JSON object of variables"):
        read_ready_file(ready, timeout_s=1)


def test_without_the_variable_there_is_nothing_to_wait_for(settings: EmbeddedSettings) -> None:
    assert wait_for_services(settings, {}) == {}  # Docker path, your URLs, in-process services


def test_with_the_variable_the_variables_come_from_the_file(
    settings: EmbeddedSettings, tmp_path: Path
) -> None:
    ready = tmp_path / "ready.json"
    mark_ready(ready, {"POSTGRES_PORT": "1"})
    env = {"SAMPLE_SERVICES_READY_FILE": str(ready)}

    assert settings.project.ready_file_variable == "SAMPLE_SERVICES_READY_FILE"
    assert wait_for_services(settings, env) == {"POSTGRES_PORT": "1"}


# --- binaries as root: the world-readable copy ----------------------------------------------


@pytest.fixture
def locked_binaries() -> Iterator[tuple[Path, Path]]:
    """Fake PostgreSQL 18 binaries under a 0700 directory `nobody` cannot enter, and a cache."""
    locked = Path(tempfile.mkdtemp(prefix="locked-"))  # 0700, owned by root
    cache = Path(tempfile.mkdtemp(prefix="cache-"))
    cache.chmod(0o755)
    bindir = locked / "pkg" / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    for tool in ("postgres", "initdb"):
        (bindir / tool).write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 18.0'\n")
        (bindir / tool).chmod(0o755)
    try:
        yield bindir, cache
    finally:
        subprocess.run(["rm", "-rf", str(locked), str(cache)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the copy is made only when running as root")
def test_the_copy_for_nobody_is_announced_once_naming_the_directory_nobody_cannot_enter(
    settings: EmbeddedSettings,
    locked_binaries: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bindir, cache = locked_binaries
    settings = dataclasses.replace(settings, pg_bindir=bindir, cache_dir=cache)
    run_as = server_user()
    assert run_as is not None
    locked = bindir.parents[2]
    assert first_untraversable(bindir, run_as) == (locked.resolve(), 0o700, "root")

    reports = []
    for _ in range(3):  # three runs, each a new process: nothing remembered in memory
        monkeypatch.setattr(pg_binaries, "_located", {})
        report = io.StringIO()
        binaries = locate_binaries(settings, run_as, report)
        reports.append(report.getvalue())

    assert binaries.bindir == cache / "pg-install-18.0" / "pkg" / "pginstall" / "bin"
    first, *later = reports
    assert f"cannot enter {locked.resolve()} (mode 0700, owner root)" in first
    assert "nobody" in first and str(cache / "pg-install-18.0") in first
    assert "/root" not in first  # no guessing: it names what is true
    assert later == ["", ""]


# --- the rules of the package ---------------------------------------------------------------


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def test_no_module_is_over_300_lines() -> None:
    long = {p.name: n for p in _modules() if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_the_package_imports_the_harness_only_relatively_and_names_no_project() -> None:
    """Copyable anywhere: no absolute import of where it lives, and not even the name of the
    project it lives in (it derives every name from project.name)."""
    top = embedded.__name__.split(".")[0]
    try:
        host = load_project(find_pyproject(PACKAGE)).name
    except ProjectConfigError:
        host = "sample"  # the name these tests give their projects
    for path in _modules():
        text = path.read_text()
        assert not re.search(rf"^\s*(from|import) {top}\.", text, re.M), path.name
        assert host not in text.lower(), path.name


def test_only_the_cli_reads_the_environment_for_configuration() -> None:
    lookup = re.compile(r"os\.environ\s*(\.get|\[)|os\.getenv|environ\.get\(")
    readers = [p.name for p in _modules() if lookup.search(p.read_text())]
    assert readers == []
    parses_timeout = [p.name for p in _modules() if "float(" in p.read_text()]
    assert parses_timeout == []  # TEST_SERVICES_TIMEOUT is parsed by contract.py alone
