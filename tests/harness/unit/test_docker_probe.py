"""`python -m realstack.toxdocker`: the Makefile's question "is there a Docker daemon?", asked
before every `make test-integration` (BACKEND=auto), must answer the common no-Docker case at
once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _probe(docker_host: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": docker_host}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "realstack.toxdocker"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _imported(importtime_log: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_log.splitlines() if "|" in line}


def test_a_missing_docker_socket_is_named_without_importing_tox_or_the_docker_sdk(
    tmp_path: Path,
) -> None:
    socket = tmp_path / "docker.sock"

    result = _probe(f"unix://{socket}")

    assert result.returncode == 1
    assert result.stdout.strip() == f"no Docker socket at {socket}"
    imported = _imported(result.stderr)
    assert not {m for m in imported if m.split(".")[0] in {"tox", "docker"}}, sorted(imported)


def test_a_socket_that_exists_is_asked_through_the_docker_sdk(tmp_path: Path) -> None:
    socket = tmp_path / "docker.sock"
    socket.touch()  # a file, not a daemon: the SDK's answer says why it failed

    result = _probe(f"unix://{socket}")

    assert result.returncode == 1
    assert "no Docker socket" not in result.stdout
    assert result.stdout.strip(), "the probe must say why the daemon did not answer"
