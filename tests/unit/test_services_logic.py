"""Pure logic of the embedded-services launcher: SQL quoting, cache keys, port-conflict
detection, process identity, the run-dir sweep, SigV4 signing, the exported variables, and
the ready-file hand-over to the wrapped command."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.harness import contract
from tests.harness.postgres import (
    PgCredentials,
    parse_version,
    quote_ident,
    quote_literal,
    template_key,
)
from tests.harness.procs import (
    STATE_FILE,
    Child,
    RunState,
    choose_ports,
    exit_status,
    is_port_conflict,
    parse_start_time,
    proc_start_time,
    sweep_dead_runs,
)
from tests.harness.readiness import (
    READY_FILE_VARIABLE,
    ServicesNotReadyError,
    mark_ready,
    wait_for_ready_file,
    wait_for_services_or_exit,
    wait_for_services_ready,
)
from tests.harness.s3 import S3Credentials, sigv4_headers
from tests.harness.services import EXPORTED


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
    creds = PgCredentials("u", "p", "d")
    key = template_key("postgres (PostgreSQL) 18.6", creds)

    assert key == template_key("postgres (PostgreSQL) 18.6", PgCredentials("u", "p", "d"))
    assert key != template_key("postgres (PostgreSQL) 18.7", creds)
    assert key != template_key("postgres (PostgreSQL) 18.6", PgCredentials("u", "q", "d"))


def test_credentials_come_from_the_environment_else_the_contract_defaults() -> None:
    creds = PgCredentials.from_env({"POSTGRES_USER": "me"})

    assert creds.user == "me"
    assert creds.password == contract.BY_NAME["POSTGRES_PASSWORD"].default
    assert S3Credentials.from_env({}).region == contract.BY_NAME["S3_REGION"].default


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
    finished = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert finished.returncode == 0
    dead = _make_run(tmp_path, "run-dead", 2**22 + 1, 123)  # above pid_max: never alive
    me = os.getpid()
    live = _make_run(tmp_path, "run-live", me, proc_start_time(me) or 0)
    reused = _make_run(tmp_path, "run-reused", me, (proc_start_time(me) or 0) + 1)
    being_created = tmp_path / "run-new"
    being_created.mkdir()

    removed = sweep_dead_runs(tmp_path)

    assert sorted(removed) == sorted([dead, reused])
    assert live.exists() and being_created.exists()


def test_the_exported_variables_are_exactly_the_docker_paths() -> None:
    assert set(EXPORTED) == {
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "MINIO_HOST",
        "MINIO_PORT",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "S3_REGION",
    }


def test_the_sigv4_signature_matches_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = S3Credentials("AKID", "secret/key+x", "us-east-1")
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    body = b"ok"
    ours = sigv4_headers("127.0.0.1:8333", creds, "PUT", "/bucket/a key", body, now)

    request = AWSRequest(
        method="PUT",
        url="http://127.0.0.1:8333/bucket/a%20key",
        data=body,
        headers={"x-amz-date": ours["x-amz-date"]},
    )
    signer = S3SigV4Auth(Credentials("AKID", "secret/key+x"), "s3", "us-east-1")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    signer.add_auth(request)

    assert (
        ours["Authorization"].rsplit("Signature=", 1)[1]
        == (str(request.headers["Authorization"]).rsplit("Signature=", 1)[1])
    )


def test_the_ready_file_is_written_whole_with_the_contract_env(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    mark_ready(ready, {"POSTGRES_PORT": "5432"})

    assert json.loads(ready.read_text()) == {"POSTGRES_PORT": "5432"}
    assert [p.name for p in tmp_path.iterdir()] == ["ready.json"]  # no temp file left
    assert ready.stat().st_mode & 0o077 == 0


def test_waiting_returns_once_the_ready_file_exists(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    mark_ready(ready, {})
    wait_for_ready_file(ready, timeout_s=0.01)


def test_waiting_fails_at_the_deadline_naming_the_file_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ServicesNotReadyError) as failure:
        wait_for_ready_file(tmp_path / "ready.json", timeout_s=0.05)

    assert str(tmp_path / "ready.json") in str(failure.value)
    assert READY_FILE_VARIABLE in str(failure.value) and "within 0.05 s" in str(failure.value)


def test_waiting_stops_at_once_when_the_launchers_run_dir_is_gone(tmp_path: Path) -> None:
    with pytest.raises(ServicesNotReadyError, match="launcher is gone"):
        wait_for_ready_file(tmp_path / "removed-run" / "ready.json", timeout_s=60)


def test_without_the_variable_there_is_nothing_to_wait_for() -> None:
    wait_for_services_ready({})  # Docker path, user-provided URLs, TEST_EMBEDDED_SERVICES


class _Config:
    """The one thing wait_for_services_or_exit looks at on a pytest.Config."""


def test_pytest_exits_with_a_usage_error_when_the_services_never_become_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(READY_FILE_VARIABLE, str(tmp_path / "ready.json"))
    monkeypatch.setenv("TEST_SERVICES_TIMEOUT", "0.01")
    monkeypatch.setattr("tests.harness.readiness.MARGIN_S", 0.0)

    with pytest.raises(pytest.exit.Exception) as exited:
        wait_for_services_or_exit(_Config())  # type: ignore[arg-type]

    assert exited.value.returncode == pytest.ExitCode.USAGE_ERROR
    assert READY_FILE_VARIABLE in str(exited.value.msg)


def test_xdist_workers_do_not_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(READY_FILE_VARIABLE, str(tmp_path / "never.json"))
    worker = _Config()
    worker.workerinput = {}  # type: ignore[attr-defined]

    wait_for_services_or_exit(worker)  # type: ignore[arg-type]
