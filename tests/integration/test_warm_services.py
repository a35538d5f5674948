"""Warm reuse: `make services-up` keeps services for later runs; `services-down` stops them."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.janitor import PROJECT_ROOT
from tests.harness.procs import proc_start_time
from tests.harness.warm import (
    PID_KEY,
    StaleServicesError,
    load_warm_services,
    read_services_file,
)


def _warm(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.harness.warm", command, "--file", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _answers(port: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def test_services_up_outlives_its_command_and_services_down_stops_them(tmp_path: Path) -> None:
    path = tmp_path / "services.env"
    try:
        up = _warm("up", path)
        assert up.returncode == 0, up.stdout + up.stderr

        env = load_warm_services(path)
        assert env is not None
        assert _answers(env["POSTGRES_PORT"]) and _answers(env["MINIO_PORT"])
        supervisor = int(read_services_file(path)[PID_KEY])

        down = _warm("down", path)

        assert down.returncode == 0, down.stdout + down.stderr
        assert not path.exists()
        assert proc_start_time(supervisor) is None
        assert not _answers(env["POSTGRES_PORT"])
    finally:
        if path.exists():
            _warm("down", path)


def test_a_file_naming_dead_services_is_reported_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    path = tmp_path / "services.env"
    path.write_text(
        f"export POSTGRES_HOST='127.0.0.1'\nexport POSTGRES_PORT='{closed_port}'\n"
        f"export MINIO_HOST='127.0.0.1'\nexport MINIO_PORT='{closed_port}'\n"
        f"export {PID_KEY}=999999999\n"
    )

    with pytest.raises(StaleServicesError) as stale:
        load_warm_services(path)

    assert "not running" in str(stale.value)
    assert "make services-up" in str(stale.value)
    assert "make services-down" in str(stale.value)


def test_no_file_means_no_warm_services(tmp_path: Path) -> None:
    assert load_warm_services(tmp_path / "absent.env") is None
