"""A suite that also needs a service the harness does not provide (a message broker, here a
stand-in answering "pong" over TCP): its tests opt out by path (outside `guarded_paths`, where the
harness starts, guards and needs nothing) or by marker (`-m "not broker"` where there is no
broker), as the README's "Tests that need other services" says. Nested runs of the "notes"
project (notes_project.py), with the harness installed as in this tier's environment."""

from __future__ import annotations

import asyncio
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from realstack.config import HarnessConfig
from realstack.project import load_project
from realstack.stamps import RunNames

from tests.harness.helpers import names_for
from tests.harness.nested import installed_harness_environment, pytest_in, service_environment
from tests.harness.notes_project import APP_DATABASE_URL, build_project

MARKER = '"broker: needs the message broker, which the harness does not provide"'

PING = """\
import os
import socket


def ping() -> bytes:
    host, port = os.environ["BROKER_ADDRESS"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"ping\\n")
        return conn.recv(16)
"""

# Outside the guarded paths: the harness neither starts nor guards anything for it.
BROKER_ONLY = """\
import pytest

from tests.broker_client import ping

pytestmark = pytest.mark.broker


def test_the_broker_answers():
    assert ping() == b"pong\\n"
"""

# Inside them: the real database and the broker in one test, deselected where there is no broker.
BOTH = """\
import pytest

from tests.broker_client import ping

pytestmark = pytest.mark.broker


async def test_a_note_is_saved_and_the_broker_told(client):
    created = await client.post("/notes", json={"title": "queued"})
    assert created.status_code == 201
    assert ping() == b"pong\\n"
"""


class _Pong(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        if self.rfile.readline() == b"ping\n":
            self.wfile.write(b"pong\n")


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """The stand-in broker's address, host:port."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Pong) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"127.0.0.1:{server.server_address[1]}"
        server.shutdown()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = build_project(tmp_path / "notes", copy_core=False)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'asyncio_mode = "auto"', f'markers = [{MARKER}]\nasyncio_mode = "auto"'
        )
    )
    (root / "tests" / "broker_client.py").write_text(PING)
    (root / "tests" / "broker").mkdir()
    (root / "tests" / "broker" / "test_queue.py").write_text(BROKER_ONLY)
    (root / "tests" / "integration" / "test_notify.py").write_text(BOTH)
    return root


async def _pytest(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(pytest_in, root, env, *args)


def _no_services(config: HarnessConfig, root: Path) -> dict[str, str]:
    env = installed_harness_environment(config, root)
    env.pop(APP_DATABASE_URL, None)
    return env


async def test_tests_outside_the_guarded_paths_run_with_no_service_of_the_harness(
    harness_config: HarnessConfig, project: Path, broker: str
) -> None:
    env = _no_services(harness_config, project) | {"BROKER_ADDRESS": broker}

    result = await _pytest(project, env, "tests/broker")

    # No database was named and none started: a guarded run would have stopped before any test.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "harness:" not in result.stdout + result.stderr  # nothing of it said or stopped


async def test_deselecting_the_marker_runs_the_rest_on_the_real_database_without_the_broker(
    harness_config: HarnessConfig, run_names: RunNames, project: Path
) -> None:
    notes = load_project(project / "pyproject.toml")
    env = _no_services(harness_config, project) | service_environment(harness_config, with_s3=False)
    env[notes.run_id_variable] = names_for(run_names, "nobrk").run_id

    result = await _pytest(project, env, "-m", "not broker")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed, 2 deselected" in result.stdout
    assert "test_notify.py" not in result.stdout and "test_queue.py" not in result.stdout


async def test_where_the_broker_runs_a_guarded_test_uses_it_and_the_database_together(
    harness_config: HarnessConfig, run_names: RunNames, project: Path, broker: str
) -> None:
    notes = load_project(project / "pyproject.toml")
    env = _no_services(harness_config, project) | service_environment(harness_config, with_s3=False)
    env |= {notes.run_id_variable: names_for(run_names, "brk").run_id, "BROKER_ADDRESS": broker}

    result = await _pytest(project, env, "-m", "broker")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 5 deselected" in result.stdout
