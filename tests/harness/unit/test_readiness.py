"""The ready file: written whole, waited for with a deadline, refused when malformed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from realstack.config import EmbeddedSettings
from realstack.embedded.readiness import (
    ServicesNotReadyError,
    mark_ready,
    read_ready_file,
    wait_for_services,
)

from tests.harness.helpers import make_run_dir

NEVER_ALIVE_PID = 2**22 + 1  # above pid_max: never a live process


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
    run = make_run_dir(tmp_path, "run-killed", NEVER_ALIVE_PID, 123)

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
