"""`make test-integration` with a Docker daemon that answers but cannot pull the images (offline,
a registry's rate limit): BACKEND=auto falls back to the embedded services in one line,
BACKEND=docker stops naming BACKEND=embedded. Against a stub Docker Engine API on a unix socket
in this process, so it needs no Docker: `make` asks it through .tools/bin/python (docker SDK)."""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = "postgres:18.6-alpine"  # tox.ini's default image =
MINIO_FROM = (ROOT / "tests/docker/minio.Dockerfile").read_text().split("FROM ", 1)[1].split()[0]
RATE_LIMIT = "toomanyrequests: You have reached your unauthenticated pull rate limit."
OFFLINE = "dial tcp: lookup registry-1.docker.io on 127.0.0.53:53: no such host"


class StubDocker(socketserver.ThreadingUnixStreamServer):
    """Answers /_ping, /version, GET /vX/images/NAME/json and POST /vX/images/create."""

    daemon_threads = True
    images_present = False
    pull_answer = "ok"  # or "rate-limit" (a 500), or "offline" (an error inside a 200 stream)

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.pulls: list[tuple[str, str]] = []  # (fromImage, tag)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubDocker

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet; the base's address_string() would also fail on a unix socket

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, entries: list[object]) -> None:
        # Chunked like dockerd's progress stream: docker-py reads a non-chunked body as one JSON.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for entry in entries:
            data = json.dumps(entry).encode() + b"\r\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.endswith("/_ping"):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
        elif path.endswith("/version"):
            self._send(200, {"ApiVersion": "1.45", "Version": "27.0.0-stub"})
        elif "/images/" in path and path.endswith("/json"):
            name = unquote(path.split("/images/", 1)[1].removesuffix("/json"))
            if self.server.images_present:
                self._send(200, {"Id": "sha256:" + "0" * 64, "RepoTags": [name]})
            else:
                self._send(404, {"message": f"No such image: {name}"})
        else:
            self._send(404, {"message": f"stub: no route {path}"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not url.path.endswith("/images/create"):
            self._send(404, {"message": f"stub: no route {url.path}"})
            return
        query = dict(parse_qsl(url.query))
        self.server.pulls.append((query["fromImage"], query["tag"]))
        status = {"status": f"Pulling from {query['fromImage']}", "id": query["tag"]}
        if self.server.pull_answer == "rate-limit":
            self._send(500, {"message": RATE_LIMIT})
        elif self.server.pull_answer == "offline":
            self._send_stream([status, {"errorDetail": {"message": OFFLINE}, "error": OFFLINE}])
        else:
            self._send_stream([status, {"status": f"Status: Downloaded newer image for {query}"}])


@pytest.fixture
def docker() -> Iterator[StubDocker]:
    # Not tmp_path: a unix socket's path must stay under 108 characters.
    directory = tempfile.mkdtemp(prefix="stub-docker-", dir="/tmp")
    server = StubDocker(f"{directory}/docker.sock")  # bound and listening: make may ask at once
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        shutil.rmtree(directory)


def _integration_env(docker: StubDocker, backend: str) -> subprocess.CompletedProcess[str]:
    # tox.ini's default images, and no docker config or credentials of the machine's.
    env = {
        k: v
        for k, v in os.environ.items()
        # MAKELEVEL (tox passes it): make as a user types it, not a sub-make ("make[1]: ...").
        if not k.startswith("DOCKER_")
        and k not in {"POSTGRES_IMAGE", "MINIO_DOCKERFILE", "MAKELEVEL"}
    }
    socket = Path(str(docker.server_address))
    env |= {"DOCKER_HOST": f"unix://{socket}", "DOCKER_CONFIG": str(socket.parent)}
    return subprocess.run(
        ["make", "--no-print-directory", "_integration-env", f"BACKEND={backend}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _decision(stderr: str) -> str:
    """The one line that says which env and why; before it only `make: pulling ...` lines (and
    after it, on exit 2, make's own `make: *** ... Error 2`)."""
    lines = [line for line in stderr.splitlines() if not line.startswith("make: *** ")]
    assert lines, "make said nothing on stderr"
    assert all(line.startswith("make: pulling ") for line in lines[:-1]), stderr
    return lines[-1]


@pytest.mark.parametrize(("answer", "reason"), [("rate-limit", RATE_LIMIT), ("offline", OFFLINE)])
def test_auto_falls_back_to_embedded_in_one_line_when_a_pull_fails(
    docker: StubDocker, answer: str, reason: str
) -> None:
    docker.pull_answer = answer

    result = _integration_env(docker, "auto")

    assert (result.returncode, result.stdout) == (0, "integration-embedded\n"), result.stderr
    line = _decision(result.stderr)
    assert f"cannot pull {POSTGRES} for [docker:postgres] ({reason})" in line
    assert "-> tox -e integration-embedded" in line and "BACKEND=docker forces Docker" in line
    assert docker.pulls == [("postgres", "18.6-alpine")]  # the first failure ends the check


def test_auto_picks_docker_when_the_images_are_here_or_pulled_by_digest(
    docker: StubDocker,
) -> None:
    docker.images_present = True

    result = _integration_env(docker, "auto")

    assert (result.returncode, result.stdout) == (0, "integration\n"), result.stderr
    assert _decision(result.stderr).startswith("make: Docker daemon answered at unix://")
    # postgres is here; the Dockerfile's FROM is pulled as tox-docker's build(pull=True) will.
    repository, digest = MINIO_FROM.split("@")
    assert docker.pulls == [(repository.rsplit(":", 1)[0], digest)]


def test_backend_docker_stops_naming_the_image_the_reason_and_backend_embedded(
    docker: StubDocker,
) -> None:
    docker.pull_answer = "rate-limit"

    result = _integration_env(docker, "docker")

    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    line = _decision(result.stderr)
    assert f"cannot pull {POSTGRES} for [docker:postgres] ({RATE_LIMIT})" in line
    assert "BACKEND=embedded" in line and "docker pull" in line
